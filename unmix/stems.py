"""Files in, stem folders out: what `unmix separate` does for each input file.

Each track is written to a hidden temporary folder beside its destination and renamed
to ``<outdir>/<track name>/`` only when every stem is on disk, so an error (a full disk,
Ctrl-C) leaves no half-written track, and an earlier result is replaced only with `force`.
"""
import concurrent.futures
import contextlib
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from unmix import audio as audio_io
from unmix.errors import UnmixError, atomic_folder

OUTPUT_EXTENSIONS = (".wav", ".flac")


def track_name(path):
    """``song.mp3`` -> ``song``; ``Artist - Title.stem.mp4`` -> ``Artist - Title``."""
    name = Path(path).name
    for suffix in (".stem.mp4", ".stem.m4a"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def track_folder(path, outdir):
    """Where the stems of `path` go."""
    return Path(outdir) / track_name(path)


def separate_file(path, separator, outdir, ext=".wav", start=0.0, duration=None, force=False, downmix=False,
                  progress=False):
    """Separate one audio file and write ``<outdir>/<track>/<target><ext>``.

    Returns:
        the track folder.
    """
    if ext not in OUTPUT_EXTENSIONS:
        raise UnmixError(f"unsupported output extension {ext}: use {' or '.join(OUTPUT_EXTENSIONS)}")
    dest = track_folder(path, outdir)
    if dest.exists() and not force:
        raise UnmixError(f"{dest} exists; use --force to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)  # an unwritable outdir fails before the work
    audio, rate = audio_io.load(path, start=start, duration=duration)
    chunks = separator.stream(audio, rate, downmix=downmix, progress=progress)
    # stems are streamed to disk window by window: a long song never exists whole in memory
    with atomic_folder(dest) as tmp, contextlib.ExitStack() as files:
        writers = {}

        def write(chunk):
            for target, value in chunk.items():
                if target not in writers:
                    writers[target] = files.enter_context(
                        audio_io.StreamWriter(tmp / f"{target}{ext}", rate, value.shape[0]))
                writers[target].write(value)

        _write_behind(chunks, write)
    return dest


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


def separate_files(paths, separator_options, file_options, jobs=1, scheduler=None):
    """Separate every file, one failure not stopping the others.

    Args:
        separator_options: keyword arguments of `unmix.load_separator`.
        file_options: keyword arguments of `separate_file` (outdir, ext, start, ...).
        jobs: files processed in parallel worker processes.
        scheduler: address of a Dask scheduler (``tcp://host:8786``): the files are separated
            on its workers instead (see `unmix.cluster`); `jobs` is then unused.

    Returns:
        the number of files that failed (each reported on stderr in one line).
    """
    from unmix.separator import load_separator

    separator = load_separator(**separator_options)  # a bad model fails here, once, before any file
    if scheduler is not None:
        return _separate_on_cluster(paths, separator_options, file_options, scheduler)
    if jobs <= 1 or len(paths) == 1:
        failures = 0
        for path in paths:
            error = _user_error(lambda: separate_file(path, separator, progress=True, **file_options))
            failures += _report(path, error, file_options["outdir"])
        return failures
    with concurrent.futures.ProcessPoolExecutor(jobs, initializer=_init_worker,
                                                initargs=(separator_options,)) as pool:
        futures = {pool.submit(_worker_separate, p, file_options): p for p in paths}
        done = tqdm(concurrent.futures.as_completed(futures), total=len(futures), unit="file", desc="separating")
        return sum(_report(futures[f], f.result(), file_options["outdir"]) for f in done)


def _separate_on_cluster(paths, separator_options, file_options, scheduler):
    """`separate_files` with one task per file on the Dask cluster at `scheduler`."""
    from unmix import cluster, pretrained

    # the workers' current folders are not ours: every path they get is absolute
    model = os.path.abspath(pretrained.resolve_model(separator_options.get("model")))
    options = dict(separator_options, model=model)
    remote = dict(file_options, outdir=os.path.abspath(file_options["outdir"]))
    given = {os.path.abspath(p): p for p in paths}
    tasks = cluster.map_unordered(scheduler, _cluster_separate, list(given), options, remote)
    failures = 0
    for path, error, task_error in tqdm(tasks, total=len(given), unit="file", desc="separating"):
        failures += _report(given[path], error or task_error, file_options["outdir"])
    return failures


def _cluster_separate(path, separator_options, file_options):
    """In a Dask worker: separate `path` with a separator loaded once per worker process, on
    one thread as in a local pool (a worker runs as many files at once as it has threads)."""
    from unmix import cluster
    from unmix.separator import load_separator

    separator_options = dict(separator_options, nb_threads=1)
    key = json.dumps(separator_options, sort_keys=True)
    separator = cluster.worker_cached(key, lambda: load_separator(**separator_options))
    return _user_error(lambda: separate_file(path, separator, **file_options))


def _report(path, error, outdir):
    """Print one line for `path`: where its stems went, or its error. Returns 1 on error."""
    if error:
        where = "" if str(path) in error else f"{path}: "
        tqdm.write(f"error: {where}{error}", file=sys.stderr)
        return 1
    tqdm.write(f"wrote {track_folder(path, outdir)}")
    return 0


def _user_error(work):
    """Run `work()`; None on success, else the one-line message of an error a user can cause."""
    try:
        work()
        return None
    except UnmixError as exc:
        return str(exc)
    except OSError as exc:  # e.g. a full disk or a read-only folder while writing
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


_WORKER_SEPARATOR = None


def _init_worker(separator_options):
    global _WORKER_SEPARATOR
    from unmix.separator import load_separator

    options = dict(separator_options, nb_threads=1)
    _WORKER_SEPARATOR = load_separator(**options)


def _worker_separate(path, file_options):
    """In a worker: separate `path`; returns None on success or the error line."""
    return _user_error(lambda: separate_file(path, _WORKER_SEPARATOR, **file_options))
