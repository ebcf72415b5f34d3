"""unmix.training.chunks: probe once, read chunks with a seek, channel fitting, format checks."""
import numpy as np
import pytest
import soundfile as sf
from ramps import RATE

from unmix.errors import UnmixError
from unmix.training import chunks


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_chunk_read_equals_slice_of_full_file(tmp_path, ext):
    audio = (np.random.default_rng(0).uniform(-0.5, 0.5, (5000, 2))).astype(np.float32)
    path = tmp_path / f"a{ext}"
    sf.write(str(path), audio, RATE, subtype="PCM_16")
    ref = chunks.probe(path)
    assert (ref.frames, ref.rate, ref.channels, ref.stem_id) == (5000, RATE, 2, None)
    full = chunks.read_chunk(ref)
    chunk = chunks.read_chunk(ref, 1234, 1234 + 777)
    assert full.shape == (2, 5000) and full.dtype == np.float32
    np.testing.assert_array_equal(chunk, full[:, 1234:2011])
    np.testing.assert_allclose(full, audio.T, atol=1 / 32768)


def test_fit_channels_dropping_extra():
    stereo = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(chunks.fit_channels_dropping_extra(stereo, 1), stereo.mean(0, keepdims=True))
    np.testing.assert_array_equal(chunks.fit_channels_dropping_extra(stereo[:1], 2), np.repeat(stereo[:1], 2, 0))
    np.testing.assert_array_equal(chunks.fit_channels_dropping_extra(np.ones((3, 4)), 2), np.ones((2, 4)))
    assert chunks.fit_channels_dropping_extra(stereo, None) is stereo


def test_unreadable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(UnmixError, match="cannot read audio file"):
        chunks.probe(bad)


def test_common_format_refuses_mixed_rates_and_channel_counts():
    refs = [chunks.AudioRef("a.wav", 100, 8000.0, 2), chunks.AudioRef("b.wav", 100, 8000.0, 1)]
    assert chunks.common_format(refs, None, 2, "here") == 8000.0
    with pytest.raises(UnmixError, match="here: files have different channel counts"):
        chunks.common_format(refs, None, None, "here")
    with pytest.raises(UnmixError, match="here: files are at 8000 Hz, expected 44100 Hz"):
        chunks.common_format(refs, 44100, 2, "here")
    with pytest.raises(UnmixError, match="different sample rates"):
        chunks.common_format(refs + [chunks.AudioRef("c.wav", 100, 16000.0, 2)], None, 2, "here")
