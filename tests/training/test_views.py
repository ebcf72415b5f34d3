"""unmix.training.views: what the loader's workers compute from a dataset's samples (no NNabla)."""
import numpy as np
import pytest
from ramps import SEQ, SEQ_LEN, make_musdb, make_trackfolder

from unmix.dsp import transforms
from unmix.errors import UnmixError
from unmix.training import datasets, views


@pytest.fixture
def musdb_train(tmp_path):
    root = make_musdb(tmp_path, [f"T{k}" for k in range(3)])
    return datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=2)


def test_magnitude_view_is_the_model_magnitude_of_the_sample(musdb_train):
    x, y = musdb_train.get(3, epoch=2)
    X, Y = views.MagnitudeDataset(musdb_train, 256, 64, 2).get(3, epoch=2)
    np.testing.assert_array_equal(X, views.model_magnitude(x, 256, 64, 2))
    np.testing.assert_array_equal(Y, views.model_magnitude(y, 256, 64, 2))
    nb_frames = (SEQ_LEN - 256) // 64 + 1  # center=False, as the reference's encoder
    assert X.shape == (2, 129, nb_frames) and X.dtype == np.float32
    Xf, _ = views.MagnitudeDataset(musdb_train, 256, 64, 2, frames_first=True).get(3, epoch=2)
    np.testing.assert_array_equal(Xf, X.transpose(0, 2, 1))
    Xm, _ = views.MagnitudeDataset(musdb_train, 256, 64, 1).get(3, epoch=2)
    np.testing.assert_allclose(Xm[0], X.mean(axis=0), rtol=1e-6)  # mono: the mean of the channel magnitudes


def test_subset_reads_its_indices_and_passes_the_epoch_on(musdb_train):
    shard = views.Subset(musdb_train, [5, 1])
    assert len(shard) == 2
    np.testing.assert_array_equal(shard.get(0, epoch=4)[1], musdb_train.get(5, epoch=4)[1])
    shard.set_epoch(7)
    assert musdb_train.epoch == 7


def test_sources_and_xumx_views(musdb_train):
    x, stems = views.SourcesDataset(musdb_train).get(1, epoch=3)
    assert stems.shape == (4, 2, SEQ_LEN)
    np.testing.assert_allclose(x, stems.sum(axis=0), rtol=1e-6)  # the train split's x is the sum of the stems
    mix, real, imag, target_mag, target_time = views.XumxDataset(musdb_train, 256, 64).get(1, epoch=3)
    spec = transforms.stft(x, 256, 64, center=True, frames_first=True)
    np.testing.assert_allclose(mix, np.abs(spec), rtol=1e-6)
    np.testing.assert_array_equal(real + 1j * imag, spec)
    assert target_mag.shape == (4,) + mix.shape
    assert target_time.shape == (4, 2, (mix.shape[1] - 1) * 64)


def test_sources_view_needs_musdb(tmp_path):
    root = make_trackfolder(tmp_path, "train", 2, ["vocals.wav", "bass.wav"])
    make_trackfolder(root, "valid", 1, ["vocals.wav", "bass.wav"])
    aligned = datasets.FixedSourcesTrackFolderDataset(root, interferer_files=["bass.wav"])
    with pytest.raises(UnmixError, match="use --dataset musdb"):
        views.SourcesDataset(aligned)
