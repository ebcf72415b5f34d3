"""Score separations on MUSDB18 with museval (BSSEval v4), as the MUSDB papers do: the run.

For each track of a MUSDB18 subset, either ``<root>/<subset>/<track>.stem.mp4`` or the
MUSDB18-HQ layout ``<root>/<subset>/<track>/{mixture,vocals,drums,bass,other}.{wav,flac}``:

1. read the mixture and the four sources the way musdb does (`unmix.io.musdb.load_track`:
   stems decoded by ffmpeg to 16-bit through stempeg; wav/flac by libsndfile, which for 16-bit
   files such as MUSDB18-HQ gives exactly musdb's samples, and also reads the flac folders
   musdb cannot);
2. estimate the targets: with a separator (`ModelEstimator`), or with an oracle
   (`unmix.evaluation.oracles`);
3. score them as ``museval.eval_mus_track`` does (`unmix.evaluation.scores.score_track`; the
   tracks in local processes or on a Dask cluster, `unmix.cluster`) and write museval's
   per-track JSON to ``<evaldir>/<subset>/<track>.json``, atomically. That file marks the track
   done: a rerun skips it, so a crash loses at most the tracks in flight.
   ``<evaldir>/settings.json`` records what made the scores (model or oracle, targets, filter
   options, dataset, scorer): a rerun with other settings is refused rather than mixing two
   methods' scores in one table.

The scores are then aggregated as in MUSDB papers (`unmix.evaluation.scores`): the table goes
to ``<evaldir>/scores.csv`` and ``scores.md``, the optional plot to a PNG.

`evaluate` takes an `EvaluateOptions`; `unmix evaluate` builds one from its flags.
"""
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import threadpoolctl
from tqdm import tqdm

from unmix import cluster
from unmix.errors import UnmixError
from unmix.evaluation.oracles import ORACLES, OracleEstimator
from unmix.evaluation.scores import (MUSDB_TARGETS, SCORER_NAMES, SCORERS, aggregate, format_table,
                                     is_musdb18_test, load_scores, musdb_references, plot_sdr, save_tables,
                                     score_track, scored_targets, summary_line, writing)
from unmix.io import audio as audio_io
from unmix.io.files import atomic_path
from unmix.io.musdb import find_tracks, load_track
from unmix.separation.separator import load_separator
from unmix.weights import registry


# ----------------------------------------------------------------------------------------
# options and result


@dataclass(frozen=True)
class EvaluateOptions:
    """What an evaluation run needs; the defaults are `unmix evaluate`'s.

    Attributes:
        root, subset, is_wav, tracks: which tracks (see `unmix.io.musdb.find_tracks`).
        model, targets, niter, residual, wiener_win_len, backend: the separator
            (see `unmix.load_separator`; `wiener_win_len` 0: whole tracks); ignored with `oracle`.
        oracle: IRM1, IRM2, IBM or MIX instead of a model (targets default to the four sources).
        outdir: also write the estimates to ``<outdir>/<subset>/<track>/<target>.wav``.
        evaldir: per-track JSON, scores.csv, scores.md and settings.json (default
            ``eval/<method>``); a rerun skips the tracks scored there, and refuses other settings
            (see `check_settings`).
        cores: tracks evaluated in parallel processes.
        scheduler: address of a Dask scheduler (``tcp://host:8786``): the tracks run on its
            workers instead of local processes (see `unmix.cluster`); `cores` is then unused.
        scorer: "fast" (`unmix.evaluation.bsseval`, museval's numbers within 1e-3 dB) or "museval".
        plot: write the per-track SDR box plot to this PNG.
        progress: show a progress bar.
    """

    root: str
    subset: str = "test"
    is_wav: bool = False
    tracks: Optional[Sequence[str]] = None
    model: Optional[str] = None
    targets: Optional[Sequence[str]] = None
    niter: int = 1
    residual: Optional[str] = None
    wiener_win_len: int = 300
    backend: str = "auto"
    oracle: Optional[str] = None
    outdir: Optional[str] = None
    evaldir: Optional[str] = None
    cores: int = 1
    scheduler: Optional[str] = None
    scorer: str = "fast"
    plot: Optional[str] = None
    progress: bool = True


@dataclass
class Evaluation:
    """What `evaluate` returns: the scored tracks, the tables and where they went."""

    method: str
    tracks: List[str]
    per_track: object  # pandas DataFrame, (track, target) x metric
    scores: object  # pandas DataFrame, target x metric
    table: str
    evaldir: Path
    skipped: List[str]
    scorer: str


# ----------------------------------------------------------------------------------------
# estimators: what gives the estimates of a track (oracles: `unmix.evaluation.oracles`)


