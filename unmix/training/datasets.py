"""Training datasets, source augmentations and the magnitude view the loader feeds (numpy only).

A port of open-unmix-pytorch 1.3 ``openunmix/data.py``. Five datasets, each an
indexable sequence of ``(x, y)`` pairs of float32 arrays
``(nb_channels, nb_timesteps)`` (mixture, target):

    MUSDBDataset                      MUSDB18 (.stem.mp4) or MUSDB18-HQ layout (wav/flac folders)
    AlignedDataset                    track folders with an input and an output file
    SourceFolderDataset               one folder of files per source, mixed at random
    FixedSourcesTrackFolderDataset    track folders with the same named sources
    VariableSourcesTrackFolderDataset track folders with any number of sources

Differences from the reference, on purpose:
- Every random choice comes from ``numpy.random.Generator`` seeded with
  ``(seed, epoch, index)`` (``(seed, 0, index)`` outside the train split), so a
  sample does not depend on the order of reads or on the number of workers.
- Chunks are read with soundfile seeks (``.stem.mp4`` with stempeg/ffmpeg seeks);
  lengths, rates and channel counts are probed once at construction.
- Chunk starts are drawn in samples, uniform over ``[0, length - seq_len]``; a
  track is usable when it holds at least ``seq_len`` samples (the reference
  wants strictly more seconds). Tracks too short for ``seq_duration`` are
  skipped, as the reference does (no padding); they are listed in ``.skipped``.
- MUSDB without ``random_track_mix`` reads all sources of a sample from one
  start (a coherent excerpt); the reference draws a start per source.
- A track folder that lacks a required file raises ``UnmixError`` (the
  reference skips it silently), except in the variable-sources dataset whose
  tracks may lack the target by design (skipped unless ``silence_missing_targets``).
- Files must share one sample rate (checked, never silently mixed) and one
  channel count, unless ``nb_channels`` asks for a conversion.
- Validation sets yield full tracks (``seq_duration=None``); the source folder
  dataset, which has no tracks, yields seeded chunks as in the reference.

Audio files are probed once (`AudioRef`) and read in chunks (`read_chunk`); MUSDB's
layouts are found by `unmix.io.musdb`; batches come from `unmix.training.loader.DataLoader`.
"""
import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf

from unmix.io import musdb
from unmix.dsp import transforms
from unmix.errors import UnmixError
from unmix.io.musdb import MUSDB_SOURCES, MUSDB_VALIDATION_TRACKS, existing_root, subdirs

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


# ----------------------------------------------------------------------------
# audio files: probe once, read chunks


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
    if path not in _STEM_INFO:
        import stempeg

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


def fit_channels(audio: np.ndarray, nb_channels: Optional[int]) -> np.ndarray:
    """Convert `audio` (channels, time) to `nb_channels` (None keeps it).

    Mono is repeated; to mono is the channel mean; otherwise extra channels are
    dropped, like the reference's `_augment_force_stereo`.
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
    return fit_channels(audio, nb_channels)


def _read_stem(ref: AudioRef, start: int, stop: int) -> np.ndarray:
    import stempeg

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
    if audio.shape[1] >= length:
        return audio[:, :length]
    return np.pad(audio, ((0, 0), (0, length - audio.shape[1])))


def _common_format(refs: Sequence[AudioRef], sample_rate: Optional[float],
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


# ----------------------------------------------------------------------------
# augmentations: f(audio (channels, time), rng) -> audio


def augment_gain(audio: np.ndarray, rng: np.random.Generator,
                 low: float = 0.25, high: float = 1.25) -> np.ndarray:
    """Scale by one random gain, uniform in [low, high)."""
    return audio * np.float32(rng.uniform(low, high))


def augment_channelswap(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Swap the two channels of a stereo signal with probability 0.5."""
    # draws only for stereo, as the reference does
    if audio.shape[0] == 2 and rng.uniform() < 0.5:
        return audio[::-1].copy()
    return audio


