"""Score separations on MUSDB18 with museval (BSSEval v4), as the MUSDB papers do.

For each track of a MUSDB18 subset, either ``<root>/<subset>/<track>.stem.mp4`` or the
MUSDB18-HQ layout ``<root>/<subset>/<track>/{mixture,vocals,drums,bass,other}.{wav,flac}``:

1. read the mixture and the four sources the way musdb does (stems decoded by ffmpeg to
   16-bit through stempeg; wav/flac by libsndfile, which for 16-bit files such as
   MUSDB18-HQ gives exactly musdb's samples, and also reads the flac folders musdb cannot);
2. estimate the targets: with a separator, or with an oracle (see `ORACLES`);
3. score them as ``museval.eval_mus_track`` does (BSSEval v4, 1 s windows and hops, the
   vocals/accompaniment pair scored on its own; by default with `unmix.evaluation.bsseval`, museval's
   numbers within 1e-3 dB and many times faster, or museval itself: `SCORERS`; the tracks in
   local processes or on a Dask cluster, `unmix.cluster`) and write museval's per-track JSON to
   ``<evaldir>/<subset>/<track>.json``, atomically. That file marks the track done: a rerun
   skips it, so a crash loses at most the tracks in flight. ``<evaldir>/settings.json`` records
   what made the scores (model or oracle, targets, filter options, dataset, scorer): a rerun with other
   settings is refused rather than mixing two methods' scores in one table.

The scores are then aggregated as in MUSDB papers and ``museval.EvalStore``: the median over
a track's 1 s frames, then the median over tracks, per target and metric. The table goes to
``<evaldir>/scores.csv`` and ``scores.md``; on the full MUSDB18 test set the published
Open-Unmix SDRs (`PUBLISHED_SDR`) are shown beside it.

Arrays are ``(nb_channels, nb_timesteps)`` as in the rest of unmix; they are transposed to
museval's ``(nb_timesteps, nb_channels)`` only where museval is called.
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
from typing import List

import numpy as np
from tqdm import tqdm

from unmix.dsp import transforms
from unmix.errors import UnmixError
from unmix.io.files import atomic_path
from unmix.io.musdb import MUSDB_SOURCES, Track, find_tracks, load_track  # noqa: F401 (Track: for callers of load_track)

# musdb's targets (musdb 0.4 `configs/mus.yaml`, in its order): name -> the sources summed
# (all with gain 1), in the order musdb sums them.
MUSDB_TARGETS = {
    "vocals": ("vocals",),
    "drums": ("drums",),
    "bass": ("bass",),
    "other": ("other",),
    "accompaniment": ("bass", "drums", "other"),
    "linear_mixture": ("vocals", "bass", "drums", "other"),
}
METRICS = ("SDR", "SIR", "ISR", "SAR")
WIN_SECONDS = HOP_SECONDS = 1.0  # museval's (and every MUSDB paper's) framing
# "fast": unmix.evaluation.bsseval (museval's numbers to 1e-3 dB, tested; the default), "museval": museval itself
SCORERS = ("fast", "museval")
SCORER_NAMES = {"fast": "unmix.evaluation.bsseval (BSSEval v4, equal to museval within 1e-3 dB)", "museval": "museval"}

# Oracle estimates (sigsep-mus-oracle), from the true sources, on an STFT with the mixture's
# phase; a lower or upper bound to compare a model with.
#   IRM1 / IRM2: ratio masks of magnitudes (alpha 1) / powers (alpha 2) of the sources;
#   IBM: binary masks, 1 where |source| >= 0.5 |mixture| (sigsep's IBM.py sets mask values
#        > 0.5 to 1 and < 0.5 to 0, leaving an exact 0.5 as is; here that rare bin gets 1);
#   MIX: the mixture itself as every estimate, the usual "input SDR" lower bound (sigsep's
#        MIX.py divides it by the number of sources instead; BSSEval v4 compares estimates with
#        the true images without rescaling, so the two give different scores).
ORACLES = ("IRM1", "IRM2", "IBM", "MIX")
# The oracles' STFT: sigsep-mus-oracle's (IRM.py, IBM.py: scipy.signal.stft with nperseg 2048,
# its default hop of half a frame, periodic Hann), which the published oracle scores come from;
# not the models' 4096/1024, which gives IRM2 0.5-1.4 dB more SDR on musdb-synth-mini.
# Frames are centred as in scipy (padding n_fft / 2 each side), so only the padded edges
# differ (reflected here, zeros in scipy); the masks are scale-free, so scipy's window
# scaling does not matter.
ORACLE_N_FFT, ORACLE_N_HOP = 2048, 1024
ORACLE_TARGETS = MUSDB_SOURCES + ("accompaniment",)

# Published median SDRs (median over 1 s frames, then over the 50 MUSDB18 test tracks, museval
# v4) of the pretrained Open-Unmix models, as listed in open-unmix-pytorch's README (openunmix
# 1.3.0 package description, "Scores (Median of frames, Median of tracks)"); UMX and UMXHQ are
# the models of Stöter et al., "Open-Unmix - A Reference Implementation for Music Source
# Separation", JOSS 4(41), 1667, 2019; UMXL is the model trained on extra data (2021).
PUBLISHED_SDR = {
    "UMX": {"vocals": 6.32, "drums": 5.73, "bass": 5.23, "other": 4.02},
    "UMXHQ": {"vocals": 6.25, "drums": 6.04, "bass": 5.07, "other": 4.28},
    "UMXL": {"vocals": 7.21, "drums": 7.15, "bass": 6.02, "other": 4.89},
}

# The 50 tracks of the MUSDB18 test subset (the same names in MUSDB18-HQ).
MUSDB18_TEST_TRACKS = frozenset({
    "AM Contra - Heart Peripheral", "Al James - Schoolboy Facination",
    "Angels In Amplifiers - I'm Alright", "Arise - Run Run Run", "BKS - Bulldozer", "BKS - Too Much",
    "Ben Carrigan - We'll Talk About It All Tonight", "Bobby Nobody - Stitch Up", "Buitraker - Revo X",
    "Carlos Gonzalez - A Place For Us", "Cristina Vane - So Easy", "Detsky Sad - Walkie Talkie",
    "Enda Reilly - Cur An Long Ag Seol", "Forkupines - Semantics", "Georgia Wonder - Siren",
    "Girls Under Glass - We Feel Alright", "Hollow Ground - Ill Fate",
    "James Elder & Mark M Thompson - The English Actor", "Juliet's Rescue - Heartbeats",
    "Little Chicago's Finest - My Own", "Louis Cressy Band - Good Time", "Lyndsey Ollard - Catching Up",
    "M.E.R.C. Music - Knockout", "Moosmusic - Big Dummy Shake", "Motor Tapes - Shore", "Mu - Too Bright",
    "Nerve 9 - Pray For The Rain", "PR - Happy Daze", "PR - Oh No", "Punkdisco - Oral Hygiene",
    "Raft Monk - Tiring", "Sambasevam Shanmugam - Kaathaadi", "Secretariat - Borderline",
    "Secretariat - Over The Top", "Side Effects Project - Sing With Me",
    "Signe Jakobsen - What Have You Done To Me", "Skelpolu - Resurrection", "Speak Softly - Broken Man",
    "Speak Softly - Like Horses", "The Doppler Shift - Atrophy", "The Easton Ellises (Baumi) - SDRNR",
    "The Easton Ellises - Falcon 69", "The Long Wait - Dark Horses", "The Mountaineering Club - Mallory",
    "The Sunshine Garcia Band - For I Am The Moon", "Timboz - Pony", "Tom McKenzie - Directions",
    "Triviul feat. The Fiend - Widow", "We Fell From The Sky - Not You", "Zeno - Signs",
})


# ----------------------------------------------------------------------------------------
# tracks


def musdb_references(sources, targets):
    """musdb's reference signals (``track.targets[t].audio``) for the `targets` it knows.

    Summed in musdb's order with numpy's reduction, so they equal musdb's bit for bit.

    Returns:
        dict target -> float64 ``(nb_channels, nb_timesteps)``.
    """
    return {t: np.sum(np.array([sources[s] for s in MUSDB_TARGETS[t]]), axis=0)
            for t in targets if t in MUSDB_TARGETS}


# ----------------------------------------------------------------------------------------
# scoring (museval.eval_mus_track, for arrays)


def scored_targets(names):
    """The targets that ``museval.eval_mus_track`` scores for estimates named `names`, in
    the order it stores them: the MUSDB targets among them (in musdb's order) when there are
    two or more, and with both vocals and accompaniment, that pair scored on its own (last).
    Anything else (say a residual named 'karaoke') is not scored."""
    known = [t for t in MUSDB_TARGETS if t in names]
    has_acc = "vocals" in known and "accompaniment" in known
    if has_acc:
        known.remove("accompaniment")
    out = [t for t in known if not (has_acc and t == "vocals")] if len(known) >= 2 else []
    return out + (["vocals", "accompaniment"] if has_acc else [])


def score_track(name, references, estimates, rate, win=WIN_SECONDS, hop=HOP_SECONDS, scorer="fast", threads=None):
    """BSSEval v4 scores of one track, as ``museval.eval_mus_track`` computes them.

    Args:
        references: target -> true signal ``(nb_channels, nb_timesteps)`` (see `musdb_references`).
        estimates: target -> estimate ``(nb_channels, nb_timesteps)``; names that are not MUSDB
            targets are ignored, estimates are cut or zero-padded to the references' length.
        win, hop: framing in seconds.
        scorer: "fast" (`unmix.evaluation.bsseval`: museval's numbers to 1e-3 dB, many times faster) or
            "museval" (museval itself).
        threads: threads of the fast scorer (default: the cores this process may use).

    Returns:
        ``museval.TrackStore`` (its ``.json`` is the per-track JSON museval writes).
    """
    if scorer not in SCORERS:
        raise UnmixError(f"unknown scorer '{scorer}': use one of {', '.join(SCORERS)}")
    museval = _museval()
    store = museval.TrackStore(win=win, hop=hop, track_name=name)
    names = [t for t in MUSDB_TARGETS if t in estimates]
    has_acc = "vocals" in names and "accompaniment" in names
    main = [t for t in names if t != "accompaniment"] if has_acc else names
    # (sources evaluated jointly, sources stored): museval measures interference against the
    # other references of a group, and stores vocals from the vocals/accompaniment pair
    groups = []
    if len(main) >= 2:
        groups.append((main, [t for t in main if not (has_acc and t == "vocals")]))
    if has_acc:
        groups.append((["vocals", "accompaniment"], ["vocals", "accompaniment"]))
    _check_not_silent(name, references, estimates, [t for group, _ in groups for t in group])
    window, step = int(win * rate), int(hop * rate)
    if scorer == "fast":
        from unmix.evaluation import bsseval

        results = bsseval.eval_track(references, estimates, [g for g, _ in groups], window, step, workers=threads)
    else:
        results = [museval.evaluate([references[t].T for t in group], [estimates[t].T for t in group],
                                    win=window, hop=step, mode="v4") for group, _ in groups]
    for (group, stored), (sdr, isr, sir, sar) in zip(groups, results):
        for i, target in enumerate(group):
            if target in stored:
                values = {"SDR": sdr[i].tolist(), "SIR": sir[i].tolist(), "ISR": isr[i].tolist(),
                          "SAR": sar[i].tolist()}
                store.add_target(target_name=target, values=values)
    store.validate()
    return store


def _check_not_silent(name, references, estimates, targets):
    """UnmixError naming the `targets` whose reference (or else whose estimate) is all zeros.

    BSSEval cannot score a track where a source is silent throughout (museval raises a
    ValueError that names no source); MUSDB18's own tracks have none, but a user's folder can.
    """
    for kind, signals in (("reference", references), ("estimate", estimates)):
        silent = [t for t in dict.fromkeys(targets) if not np.any(signals[t])]
        if silent:
            raise UnmixError(f"{name}: the {kind} of {', '.join(silent)} is silent throughout, "
                             "and BSSEval cannot score a silent source")


def _museval():
    try:
        import museval
    except Exception as exc:  # museval imports musdb/stempeg, which look for ffmpeg
        raise UnmixError(f"museval could not be imported ({' '.join(str(exc).split())}); "
                         "install it with ffmpeg (e.g. `apt-get install ffmpeg`)") from None
    return museval


# ----------------------------------------------------------------------------------------
# oracles


def oracle_estimates(mixture, sources, method, n_fft=ORACLE_N_FFT, n_hop=ORACLE_N_HOP, eps=np.finfo(float).eps):
    """Oracle estimates of the four sources and the accompaniment (see `ORACLES`).

    Each channel is processed on its own, as in sigsep-mus-oracle, on an STFT of
    `n_fft` / `n_hop` (default sigsep's, `ORACLE_N_FFT` / `ORACLE_N_HOP`).

    Args:
        mixture: ``(nb_channels, nb_timesteps)``.
        sources: source -> ``(nb_channels, nb_timesteps)`` (vocals, drums, bass, other).
        method: IRM1, IRM2, IBM or MIX.

    Returns:
        dict target -> float32 ``(nb_channels, nb_timesteps)`` for vocals, drums, bass, other
        and accompaniment (drums + bass + other; MIX: the mixture).
    """
    if method not in ORACLES:
        raise UnmixError(f"unknown oracle '{method}': use one of {', '.join(ORACLES)}")
    if method == "MIX":
        est = {s: mixture.astype(np.float32) for s in MUSDB_SOURCES}
        est["accompaniment"] = est["vocals"]
        return est
    else:
        est = {s: np.empty(mixture.shape, np.float32) for s in MUSDB_SOURCES}
        for c in range(mixture.shape[0]):  # one channel at a time bounds memory on long songs
            masked = _oracle_channel(mixture[c], {s: a[c] for s, a in sources.items()}, method, n_fft, n_hop, eps)
            for s in MUSDB_SOURCES:
                est[s][c] = masked[s]
    est["accompaniment"] = est["drums"] + est["bass"] + est["other"]
    return est


def _oracle_channel(mix, sources, method, n_fft, n_hop, eps):
    """One channel ``(nb_timesteps,)`` -> source -> masked mixture ``(nb_timesteps,)``."""
    spec = transforms.stft(mix, n_fft, n_hop)  # (nb_bins, nb_frames)
    out = {}
    if method == "IBM":
        mix_mag = eps + np.abs(spec)
        for s in MUSDB_SOURCES:
            mask = (np.abs(transforms.stft(sources[s], n_fft, n_hop)) / mix_mag) >= 0.5
            out[s] = transforms.istft(spec * mask, n_fft, n_hop, length=mix.shape[-1])
        return out
    alpha = 1 if method == "IRM1" else 2
    powers = {s: np.abs(transforms.stft(sources[s], n_fft, n_hop)) ** alpha for s in MUSDB_SOURCES}
    total = eps + sum(powers.values())
    for s in MUSDB_SOURCES:
        out[s] = transforms.istft(spec * (powers[s] / total), n_fft, n_hop, length=mix.shape[-1])
    return out


# ----------------------------------------------------------------------------------------
# estimators: what gives the estimates of a track


class OracleEstimator:
    """Oracle estimates of `targets` (see `oracle_estimates`)."""

    def __init__(self, method, targets=None):
        if method not in ORACLES:
            raise UnmixError(f"unknown oracle '{method}': use one of {', '.join(ORACLES)}")
        targets = list(targets or MUSDB_SOURCES)
        unknown = [t for t in targets if t not in ORACLE_TARGETS]
        if unknown:
            raise UnmixError(f"an oracle estimates {', '.join(ORACLE_TARGETS)}, not {', '.join(unknown)}")
        self.method, self.targets = method, targets

    def __call__(self, mixture, sources, rate):
        est = oracle_estimates(mixture, sources, self.method)
        return {t: est[t] for t in self.targets}

    def settings(self):
        """What decides the scores (see `run_settings`)."""
        out = {"oracle": self.method, "targets": list(self.targets)}
        if self.method != "MIX":  # the mixture needs no STFT
            out["oracle_stft"] = {"n_fft": ORACLE_N_FFT, "n_hop": ORACLE_N_HOP, "window": "hann"}
        return out


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
    from unmix.separation.separator import load_separator

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
        scorer, threads: see `score_track`.

    Returns:
        ``museval.TrackStore`` of its scores.
    """
    mixture, sources, rate = load_track(track)
    estimates = estimator(mixture, sources, rate)
    if outdir is not None:
        from unmix.io import audio as audio_io

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


def summary_line(store):
    """``name: vocals SDR 5.21 | drums SDR 3.10`` (medians over frames) of a TrackStore."""
    parts = [f"{t['name']} SDR {_median([float(f['metrics']['SDR']) for f in t['frames']]):.2f}"
             for t in store.scores["targets"]]
    return f"{store.track_name}: " + " | ".join(parts)


def _median(values):
    """Median ignoring NaN (museval's value for silent frames); NaN when nothing is left."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else float("nan")


_WORKER_ESTIMATOR = None


def _init_worker(spec):
    """A pool process: one thread for everything, since there is one process per core already
    (museval's large linear solves would otherwise start a BLAS thread per core in every
    process: --cores N on N cores ran N^2 threads)."""
    global _WORKER_ESTIMATOR
    import threadpoolctl

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
    from unmix import cluster

    if spec[0] == "model":
        spec = ("model", dict(spec[1], nb_threads=1))
    estimator = cluster.worker_cached(json.dumps(spec, sort_keys=True), lambda: make_estimator(spec))
    return evaluate_track_safely(track, estimator, evaldir, outdir, scorer, threads=1)


# ----------------------------------------------------------------------------------------
# aggregation, table, plot


def load_scores(json_paths):
    """museval's long table (track, target, metric, time, score) of per-track JSON files."""
    import pandas as pd

    museval = _museval()
    frames = []
    for path in json_paths:
        path = Path(path)
        try:
            frames.append(museval.json2df(json.loads(path.read_text()), path.stem))
        except (OSError, ValueError, KeyError) as exc:
            raise UnmixError(f"cannot read scores {path}: {exc}") from None
    if not frames:
        raise UnmixError("no scores to aggregate")
    return pd.concat(frames, ignore_index=True)


def aggregate(df):
    """Median over frames per track, then median over tracks (NaN frames skipped), as
    ``museval.EvalStore.agg_frames_tracks_scores``.

    Returns:
        ``(per_track, scores)``: per_track indexed by (track, target) with a column per
        metric; scores indexed by target (in MUSDB order) with columns SDR, SIR, ISR, SAR.
    """
    per_track = df.groupby(["track", "target", "metric"])["score"].median().unstack("metric")
    scores = per_track.groupby(level="target").median()
    order = [t for t in MUSDB_TARGETS if t in scores.index] + sorted(set(scores.index) - set(MUSDB_TARGETS))
    return per_track[list(METRICS)], scores.loc[order, list(METRICS)]


def is_musdb18_test(names):
    """True when `names` are the 50 tracks of the MUSDB18 test set."""
    return set(names) == MUSDB18_TEST_TRACKS


def format_table(scores, published=False):
    """A markdown table of `scores` (target x metric, dB); with `published`, the published
    Open-Unmix median SDRs beside it."""
    head = ["target"] + list(METRICS)
    if published:
        head += [f"{name} SDR" for name in PUBLISHED_SDR]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for target, row in scores.iterrows():
        cells = [target] + [f"{row[m]:.2f}" for m in METRICS]
        if published:
            cells += [f"{PUBLISHED_SDR[n][target]:.2f}" if target in PUBLISHED_SDR[n] else "" for n in PUBLISHED_SDR]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sdr(per_track, path, title=""):
    """Per-track SDRs (median over frames) as a box plot per target with the tracks as dots
    (on matplotlib's Agg canvas without pyplot: the caller's backend is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    targets = [t for t in MUSDB_TARGETS if t in per_track.index.get_level_values("target")]
    data = [per_track.xs(t, level="target")["SDR"].dropna().to_numpy() for t in targets]
    fig = Figure(figsize=(1.6 * len(targets) + 2, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(targets) + 1), targets)
    rng = np.random.default_rng(0)  # fixed jitter: the same scores draw the same picture
    for i, values in enumerate(data, start=1):
        ax.plot(i + rng.uniform(-0.15, 0.15, len(values)), values, "o", ms=3, alpha=0.6, color="C1")
    ax.set_ylabel("SDR (dB), median over 1 s frames")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with _writing(path), atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


@contextlib.contextmanager
def _writing(path):
    """Turn an OSError while writing `path` (a missing permission, a full disk) into one line."""
    try:
        yield
    except OSError as exc:
        raise UnmixError(f"cannot write {path}: {exc.strerror or exc}") from None


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
        with _writing(path), atomic_path(path) as tmp:
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
# the whole run


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


def evaluate(root, subset="test", is_wav=False, model=None, targets=None, niter=1, residual=None,
             wiener_win_len=300, backend="auto", oracle=None, outdir=None, evaldir=None, cores=1,
             tracks=None, plot=None, progress=True, log=None, scorer="fast", scheduler=None):
    """Evaluate a model (or an oracle) on every track of a MUSDB18 subset.

    Args:
        root, subset, is_wav, tracks: which tracks (see `find_tracks`).
        model, targets, niter, residual, wiener_win_len, backend: the separator
            (see `unmix.load_separator`); ignored with `oracle`.
        oracle: IRM1, IRM2, IBM or MIX instead of a model (targets default to the four sources).
        outdir: also write the estimates to ``<outdir>/<subset>/<track>/<target>.wav``.
        evaldir: per-track JSON, scores.csv, scores.md and settings.json (default
            ``eval/<method>``); a rerun skips the tracks scored there, and refuses other settings
            (see `check_settings`).
        cores: tracks evaluated in parallel processes.
        scorer: "fast" (`unmix.evaluation.bsseval`, museval's numbers within 1e-3 dB) or "museval".
        scheduler: address of a Dask scheduler (``tcp://host:8786``): the tracks run on its
            workers instead of local processes (see `unmix.cluster`); `cores` is then unused.
        plot: write the per-track SDR box plot to this PNG.
        log: where progress lines go (default stderr).

    Returns:
        `Evaluation`.

    Raises:
        UnmixError: for a user's mistake before any track; after the tracks when one or more
            failed (each reported in one line as it failed, the others scored).
    """
    log = log or sys.stderr
    if cores < 1:
        raise UnmixError(f"--cores must be >= 1, got {cores}")
    if scorer not in SCORERS:
        raise UnmixError(f"unknown scorer '{scorer}': use one of {', '.join(SCORERS)}")
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise UnmixError(f"the plot is written as PNG: give a .png path, not {plot}")
    found = find_tracks(root, subset, is_wav, tracks)
    spec, method = _estimator_spec(model, targets, niter, residual, wiener_win_len, backend, oracle)
    estimator = make_estimator(spec)  # a bad model or target list fails here, before any track
    scored = scored_targets(estimator.targets)
    if not scored:
        raise UnmixError(f"museval scores two MUSDB targets or more ({', '.join(MUSDB_TARGETS)}); "
                         f"got {', '.join(estimator.targets)}")
    ignored = [t for t in estimator.targets if t not in scored]
    if ignored:
        print(f"note: {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} not scored "
              "(museval scores MUSDB targets only)", file=log)
    evaldir = Path(evaldir) if evaldir is not None else Path("eval") / method
    model_path = spec[1]["model"] if spec[0] == "model" else None
    check_settings(evaldir, run_settings(estimator, model_path, root, subset, is_wav, scorer))
    todo = [t for t in found if not is_done(t, evaldir, estimator.targets, outdir)]
    skipped = [t.name for t in found if t not in todo]
    if skipped:
        print(f"{len(skipped)} of {len(found)} tracks already scored in {evaldir}, skipped", file=log)
    run = _Run(spec, evaldir.resolve(), Path(outdir).resolve() if outdir is not None else None, scorer)
    if scheduler is not None:
        failed = _run_on_cluster(todo, run, scheduler, progress, log)
    else:
        failed = _run_tracks(todo, estimator, run, cores, progress, log)
    if failed:
        others = f"the others are scored in {evaldir}, " if failed < len(todo) else ""
        raise UnmixError(f"{failed} of {len(todo)} tracks failed (see above); {others}a rerun does only the failed ones")

    per_track, scores = aggregate(load_scores([track_json_path(evaldir, t) for t in found]))
    names = [t.name for t in found]
    table = format_table(scores, published=is_musdb18_test(names))
    caption = (f"{method}: {subset}, median over 1 s frames, then over {len(names)} tracks (dB); "
               f"scored by {SCORER_NAMES[scorer]}")
    _save_tables(scores, f"{caption}\n\n{table}", evaldir)
    if plot is not None:
        plot_sdr(per_track, plot, title=f"{method}: {subset} ({len(found)} tracks)")
    return Evaluation(method, names, per_track, scores, table, evaldir, skipped, scorer)


def _estimator_spec(model, targets, niter, residual, wiener_win_len, backend, oracle):
    """``(spec for make_estimator, method name)``."""
    if oracle is not None:
        if oracle not in ORACLES:
            raise UnmixError(f"unknown oracle '{oracle}': use one of {', '.join(ORACLES)}")
        return ("oracle", oracle, list(targets) if targets else None), oracle
    from unmix.weights import registry

    folder = registry.resolve_model(model)  # once here, so workers find a folder
    options = dict(model=str(folder), targets=targets, niter=niter, residual=residual,
                   wiener_win_len=wiener_win_len or None, backend=backend)
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
    from unmix import cluster

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
    pool = concurrent.futures.ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(spec,))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _save_tables(scores, text, evaldir):
    with _writing(evaldir / "scores.csv"), atomic_path(evaldir / "scores.csv") as tmp:
        scores.round(5).to_csv(tmp, index_label="target")
    with _writing(evaldir / "scores.md"), atomic_path(evaldir / "scores.md") as tmp:
        tmp.write_text(text + "\n")