class ModelEstimator:
    """The estimates of a `unmix.separation.separator.Separator` (the true sources are not used)."""

    def __init__(self, separator):
        self.separator = separator
        self.targets = list(separator.targets)

    def __call__(self, mixture, sources, rate):
        # the reference casts musdb's float64 mixture to float32 before separating
        return self.separator.separate(mixture.astype(np.float32), rate)

    def settings(self):
        """What decides the scores (see `run_settings`), as the separator resolved them."""
        sep = self.separator
        onnx = any(type(m).__module__ == "unmix.models.onnx_graph" for m in sep.models.values())
        return {"targets": list(self.targets), "niter": sep.niter, "wiener_win_len": sep.wiener_win_len or 0,
                "residual": sep.residual, "softmask": sep.softmask, "backend": "onnx" if onnx else "nnabla"}


def make_estimator(spec):
    """An estimator from a picklable spec: ``("oracle", method, targets)`` or
    ``("model", load_separator keyword arguments)``."""
    if spec[0] == "oracle":
        return OracleEstimator(spec[1], spec[2])
    return ModelEstimator(load_separator(**spec[1]))


# ----------------------------------------------------------------------------------------
# one track


def track_json_path(evaldir, track):
    """Where museval's JSON of `track` goes (as eval_mus_track writes it)."""
    return Path(evaldir) / track.subset / f"{track.name}.json"


def estimate_paths(outdir, track, targets):
    """``<outdir>/<subset>/<track>/<target>.wav`` (musdb's `save_estimates` layout)."""
    return {t: Path(outdir) / track.subset / track.name / f"{t}.wav" for t in targets}


