"""Tests for unmix.io.audio: reading (libsndfile and ffmpeg), resampling, channels, writing."""
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unmix.io import audio
from unmix.errors import UnmixError
from conftest import MUSDB_SYNTH_MINI

RATE = 44100
N = RATE  # one second keeps every encode and decode fast
HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg/ffprobe not installed")
MUSDB_MINI = MUSDB_SYNTH_MINI


def tones(freqs, amps, n=N, rate=RATE):
    """float32 (len(freqs), n): one sine per channel."""
    t = np.arange(n) / rate
    return np.stack([a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs, amps)]).astype(np.float32)


MIX = tones([440.0, 660.0], [0.5, 0.3])  # stands in for a mixture (stereo)
STEM = tones([220.0, 330.0], [0.4, 0.2])  # a second stream, like the drums of a stem file


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-y", "-nostdin", "-v", "error", *map(str, args)], check=True)


def corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small audio files of every kind, made once for the module."""
    d = tmp_path_factory.mktemp("audio")
    out = {}
    for name, subtype in [("float.wav", "FLOAT"), ("pcm16.wav", "PCM_16"), ("pcm24.flac", "PCM_24"),
                          ("pcm16.aiff", "PCM_16"), ("vorbis.ogg", "VORBIS")]:
        out[name] = d / name
        sf.write(out[name], MIX.T, RATE, subtype=subtype)
    out["mono.wav"] = d / "mono.wav"
    sf.write(out["mono.wav"], MIX[0], RATE, subtype="FLOAT")
    if HAVE_FFMPEG:
        stem_wav = d / "stem.wav"
        sf.write(stem_wav, STEM.T, RATE, subtype="FLOAT")
        out["mp3"], out["m4a"], out["stem"] = d / "mix.mp3", d / "mix.m4a", d / "song.stem.mp4"
        ffmpeg("-i", out["float.wav"], "-c:a", "libmp3lame", "-b:a", "192k", out["mp3"])
        ffmpeg("-i", out["float.wav"], "-c:a", "aac", "-b:a", "192k", out["m4a"])
        # A stem file holds the mixture as its first audio stream, then the sources.
        ffmpeg("-i", out["float.wav"], "-i", stem_wav, "-map", "0:a", "-map", "1:a",
               "-c:a", "aac", "-b:a", "192k", out["stem"])
    return out


# ----------------------------------------------------------------- libsndfile


def test_load_float_wav_is_exact(files):
    x, rate = audio.load(files["float.wav"])
    assert rate == RATE
    assert x.dtype == np.float32 and x.shape == (2, N) and x.flags.c_contiguous
    np.testing.assert_array_equal(x, MIX)


@pytest.mark.parametrize("name, bits", [("pcm16.wav", 16), ("pcm24.flac", 24), ("pcm16.aiff", 16)])
def test_load_pcm_round_trips_within_quantisation(files, name, bits):
    x, rate = audio.load(files[name])
    assert rate == RATE and x.shape == (2, N)
    np.testing.assert_allclose(x, MIX, atol=2.0 ** -(bits - 1))


def test_load_ogg_vorbis(files):
    x, rate = audio.load(files["vorbis.ogg"])
    assert rate == RATE and x.shape == (2, N)
    assert corr(x, MIX) > 0.99


def test_load_mono_keeps_channel_axis(files):
    x, _ = audio.load(files["mono.wav"])
    assert x.shape == (1, N)
    np.testing.assert_array_equal(x[0], MIX[0])


@pytest.mark.parametrize("name", ["float.wav", "pcm24.flac"])
def test_start_duration_slice_exactly(files, name):
    full, _ = audio.load(files[name])
    x, _ = audio.load(files[name], start=0.25, duration=0.1)
    np.testing.assert_array_equal(x, full[:, 11025:11025 + 4410])


def test_duration_past_the_end_returns_the_rest(files):
    x, _ = audio.load(files["float.wav"], start=0.9, duration=0.5)
    np.testing.assert_array_equal(x, MIX[:, 39690:])


def test_load_with_rate_resamples(files):
    x, rate = audio.load(files["float.wav"], rate=16000)
    assert rate == 16000 and x.shape == (2, 16000)
    np.testing.assert_array_equal(x, audio.resample(MIX, RATE, 16000))
    same, rate = audio.load(files["float.wav"], rate=RATE)
    assert rate == RATE
    np.testing.assert_array_equal(same, MIX)


def test_info_soundfile(files):
    i = audio.info(files["pcm24.flac"])
    assert (i.rate, i.nb_channels, i.nb_timesteps) == (RATE, 2, N)
    assert i.duration == pytest.approx(1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        i.rate = 8000


@pytest.mark.skipif(not MUSDB_MINI.is_dir(), reason="shared musdb-synth-mini data not present")
def test_musdb_mini_mixture_is_sum_of_stems():
    track = sorted((MUSDB_MINI / "train").iterdir())[0]
    mix, rate = audio.load(track / "mixture.flac", start=2.0, duration=1.0)
    stems = [audio.load(track / f"{t}.flac", start=2.0, duration=1.0)[0]
             for t in ("vocals", "drums", "bass", "other")]
    assert rate == 44100 and mix.shape == (2, 44100)
    np.testing.assert_allclose(mix, sum(stems), atol=1e-6)
    assert np.abs(mix).max() > 0.01  # a real, non-silent excerpt


# --------------------------------------------------------------------- ffmpeg


@needs_ffmpeg
def test_load_mp3_close_in_length_and_shape(files):
    x, rate = audio.load(files["mp3"])
    assert rate == RATE and x.dtype == np.float32 and x.shape[0] == 2
    assert abs(x.shape[1] - N) <= 1152  # at most one mp3 frame of encoder padding
    n = min(N, x.shape[1])
    assert corr(x[:, :n], MIX[:, :n]) > 0.99


@needs_ffmpeg
def test_load_m4a_exact_length(files):
    x, rate = audio.load(files["m4a"])
    # the mp4 sample tables give the true length; the AAC end padding is cut off
    assert rate == RATE and x.shape == (2, N)
    assert corr(x, MIX) > 0.99


@needs_ffmpeg
def test_stem_mp4_reads_first_stream_as_mixture(files):
    mix, rate = audio.load(files["stem"])
    assert rate == RATE and mix.shape == (2, N)
    assert corr(mix, MIX) > 0.99
    other, _ = audio.load(files["stem"], stream=1)
    assert corr(other, STEM) > 0.99
    with pytest.raises(UnmixError, match="no audio stream 2"):
        audio.load(files["stem"], stream=2)


@needs_ffmpeg
@pytest.mark.parametrize("key", ["mp3", "m4a", "stem"])
def test_ffmpeg_chunk_matches_full_decode(files, key):
    # Seeking must land on the same samples as decoding from the start, with
    # no decoder warm-up glitch at the beginning of the chunk.
    full, _ = audio.load(files[key])
    x, _ = audio.load(files[key], start=0.5, duration=0.25)
    assert x.shape == (2, 11025)
    np.testing.assert_allclose(x, full[:, 22050:22050 + 11025], atol=1e-4)


@needs_ffmpeg
def test_ffmpeg_load_with_rate(files):
    x, rate = audio.load(files["m4a"], rate=22050)
    assert rate == 22050 and x.shape == (2, 22050)
    assert corr(x, audio.resample(MIX, RATE, 22050)) > 0.99


@needs_ffmpeg
def test_wav_that_libsndfile_cannot_open_goes_to_ffmpeg(files, tmp_path):
    path = tmp_path / "g726.wav"  # G.726 ADPCM in a RIFF wave: libsndfile refuses it
    ffmpeg("-i", files["float.wav"], "-c:a", "g726", "-ar", "8000", "-ac", "1", path)
    with pytest.raises(RuntimeError):
        sf.info(path)
    x, rate = audio.load(path)
    assert rate == 8000 and x.shape[0] == 1 and abs(x.shape[1] - 8000) <= 8
    mono = audio.resample(audio.fit_channels(MIX, 1), RATE, 8000)
    assert corr(x[0, :7900], mono[0, :7900]) > 0.9
    assert audio.info(path).rate == 8000


@needs_ffmpeg
def test_info_ffmpeg(files):
    m4a = audio.info(files["m4a"])
    assert (m4a.rate, m4a.nb_channels, m4a.nb_timesteps) == (RATE, 2, N)
    mp3 = audio.info(files["mp3"])
    assert (mp3.rate, mp3.nb_channels) == (RATE, 2)
    assert abs(mp3.nb_timesteps - N) <= 2 * 1152  # container metadata: within two mp3 frames
    stem = audio.info(files["stem"], stream=1)
    assert (stem.rate, stem.nb_channels, stem.nb_timesteps) == (RATE, 2, N)


# ------------------------------------------------------------------ resample


@pytest.mark.parametrize("n", [1, 999, 44101])
@pytest.mark.parametrize("orig, new", [(44100, 16000), (44100, 48000), (8000, 44100), (48000, 44100)])
def test_resample_length(n, orig, new):
    x = np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)
    y = audio.resample(x, orig, new)
    assert y.dtype == np.float32 and y.shape == (2, round(n * new / orig))


def test_resample_keeps_a_sines_frequency_and_level():
    x = tones([1000.0], [0.5], n=RATE)
    y = audio.resample(x, RATE, 16000)
    assert y.shape == (1, 16000)
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins for one second
    inner = slice(800, -800)  # away from the filter's edge transients
    assert np.sqrt(np.mean(y[0, inner] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


def test_resample_identity_and_bad_rate():
    x = tones([440.0], [0.5], n=100)
    assert audio.resample(x, 44100, 44100) is x
    with pytest.raises(UnmixError, match="positive"):
        audio.resample(x, 44100, 0)


# -------------------------------------------------------------- fit_channels


def test_fit_channels_mono_to_stereo_duplicates():
    y = audio.fit_channels(MIX[:1], 2)
    assert y.shape == (2, N)
    np.testing.assert_array_equal(y[0], MIX[0])
    np.testing.assert_array_equal(y[1], MIX[0])


def test_fit_channels_stereo_to_mono_averages():
    y = audio.fit_channels(MIX, 1)
    assert y.shape == (1, N)
    np.testing.assert_allclose(y[0], (MIX[0] + MIX[1]) / 2, atol=1e-7)


def test_fit_channels_matching_is_identity():
    assert audio.fit_channels(MIX, 2) is MIX


def test_fit_channels_surround_needs_downmix():
    six = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    with pytest.raises(UnmixError, match="6 channels.*downmix"):
        audio.fit_channels(six, 2)
    stereo = audio.fit_channels(six, 2, downmix=True)
    np.testing.assert_allclose(stereo, np.tile(six.mean(axis=0), (2, 1)))
    mono = audio.fit_channels(six, 1, downmix=True)
    np.testing.assert_allclose(mono, six.mean(axis=0, keepdims=True))


# ---------------------------------------------------------------------- save


def test_save_float_wav_round_trip_keeps_overs(tmp_path):
    loud = MIX * 3.0  # beyond full scale, as separated stems can be
    path = audio.save(tmp_path / "sub" / "out.wav", loud, RATE)
    assert path == tmp_path / "sub" / "out.wav"
    assert sf.info(path).subtype == "FLOAT"
    x, rate = audio.load(path)
    assert rate == RATE
    np.testing.assert_array_equal(x, loud)


def test_save_flac_pcm24_clips(tmp_path):
    loud = MIX * 3.0
    path = audio.save(tmp_path / "out.flac", loud, RATE)
    assert sf.info(path).subtype == "PCM_24"
    x, _ = audio.load(path)
    np.testing.assert_allclose(x, np.clip(loud, -1.0, 1.0), atol=2.0 ** -23)
    assert x.max() <= 1.0 and x.min() >= -1.0


def test_save_rejects_unsupported_extension(tmp_path):
    with pytest.raises(UnmixError, match=r"out\.mp3.*\.wav or \.flac"):
        audio.save(tmp_path / "out.mp3", MIX, RATE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("earlier", [False, True])
def test_save_failure_leaves_nothing_behind(tmp_path, monkeypatch, earlier):
    target = tmp_path / "vocals.wav"
    if earlier:
        audio.save(target, MIX, RATE)
        before = target.read_bytes()

    def failing_write(file, data, samplerate, **kwargs):
        Path(file).write_bytes(b"RIFF half a header")  # a partial file, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audio.sf, "write", failing_write)
    with pytest.raises(UnmixError, match=r"could not write .*vocals\.wav: .*No space left"):
        audio.save(target, STEM, RATE)
    if earlier:
        assert target.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["vocals.wav"]
    else:
        assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------- errors


def assert_one_line_error(path, match, **kwargs):
    with pytest.raises(UnmixError, match=match) as exc:
        audio.load(path, **kwargs)
    message = str(exc.value)
    assert "\n" not in message and Path(path).name in message
    return message


def test_error_missing_file(tmp_path):
    assert_one_line_error(tmp_path / "nope.wav", "no such file")


def test_error_directory(tmp_path):
    d = tmp_path / "song.wav"
    d.mkdir()
    assert_one_line_error(d, "is a directory")


def test_error_empty_file(tmp_path):
    empty = tmp_path / "empty.flac"
    empty.touch()
    assert_one_line_error(empty, r"empty \(0 bytes\)")


def test_error_no_samples(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros((0, 2), dtype=np.float32), RATE)
    assert path.stat().st_size > 0  # a valid header, no frames
    assert_one_line_error(path, "no audio samples")
    with pytest.raises(UnmixError, match="no audio samples"):
        audio.info(path)


@pytest.mark.parametrize("name", ["notes.wav", "notes.mp3", "notes.bin"])
def test_error_not_audio(tmp_path, name):
    if not HAVE_FFMPEG and not name.endswith(".wav"):
        pytest.skip("ffmpeg/ffprobe not installed")
    path = tmp_path / name
    path.write_text("these are not the samples you are looking for\n" * 20)
    assert_one_line_error(path, "not a readable audio file|could not be decoded")


@needs_ffmpeg
def test_error_video_without_audio(tmp_path):
    path = tmp_path / "video.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:d=0.2", "-c:v", "mpeg4", path)
    assert_one_line_error(path, "has no audio stream")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_nan_or_inf_samples(tmp_path, bad):
    x = MIX.copy()
    x[1, 100] = bad
    path = tmp_path / "broken.wav"
    sf.write(path, x.T, RATE, subtype="FLOAT")
    assert_one_line_error(path, "NaN or infinite")


def test_error_ffmpeg_missing(files, tmp_path, monkeypatch):
    path = tmp_path / "song.mp3"
    path.write_bytes(b"\xff\xfb" * 100)  # content is irrelevant: ffmpeg is looked up first
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert_one_line_error(path, r"needs ffmpeg \(ffprobe is not on PATH\): install it")
    # libsndfile formats need no ffmpeg, and a broken one says so plainly
    x, _ = audio.load(files["pcm24.flac"])
    assert x.shape == (2, N)
    bad = tmp_path / "bad.wav"
    bad.write_text("not a wave")
    assert_one_line_error(bad, "not a readable audio file")


@pytest.mark.parametrize("key", ["float.wav", pytest.param("mp3", marks=needs_ffmpeg),
                                 pytest.param("m4a", marks=needs_ffmpeg)])
def test_error_start_beyond_the_end(files, key):
    assert_one_line_error(files[key], r"start 5 s is beyond the end", start=5.0)


def test_error_bad_span(files):
    assert_one_line_error(files["float.wav"], "start must be >= 0", start=-1.0)
    assert_one_line_error(files["float.wav"], "duration must be > 0", duration=0.0)


def test_error_stream_of_single_stream_file(files):
    assert_one_line_error(files["float.wav"], "single audio stream; there is no stream 1", stream=1)


def test_stream_writer_equals_one_shot_save(tmp_path):
    from unmix.io.audio import StreamWriter, save

    audio = np.random.default_rng(0).uniform(-1.5, 1.5, (2, 5000)).astype(np.float32)
    for ext in (".wav", ".flac"):
        with StreamWriter(tmp_path / f"chunks{ext}", 44100, 2) as writer:
            for start in range(0, 5000, 1234):
                writer.write(audio[:, start:start + 1234])
        save(tmp_path / f"whole{ext}", audio, 44100)
        chunked, _ = sf.read(tmp_path / f"chunks{ext}", dtype="float32")
        whole, _ = sf.read(tmp_path / f"whole{ext}", dtype="float32")
        np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("shape", [(2, 3000), (3000, 2), (1, 7), (7, 1), (3, 3), (0, 2), (2, 0)])
def test_transposed_is_a_contiguous_float32_copy_of_the_transpose(shape):
    from unmix.io.audio import transposed

    audio = np.random.default_rng(0).standard_normal(shape)
    out = transposed(audio)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, audio.T.astype(np.float32))
