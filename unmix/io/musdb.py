"""MUSDB18 and MUSDB18-HQ on disk: which tracks there are, and which file holds which part.

One implementation for training (`unmix.training.datasets.MUSDBDataset` probes the parts and reads chunks
of them) and for evaluation (`unmix.evaluation.evaluate` reads whole tracks with `load_track`). Two layouts:

    <root>/<subset>/<track>.stem.mp4                         MUSDB18: 5 streams (see MUSDB_STEM_IDS)
    <root>/<subset>/<track>/{mixture,vocals,drums,bass,other}.{wav,flac}   MUSDB18-HQ (mixture optional)

Arrays are ``(nb_channels, nb_timesteps)`` as in the rest of unmix.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import soundfile as sf

from unmix.errors import UnmixError

MUSDB_SOURCES = ("vocals", "drums", "bass", "other")
# The stream order inside a MUSDB18 .stem.mp4 (musdb's mus.yaml `stem_ids`).
MUSDB_STEM_IDS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
# musdb's `linear_mixture` target: the sources summed in this order (mus.yaml), which a folder
# without a mixture file gets as its mixture (numpy's reduction in this order is musdb's, bit for bit).
LINEAR_MIXTURE = ("vocals", "bass", "drums", "other")
# The official MUSDB18 validation tracks (musdb 0.4 `configs/mus.yaml`,
# `validation_tracks`; a test checks this copy against the installed package).
MUSDB_VALIDATION_TRACKS = (
    "Actions - One Minute Smile",
    "Clara Berry And Wooldog - Waltz For My Victims",
    "Johnny Lokke - Promises & Lies",
    "Patrick Talbot - A Reason To Leave",
    "Triviul - Angelsaint",
    "Alexander Ross - Goodbye Bolero",
    "Fergessen - Nos Palpitants",
    "Leaf - Summerghost",
    "Skelpolu - Human Mistakes",
    "Young Griffo - Pennies",
    "ANiMAL - Rockshow",
    "James May - On The Line",
    "Meaxic - Take A Step",
    "Traffic Experiment - Sirens",
)
AUDIO_EXTS = (".wav", ".flac")


# ----------------------------------------------------------------------------------------
# folders


def existing_root(root) -> Path:
    """`root` as a Path, checked to be a folder (a dataset root, MUSDB or any other kind)."""
    if root is None:
        raise UnmixError("no dataset root given (--root)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UnmixError(f"dataset root {root} does not exist or is not a folder")
    return root


def subdirs(folder: Path) -> List[Path]:
    """The visible sub-folders of `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# ----------------------------------------------------------------------------------------
# tracks


@dataclass(frozen=True)
class Track:
    """One MUSDB track on disk: a ``.stem.mp4`` file or a folder of wav/flac files."""

    name: str
    subset: str
    path: str
    is_stem: bool


def find_tracks(root, subset="test", is_wav=False, names=None) -> List[Track]:
    """The tracks of ``<root>/<subset>``, sorted by name (as musdb lists them).

    A folder is a track when it holds a mixture or source file (any other folder is ignored); a
    track that lacks one of the four sources is found here and refused where it is read.

    Args:
        is_wav: read track folders (MUSDB18-HQ layout) even where ``.stem.mp4`` files exist;
            without it stems are used when there are any, folders otherwise.
        names: keep only these tracks (each must exist).

    Returns:
        list of `Track`.
    """
    folder = existing_root(root) / subset
    if not folder.is_dir():
        raise UnmixError(f"no subset folder {folder} (is --root the MUSDB18 folder holding train/ and test/?)")
    stems = sorted(p for p in folder.glob("*.stem.mp4") if not p.name.startswith("."))
    if stems and not is_wav:
        tracks = [Track(p.name[: -len(".stem.mp4")], subset, str(p), True) for p in stems]
    else:
        tracks = [Track(d.name, subset, str(d), False) for d in subdirs(folder)
                  if any(part_path(d, part) is not None for part in ("mixture",) + MUSDB_SOURCES)]
    if not tracks:
        kind = "track folders" if is_wav else ".stem.mp4 files or track folders"
        raise UnmixError(f"no MUSDB tracks ({kind} with vocals, drums, bass, other) in {folder}")
    if names is not None:
        known = {t.name for t in tracks}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UnmixError(f"unknown track(s) in {folder}: {', '.join(unknown)}")
        tracks = [t for t in tracks if t.name in set(names)]
    return tracks


def part_path(folder, part) -> Optional[Path]:
    """``<folder>/<part>.wav`` or ``.flac``, whichever exists (None: neither)."""
    for ext in AUDIO_EXTS:
        path = Path(folder) / f"{part}{ext}"
        if path.is_file():
            return path
    return None


def part_paths(track: Track) -> Dict[str, Path]:
    """The files of a folder track: part -> path for the four sources and, if present, the mixture."""
    paths = {}
    for part in ("mixture",) + MUSDB_SOURCES:
        path = part_path(track.path, part)
        if path is None and part != "mixture":
            raise UnmixError(f"track {track.path} has no {part}.wav or {part}.flac")
        if path is not None:
            paths[part] = path
    return paths


# ----------------------------------------------------------------------------------------
# whole tracks, as musdb reads them (evaluation)


def load_track(track: Track):
    """Read a track's mixture and sources as musdb does.

    Returns:
        ``(mixture, sources, rate)``: float64 ``(nb_channels, nb_timesteps)``, a dict
        source -> float64 ``(nb_channels, nb_timesteps)`` for vocals, drums, bass, other,
        and the sample rate. A folder without a mixture file gets the sum of its sources.
    """
    if track.is_stem:
        return _load_stem_track(track)
    folder = Path(track.path)
    paths = part_paths(track)
    sources, rates = {}, set()
    for source in MUSDB_SOURCES:
        sources[source], rate = _read_file(paths[source])
        rates.add(rate)
    if "mixture" in paths:
        mixture, rate = _read_file(paths["mixture"])
        rates.add(rate)
    else:
        mixture = np.sum(np.array([sources[s] for s in LINEAR_MIXTURE]), axis=0)
    if len(rates) > 1:
        raise UnmixError(f"track {folder}: files have different sample rates {sorted(rates)}")
    shapes = {a.shape for a in sources.values()} | {mixture.shape}
    if len(shapes) > 1:
        raise UnmixError(f"track {folder}: files differ in length or channels {sorted(shapes)}")
    if mixture.shape[-1] == 0:
        raise UnmixError(f"track {folder} contains no audio samples")
    return mixture, sources, rates.pop()


def _read_file(path):
    try:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises several types for unreadable files
        raise UnmixError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    return np.ascontiguousarray(audio.T), int(rate)


def _load_stem_track(track):
    """musdb's reading of a stem file: each stream through ffmpeg as 16-bit PCM, to float64."""
    try:
        import stempeg

        info = stempeg.Info(track.path)
        parts = {}
        for part, stream in MUSDB_STEM_IDS.items():
            audio, rate = stempeg.read_stems(track.path, stem_id=stream, info=info, ffmpeg_format="s16le")
            parts[part] = np.ascontiguousarray(np.atleast_2d(audio.T))
    except UnmixError:
        raise
    except Exception as exc:
        raise UnmixError(f"cannot read stems file {track.path} (is ffmpeg installed?): "
                         f"{' '.join(str(exc).split())}") from None
    mixture = parts.pop("mixture")
    return mixture, {s: parts[s] for s in MUSDB_SOURCES}, int(rate)
