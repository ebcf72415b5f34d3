"""Files in, stems out: what `unmix separate` does for each input file.

Names. Each stem's file name comes from a template, as in demucs' ``--filename``: the
default ``{track}/{target}.{ext}`` gives ``<outdir>/<track>/vocals.wav``. Fields: ``track``
(the input's name without its extension; for MUSDB18-HQ's ``<song>/mixture.wav`` the song
folder's name), ``trackext`` (the input's extension, without the dot), ``target`` (or
demucs' ``stem``) and ``ext`` (the output extension, without the dot). Two inputs whose
stems would land on the same file are refused before any work (`plan_outputs`).

Atomic tracks. A track's stems are written to a hidden staging folder in the output folder
and moved to their names only when every stem is complete, so an error (a full disk,
Ctrl-C) leaves no half-written track. When the track's stems are all that a new folder
will hold (the default template), that folder appears with one rename; otherwise each file
is renamed into place. An existing stem is replaced only with `force`.

Clipping is never silent (`--clip-mode`, demucs' names and semantics): ``rescale`` (the
default, as demucs) divides a stem by ``max(1.01 * peak, 1)``, which needs the whole stem's
peak before its first sample is final. Stems stream out window by window (a long song is
never held whole), so with ``rescale`` each stem is first written as float32 to the staging
folder while its peak is tracked, then converted to the output format in blocks with the
gain, or simply renamed when it is a float wav that needs no gain: memory stays bounded, at
the cost of the float stem on disk for a moment. ``clamp`` clips at +-0.99 and ``none``
leaves the samples alone (integer formats and mp3 still clip at full scale); both stream
straight to the output format. Every stem that is rescaled or clipped gets one warning line
with its peak.
"""
import concurrent.futures
import contextlib
import json
import math
import os
import shutil
import string
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from unmix import cluster
from unmix.errors import UnmixError
from unmix.io import audio as audio_io
from unmix.io.files import make_temp_dir
from unmix.io.paths import inside, move_no_replace, safe_name
from unmix.separation.separator import load_separator
from unmix.weights import registry

OUTPUT_EXTENSIONS = (".wav", ".flac", ".mp3")
DEFAULT_FILENAME = "{track}/{target}.{ext}"
FILENAME_FIELDS = ("track", "trackext", "target", "stem", "ext")
CLIP_MODES = ("rescale", "clamp", "none")
RESCALE_HEADROOM = 1.01  # demucs: wav / max(1.01 * peak, 1)
CLAMP_LIMIT = 0.99  # demucs: wav.clamp(-0.99, 0.99)
_CONVERT_BLOCK = 2**18  # frames per block when a float stem is converted (2 MB of stereo float32)


@dataclass(frozen=True)
class StemFormat:
    """How stems are encoded.

    Args:
        ext: '.wav', '.flac' or '.mp3'.
        bits: wav 16, 24 or 32 (float, the default); flac 16 or 24 (the default; FLAC stores
            no floats); None for mp3.
        clip_mode: 'rescale', 'clamp' or 'none' (see the module docstring).
        mp3_bitrate: kbit/s of mp3 stems (libmp3lame through ffmpeg).
    """

    ext: str = ".wav"
    bits: int = None
    clip_mode: str = "rescale"
    mp3_bitrate: int = 320

    def __post_init__(self):
        if self.clip_mode not in CLIP_MODES:
            raise UnmixError(f"unknown clip mode {self.clip_mode!r}: use {', '.join(CLIP_MODES)}")
        audio_io.output_subtype(self.ext, self.bits)  # refuses flac at 32 bits, mp3 with bits, ...

    @property
    def is_float(self):
        """True when the files keep samples beyond +-1 (32-bit float wav)."""
        return self.ext == ".wav" and self.bits in (None, 32)

    def open(self, path, rate, nb_channels):
        """A streaming writer for one stem file in this format."""
        return audio_io.open_writer(path, rate, nb_channels, bits=self.bits, mp3_bitrate=self.mp3_bitrate)


