"""Audio files in and out: read, resample, match channels, write.

Arrays are float32 ``(nb_channels, nb_timesteps)`` everywhere in this module,
the layout open-unmix-pytorch uses per sample.

Reading has two back ends:

* libsndfile (through soundfile) for wav / flac / ogg / aiff and the other
  formats it knows: it seeks, so ``start``/``duration`` read only the part
  asked for, sample-exact.
* an ``ffmpeg`` subprocess for everything else (mp3, m4a, aac, mp4, MUSDB18's
  ``.stem.mp4``): ffmpeg decodes to raw float32 on a pipe. A stem file holds
  the mixture as its first audio stream, which is what is read by default.
  A file with a libsndfile extension that libsndfile cannot open (say a wav
  holding mp3 data) is handed to ffmpeg too.

Writing: wav and flac through libsndfile (`save`, `StreamWriter`), mp3 through an ffmpeg
pipe (`Mp3Writer`); `open_writer` picks one from the extension and `--bits`.

Every problem a user can cause (missing file, not audio, a body that does not
decode, empty, NaN samples, ffmpeg missing, start past the end, unwritable
output) raises `UnmixError` with one line that names the file.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from unmix.errors import UnmixError
from unmix.io.files import atomic_path

# soundfile >= 0.11 raises LibsndfileError (a RuntimeError); older ones RuntimeError.
_SF_ERROR = getattr(sf, "LibsndfileError", RuntimeError)

# Extensions read by libsndfile; everything else goes to ffmpeg.
SNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc",
     ".w64", ".rf64", ".caf", ".au", ".snd"}
)

# Extension -> libsndfile subtype used by `save`.
# wav: FLOAT, because separated stems are float32 and routinely exceed 1.0
#   (estimates of loud sources, Wiener overshoot); float wav keeps them
#   unclipped and round-trips the array bit-exactly (the reference also writes
#   float wav). flac: PCM_24, since FLAC stores integers only; 24 bits put the
#   quantisation noise at about -144 dBFS, far below any separation artefact.
WRITE_SUBTYPES = {".wav": "FLOAT", ".flac": "PCM_24"}

# Bits per sample -> libsndfile subtype, for the streamed stems of `unmix separate --bits`.
# 32 is float (wav only): FLAC stores integers of at most 24 bits.
BITS_SUBTYPES = {".wav": {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}, ".flac": {16: "PCM_16", 24: "PCM_24"}}

# Sample rates a file may declare: a header saying 1 Hz would make a few kB of samples
# resample to gigabytes (44100 output samples per input sample at 44.1 kHz)
RATE_RANGE = (1000, 1_000_000)

# Seconds decoded before a requested start and thrown away (see _load_ffmpeg).
_PREROLL_SECONDS = 0.1

_FFMPEG_HINT = "install it (e.g. `apt-get install ffmpeg`, `brew install ffmpeg` or `conda install ffmpeg`)"


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, without decoding it.

    ``nb_timesteps`` is exact for libsndfile formats and mp4/m4a; for other
    compressed formats it comes from the container's metadata and can exceed
    what `load` returns by the encoder's delay and padding (for mp3 about two
    codec frames, some 2000 samples).
    """

    rate: int
    nb_channels: int
    nb_timesteps: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.nb_timesteps / self.rate


# --------------------------------------------------------------------- reading


def load(path, start=0.0, duration=None, rate=None, stream=0):
    """Read an audio file (or a part of it) as float32.

    Args:
        path: audio file; wav/flac/ogg/aiff via libsndfile, anything else via ffmpeg.
        start: where to start reading, in seconds.
        duration: how many seconds to read (None: to the end). A part that runs
            past the end of the file is returned shorter, not padded.
        rate: sample rate to return; the audio is resampled (soxr, 'HQ') when it
            differs from the file's. None keeps the file's rate.
        stream: index of the audio stream for multi-stream files read by ffmpeg
            (a MUSDB18 ``.stem.mp4`` holds mixture, drums, bass, other, vocals as
            streams 0-4); files read by libsndfile have stream 0 only.

    Returns:
        ``(audio, rate)``: float32 array ``(nb_channels, nb_timesteps)`` and its
        sample rate in Hz.
    """
    path = _check_input_path(path)
    _check_span(path, start, duration)
    if rate is not None and rate <= 0:
        raise UnmixError(f"{path}: sample rate must be positive, got {rate}")
    if _uses_sndfile(path):
        if stream != 0:
            raise UnmixError(f"{path} has a single audio stream; there is no stream {stream}")
        audio, file_rate = _load_sndfile(path, start, duration)
    else:
        audio, file_rate = _load_ffmpeg(path, start, duration, stream)
    if not RATE_RANGE[0] <= file_rate <= RATE_RANGE[1]:
        raise UnmixError(f"{path}: its header says {file_rate} Hz; unmix reads {RATE_RANGE[0]} to "
                         f"{RATE_RANGE[1]:,} Hz (a corrupt or crafted header?)")
    if not np.isfinite(audio).all():
        raise UnmixError(f"{path} contains NaN or infinite samples")
    if rate is not None and rate != file_rate:
        return resample(audio, file_rate, rate), rate
    return audio, file_rate