def is_done(track, evaldir, targets, outdir=None):
    """True when the track's JSON holds exactly the scores of `targets` (and, with
    `outdir`, its estimates are there): a rerun can skip it."""
    path = track_json_path(evaldir, track)
    try:
        scores = json.loads(path.read_text())
        names = [t["name"] for t in scores["targets"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if names != scored_targets(targets):
        return False
    return outdir is None or all(p.is_file() for p in estimate_paths(outdir, track, targets).values())


def evaluate_track(track, estimator, evaldir, outdir=None, scorer="fast", threads=None):
    """Estimate, (save,) score one track and write its JSON.

    Args:
        scorer, threads: see `unmix.evaluation.scores.score_track`.

    Returns:
        ``museval.TrackStore`` of its scores.
    """
    mixture, sources, rate = load_track(track)
    estimates = estimator(mixture, sources, rate)
    if outdir is not None:
        for target, path in estimate_paths(outdir, track, estimates).items():
            audio_io.save(path, estimates[target], rate)
    references = musdb_references(sources, scored_targets(list(estimates)))
    store = score_track(track.name, references, estimates, rate, scorer=scorer, threads=threads)
    with atomic_path(track_json_path(evaldir, track)) as tmp:  # last: it marks the track done
        tmp.write_text(store.json)
    return store


def evaluate_track_safely(track, estimator, evaldir, outdir=None, scorer="fast", threads=None):
    """`evaluate_track` that reports instead of raising what a user can cause.

    Returns:
        ``(summary line, None)`` on success, ``(None, one-line error naming the track)``.
    """
    start = time.time()
    try:
        store = evaluate_track(track, estimator, evaldir, outdir, scorer, threads)
        return f"{summary_line(store)} ({time.time() - start:.0f} s)", None
    except UnmixError as exc:
        error = str(exc)
    except OSError as exc:  # e.g. a full disk or a read-only folder while writing
        error = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    except Exception as exc:  # a bug or an odd track (say 0 samples): one line, the others go on
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return None, error if track.name in error else f"{track.name}: {error}"


_WORKER_ESTIMATOR = None


def _init_worker(spec):
    """A pool process: one thread for everything, since there is one process per core already
    (museval's large linear solves would otherwise start a BLAS thread per core in every
    process: --cores N on N cores ran N^2 threads)."""
    global _WORKER_ESTIMATOR
    threadpoolctl.threadpool_limits(1)
    if spec[0] == "model":
        spec = ("model", dict(spec[1], nb_threads=1))
    _WORKER_ESTIMATOR = make_estimator(spec)


def _worker_track(track, evaldir, outdir, scorer):
    """In a worker process: `evaluate_track_safely` with the worker's estimator (one thread)."""
    return evaluate_track_safely(track, _WORKER_ESTIMATOR, evaldir, outdir, scorer, threads=1)


def _cluster_track(track, spec, evaldir, outdir, scorer):
    """In a Dask worker: `evaluate_track_safely` with the estimator of `spec`, made once per
    worker process. One thread per track, as in a local pool: a worker runs as many tracks
    at once as it has threads (``dask-worker --nthreads``)."""
    if spec[0] == "model":
        spec = ("model", dict(spec[1], nb_threads=1))
    estimator = cluster.worker_cached(json.dumps(spec, sort_keys=True), lambda: make_estimator(spec))
    return evaluate_track_safely(track, estimator, evaldir, outdir, scorer, threads=1)


# ----------------------------------------------------------------------------------------
# settings: what made the scores of an evaldir

SETTINGS_FILE = "settings.json"


def run_settings(estimator, model_path, root, subset, is_wav, scorer="fast"):
    """The settings that decide a run's scores, as plain JSON values: the method (model
    folder or oracle), the estimator's options (`settings()` of `OracleEstimator` /
    `ModelEstimator`), the dataset (real path of the root, layout, subset) and the scorer.
    What cannot change a score (cores, scheduler, plot, outdir, the track selection) is left out."""
    settings = {"model": str(model_path) if model_path is not None else None}
    settings.update(estimator.settings())
    settings.update(root=os.path.realpath(Path(root).expanduser()), is_wav=bool(is_wav), subset=subset,
                    scorer=scorer)
    return json.loads(json.dumps(settings))  # tuples -> lists: compares equal to the file's


def check_settings(evaldir, settings):
    """Make sure `evaldir` holds (or will hold) scores of `settings` only.

    The first run writes ``<evaldir>/settings.json``; a later run must have the same settings.

    Raises:
        UnmixError: other settings, an unreadable settings file, or per-track scores
            without a settings file (written before unmix recorded them).
    """
    evaldir = Path(evaldir)
    path = evaldir / SETTINGS_FILE
    if not path.exists():
        if any((evaldir / settings["subset"]).glob("*.json")):
            raise UnmixError(f"{evaldir} holds scores without {SETTINGS_FILE} (settings unknown); "
                             "use another --evaldir or remove it")
        with writing(path), atomic_path(path) as tmp:
            tmp.write_text(json.dumps(settings, indent=2) + "\n")
        return
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise UnmixError(f"cannot read {path} ({' '.join(str(exc).split())}); "
                         "use another --evaldir or remove it") from None
    old.setdefault("scorer", "museval")  # written before unmix had its own scorer
    changed = [f"{key}: {_show(old.get(key))} -> {_show(settings.get(key))}"
               for key in sorted(set(old) | set(settings)) if old.get(key) != settings.get(key)]
    if changed:
        raise UnmixError(f"{evaldir} holds scores made with other settings ({'; '.join(changed)}); "
                         "use another --evaldir or remove it")


def _show(value):
    return "none" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


# ----------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------
# the whole run


def evaluate(options: EvaluateOptions, log=None):
    """Evaluate a model (or an oracle) on every track of a MUSDB18 subset.

    Args:
        options: what to evaluate, on which tracks, where results go (`EvaluateOptions`).
        log: where progress lines go (default stderr).

    Returns:
        `Evaluation`.

    Raises:
        UnmixError: for a user's mistake before any track; after the tracks when one or more
            failed (each reported in one line as it failed, the others scored).
    """
    o, log = options, log or sys.stderr
    _check_options(o)
    found = find_tracks(o.root, o.subset, o.is_wav, o.tracks)
    spec, method = _estimator_spec(o)
    estimator = make_estimator(spec)  # a bad model or target list fails here, before any track
    _check_scored(estimator.targets, log)
    evaldir = Path(o.evaldir) if o.evaldir is not None else Path("eval") / method
    model_path = spec[1]["model"] if spec[0] == "model" else None
    check_settings(evaldir, run_settings(estimator, model_path, o.root, o.subset, o.is_wav, o.scorer))
    todo = [t for t in found if not is_done(t, evaldir, estimator.targets, o.outdir)]
    skipped = [t.name for t in found if t not in todo]
    if skipped:
        print(f"{len(skipped)} of {len(found)} tracks already scored in {evaldir}, skipped", file=log)
    run = _Run(spec, evaldir.resolve(), Path(o.outdir).resolve() if o.outdir is not None else None, o.scorer)
    if o.scheduler is not None:
        failed = _run_on_cluster(todo, run, o.scheduler, o.progress, log)
    else:
        failed = _run_tracks(todo, estimator, run, o.cores, o.progress, log)
    if failed:
        others = f"the others are scored in {evaldir}, " if failed < len(todo) else ""
        raise UnmixError(f"{failed} of {len(todo)} tracks failed (see above); {others}a rerun does only the failed ones")

    per_track, scores = aggregate(load_scores([track_json_path(evaldir, t) for t in found]))
    names = [t.name for t in found]
    table = format_table(scores, published=is_musdb18_test(names))
    caption = (f"{method}: {o.subset}, median over 1 s frames, then over {len(names)} tracks (dB); "
               f"scored by {SCORER_NAMES[o.scorer]}")
    save_tables(scores, f"{caption}\n\n{table}", evaldir)
    if o.plot is not None:
        plot_sdr(per_track, o.plot, title=f"{method}: {o.subset} ({len(found)} tracks)")
    return Evaluation(method, names, per_track, scores, table, evaldir, skipped, o.scorer)


def _check_options(o: EvaluateOptions):
    """One-line errors for options that cannot work, before any track is read."""
    if o.cores < 1:
        raise UnmixError(f"--cores must be >= 1, got {o.cores}")
    if o.scorer not in SCORERS:
        raise UnmixError(f"unknown scorer '{o.scorer}': use one of {', '.join(SCORERS)}")
    if o.plot is not None and Path(o.plot).suffix.lower() != ".png":
        raise UnmixError(f"the plot is written as PNG: give a .png path, not {o.plot}")


def _check_scored(targets, log):
    """Refuse `targets` museval would not score; note those it leaves out."""
    scored = scored_targets(targets)
    if not scored:
        raise UnmixError(f"museval scores two MUSDB targets or more ({', '.join(MUSDB_TARGETS)}); "
                         f"got {', '.join(targets)}")
    ignored = [t for t in targets if t not in scored]
    if ignored:
        print(f"note: {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} not scored "
              "(museval scores MUSDB targets only)", file=log)


def _estimator_spec(o: EvaluateOptions):
    """``(spec for make_estimator, method name)`` of the options' model or oracle."""
    if o.oracle is not None:
        if o.oracle not in ORACLES:
            raise UnmixError(f"unknown oracle '{o.oracle}': use one of {', '.join(ORACLES)}")
        return ("oracle", o.oracle, list(o.targets) if o.targets else None), o.oracle
    folder = registry.resolve_model(o.model)  # once here, so workers find a folder
    options = dict(model=str(folder), targets=list(o.targets) if o.targets else None, niter=o.niter,
                   residual=o.residual, wiener_win_len=o.wiener_win_len or None, backend=o.backend)
    return ("model", options), Path(folder).name


@dataclass(frozen=True)
class _Run:
    """What every track of a run shares: the estimator's spec and where results go."""

    spec: tuple
    evaldir: Path
    outdir: object  # Path or None
    scorer: str


def _run_tracks(todo, estimator, run, cores, progress, log):
    """Evaluate `todo`, reporting each track as it ends (a failed one does not stop the others).

    Returns:
        the number of tracks that failed.
    """
    bar = _bar(todo, progress, log)
    try:
        if cores == 1 or len(todo) <= 1:
            results = (evaluate_track_safely(t, estimator, run.evaldir, run.outdir, run.scorer) for t in todo)
            return _report(results, bar, log)
        with _pool(min(cores, len(todo)), run.spec) as pool:
            futures = [pool.submit(_worker_track, t, run.evaldir, run.outdir, run.scorer) for t in todo]
            return _report((f.result() for f in concurrent.futures.as_completed(futures)), bar, log)
    except BrokenProcessPool:  # a worker killed (the OOM killer, a crash)
        raise UnmixError("a worker process died (out of memory?); try fewer --cores") from None
    finally:
        bar.close()


def _run_on_cluster(todo, run, scheduler, progress, log):
    """`_run_tracks` on the Dask cluster at `scheduler`: one task per track."""
    # the workers' current folders are not ours: every path they get is absolute
    todo = [dataclasses.replace(t, path=os.path.abspath(t.path)) for t in todo]
    spec = ("model", dict(run.spec[1], model=os.path.abspath(run.spec[1]["model"]))) if run.spec[0] == "model" \
        else run.spec
    bar = _bar(todo, progress, log)
    try:
        tasks = cluster.map_unordered(scheduler, _cluster_track, todo, spec, run.evaldir, run.outdir, run.scorer)
        results = (result if error is None else (None, f"{track.name}: {error}") for track, result, error in tasks)
        return _report(results, bar, log)
    finally:
        bar.close()


def _bar(todo, progress, log):
    """The run's progress bar (tracks), on `log`."""
    return tqdm(total=len(todo), unit="track", desc="evaluating", disable=not progress or not todo, file=log)


def _report(results, bar, log):
    """One line per finished track: its SDRs or ``error: <its error>``. Returns the errors' count."""
    failed = 0
    for line, error in results:
        if error is not None:
            bar.write(f"error: {error}", file=log)
            failed += 1
        else:
            bar.write(line, file=log)
        bar.update()
    return failed


@contextlib.contextmanager
def _pool(workers, spec):
    """A pool of `workers` processes, each with the estimator of `spec` (see `_init_worker`)."""
    pool = concurrent.futures.ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(spec,))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
