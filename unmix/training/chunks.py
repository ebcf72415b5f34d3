"""Training audio on disk: probe each file once, then read chunks of it (numpy only).

`probe` / `probe_stems` record a file's length, rate and channels in an `AudioRef` when a
dataset is built; `read_chunk` then decodes frames ``[start, stop)`` of it with a seek, as
often as the loader asks. `fit_channels_dropping_extra` matches channel counts the way the
reference's training does, and `common_format` checks that a dataset's files can be mixed.

Why not `unmix.io.audio`, separation's reader: it takes seconds, not frames, and checks every
call (the path, a libsndfile probe, NaN samples), which would add a file open per chunk on the
loader's hot path; it refuses a start past the end, where a file shorter than probed is padded
with zeros here; and it decodes ``.stem.mp4`` through its own ffmpeg pipe (with a pre-roll),
where training reads stems through stempeg, as musdb does, with stempeg's seeks. Moving to it
would change the samples of stem files and the errors of odd files, so training keeps this
reader. The channel fitting differs too (see `fit_channels_dropping_extra`).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf

from unmix.errors import UnmixError


@dataclass(frozen=True)
class AudioRef:
    """One audio stream on disk with its probed length (frames), rate and channels.

    `stem_id` is None for files soundfile reads (wav, flac, ...) and the stream
    index for a ``.stem.mp4`` read through stempeg.
    """

    path: str
    frames: int
    rate: float
    channels: int
    stem_id: Optional[int] = None


def probe(path) -> AudioRef:
    """Probe a soundfile-readable file (header only)."""
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for unreadable files
        raise UnmixError(f"cannot read audio file {path}: {e}") from None
    return AudioRef(str(path), int(info.frames), float(info.samplerate), int(info.channels))


_STEM_INFO: Dict[str, object] = {}  # per process: stempeg.Info costs an ffprobe run


def _stem_info(path: str):
    """stempeg's probe of a stems file, once per file and process."""
    if path not in _STEM_INFO:
        import stempeg  # only .stem.mp4 files need stempeg (and ffmpeg behind it)

        try:
            _STEM_INFO[path] = stempeg.Info(path)
        except Exception as e:
            raise UnmixError(f"cannot read stems file {path} (is ffmpeg installed?): {e}") from None
    return _STEM_INFO[path]


def probe_stems(path) -> List[AudioRef]:
    """Probe every audio stream of a ``.stem.mp4`` (needs ffprobe)."""
    info = _stem_info(str(path))
    return [
        AudioRef(str(path), int(info.samples(k)), float(info.rate(k)), int(info.channels(k)), k)
        for k in range(info.nb_audio_streams)
    ]


def fit_channels_dropping_extra(audio: np.ndarray, nb_channels: Optional[int]) -> np.ndarray:
    """Convert `audio` (channels, time) to `nb_channels` (None keeps it).

    Mono is repeated; to mono is the channel mean; otherwise extra channels are
    dropped, like the reference's `_augment_force_stereo`. Separation's
    `unmix.io.audio.fit_channels` differs: it refuses more than two channels (or
    averages them all with `downmix`) and averages in float64.
    """
    have = audio.shape[0]
    if nb_channels is None or have == nb_channels:
        return audio
    if nb_channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if have == 1:
        return np.repeat(audio, nb_channels, axis=0)
    if have > nb_channels:
        return audio[:nb_channels]
    raise UnmixError(f"cannot make {nb_channels} channels out of {have}")


def read_chunk(ref: AudioRef, start: int = 0, stop: Optional[int] = None,
               nb_channels: Optional[int] = None) -> np.ndarray:
    """Read frames ``[start, stop)`` of `ref` as float32 (nb_channels, stop - start).

    Only that chunk is decoded (a seek). `stop=None` reads to the end. The
    result always has exactly ``stop - start`` frames (zero padded if the file
    turns out shorter than probed).
    """
    stop = ref.frames if stop is None else stop
    try:
        if ref.stem_id is None:
            audio, _ = sf.read(ref.path, start=start, stop=stop, dtype="float32", always_2d=True)
        else:
            audio = _read_stem(ref, start, stop)
    except UnmixError:
        raise
    except Exception as e:
        raise UnmixError(f"cannot read audio file {ref.path}: {e}") from None
    audio = np.ascontiguousarray(audio.T, dtype=np.float32)
    if audio.shape[1] != stop - start:
        audio = _fix_length(audio, stop - start)
    return fit_channels_dropping_extra(audio, nb_channels)


def _read_stem(ref: AudioRef, start: int, stop: int) -> np.ndarray:
    """Frames ``[start, stop)`` of one stream of a ``.stem.mp4``, ``(nb_timesteps, nb_channels)``."""
    import stempeg  # only .stem.mp4 files need stempeg (and ffmpeg behind it)

    full = start == 0 and stop >= ref.frames
    audio, _ = stempeg.read_stems(
        ref.path,
        start=None if full else start / ref.rate,
        duration=None if full else (stop - start) / ref.rate,
        stem_id=ref.stem_id,
        dtype=np.float32,
        info=_stem_info(ref.path),
    )
    return audio


def _fix_length(audio: np.ndarray, length: int) -> np.ndarray:
    """`audio` ``(nb_channels, n)`` cut or zero-padded to `length` frames."""
    if audio.shape[1] >= length:
        return audio[:, :length]
    return np.pad(audio, ((0, 0), (0, length - audio.shape[1])))


def common_format(refs: Sequence[AudioRef], sample_rate: Optional[float],
                   nb_channels: Optional[int], where) -> float:
    """Check that `refs` share one sample rate (and channel count); return the rate."""
    if not refs:
        raise UnmixError(f"{where}: no tracks found")
    rates = sorted({r.rate for r in refs})
    if len(rates) > 1:
        raise UnmixError(f"{where}: files have different sample rates {rates}; resample them first")
    if sample_rate is not None and rates[0] != float(sample_rate):
        raise UnmixError(f"{where}: files are at {rates[0]:g} Hz, expected {float(sample_rate):g} Hz")
    channels = sorted({r.channels for r in refs})
    if nb_channels is None and len(channels) > 1:
        raise UnmixError(f"{where}: files have different channel counts {channels}; pass nb_channels")
    return rates[0]
