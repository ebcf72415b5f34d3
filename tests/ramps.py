"""Synthetic datasets of integer "ramps" for the dataset, loader and MUSDB tests (written in tmp_path).

Most stems are float WAVs of integer ramps that encode where a sample came
from: value = track * 100000 + source * 20000 + channel * 10000 + frame. Sums
of a few such values are exact in float32, so a chunk tells its track, source,
channel order and start, and mixtures can be checked exactly.
"""
import numpy as np
import soundfile as sf

from unmix.io.musdb import MUSDB_SOURCES

RATE = 8000
FRAMES = 8000  # 1 s tracks
SEQ = 0.25  # 2000-sample chunks
SEQ_LEN = 2000


def ramp(track, source, frames=FRAMES, channels=2):
    """(frames, channels) float32 ramp that encodes (track, source, channel, frame)."""
    t = np.arange(frames)
    cols = [track * 100000 + source * 20000 + c * 10000 + t for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def decode(chunk):
    """(track, source, first channel, start) of an unaugmented ramp chunk (channels, time)."""
    v = int(chunk[0, 0])
    rem = v % 100000
    return v // 100000, rem // 20000, (rem % 20000) // 10000, rem % 10000


def ramp_slice(track, source, start, n=SEQ_LEN, frames=FRAMES):
    return ramp(track, source, frames)[start:start + n].T


def write(path, audio, rate=RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype="FLOAT")


def make_musdb(root, names, frames=FRAMES, mixture=True):
    """MUSDB18-HQ layout: root/train/<name>/{mixture,vocals,drums,bass,other}.wav."""
    for i, name in enumerate(names):
        stems = [ramp(i, s, frames) for s in range(4)]
        for s, source in enumerate(MUSDB_SOURCES):
            write(root / "train" / name / f"{source}.wav", stems[s])
        if mixture:
            write(root / "train" / name / "mixture.wav", np.sum(stems, axis=0))
    return root


def make_trackfolder(root, split, nb_tracks, files, frames=FRAMES):
    """root/split/<k>/<file> for each file; file j of track k is ramp(k, j)."""
    for k in range(nb_tracks):
        for j, f in enumerate(files):
            write(root / split / f"{k:02d}" / f, ramp(k, j, frames))
    return root
