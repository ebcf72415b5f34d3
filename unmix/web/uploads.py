"""Uploads: to disk within a size limit, accepted only if they decode as audio.

A file is judged by decoding it, not by its name: libsndfile recognises wav, flac, ogg,
aiff, ... by their content; anything else must have an audio stream that ffmpeg decodes. The
whole file is decoded once, streaming (constant memory), so a truncated FLAC or a text file is
refused at upload with one line, and a header that claims more audio than the file holds (which
would make a reader allocate for it) is refused too. The stored file is named ``input.<ext>``
with `<ext>` from the decoded format; the upload's own name is display text only
(`display_name`).
"""
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import soundfile as sf

from unmix.errors import UnmixError
from unmix.io import audio as audio_io

CHUNK_BYTES = 1 << 20
_DECODE_FRAMES = 1 << 16
# libsndfile's major formats -> the extension that sends `unmix.io.audio.load` to libsndfile
SNDFILE_FORMATS = {"WAV": ".wav", "WAVEX": ".wav", "FLAC": ".flac", "OGG": ".ogg", "AIFF": ".aiff",
                   "W64": ".w64", "RF64": ".rf64", "CAF": ".caf", "AU": ".au"}
_UNSAFE = re.compile(r'[\\/:*?"<>|]')
MAX_NAME = 120
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text):
    """``"500M"`` -> 524288000; plain numbers are bytes; K, M, G, T (binary) may follow."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise UnmixError(f"not a size: {text!r} (e.g. 500M, 2G)")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


def format_size(size):
    """524288000 -> ``"500 MB"`` (binary units, as `parse_size` reads them)."""
    for unit in ("TB", "GB", "MB", "KB"):
        scale = SIZE_UNITS[unit[0]]
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


def display_name(name):
    """An upload's name as safe display text and download-name stem: its last path component,
    without control characters or characters that file systems refuse, at most `MAX_NAME`."""
    name = re.split(r"[\\/]", str(name or ""))[-1]
    name = "".join(c for c in name if not unicodedata.category(c).startswith("C"))
    name = " ".join(_UNSAFE.sub("_", name).split()).strip(". ")
    return name[:MAX_NAME].strip(". ") or "untitled"


def name_stem(name):
    """``"song.mp3"`` -> ``"song"`` (for the names of the stems' downloads)."""
    stem = Path(name).stem if "." in name.strip(".") else name
    return stem or name


def receive(stream, length, dest):
    """Copy exactly `length` bytes of the request body `stream` to `dest`.
    Raises UnmixError when the client stops sending before that."""
    remaining = length
    with open(dest, "wb") as out:
        while remaining > 0:
            data = stream.read(min(CHUNK_BYTES, remaining))
            if not data:
                raise UnmixError(f"the upload stopped after {length - remaining} of {length} bytes")
            out.write(data)
            remaining -= len(data)


def check_audio(path):
    """Decode the upload at `path` from start to end; return ``(extension, seconds)``.

    Raises:
        UnmixError: empty, not audio, or not decodable to its end (one line, no path in it:
            the path is ours, the user knows the file by its name).
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise UnmixError("the file is empty (0 bytes)")
    try:
        meta = sf.info(str(path))
    except audio_io._SF_ERROR:
        meta = None
    if meta is not None and meta.format in SNDFILE_FORMATS:
        return SNDFILE_FORMATS[meta.format], _decode_sndfile(path, meta)
    return _decode_ffmpeg(path)


def _decode_sndfile(path, meta):
    frames = 0
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                block = f.read(_DECODE_FRAMES, dtype="float32")
                if not len(block):
                    break
                frames += len(block)
    except audio_io._SF_ERROR as exc:
        raise UnmixError(f"a {meta.format_info} file that cannot be decoded to its end, truncated or damaged "
                         f"({' '.join(str(exc).split())})") from None
    if frames == 0:
        raise UnmixError("the file contains no audio samples")
    if meta.frames > frames + meta.samplerate:  # a reader would allocate for the claimed length
        raise UnmixError(f"a {meta.format_info} file whose header claims {meta.frames / meta.samplerate:.1f} s but "
                         f"that holds {frames / meta.samplerate:.1f} s: truncated or damaged")
    return frames / meta.samplerate


def _decode_ffmpeg(path):
    """Probe and decode with ffmpeg, counting the samples without keeping them."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise UnmixError("not a wav, flac, ogg or aiff file, and ffmpeg (which reads mp3, m4a, ...) is not "
                         "installed here")
    proc = subprocess.run([shutil.which("ffprobe"), "-v", "error", "-select_streams", "a:0", "-show_entries",
                           "stream=sample_rate,channels:format=format_name", "-of",
                           "default=noprint_wrappers=1", str(path)], capture_output=True, text=True, check=False)
    fields = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    try:
        rate, channels = int(fields["sample_rate"]), int(fields["channels"])
    except (KeyError, ValueError):
        raise UnmixError("not an audio file (neither libsndfile nor ffmpeg finds audio in it)") from None
    if rate <= 0 or channels <= 0:
        raise UnmixError("not an audio file (no sample rate or channel count)")
    cmd = [shutil.which("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
           "-f", "s16le", "-ac", str(channels), "-ar", str(rate), "pipe:1"]
    nbytes = 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        for block in iter(lambda: proc.stdout.read(CHUNK_BYTES), b""):
            nbytes += len(block)
        error = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
    if proc.returncode != 0:
        raise UnmixError(f"the file cannot be decoded ({error[-1] if error else 'ffmpeg failed'})")
    if nbytes == 0:
        raise UnmixError("the file contains no audio samples")
    kind = re.sub(r"[^a-z0-9]", "", fields.get("format_name", "").split(",")[0].lower())[:8] or "audio"
    return f".{kind}", nbytes / (2 * channels * rate)