# ----------------------------------------------------------------------------------- names


def track_name(path):
    """``song.mp3`` -> ``song``; ``Artist - Title.stem.mp4`` -> ``Artist - Title``; MUSDB18-HQ's
    ``.../<song>/mixture.wav`` -> ``<song>`` (every track's file there is called mixture)."""
    path = Path(path)
    name = path.name
    for suffix in (".stem.mp4", ".stem.m4a"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    folder = Path(os.path.abspath(path)).parent  # abspath: ``song/../mixture.wav`` is named after song's parent
    if path.stem.lower() == "mixture" and folder.name:
        return folder.name
    return path.stem


def _track_ext(path):
    """The input's extension without the dot (``stem.mp4`` for a MUSDB18 stem file)."""
    name = Path(path).name
    for suffix in (".stem.mp4", ".stem.m4a"):
        if name.lower().endswith(suffix):
            return name[-len(suffix) + 1:]
    return Path(name).suffix[1:]


def check_filename(template):
    """Raise `UnmixError` unless `template` names one file per target, inside the output folder.

    Returns:
        the template.
    """
    fields_help = ", ".join("{" + f + "}" for f in FILENAME_FIELDS)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        # a field is a plain name: "{track.__class__}" or "{track[0]}" would reach into objects
        unknown = sorted(f for f in fields if f not in FILENAME_FIELDS)
        if unknown:
            raise KeyError(unknown[0])
        sample = template.format(**{f: "x" for f in FILENAME_FIELDS})
    except (ValueError, IndexError, KeyError) as exc:
        unknown = f"unknown field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UnmixError(f"template {template!r}: {unknown}; use {fields_help}") from None
    if not fields & {"target", "stem"}:
        raise UnmixError(f"template {template!r} has no {{target}}: every stem would go to one file")
    path = Path(sample)
    if path.is_absolute() or ".." in path.parts or not path.name:
        raise UnmixError(f"template {template!r} must name a file inside --outdir")
    return template


def output_paths(path, outdir, targets, filename=DEFAULT_FILENAME, ext=".wav"):
    """Where the stems of input `path` go: target -> ``<outdir>/<filename rendered>``.

    The names that fill the template (the track's, the targets') must be safe file names, and
    every rendered path must lie inside `outdir` once links are resolved (`unmix.io.paths`):
    else UnmixError, before any work.
    """
    track = safe_name(track_name(path), f"the track name of {path}")
    fields = dict(track=track, trackext=_track_ext(path), ext=ext.lstrip("."))
    outputs = {}
    for t in targets:
        safe_name(t, "target")
        outputs[t] = inside(outdir, Path(outdir) / filename.format(target=t, stem=t, **fields))
    return outputs


def plan_outputs(paths, outdir, targets, filename=DEFAULT_FILENAME, ext=".wav"):
    """`output_paths` of every input, refusing two inputs that would write the same file.

    Returns:
        input path -> (target -> destination).
    """
    plan, owner = {}, {}
    for path in paths:
        outputs = output_paths(path, outdir, targets, filename, ext)
        for dest in outputs.values():
            key = os.path.normcase(os.path.abspath(dest))
            if key in owner:
                other = owner[key]
                if os.path.abspath(other) == os.path.abspath(path):
                    raise UnmixError(f"{path} is given twice")
                raise UnmixError(f"{other} and {path} would both be written to {dest}: give --filename a field "
                                 "that tells them apart, or separate them into different --outdir folders")
            owner[key] = path
        plan[path] = outputs
    return plan


# ---------------------------------------------------------------------------------- writing


class _StemFile:
    """One stem on its way to disk: takes chunks, applies the clip mode, says what it did.

    With 'rescale' the chunks go to a float32 wav beside `path` and `close` makes `path` from
    it with the gain of the whole stem's peak; otherwise they go straight to `path`.
    """

    def __init__(self, path, rate, nb_channels, fmt):
        self.path, self.rate, self.nb_channels, self.fmt = Path(path), rate, nb_channels, fmt
        self.peak, self.clipped = 0.0, 0
        if fmt.clip_mode == "rescale":
            self.float_path = self.path.with_name(f".{self.path.name}.float.wav")
            self.writer = audio_io.StreamWriter(self.float_path, rate, nb_channels, subtype="FLOAT")
        else:
            self.writer = fmt.open(self.path, rate, nb_channels)

    def write(self, chunk):
        """Append ``(nb_channels, n)`` float32 samples."""
        if self.fmt.clip_mode == "none" and self.fmt.is_float:  # kept as they are: nothing to measure
            self.writer.write(chunk)
            return
        self.peak = max(self.peak, float(np.max(np.abs(chunk), initial=0.0)))
        if self.fmt.clip_mode == "clamp":
            self.clipped += int(np.count_nonzero(np.abs(chunk) > CLAMP_LIMIT))
            chunk = np.clip(chunk, -CLAMP_LIMIT, CLAMP_LIMIT)
        elif self.fmt.clip_mode == "none":
            self.clipped += int(np.count_nonzero(np.abs(chunk) > 1.0))  # the writer clips them
        self.writer.write(chunk)

    def close(self, name):
        """Finish the file. Returns the warning line for stem `name` (None: nothing clipped)."""
        self.writer.close()
        if self.fmt.clip_mode != "rescale":
            return self._clip_warning(name)
        gain = 1.0 / max(RESCALE_HEADROOM * self.peak, 1.0)
        if gain == 1.0 and self.fmt.is_float:
            os.replace(self.float_path, self.path)
            return None
        with sf.SoundFile(str(self.float_path)) as src, self.fmt.open(self.path, self.rate, self.nb_channels) as dst:
            for block in src.blocks(_CONVERT_BLOCK, dtype="float32", always_2d=True):
                dst.write(audio_io.transposed(block) * np.float32(gain))
        os.unlink(self.float_path)
        if gain == 1.0:
            return None
        return (f"{name}: peak {self.peak:.3g} ({20 * math.log10(self.peak):+.1f} dBFS), rescaled by {gain:.3g} "
                f"({20 * math.log10(gain):+.1f} dB) so that it does not clip (--clip-mode rescale)")

    def _clip_warning(self, name):
        if not self.clipped:
            return None
        if self.fmt.clip_mode == "clamp":
            return (f"{name}: peak {self.peak:.3g}, {self.clipped:,} samples clamped to +-{CLAMP_LIMIT} "
                    "(--clip-mode clamp; rescale keeps the waveform)")
        kind = "mp3" if self.fmt.ext == ".mp3" else f"{self.fmt.bits or 24}-bit {self.fmt.ext[1:]}"
        return (f"{name}: peak {self.peak:.3g}, {self.clipped:,} samples clipped at full scale "
                f"({kind} stores no samples beyond +-1; --clip-mode rescale avoids it)")

    def abort(self):
        """Stop after an error elsewhere (the staging folder is removed by the caller)."""
        with contextlib.suppress(Exception):
            self.writer.__exit__(UnmixError, None, None)


def separate_file(path, separator, outdir, filename=DEFAULT_FILENAME, fmt=StemFormat(), start=0.0, duration=None,
                  force=False, downmix=False, progress=False):
    """Separate one audio file and write its stems (see the module docstring for the names).

    Returns:
        ``(outputs, warnings)``: target -> written file, and the clipping warnings (lines).
    """
    outputs = output_paths(path, outdir, separator.targets, filename, fmt.ext)
    existing = [p for p in outputs.values() if p.exists()]
    if existing and not force:
        raise UnmixError(f"{existing[0]} exists; use --force to overwrite it")
    Path(outdir).mkdir(parents=True, exist_ok=True)  # an unwritable outdir fails before the work
    audio, rate = audio_io.load(path, start=start, duration=duration)
    chunks = separator.stream(audio, rate, downmix=downmix, progress=progress)
    tmp = make_temp_dir(outdir, track_name(path))
    staged = {t: tmp / f"{t}{fmt.ext}" for t in outputs}  # targets are safe names (output_paths)
    files = {}
    try:
        # stems are streamed to disk window by window: a long song never exists whole in memory
        def write(chunk):
            for target, value in chunk.items():
                if target not in files:
                    files[target] = _StemFile(staged[target], rate, value.shape[0], fmt)
                files[target].write(value)

        _write_behind(chunks, write)
        warnings = [files.pop(t).close(str(outputs[t])) for t in list(files)]
        _commit(tmp, staged, outputs, outdir, force)
    finally:
        for stem in files.values():
            stem.abort()
        shutil.rmtree(tmp, ignore_errors=True)
    return outputs, [w for w in warnings if w]


def _commit(tmp, staged, outputs, outdir, force=False):
    """Move the finished stems from the staging folder `tmp` to their names: one rename of the
    folder when it becomes a new folder holding just these stems, else one rename per file.

    Existence is checked by the renames themselves (`move_no_replace`): a stem that appeared
    since the work began (another run into the same folder) is kept unless `force`, this
    track's stems already moved are taken back, and UnmixError says which file.
    """
    folders = {dest.parent for dest in outputs.values()}
    folder = next(iter(folders))
    if len(folders) == 1 and not folder.exists() and all(staged[t].name == d.name for t, d in outputs.items()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        inside(outdir, folder)  # again: links made while the track was separated count too
        try:
            move_no_replace(tmp, folder)
            return
        except FileExistsError:
            pass  # another run made the folder meanwhile: file by file, none replaced
    moved = []
    try:
        for target, dest in outputs.items():
            dest.parent.mkdir(parents=True, exist_ok=True)
            inside(outdir, dest)
            if force:
                os.replace(staged[target], dest)
            else:
                move_no_replace(staged[target], dest)
                moved.append(dest)
    except FileExistsError as exc:
        for dest in moved:
            dest.unlink()
        raise UnmixError(f"{exc.filename} exists (written while this track was separated); "
                         "use --force to overwrite it") from None


def _write_behind(chunks, write):
    """``write(chunk)`` for every chunk, on a thread while the next chunk is being computed
    (libsndfile releases the GIL; 0.13 s of the 2 s a 1-minute song takes). At most one chunk
    waits to be written, and a failed write stops the separation with its error."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="unmix-writer") as pool:
        pending = None
        for chunk in chunks:
            if pending is not None:
                pending.result()
            pending = pool.submit(write, chunk)
        if pending is not None:
            pending.result()


# ----------------------------------------------------------------------------------- batches


def separate_files(paths, separator_options, file_options, jobs=1, scheduler=None):
    """Separate every file, one failure not stopping the others.

    Args:
        separator_options: keyword arguments of `unmix.load_separator`.
        file_options: keyword arguments of `separate_file` (outdir, filename, fmt, start, ...).
        jobs: files processed in parallel worker processes.
        scheduler: address of a Dask scheduler (``tcp://host:8786``): the files are separated
            on its workers instead (see `unmix.cluster`); `jobs` is then unused.

    Returns:
        the number of files that failed (each reported on stderr in one line).
    """
    # the default model is resolved (downloaded, or the offline fallback) once, not in every worker
    separator_options = dict(separator_options, model=registry.resolve_model(separator_options.get("model")))
    fmt = file_options.get("fmt", StemFormat())
    if fmt.ext == ".mp3":
        audio_io._ffmpeg_tool("ffmpeg", "mp3 stems", doing="writing")
    separator = load_separator(**separator_options)  # a bad model fails here, once, before any file
    if separator.residual and not separator_options.get("residual"):
        only = separator.targets[0]
        print(f"note: {only} is the only target: adding '{separator.residual}' (the mixture minus {only}), "
              "which the Wiener filter needs (--residual NAME names it, --niter 0 does without)", file=sys.stderr)
    plan_outputs(paths, file_options["outdir"], separator.targets, file_options.get("filename", DEFAULT_FILENAME),
                 fmt.ext)  # two inputs onto one file: refused before any work
    if scheduler is not None:
        return _separate_on_cluster(paths, separator_options, file_options, scheduler)
    if jobs <= 1 or len(paths) == 1:
        failures = 0
        for path in paths:
            failures += _report(path, _user_error(lambda: separate_file(path, separator, progress=True,
                                                                        **file_options)))
        return failures
    with concurrent.futures.ProcessPoolExecutor(jobs, initializer=_init_worker,
                                                initargs=(separator_options,)) as pool:
        futures = {pool.submit(_worker_separate, p, file_options): p for p in paths}
        done = tqdm(concurrent.futures.as_completed(futures), total=len(futures), unit="file", desc="separating")
        return sum(_report(futures[f], f.result()) for f in done)


def _separate_on_cluster(paths, separator_options, file_options, scheduler):
    """`separate_files` with one task per file on the Dask cluster at `scheduler`."""
    # the workers' current folders are not ours: every path they get is absolute
    model = os.path.abspath(registry.resolve_model(separator_options.get("model")))
    options = dict(separator_options, model=model)
    remote = dict(file_options, outdir=os.path.abspath(file_options["outdir"]))
    given = {os.path.abspath(p): p for p in paths}
    tasks = cluster.map_unordered(scheduler, _cluster_separate, list(given), options, remote)
    failures = 0
    for path, outcome, task_error in tqdm(tasks, total=len(given), unit="file", desc="separating"):
        failures += _report(given[path], outcome if task_error is None else (None, task_error))
    return failures


def _cluster_separate(path, separator_options, file_options):
    """In a Dask worker: separate `path` with a separator loaded once per worker process, on
    one thread as in a local pool (a worker runs as many files at once as it has threads);
    returns ``(result, error line)`` as `_user_error`."""
    separator_options = dict(separator_options, nb_threads=1)
    key = json.dumps(separator_options, sort_keys=True)
    separator = cluster.worker_cached(key, lambda: load_separator(**separator_options))
    return _user_error(lambda: separate_file(path, separator, **file_options))


def _report(path, outcome):
    """Print what became of `path`: where its stems went and any clipping warning, or its
    error, one line each. Returns 1 on error."""
    result, error = outcome
    if error:
        where = "" if str(path) in error else f"{path}: "
        tqdm.write(f"error: {where}{error}", file=sys.stderr)
        return 1
    outputs, warnings = result
    for line in warnings:
        tqdm.write(f"warning: {line}", file=sys.stderr)
    tqdm.write(f"wrote {_where(outputs)}")
    return 0


def _where(outputs):
    """The track folder when the stems are ``<folder>/<target>.<ext>``, else the files."""
    folders = {p.parent for p in outputs.values()}
    if len(folders) == 1 and all(p.stem == t for t, p in outputs.items()):
        return str(folders.pop())
    return ", ".join(map(str, outputs.values()))


def _user_error(work):
    """Run `work()`: ``(its result, None)``, or ``(None, the one-line message)`` of an error a
    user can cause."""
    try:
        return work(), None
    except UnmixError as exc:
        return None, str(exc)
    except OSError as exc:  # e.g. a full disk or a read-only folder while writing
        return None, f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    except audio_io._SF_ERROR as exc:  # a decoder error that no reader turned into an UnmixError
        return None, " ".join(str(exc).split())


_WORKER_SEPARATOR = None


def _init_worker(separator_options):
    global _WORKER_SEPARATOR
    options = dict(separator_options, nb_threads=1)
    _WORKER_SEPARATOR = load_separator(**options)


def _worker_separate(path, file_options):
    """In a worker: separate `path`; returns ``(result, error line)`` as `_user_error`."""
    return _user_error(lambda: separate_file(path, _WORKER_SEPARATOR, **file_options))
