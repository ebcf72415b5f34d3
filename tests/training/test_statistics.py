"""unmix.training.statistics: the input statistics equal a direct computation (sklearn's rules, the reference's floor)."""
import numpy as np
import pytest
import soundfile as sf
from songs import make_dataset

from unmix.training import statistics
from unmix.dsp import transforms
from unmix.training.datasets import load_datasets


@pytest.fixture(scope="module")
def aligned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    make_dataset("aligned", root)
    return root


@pytest.mark.parametrize("nb_workers", [0, 2])
def test_statistics_equal_direct_computation(aligned_root, nb_workers):
    train_ds, _ = load_datasets("aligned", aligned_root, "vocals", seq_duration=0.5, valid_tracks=["track0"])
    mean, std = statistics.compute_statistics(train_ds, 512, 128, nb_workers=nb_workers)
    frames = []
    for name in ("track1", "track2"):  # the training tracks, whole, mixture only
        audio, _ = sf.read(aligned_root / "train" / name / "mixture.wav", dtype="float32", always_2d=True)
        mag = np.abs(transforms.stft(audio.T, 512, 128, center=False))  # (2, bins, frames)
        frames.append(mag.mean(axis=0).T)  # mono downmix of the magnitudes
    frames = np.concatenate(frames).astype(np.float64)
    expected_std = frames.std(axis=0)
    expected_std = np.maximum(expected_std, 1e-4 * expected_std.max())
    assert mean.shape == std.shape == (257,)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std, expected_std, rtol=1e-7, atol=1e-12)


def test_scaler_std_zero_variance_and_floor():
    # sklearn's StandardScaler gives a constant feature scale 1; then the reference floors at 1e-4 * max
    std = statistics.scaler_std(np.array([0.0, 4.0, 0.25]), np.array([0.0, 1.0, 1.0]), 10)
    np.testing.assert_allclose(std, [1.0, 2.0, 0.5])
    std = statistics.scaler_std(np.array([4.0, 1e-12]), np.array([1.0, 1.0]), 10)
    np.testing.assert_allclose(std, [2.0, 2e-4])