def augment_force_stereo(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mono -> duplicated stereo; more than two channels -> the first two."""
    return fit_channels(audio, 2)


AUGMENTATIONS = {
    "gain": augment_gain,
    "channelswap": augment_channelswap,
    "force_stereo": augment_force_stereo,
}


class Compose:
    """Apply augmentations in order: ``Compose([...])(audio, rng)``.

    Module-level functions only, so that it pickles for 'spawn' workers.
    """

    def __init__(self, augmentations: Sequence[Augmentation] = ()):
        self.augmentations = list(augmentations)

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for augment in self.augmentations:
            audio = augment(audio, rng)
        return audio

    def __repr__(self):
        return "Compose([" + ", ".join(getattr(a, "__name__", repr(a)) for a in self.augmentations) + "])"


def make_augmentations(augmentations: Union[None, Sequence, Callable]) -> Compose:
    """Build a Compose from names (``"gain"``, ``"channelswap"``, ``"force_stereo"``) and/or callables."""
    if isinstance(augmentations, Compose):
        return augmentations
    if augmentations is None:
        return Compose()
    if callable(augmentations):
        return Compose([augmentations])
    if isinstance(augmentations, str):
        augmentations = [augmentations]
    out = []
    for a in augmentations:
        if callable(a):
            out.append(a)
        elif a in AUGMENTATIONS:
            out.append(AUGMENTATIONS[a])
        else:
            raise UnmixError(f"unknown source augmentation {a!r}; known: {', '.join(AUGMENTATIONS)}")
    return Compose(out)


# ----------------------------------------------------------------------------
# track discovery and train/valid splits


# The seeded train/valid split does not follow the training --seed: runs of a seed sweep are
# validated on the same tracks, so their validation losses compare.
SPLIT_SEED = 42


def validation_names(names: Sequence[str], valid_tracks: Optional[Sequence[str]] = None,
                     seed: int = SPLIT_SEED) -> List[str]:
    """Choose the validation tracks among `names` (training-track names).

    Explicit `valid_tracks` win (each must exist; an empty list holds nothing
    out); otherwise MUSDB18's official validation tracks that are present;
    otherwise a pick of one track in eight (at least one) seeded with `seed`.
    At least one track is always left for training.
    """
    names = sorted(names)
    if valid_tracks is not None:
        valid_tracks = [valid_tracks] if isinstance(valid_tracks, str) else list(valid_tracks)
        unknown = [v for v in valid_tracks if v not in names]
        if unknown:
            raise UnmixError(f"validation track(s) not found among the training tracks: {', '.join(unknown)}")
        chosen = sorted(set(valid_tracks))
    else:
        chosen = [n for n in names if n in MUSDB_VALIDATION_TRACKS]
        if not chosen:
            if len(names) < 2:
                raise UnmixError(f"a train/valid split needs at least 2 tracks, found {len(names)}")
            order = np.random.default_rng(seed).permutation(len(names))
            chosen = sorted(names[i] for i in order[: max(1, len(names) // 8)])
    if len(chosen) >= len(names):
        raise UnmixError("the validation split would leave no training tracks")
    return chosen


def split_track_dirs(root: Path, split: str, valid_tracks: Optional[Sequence[str]] = None,
                     seed: int = SPLIT_SEED) -> List[Path]:
    """Track folders of `split`: ``root/split/*``, or a split of ``root/train``.

    With no ``root/valid`` folder (or with explicit `valid_tracks`) the train
    and valid splits both come from ``root/train`` (see `validation_names`).
    """
    if split in ("train", "valid") and (valid_tracks is not None or not (root / "valid").is_dir()):
        train_dir = root / "train"
        if not train_dir.is_dir():
            raise UnmixError(f"no folder {train_dir}")
        dirs = subdirs(train_dir)
        if not dirs:
            raise UnmixError(f"no track folders in {train_dir}")
        valid = set(validation_names([d.name for d in dirs], valid_tracks, seed))
        return [d for d in dirs if (d.name in valid) == (split == "valid")]
    folder = root / split
    if not folder.is_dir():
        raise UnmixError(f"no folder {folder}")
    dirs = subdirs(folder)
    if not dirs:
        raise UnmixError(f"no track folders in {folder}")
    return dirs


def _find_glob(track: Path, pattern: str) -> Optional[Path]:
    found = sorted(track.glob(pattern))
    return found[0] if found else None


def _normalise_ext(ext: str) -> str:
    return ext if ext.startswith(".") else "." + ext


# ----------------------------------------------------------------------------
# datasets


def _seq_duration(seq_duration: Optional[float]) -> Optional[float]:
    # the reference's training script: a duration <= 0 means the full track
    return float(seq_duration) if seq_duration is not None and seq_duration > 0 else None


def _chunk_start(rng: np.random.Generator, length: int, seq_len: Optional[int], random_chunks: bool) -> int:
    if seq_len is None or not random_chunks:
        return 0
    return int(rng.integers(0, length - seq_len + 1))


class UnmixDataset:
    """Base class: ``dataset[index] -> (x, y)``, float32 ``(nb_channels, nb_timesteps)``.

    `get(index, epoch)` is the pure form that loaders call; ``dataset[index]``
    uses ``dataset.epoch`` (see `set_epoch`). Subclasses set `target`,
    `sample_rate`, `seq_len` (samples, or None for full tracks) and implement
    `__len__` and `_get(index, rng)`.
    """

    split = "train"
    seed = 42
    epoch = 0
    target = ""
    sample_rate = 44100.0
    seq_duration: Optional[float] = None
    nb_channels: Optional[int] = None
    source_augmentations: Compose = Compose()
    skipped: List[str] = []

    @property
    def seq_len(self) -> Optional[int]:
        """Chunk length in samples, None for full tracks."""
        if self.seq_duration is None:
            return None
        return int(round(self.seq_duration * self.sample_rate))

    def rng(self, index: int, epoch: int = 0) -> np.random.Generator:
        """The generator for one sample; only the train split varies with the epoch."""
        return np.random.default_rng([self.seed, epoch if self.split == "train" else 0, index])

    def get(self, index: int, epoch: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """Sample `index` of `epoch`: (x, y) float32 (nb_channels, nb_timesteps)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index = index % n
        x, y = self._get(index, self.rng(index, epoch))
        return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.get(index, self.epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def for_statistics(self) -> "UnmixDataset":
        """A copy that yields each training track once, whole, unaugmented and unmixed.

        What the reference's training script builds to fit the input scaler.
        """
        view = copy.copy(self)
        view.source_augmentations = Compose()
        view.random_chunks = False
        view.random_track_mix = False
        view.random_interferer_mix = False
        view.seq_duration = None
        if hasattr(view, "samples_per_track"):
            view.samples_per_track = 1
        return view

    def _augment(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.source_augmentations(fit_channels(audio, self.nb_channels), rng)

    def _init_common(self, split, seq_duration, source_augmentations, seed, nb_channels):
        if int(seed) < 0:
            raise UnmixError(f"seed must be >= 0, got {seed}")
        self.split = split
        self.seq_duration = _seq_duration(seq_duration)
        self.source_augmentations = make_augmentations(source_augmentations)
        self.seed = int(seed)
        self.epoch = 0
        self.nb_channels = nb_channels
        self.skipped = []

    def __repr__(self):
        extra = f", {len(self.skipped)} skipped" if self.skipped else ""
        seq = "full tracks" if self.seq_duration is None else f"{self.seq_duration:g} s chunks"
        return (f"{type(self).__name__}(split={self.split!r}, target={self.target!r}, "
                f"{len(self)} samples, {seq}{extra})")


class AlignedDataset(UnmixDataset):
    """Track folders holding an input and an output file (globs), e.g.

        root/train/01/mixture.wav -> x
        root/train/01/vocals.wav  -> y

    No augmentations (input and output are not separate sources). `target` is
    the stem of `output_file`.
    """

    def __init__(self, root, split: str = "train", input_file: str = "mixture.wav",
                 output_file: str = "vocals.wav", seq_duration: Optional[float] = None,
                 random_chunks: bool = False, sample_rate: Optional[float] = None,
                 seed: int = 42, samples_per_track: int = 1, valid_tracks=None,
                 nb_channels: Optional[int] = None):
        self._init_common(split, seq_duration, None, seed, nb_channels)
        self.root = existing_root(root)
        self.input_file, self.output_file = input_file, output_file
        self.random_chunks = random_chunks
        self.samples_per_track = int(samples_per_track)
        self.target = Path(output_file).stem
        self.tracks = []  # (name, input AudioRef, output AudioRef)
        for track in split_track_dirs(self.root, split, valid_tracks):
            paths = [_find_glob(track, p) for p in (input_file, output_file)]
            for pattern, path in zip((input_file, output_file), paths):
                if path is None:
                    raise UnmixError(f"track {track} has no file matching {pattern!r}")
            self.tracks.append((track.name, probe(paths[0]), probe(paths[1])))
        self.sample_rate = _common_format([r for t in self.tracks for r in t[1:]],
                                          sample_rate, nb_channels, self.root / split)
        self._drop_short()

    def _drop_short(self):
        if self.seq_len is None:
            return
        keep = [t for t in self.tracks if min(t[1].frames, t[2].frames) >= self.seq_len]
        self.skipped = [t[0] for t in self.tracks if t not in keep]
        if not keep:
            raise UnmixError(f"no track in {self.root / self.split} is at least {self.seq_duration:g} s long")
        self.tracks = keep

    def __len__(self):
        return len(self.tracks) * self.samples_per_track

    def _get(self, index, rng):
        _, x_ref, y_ref = self.tracks[index // self.samples_per_track]
        length = min(x_ref.frames, y_ref.frames)
        seq_len = self.seq_len
        start = _chunk_start(rng, length, seq_len, self.random_chunks)
        stop = start + seq_len if seq_len is not None else length
        return (read_chunk(x_ref, start, stop, self.nb_channels),
                read_chunk(y_ref, start, stop, self.nb_channels))


class SourceFolderDataset(UnmixDataset):
    """One folder of files per source; each sample mixes a random file of each:

        root/train/vocals/a.wav  (target)  --+--> x = sum, y = target
        root/train/drums/b.wav   (interferer) |
        root/train/bass/c.wav    (interferer) /

    Unaligned by design, so `seq_duration` is required; `nb_samples` sets the
    epoch length. Outside the train split the samples do not change per epoch.
    Files shorter than `seq_duration` are skipped.
    """

    def __init__(self, root, split: str = "train", target_dir: str = "vocals",
                 interferer_dirs: Sequence[str] = ("bass", "drums"), ext: str = ".wav",
                 nb_samples: int = 1000, seq_duration: Optional[float] = 6.0,
                 random_chunks: bool = True, sample_rate: Optional[float] = None,
                 source_augmentations=None, seed: int = 42, nb_channels: Optional[int] = None):
        self._init_common(split, seq_duration, source_augmentations, seed, nb_channels)
        if self.seq_duration is None:
            raise UnmixError("the source folder dataset needs a seq_duration > 0")
        self.root = existing_root(root)
        self.ext = _normalise_ext(ext)
        self.target = self.target_dir = target_dir
        self.interferer_dirs = list(interferer_dirs)
        self.source_folders = self.interferer_dirs + [target_dir]  # target last, as the reference
        self.random_chunks = random_chunks
        self.nb_samples = int(nb_samples)
        self.source_tracks: Dict[str, List[AudioRef]] = {}
        for source in self.source_folders:
            folder = self.root / split / source
            if not folder.is_dir():
                raise UnmixError(f"no source folder {folder}")
            refs = [probe(p) for p in sorted(folder.glob("*" + self.ext))]
            if not refs:
                raise UnmixError(f"no {self.ext} files in {folder}")
            self.source_tracks[source] = refs
        self.sample_rate = _common_format([r for refs in self.source_tracks.values() for r in refs],
                                          sample_rate, nb_channels, self.root / split)
        for source, refs in self.source_tracks.items():
            keep = [r for r in refs if r.frames >= self.seq_len]
            self.skipped += [r.path for r in refs if r.frames < self.seq_len]
            if not keep:
                raise UnmixError(f"no file in {self.root / split / source} is at least {self.seq_duration:g} s long")
            self.source_tracks[source] = keep

    def __len__(self):
        return self.nb_samples

    def for_statistics(self):
        # files differ in length, so statistics use center chunks of seq_duration
        view = super().for_statistics()
        view.seq_duration = self.seq_duration
        return view

    def _get(self, index, rng):
        seq_len = self.seq_len
        stems = []
        for source in self.source_folders:
            refs = self.source_tracks[source]
            ref = refs[int(rng.integers(len(refs)))]
            if self.random_chunks:
                start = _chunk_start(rng, ref.frames, seq_len, True)
            else:
                start = max(ref.frames // 2 - seq_len // 2, 0)  # center segment
            stems.append(self._augment(read_chunk(ref, start, start + seq_len), rng))
        return np.sum(stems, axis=0), stems[-1]


class FixedSourcesTrackFolderDataset(UnmixDataset):
    """Track folders with the same named sources; x = target + interferers, y = target:

        root/train/1/vocals.wav (target) --+--> x
        root/train/1/drums.wav           --|
        root/train/1/bass.wav            --/

    `random_track_mix` draws each interferer from a random track (and, with
    `random_chunks`, a random start in it). Every track must hold every file.
    """

    def __init__(self, root, split: str = "train", target_file: str = "vocals.wav",
                 interferer_files: Sequence[str] = ("bass.wav", "drums.wav"),
                 seq_duration: Optional[float] = None, random_chunks: bool = False,
                 random_track_mix: bool = False, source_augmentations=None,
                 sample_rate: Optional[float] = None, seed: int = 42,
                 samples_per_track: int = 1, valid_tracks=None, nb_channels: Optional[int] = None):
        self._init_common(split, seq_duration, source_augmentations, seed, nb_channels)
        if random_track_mix and self.seq_duration is None:
            raise UnmixError("random_track_mix needs a seq_duration (full tracks differ in length)")
        self.root = existing_root(root)
        self.target_file = target_file
        self.interferer_files = list(interferer_files)
        self.source_files = self.interferer_files + [target_file]
        self.target = Path(target_file).stem
        self.random_chunks, self.random_track_mix = random_chunks, random_track_mix
        self.samples_per_track = int(samples_per_track)
        self.tracks = []  # (name, {file: AudioRef}, min frames)
        for track in split_track_dirs(self.root, split, valid_tracks):
            missing = [f for f in self.source_files if not (track / f).is_file()]
            if missing:
                raise UnmixError(f"track {track} has no {', '.join(missing)}")
            refs = {f: probe(track / f) for f in self.source_files}
            self.tracks.append((track.name, refs, min(r.frames for r in refs.values())))
        self.sample_rate = _common_format([r for t in self.tracks for r in t[1].values()],
                                          sample_rate, nb_channels, self.root / split)
        if self.seq_len is not None:
            self.skipped = [t[0] for t in self.tracks if t[2] < self.seq_len]
            self.tracks = [t for t in self.tracks if t[2] >= self.seq_len]
            if not self.tracks:
                raise UnmixError(f"no track in {self.root / split} is at least {self.seq_duration:g} s long")

    def __len__(self):
        return len(self.tracks) * self.samples_per_track

    def _get(self, index, rng):
        seq_len = self.seq_len
        _, refs, length = self.tracks[index // self.samples_per_track]
        start = _chunk_start(rng, length, seq_len, self.random_chunks)
        stop = start + seq_len if seq_len is not None else length
        y = self._augment(read_chunk(refs[self.target_file], start, stop), rng)
        stems = [y]
        for name in self.interferer_files:
            ref, s = refs[name], start
            if self.random_track_mix:
                _, other, other_length = self.tracks[int(rng.integers(len(self.tracks)))]
                ref = other[name]
                s = _chunk_start(rng, other_length, seq_len, self.random_chunks)
            stems.append(self._augment(read_chunk(ref, s, s + (stop - start)), rng))
        return np.sum(stems, axis=0), y


class VariableSourcesTrackFolderDataset(UnmixDataset):
    """Track folders with any number of sources (every `*ext` file but the target
    and ``mixture<ext>``); x = sum of all sources + target, y = target.

    Tracks without the target are skipped, or given a silent target with
    `silence_missing_targets`. `random_interferer_mix` takes the interferers
    from a random track.
    """

    def __init__(self, root, split: str = "train", target_file: str = "vocals.wav",
                 ext: str = ".wav", seq_duration: Optional[float] = None,
                 random_chunks: bool = False, random_interferer_mix: bool = False,
                 sample_rate: Optional[float] = None, source_augmentations=None,
                 silence_missing_targets: bool = False, seed: int = 42,
                 samples_per_track: int = 1, valid_tracks=None, nb_channels: Optional[int] = None):
        self._init_common(split, seq_duration, source_augmentations, seed, nb_channels)
        if random_interferer_mix and self.seq_duration is None:
            raise UnmixError("random_interferer_mix needs a seq_duration (full tracks differ in length)")
        self.root = existing_root(root)
        self.target_file = target_file
        self.target = Path(target_file).stem
        self.ext = _normalise_ext(ext)
        self.random_chunks, self.random_interferer_mix = random_chunks, random_interferer_mix
        self.silence_missing_targets = silence_missing_targets
        self.samples_per_track = int(samples_per_track)
        self.tracks = []  # (name, target AudioRef or None, [interferer AudioRef], min frames)
        for track in split_track_dirs(self.root, split, valid_tracks):
            has_target = (track / target_file).is_file()
            if not has_target and not silence_missing_targets:
                self.skipped.append(track.name)
                continue
            # the reference warns to keep the mixture out of the sources; we make sure
            files = [p for p in sorted(track.glob("*" + self.ext))
                     if p.name not in (target_file, "mixture" + self.ext)]
            target = probe(track / target_file) if has_target else None
            interferers = [probe(p) for p in files]
            refs = interferers + ([target] if target else [])
            if not refs:
                self.skipped.append(track.name)
                continue
            self.tracks.append((track.name, target, interferers, min(r.frames for r in refs)))
        if not self.tracks:
            raise UnmixError(f"no track in {self.root / split} has {target_file} "
                             "(pass silence_missing_targets to train on tracks without it)")
        all_refs = [r for t in self.tracks for r in ([t[1]] if t[1] else []) + t[2]]
        self.sample_rate = _common_format(all_refs, sample_rate, nb_channels, self.root / split)
        if self.seq_len is not None:
            self.skipped += [t[0] for t in self.tracks if t[3] < self.seq_len]
            self.tracks = [t for t in self.tracks if t[3] >= self.seq_len]
            if not self.tracks:
                raise UnmixError(f"no track in {self.root / split} is at least {self.seq_duration:g} s long")
        self._channels = self.nb_channels or all_refs[0].channels

    def __len__(self):
        return len(self.tracks) * self.samples_per_track

    def _get(self, index, rng):
        seq_len = self.seq_len
        _, target, interferers, length = self.tracks[index // self.samples_per_track]
        start = _chunk_start(rng, length, seq_len, self.random_chunks)
        n = seq_len if seq_len is not None else length
        i_interferers, i_start = interferers, start
        if self.random_interferer_mix:
            _, _, i_interferers, i_length = self.tracks[int(rng.integers(len(self.tracks)))]
            i_start = _chunk_start(rng, i_length, seq_len, self.random_chunks)
        # the sources' channel count is known after the augmentations (force_stereo makes mono
        # files stereo), so they are summed as they come instead of into a preallocated mix
        sources = [self._augment(read_chunk(ref, i_start, i_start + n), rng) for ref in i_interferers]
        y = None if target is None else self._augment(read_chunk(target, start, start + n), rng)
        present = sources + ([] if y is None else [y])
        x = np.sum(present, axis=0, dtype=np.float32) if present else np.zeros((self._channels, n), np.float32)
        return x, np.zeros_like(x) if y is None else y


class MUSDBDataset(UnmixDataset):
    """MUSDB18: ``root/{train,test}/*.stem.mp4`` (stempeg + ffmpeg) or the MUSDB18-HQ
    layout ``root/{train,test}/<track>/{mixture,vocals,drums,bass,other}.{wav,flac}``.

    Train split with `seq_duration`: x is the sum of the four (augmented) source
    chunks, y the target; `random_track_mix` takes every source from a random
    track at a random start (as the reference). Otherwise full tracks: x is the
    mixture file (the sum of the sources where a folder has none), y the target.
    `target` is a source name or ``accompaniment`` (all but vocals).
    The train/valid split of the ``train`` subset follows `validation_names`.
    `is_wav` asks for the folder layout; without it, stems are used when present
    and folders otherwise.
    """

    def __init__(self, root=None, target: str = "vocals", is_wav: bool = False,
                 subsets: Union[str, Sequence[str]] = "train", split: Optional[str] = "train",
                 seq_duration: Optional[float] = 6.0, samples_per_track: int = 64,
                 source_augmentations=None, random_track_mix: bool = False, seed: int = 42,
                 valid_tracks=None, sample_rate: Optional[float] = None,
                 nb_channels: Optional[int] = None):
        self._init_common(split, seq_duration, source_augmentations, seed, nb_channels)
        if target not in MUSDB_SOURCES and target != "accompaniment":
            raise UnmixError(f"unknown MUSDB target {target!r}; use one of "
                             f"{', '.join(MUSDB_SOURCES)}, accompaniment")
        if root is None:
            root = os.environ.get("MUSDB_PATH")
        self.root = existing_root(root)
        self.target = target
        self.is_wav = is_wav
        self.subsets = [subsets] if isinstance(subsets, str) else list(subsets)
        self.samples_per_track = int(samples_per_track)
        self.random_track_mix = random_track_mix
        self.tracks = []  # (name, {"mixture"?, vocals, drums, bass, other: AudioRef}, min frames)
        for subset in self.subsets:
            found = musdb.find_tracks(self.root, subset, is_wav)
            if subset == "train" and split in ("train", "valid"):
                valid = set(validation_names([t.name for t in found], valid_tracks))
                found = [t for t in found if (t.name in valid) == (split == "valid")]
            self.tracks += [self._track(t) for t in found]
        refs = [r for t in self.tracks for r in t[1].values()]
        self.sample_rate = _common_format(refs, sample_rate, nb_channels, f"{self.root} ({split} split)")
        if self._chunked and self.seq_len is not None:
            self.skipped = [t[0] for t in self.tracks if t[2] < self.seq_len]
            self.tracks = [t for t in self.tracks if t[2] >= self.seq_len]
            if not self.tracks:
                raise UnmixError(f"no MUSDB track in {self.root} is at least {self.seq_duration:g} s long")

    @property
    def _chunked(self) -> bool:
        return self.split == "train" and self.seq_duration is not None

    def _track(self, track: musdb.Track):
        """``(name, {part: AudioRef}, min source frames)`` of a MUSDB track (the mixture is optional)."""
        if track.is_stem:
            streams = probe_stems(track.path)
            if len(streams) < len(musdb.MUSDB_STEM_IDS):
                raise UnmixError(f"{track.path} has {len(streams)} audio streams, MUSDB stems have 5")
            refs = {part: streams[k] for part, k in musdb.MUSDB_STEM_IDS.items()}
        else:
            refs = {part: probe(path) for part, path in musdb.part_paths(track).items()}
        return track.name, refs, min(refs[s].frames for s in MUSDB_SOURCES)

    def __len__(self):
        return len(self.tracks) * self.samples_per_track

    def get_sources(self, index: int, epoch: int = 0,
                    order: Sequence[str] = MUSDB_SOURCES) -> Tuple[np.ndarray, np.ndarray]:
        """Sample `index` of `epoch` with every source: ``(x, stems)``, float32 ``(nb_channels,
        nb_timesteps)`` and ``(4, nb_channels, nb_timesteps)`` in the given `order` (X-UMX's is
        bass, drums, vocals, other). The same draws as `get`: the train split's x is the sum of
        the stems."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        rng = self.rng(index, epoch)
        if self._chunked:
            stems = self._chunk_stems(index, rng)
            x = np.sum(list(stems.values()), axis=0)
        else:
            _, refs, length = self.tracks[index // self.samples_per_track]
            stems = {s: read_chunk(refs[s], 0, length, self.nb_channels) for s in MUSDB_SOURCES}
            x = (read_chunk(refs["mixture"], 0, length, self.nb_channels) if "mixture" in refs
                 else np.sum(list(stems.values()), axis=0))
        return (np.asarray(x, np.float32),
                np.stack([np.asarray(stems[s], np.float32) for s in order]))

    def _get(self, index, rng):
        if self._chunked:
            return self._get_chunk(index, rng)
        _, refs, length = self.tracks[index // self.samples_per_track]
        needed = ("drums", "bass", "other") if self.target == "accompaniment" else (self.target,)
        if "mixture" not in refs:
            needed = MUSDB_SOURCES
        sources = {s: read_chunk(refs[s], 0, length, self.nb_channels) for s in needed}
        if "mixture" in refs:
            x = read_chunk(refs["mixture"], 0, length, self.nb_channels)
        else:
            x = np.sum(list(sources.values()), axis=0)
        if self.target == "accompaniment":
            y = sources["drums"] + sources["bass"] + sources["other"]
        else:
            y = sources[self.target]
        return x, y

    def _chunk_stems(self, index, rng):
        """source -> augmented chunk of sample `index` (from random tracks with `random_track_mix`)."""
        seq_len = self.seq_len
        track = self.tracks[index // self.samples_per_track]
        start = _chunk_start(rng, track[2], seq_len, True)
        stems = {}
        for source in MUSDB_SOURCES:
            if self.random_track_mix:
                track = self.tracks[int(rng.integers(len(self.tracks)))]
                start = _chunk_start(rng, track[2], seq_len, True)
            stems[source] = self._augment(read_chunk(track[1][source], start, start + seq_len), rng)
        return stems

    def _get_chunk(self, index, rng):
        stems = self._chunk_stems(index, rng)
        x = np.sum(list(stems.values()), axis=0)
        # accompaniment: the reference subtracts the vocals from the mix
        y = x - stems["vocals"] if self.target == "accompaniment" else stems[self.target]
        return x, y


# ----------------------------------------------------------------------------
# factory


def load_datasets(dataset: str = "musdb", root=None, target: str = "vocals",
                  seq_duration: Optional[float] = 6.0, samples_per_track: Optional[int] = None,
                  source_augmentations=None, seed: int = 42, is_wav: bool = False,
                  valid_tracks: Optional[Sequence[str]] = None, *,
                  input_file: str = "mixture.wav", output_file: Optional[str] = None,
                  target_dir: Optional[str] = None, interferer_dirs: Sequence[str] = ("bass", "drums"),
                  ext: str = ".wav", nb_train_samples: int = 1000, nb_valid_samples: int = 100,
                  target_file: Optional[str] = None,
                  interferer_files: Sequence[str] = ("bass.wav", "drums.wav"),
                  random_track_mix: bool = False, random_interferer_mix: bool = False,
                  silence_missing_targets: bool = False, sample_rate: Optional[float] = None,
                  nb_channels: Optional[int] = None) -> Tuple[UnmixDataset, UnmixDataset]:
    """Build ``(train_dataset, valid_dataset)`` as the reference's `load_datasets` does.

    `dataset` is one of musdb, aligned, sourcefolder, trackfolder_fix,
    trackfolder_var. The train set draws random chunks of `seq_duration`
    seconds; the valid set yields full tracks (sourcefolder: `nb_valid_samples`
    fixed chunks). `samples_per_track` sets the train epoch length of the track
    datasets; None: 64 for musdb and 1 for the others, as the reference (whose
    epoch-based patience and learning-rate schedule assume those epochs).
    `source_augmentations` None means the reference's defaults: gain and
    channelswap for musdb, none for the others (never on the valid set).
    File names default from `target`: output_file / target_file
    ``<target><ext>``, target_dir ``<target>``. Every dataset's ``.target``
    names the trained target (e.g. the stem of `target_file`).
    `valid_tracks` picks the validation tracks by folder name (see
    `validation_names`; musdb, aligned and the track folder datasets; the
    latter two split ``root/train`` only when there is no ``root/valid``).
    """
    ext = _normalise_ext(ext)
    if samples_per_track is None:
        samples_per_track = 64 if dataset == "musdb" else 1
    common = dict(seed=seed, sample_rate=sample_rate, nb_channels=nb_channels)
    if dataset == "musdb":
        augment = ("gain", "channelswap") if source_augmentations is None else source_augmentations
        kwargs = dict(root=root, target=target, is_wav=is_wav, subsets="train",
                      valid_tracks=valid_tracks, **common)
        train = MUSDBDataset(split="train", seq_duration=seq_duration, samples_per_track=samples_per_track,
                             source_augmentations=augment, random_track_mix=True, **kwargs)
        valid = MUSDBDataset(split="valid", seq_duration=None, samples_per_track=1, **kwargs)
    elif dataset == "aligned":
        kwargs = dict(root=root, input_file=input_file, output_file=output_file or target + ext,
                      valid_tracks=valid_tracks, **common)
        train = AlignedDataset(split="train", seq_duration=seq_duration, random_chunks=True,
                               samples_per_track=samples_per_track, **kwargs)
        valid = AlignedDataset(split="valid", seq_duration=None, **kwargs)
    elif dataset == "sourcefolder":
        kwargs = dict(root=root, target_dir=target_dir or target, interferer_dirs=interferer_dirs,
                      ext=ext, seq_duration=seq_duration, random_chunks=True, **common)
        train = SourceFolderDataset(split="train", nb_samples=nb_train_samples,
                                    source_augmentations=source_augmentations, **kwargs)
        valid = SourceFolderDataset(split="valid", nb_samples=nb_valid_samples, **kwargs)
    elif dataset == "trackfolder_fix":
        kwargs = dict(root=root, target_file=target_file or target + ext,
                      interferer_files=interferer_files, valid_tracks=valid_tracks, **common)
        train = FixedSourcesTrackFolderDataset(
            split="train", seq_duration=seq_duration, random_chunks=True, random_track_mix=random_track_mix,
            source_augmentations=source_augmentations, samples_per_track=samples_per_track, **kwargs)
        valid = FixedSourcesTrackFolderDataset(split="valid", seq_duration=None, **kwargs)
    elif dataset == "trackfolder_var":
        kwargs = dict(root=root, target_file=target_file or target + ext, ext=ext,
                      silence_missing_targets=silence_missing_targets, valid_tracks=valid_tracks, **common)
        train = VariableSourcesTrackFolderDataset(
            split="train", seq_duration=seq_duration, random_chunks=True,
            random_interferer_mix=random_interferer_mix, source_augmentations=source_augmentations,
            samples_per_track=samples_per_track, **kwargs)
        valid = VariableSourcesTrackFolderDataset(split="valid", seq_duration=None, **kwargs)
    else:
        raise UnmixError(f"unknown dataset {dataset!r}; use musdb, aligned, sourcefolder, "
                         "trackfolder_fix or trackfolder_var")
    if valid.sample_rate != train.sample_rate:  # each split only checks its own files
        raise UnmixError(f"the validation files are at {valid.sample_rate:g} Hz and the training files at "
                         f"{train.sample_rate:g} Hz: resample them to one rate")
    return train, valid


# ----------------------------------------------------------------------------
# views for training: magnitudes, shards


def model_magnitude(audio, n_fft, n_hop, nb_channels, frames_first=False):
    """Training-time magnitude (center=False, as the reference's encoder).

    Args:
        audio: float32 ``(nb_audio_channels, nb_timesteps)``.
        nb_channels: the model's; 1 averages the channel magnitudes (the reference's ComplexNorm(mono)),
            2 repeats a mono signal (more channels keep the first two).
        frames_first: return ``(nb_channels, nb_frames, nb_bins)`` (what the CPU trainer reads).

    Returns:
        float32 ``(nb_channels, nb_bins, nb_frames)``.
    """
    if nb_channels != 1:
        audio = fit_channels(audio, nb_channels)
    spec = transforms.stft(audio[None], n_fft, n_hop, center=False, frames_first=frames_first)
    return transforms.magnitude(spec, mono=nb_channels == 1)[0]


class MagnitudeDataset:
    """A dataset view yielding magnitudes, so DataLoader workers do the STFT.

    ``get(index, epoch)`` -> ``(X, Y)`` float32 ``(nb_channels, nb_bins, nb_frames)`` from the
    audio pair of ``dataset.get(index, epoch)``, or ``(nb_channels, nb_frames, nb_bins)`` with
    `frames_first` (the CPU trainer's layout, `unmix.training.train.Trainer.frames_first`). Picklable (for
    'spawn' workers).
    """

    def __init__(self, dataset, n_fft, n_hop, nb_channels, frames_first=False):
        self.dataset, self.n_fft, self.n_hop, self.nb_channels = dataset, n_fft, n_hop, nb_channels
        self.frames_first = frames_first

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def get(self, index, epoch=0):
        x, y = self.dataset.get(index, epoch)
        return tuple(model_magnitude(a, self.n_fft, self.n_hop, self.nb_channels, self.frames_first) for a in (x, y))


class SourcesDataset:
    """A view of a `MUSDBDataset` yielding every source: ``get(index, epoch)`` -> ``(x, stems)``
    float32 ``(nb_channels, nb_timesteps)`` and ``(S, nb_channels, nb_timesteps)`` in the order of
    `sources` (X-UMX's validation tracks). Picklable."""

    def __init__(self, dataset, sources=("bass", "drums", "vocals", "other")):
        if not hasattr(dataset, "get_sources"):
            raise UnmixError(f"X-UMX trains on every MUSDB source: use --dataset musdb, not {type(dataset).__name__}")
        self.dataset, self.sources = dataset, tuple(sources)

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def get(self, index, epoch=0):
        return self.dataset.get_sources(index, epoch, self.sources)


def xumx_arrays(x, stems, n_fft, n_hop, nb_channels=2):
    """What X-UMX's training graph reads for one excerpt (`unmix.models.nnabla_graph.CrossNet.build_loss`),
    from the STFTs with center=True (as asteroid's and Sony's graphs):

    Args:
        x: float32 ``(nb_audio_channels, L)`` mixture; stems: ``(S, nb_audio_channels, L)``.
        nb_channels: the model's. 2 repeats a mono signal; 1 is the channel mean: the magnitudes
            are averaged over the channels (as open-unmix's and asteroid's mono models see the
            mixture), the phase and the time signals are those of the downmix.

    Returns:
        float32 ``(mix, real, imag, target_mag, target_time)``: the mixture's magnitude ``(C, T,
        bins)`` (frames first) and its complex spectrogram, the magnitude with the mixture's
        phase (stereo: the STFT itself), the sources' magnitudes ``(S, C, T, bins)`` and signals
        ``(S, C, (T - 1) * n_hop)`` (the length of the ISTFT).
    """
    if nb_channels != 1 and x.shape[0] != nb_channels:
        x, stems = fit_channels(x, nb_channels), np.stack([fit_channels(s, nb_channels) for s in stems])
    spec = transforms.stft(x, n_fft, n_hop, center=True, frames_first=True)
    targets = transforms.magnitude(transforms.stft(stems, n_fft, n_hop, center=True, frames_first=True))
    length = (spec.shape[-2] - 1) * n_hop
    if nb_channels != 1:
        return (np.abs(spec).astype(np.float32), spec.real.copy(), spec.imag.copy(), targets.astype(np.float32),
                np.ascontiguousarray(stems[..., :length]))
    mag = np.abs(spec).mean(axis=0, keepdims=True, dtype=np.float32)
    downmix = spec.mean(axis=0, keepdims=True)  # the STFT of the channel mean (the STFT is linear)
    size = np.abs(downmix)
    complex_mix = mag * np.divide(downmix, size, out=np.ones_like(downmix), where=size > 0)
    return (mag, complex_mix.real.astype(np.float32), complex_mix.imag.astype(np.float32),
            targets.mean(axis=1, keepdims=True, dtype=np.float32),
            np.ascontiguousarray(stems[..., :length].mean(axis=1, keepdims=True, dtype=np.float32)))


class XumxDataset(SourcesDataset):
    """A view of a `MUSDBDataset` yielding what X-UMX's training graph reads, so DataLoader
    workers do the STFTs: ``get(index, epoch)`` -> the five float32 arrays of `xumx_arrays`
    for the model's `nb_channels`.
    """

    def __init__(self, dataset, n_fft, n_hop, sources=("bass", "drums", "vocals", "other"), nb_channels=2):
        super().__init__(dataset, sources)
        self.n_fft, self.n_hop, self.nb_channels = n_fft, n_hop, nb_channels

    def get(self, index, epoch=0):
        x, stems = super().get(index, epoch)
        return xumx_arrays(x, stems, self.n_fft, self.n_hop, self.nb_channels)


class Subset:
    """Samples `indices` of a dataset (a process's shard in data-parallel training)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def get(self, index, epoch=0):
        return self.dataset.get(int(self.indices[index]), epoch)