def info(path, stream=0):
    """Sample rate, channel count and length of an audio file, as `AudioInfo`."""
    path = _check_input_path(path)
    if _uses_sndfile(path):
        meta = sf.info(str(path))
        if meta.frames == 0:
            raise UnmixError(f"{path} contains no audio samples")
        return AudioInfo(int(meta.samplerate), int(meta.channels), int(meta.frames))
    probe, _ = _probe(path, stream)
    if probe.nb_timesteps is None:
        # No length in the metadata (e.g. a raw ADTS stream): count by decoding.
        audio, _ = _load_ffmpeg(path, 0.0, None, stream)
        return AudioInfo(probe.rate, probe.nb_channels, audio.shape[1])
    return probe


def _check_input_path(path):
    path = Path(path).expanduser()
    if not path.exists():
        raise UnmixError(f"{path}: no such file")
    if path.is_dir():
        raise UnmixError(f"{path} is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise UnmixError(f"{path} is empty (0 bytes)")
    return path


def _check_span(path, start, duration):
    if start < 0:
        raise UnmixError(f"{path}: start must be >= 0 s, got {start}")
    if duration is not None and duration <= 0:
        raise UnmixError(f"{path}: duration must be > 0 s, got {duration}")


def _uses_sndfile(path):
    """True when libsndfile can open the file (by extension, then by trying)."""
    if path.suffix.lower() not in SNDFILE_EXTENSIONS:
        return False
    try:
        sf.info(str(path))
        return True
    except _SF_ERROR as exc:
        if shutil.which("ffmpeg") is None:
            # No second opinion available: this is the error to show.
            raise UnmixError(f"{path} is not a readable audio file ({_one_line(exc)})") from None
        return False


def _span_frames(rate, start, duration):
    """(first frame, frame count or -1 for 'to the end') of a span in seconds."""
    first = int(round(start * rate))
    count = -1 if duration is None else max(1, int(round(duration * rate)))
    return first, count


def _load_sndfile(path, start, duration):
    try:
        with sf.SoundFile(str(path)) as f:
            rate, total = f.samplerate, f.frames
            first, count = _span_frames(rate, start, duration)
            if total == 0:
                raise UnmixError(f"{path} contains no audio samples")
            if first >= total:
                raise UnmixError(f"{path}: start {start:g} s is beyond the end ({total / rate:g} s)")
            f.seek(first)
            data = f.read(count, dtype="float32", always_2d=True)  # (nb_timesteps, nb_channels)
    except _SF_ERROR as exc:  # a header that opens but a body that does not decode (a truncated FLAC)
        raise UnmixError(f"{path} could not be decoded ({_one_line(exc)})") from None
    return transposed(data), int(rate)


def _ffmpeg_tool(name, path, doing="reading"):
    exe = shutil.which(name)
    if exe is None:
        raise UnmixError(f"{doing} {path} needs ffmpeg ({name} is not on PATH): {_FFMPEG_HINT}")
    return exe


def _probe(path, stream):
    """Describe audio stream `stream` with ffprobe.

    Returns:
        ``(AudioInfo, exact)``: nb_timesteps is None when the file states no
        length; `exact` is True for mp4-family containers, whose sample tables
        give the true length (the AAC decoder's output runs past it by the
        encoder's end padding, which `_load_ffmpeg` cuts off).
    """
    cmd = [_ffmpeg_tool("ffprobe", path), "-v", "error", "-select_streams", f"a:{stream}",
           "-show_entries", "stream=sample_rate,channels,duration:format=duration,format_name",
           "-of", "json", str(path)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise UnmixError(f"{path} is not a readable audio file ({_last_line(proc.stderr)})")
    meta = json.loads(proc.stdout or b"{}")
    streams, fmt = meta.get("streams") or [], meta.get("format") or {}
    if not streams:
        what = "no audio stream" if stream == 0 else f"no audio stream {stream}"
        raise UnmixError(f"{path} has {what}")
    s = streams[0]
    rate, channels = int(s.get("sample_rate") or 0), int(s.get("channels") or 0)
    if rate <= 0 or channels <= 0:
        raise UnmixError(f"{path} is not a readable audio file (no sample rate or channel count)")
    seconds = _float_or_none(s.get("duration")) or _float_or_none(fmt.get("duration"))
    nb_timesteps = None if seconds is None else int(round(seconds * rate))
    exact = nb_timesteps is not None and "mp4" in fmt.get("format_name", "").split(",")
    return AudioInfo(rate, channels, nb_timesteps), exact


def _load_ffmpeg(path, start, duration, stream):
    probe, exact = _probe(path, stream)
    rate, channels = probe.rate, probe.nb_channels
    first, count = _span_frames(rate, start, duration)
    if exact and first >= probe.nb_timesteps:
        raise UnmixError(f"{path}: start {start:g} s is beyond the end ({probe.duration:g} s)")
    # Decoders need a little history (MDCT overlap, the mp3 bit reservoir):
    # right after a seek their first frames are wrong. So seek a bit earlier
    # and drop that pre-roll ourselves.
    seek = max(0, first - int(_PREROLL_SECONDS * rate))
    cmd = [_ffmpeg_tool("ffmpeg", path), "-nostdin", "-hide_banner", "-v", "error"]
    if seek > 0:
        # As an input option -ss seeks in the container (fast for a chunk late
        # in a long song); ffmpeg then trims the decoded audio to that time.
        cmd += ["-ss", f"{seek / rate:.9f}"]
    if count > 0:
        cmd += ["-t", f"{(first - seek + count) / rate:.9f}"]
    # -ac/-ar pin the layout so the raw stream always reshapes to what we probed.
    cmd += ["-i", str(path), "-map", f"0:a:{stream}", "-vn", "-sn", "-dn",
            "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-ar", str(rate), "pipe:1"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise UnmixError(f"{path} could not be decoded ({_last_line(proc.stderr)})")
    frames = len(proc.stdout) // (4 * channels)
    data = np.frombuffer(proc.stdout, dtype="<f4", count=frames * channels).reshape(frames, channels)
    if exact:
        data = data[: probe.nb_timesteps - seek]
    data = data[first - seek:]
    if count > 0:
        data = data[:count]  # -t is in seconds; cut to the exact sample count asked for
    if data.shape[0] == 0:
        if first > 0:
            end = "" if probe.nb_timesteps is None else f" ({probe.duration:g} s)"
            raise UnmixError(f"{path}: start {start:g} s is beyond the end{end}")
        raise UnmixError(f"{path} contains no audio samples")
    return transposed(data), rate


def _float_or_none(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _last_line(stderr):
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no message from ffmpeg"


def _one_line(exc):
    return " ".join(str(exc).split())


# ------------------------------------------------------------ signal shaping


def resample(audio, orig_rate, new_rate):
    """Change the sample rate with soxr (quality 'HQ').

    Args:
        audio: float array ``(nb_channels, nb_timesteps)``.

    Returns:
        float32 ``(nb_channels, round(nb_timesteps * new_rate / orig_rate))``;
        `audio` itself (as float32) when the rates are equal.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if orig_rate <= 0 or new_rate <= 0:
        raise UnmixError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return audio
    target = int(round(audio.shape[1] * new_rate / orig_rate))
    # soxr wants (frames, channels) with plain C strides: a fresh copy, since
    # ascontiguousarray keeps odd strides on length-1 axes, which soxr refuses.
    out = soxr.resample(transposed(audio), orig_rate, new_rate, quality="HQ")
    # soxr already yields round(n * ratio) frames; the cut/pad pins the contract.
    out = out[:target]
    if out.shape[0] < target:
        out = np.pad(out, ((0, target - out.shape[0]), (0, 0)))
    return transposed(out)


def fit_channels(audio, nb_channels, downmix=False):
    """Give `audio` the channel count a model expects.

    Mono becomes stereo (or more) by duplication, stereo becomes mono by
    averaging. Input with more than two channels raises `UnmixError` unless
    `downmix` is True: then all channels are averaged to one (the channel
    layout is unknown here, so no surround-aware downmix is attempted) and
    duplicated to `nb_channels`.

    Args:
        audio: float array ``(channels_in, nb_timesteps)``.

    Returns:
        float32 ``(nb_channels, nb_timesteps)``; `audio` itself when it fits.
    """
    audio = np.asarray(audio, dtype=np.float32)
    have = audio.shape[0]
    if have == nb_channels:
        return audio
    if have > 2 and not downmix:
        raise UnmixError(
            f"audio has {have} channels but the model takes {nb_channels}: "
            "downmix it (--downmix) or give a mono or stereo file"
        )
    if have == 1 or have > 2 or nb_channels == 1:
        mono = audio.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        return np.repeat(mono, nb_channels, axis=0)
    raise UnmixError(f"cannot turn {have}-channel audio into {nb_channels} channels")


# --------------------------------------------------------------------- writing


def save(path, audio, rate, subtype=None):
    """Write float32 ``(nb_channels, nb_timesteps)`` audio to .wav or .flac, atomically.

    The file appears complete or not at all: it is written under a temporary
    name and renamed, so a failure (full disk, a crash) leaves neither a
    partial file nor a damaged earlier one.

    Args:
        path: output file; the extension picks the format (.wav or .flac).
        rate: sample rate in Hz.
        subtype: libsndfile subtype, default FLOAT for wav and PCM_24 for
            flac (see `WRITE_SUBTYPES`). Float wav keeps samples beyond
            [-1, 1] as they are; for PCM subtypes they are clipped to full
            scale here (older libsndfile versions wrap them around instead).

    Returns:
        the written path.
    """
    path = Path(path).expanduser()
    ext = path.suffix.lower()
    if ext not in WRITE_SUBTYPES:
        raise UnmixError(f"{path}: cannot write '{ext or path.name}' files, use .wav or .flac")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"audio must be (nb_channels, nb_timesteps), got shape {audio.shape}")
    subtype = subtype or WRITE_SUBTYPES[ext]
    if subtype.upper().startswith("PCM"):
        audio = np.clip(audio, -1.0, 1.0)
    fmt = "WAV" if ext == ".wav" else "FLAC"
    try:
        with atomic_path(path) as tmp:
            sf.write(str(tmp), transposed(audio), int(rate), subtype=subtype, format=fmt)
    except (OSError, _SF_ERROR) as exc:
        raise UnmixError(f"could not write {path}: {_one_line(exc)}") from None
    return path


def transposed(audio, dtype=np.float32):
    """A C-contiguous copy of ``audio.T`` for 2-D audio, (nb_channels, n) <-> (n, nb_channels).

    Copied one channel at a time: numpy's own transposing copy of a (2, n) array into the
    interleaved layout is 12x slower (2.1 against 0.17 ms for 7 s of stereo)."""
    out = np.empty(audio.shape[::-1], dtype)
    if audio.shape[0] <= audio.shape[1]:  # (nb_channels, n) -> (n, nb_channels)
        for c in range(audio.shape[0]):
            out[:, c] = audio[c]
    else:  # (n, nb_channels) -> (nb_channels, n)
        for c in range(audio.shape[1]):
            out[c] = audio[:, c]
    return out


class StreamWriter:
    """Writes ``(nb_channels, n)`` float32 chunks, in order, to one .wav or .flac file.

    For long separations whose stems are never held whole in memory. Not atomic by itself:
    open it inside a staging folder that is renamed when every stem is complete
    (see `unmix.separation.stems`). Formats and clipping as `save`.
    """

    def __init__(self, path, rate, nb_channels, subtype=None):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in WRITE_SUBTYPES:
            raise UnmixError(f"{path}: cannot write '{ext or self.path.name}' files, use .wav or .flac")
        self.subtype = subtype or WRITE_SUBTYPES[ext]
        try:
            self.file = sf.SoundFile(str(self.path), "w", int(rate), nb_channels, subtype=self.subtype,
                                     format="WAV" if ext == ".wav" else "FLAC")
        except (OSError, _SF_ERROR) as exc:
            raise UnmixError(f"could not write {path}: {_one_line(exc)}") from None

    def write(self, chunk):
        chunk = np.asarray(chunk, dtype=np.float32)
        if self.subtype.upper().startswith("PCM"):
            chunk = np.clip(chunk, -1.0, 1.0)
        try:
            self.file.write(transposed(chunk))
        except (OSError, _SF_ERROR) as exc:
            raise UnmixError(f"could not write {self.path}: {_one_line(exc)}") from None

    def close(self):
        try:
            self.file.close()
        except (OSError, _SF_ERROR) as exc:
            raise UnmixError(f"could not write {self.path}: {_one_line(exc)}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Mp3Writer:
    """Writes ``(nb_channels, n)`` float32 chunks, in order, to an mp3 file through ffmpeg
    (libmp3lame at a constant `bitrate` in kbit/s), with the interface of `StreamWriter`.

    The samples go to ffmpeg's stdin as raw float32; its messages go to a temporary file
    rather than a pipe, so that a chatty ffmpeg can never block on a full pipe.
    """

    def __init__(self, path, rate, nb_channels, bitrate=320):
        self.path = Path(path)
        cmd = [_ffmpeg_tool("ffmpeg", path, doing="writing"), "-nostdin", "-hide_banner", "-v", "error", "-y",
               "-f", "f32le", "-ar", str(int(rate)), "-ac", str(int(nb_channels)), "-i", "pipe:0",
               "-c:a", "libmp3lame", "-b:a", f"{int(bitrate)}k", "-f", "mp3", str(self.path)]
        self.messages = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.messages)
        self.rate, self.frames = int(rate), 0

    def write(self, chunk):
        chunk = np.asarray(chunk, dtype=np.float32)
        try:
            self.proc.stdin.write(transposed(chunk).tobytes())
        except OSError:  # ffmpeg stopped (a broken pipe): its message says why
            self.close()
            raise UnmixError(f"could not write {self.path}: ffmpeg stopped") from None
        self.frames += chunk.shape[-1]

    def close(self):
        """Wait for ffmpeg to finish the file, then check that the file holds every frame written
        (`_check_mp3`): on a full disk ffmpeg can exit 0 with a truncated file. Raises UnmixError
        with ffmpeg's last message on failure. Idempotent."""
        if self.messages.closed:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        code = self.proc.wait()
        self.messages.seek(0)
        text = self.messages.read()
        self.messages.close()
        if code != 0 or text.strip():  # at -v error, any message is an error (e.g. "No space left on device")
            raise UnmixError(f"could not write {self.path}: ffmpeg: {_last_line(text)}")
        _check_mp3(self.path, self.frames, self.rate)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:  # an error elsewhere: stop ffmpeg and keep that error
            self.proc.kill()
            with contextlib.suppress(UnmixError):
                self.close()
        return False


def _check_mp3(path, frames, rate):
    """Raise UnmixError unless the mp3 at `path` lasts at least `frames` samples at `rate`.

    The length is the sum of its packets' durations, read by ffprobe without decoding (an mp3
    is longer than its input by the encoder's delay and padding, never shorter).
    """
    cmd = [_ffmpeg_tool("ffprobe", path, doing="checking"), "-v", "error", "-select_streams", "a:0",
           "-show_entries", "stream=time_base:packet=duration", "-of", "json", str(path)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    try:
        meta = json.loads(proc.stdout or b"{}")
        num, den = (int(v) for v in meta["streams"][0]["time_base"].split("/"))
        seconds = sum(int(p["duration"]) for p in meta.get("packets", [])) * num / den
    except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError):
        raise UnmixError(f"could not write {path}: the mp3 written does not read back "
                         f"({_last_line(proc.stderr)})") from None
    if seconds * rate < frames:
        raise UnmixError(f"could not write {path}: it holds {seconds:.2f} of {frames / rate:.2f} s "
                         "(truncated: the disk is full?)")


def output_subtype(ext, bits=None):
    """The libsndfile subtype of a stem file: `ext` '.wav' at `bits` 16, 24 or 32 (float, the
    default) or '.flac' at 16 or 24 (the default); None for '.mp3', which takes no `bits`.
    Raises `UnmixError` for any other combination."""
    if ext == ".mp3":
        if bits is not None:
            raise UnmixError("--bits applies to wav and flac; mp3 takes --mp3-bitrate")
        return None
    subtypes = BITS_SUBTYPES.get(ext)
    if subtypes is None:
        raise UnmixError(f"cannot write '{ext}' files: use .wav, .flac or .mp3")
    bits = bits or max(subtypes)
    if bits not in subtypes:
        why = " (FLAC stores integers only)" if ext == ".flac" else ""
        raise UnmixError(f"{ext[1:]} cannot store {bits}-bit samples: use --bits "
                         + " or ".join(map(str, subtypes)) + why)
    return subtypes[bits]


def open_writer(path, rate, nb_channels, bits=None, mp3_bitrate=320):
    """A streaming writer for `path`, its format from the extension (see `output_subtype`):
    `StreamWriter` for .wav and .flac, `Mp3Writer` (`mp3_bitrate` kbit/s) for .mp3."""
    subtype = output_subtype(Path(path).suffix.lower(), bits)
    if subtype is None:
        return Mp3Writer(path, rate, nb_channels, bitrate=mp3_bitrate)
    return StreamWriter(path, rate, nb_channels, subtype=subtype)
