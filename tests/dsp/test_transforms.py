"""unmix.dsp.transforms against torch.stft/istft fixtures, and round trips."""
from pathlib import Path

import numpy as np
import pytest

from unmix.dsp import transforms
from conftest import FIXTURES

REFERENCE = np.load(FIXTURES / "transforms.npz")
CASES = sorted({k.split("/")[0] for k in REFERENCE.files})


@pytest.mark.parametrize("case", CASES)
def test_stft_matches_torch(case):
    n_fft, n_hop, center, _ = REFERENCE[f"{case}/params"]
    ref = REFERENCE[f"{case}/spec"]
    spec = transforms.stft(REFERENCE[f"{case}/audio"], n_fft=n_fft, n_hop=n_hop, center=bool(center))
    assert spec.dtype == np.complex64
    assert spec.shape == ref.shape
    assert np.max(np.abs(spec - ref)) <= 1e-5 * np.max(np.abs(ref))


@pytest.mark.parametrize("case", [c for c in CASES if REFERENCE[f"{c}/params"][2]])
def test_istft_matches_torch(case):
    n_fft, n_hop, _, length = REFERENCE[f"{case}/params"]
    ref = REFERENCE[f"{case}/istft"]
    out = transforms.istft(REFERENCE[f"{case}/spec"], n_fft=n_fft, n_hop=n_hop, center=True, length=length)
    assert out.shape == ref.shape
    assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))


@pytest.mark.parametrize("length", [4096 * 3, 44100, 44100 + 17, 5000])
def test_round_trip_exact_length(length):
    audio = np.random.default_rng(length).standard_normal((2, 2, length)).astype(np.float32)
    back = transforms.istft(transforms.stft(audio), length=length)
    assert back.shape == audio.shape
    assert np.sqrt(np.mean((back - audio) ** 2)) < 1e-6


def test_istft_pads_when_asked_for_more():
    audio = np.random.default_rng(0).standard_normal((1, 9000)).astype(np.float32)
    back = transforms.istft(transforms.stft(audio, 512, 128), 512, 128, length=9500)
    assert back.shape == (1, 9500)
    np.testing.assert_allclose(back[:, :9000], audio, atol=1e-5)
    assert np.all(back[:, 9000 + 256:] == 0)


def test_frame_count_and_bins():
    spec = transforms.stft(np.zeros((3, 44100), np.float32))
    assert spec.shape == (3, 2049, transforms.nb_frames_for(44100))
    assert transforms.nb_frames_for(44100) == 1 + 44100 // 1024
    assert transforms.nb_frames_for(44100, center=False) == 1 + (44100 - 4096) // 1024


def test_hann_is_periodic():
    w = transforms.hann_window(8)
    np.testing.assert_allclose(w, [0, 0.1464466, 0.5, 0.8535534, 1, 0.8535534, 0.5, 0.1464466], atol=1e-6)


def test_magnitude_mono_averages_channels():
    spec = np.array([[[[3 + 4j]], [[0 + 1j]]]], dtype=np.complex64)  # (1, 2, 1, 1)
    np.testing.assert_allclose(transforms.magnitude(spec)[0, :, 0, 0], [5, 1])
    mono = transforms.magnitude(spec, mono=True)
    assert mono.shape == (1, 1, 1, 1) and mono[0, 0, 0, 0] == pytest.approx(3.0)


def test_too_short_signal_raises():
    with pytest.raises(ValueError, match="too short"):
        transforms.stft(np.zeros((1, 100), np.float32))


@pytest.mark.parametrize("length", [300, 3000, 44100 // 4, 4097 * 3])
@pytest.mark.parametrize("window", [1, 7, 1000])
def test_windowed_stft_and_overlap_add_equal_whole_transforms(length, window):
    audio = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
    spec = transforms.stft(audio, 512, 128)
    nb_frames = spec.shape[-1]
    ola = transforms.OverlapAdd((2,), nb_frames, length, 512, 128)
    chunks = []
    for start in range(0, nb_frames, window):
        part = transforms.stft_frames(audio, start, min(window, nb_frames - start), 512, 128)
        np.testing.assert_allclose(part, spec[..., start:start + window], atol=2e-4)
        chunks.append(ola.add(part, start))
    assert ola.pending.shape[-1] < 512 + window * 128, "only about one window is held"
    result = np.concatenate(chunks, axis=-1)
    np.testing.assert_allclose(result, transforms.istft(spec, 512, 128, length=length), atol=1e-5)
    np.testing.assert_allclose(result, audio, atol=1e-5)
