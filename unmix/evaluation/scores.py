"""BSSEval scores as MUSDB papers report them: per track as museval computes them, then tables.

- The constant tables: musdb's targets (`MUSDB_TARGETS`), the metrics, museval's framing, the
  scorers (`SCORERS`), the published Open-Unmix SDRs and the names of the MUSDB18 test tracks.
- One track: the references musdb sums (`musdb_references`), which targets museval scores
  (`scored_targets`) and their scores (`score_track`, as ``museval.eval_mus_track``: by default
  with `unmix.evaluation.bsseval`, museval's numbers within 1e-3 dB and many times faster).
- All tracks, as in MUSDB papers and ``museval.EvalStore``: the median over a track's 1 s
  frames, then the median over tracks, per target and metric (`aggregate`); the markdown table
  (`format_table`, with the published SDRs beside it on the full MUSDB18 test set), the CSV and
  the per-track SDR box plot (`plot_sdr`).

Arrays are ``(nb_channels, nb_timesteps)`` as in the rest of unmix; they are transposed to
museval's ``(nb_timesteps, nb_channels)`` only where museval is called.
"""
import contextlib
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unmix.errors import UnmixError
from unmix.evaluation import bsseval
from unmix.io.files import atomic_path

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
# one track: references and scores (museval.eval_mus_track, for arrays)


def musdb_references(sources, targets):
    """musdb's reference signals (``track.targets[t].audio``) for the `targets` it knows.

    Summed in musdb's order with numpy's reduction, so they equal musdb's bit for bit.

    Returns:
        dict target -> float64 ``(nb_channels, nb_timesteps)``.
    """
    return {t: np.sum(np.array([sources[s] for s in MUSDB_TARGETS[t]]), axis=0)
            for t in targets if t in MUSDB_TARGETS}


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
    """museval, imported on first use: its import needs ffmpeg (through musdb and stempeg),
    which the NNabla-free separation must not, and a missing ffmpeg is then one clear line."""
    try:
        import museval
    except Exception as exc:  # museval imports musdb/stempeg, which look for ffmpeg
        raise UnmixError(f"museval could not be imported ({' '.join(str(exc).split())}); "
                         "install it with ffmpeg (e.g. `apt-get install ffmpeg`)") from None
    return museval


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


# ----------------------------------------------------------------------------------------
# all tracks: aggregation, table, plot


def load_scores(json_paths):
    """museval's long table (track, target, metric, time, score) of per-track JSON files."""
    import pandas as pd  # only here and in a run's end: pandas takes a second to import

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
    # imported when drawing: matplotlib is slow to import and few runs plot
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
    with writing(path), atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


@contextlib.contextmanager
def writing(path):
    """Turn an OSError while writing `path` (a missing permission, a full disk) into one line
    (an UnmixError); used for every file of an evaldir."""
    try:
        yield
    except OSError as exc:
        raise UnmixError(f"cannot write {path}: {exc.strerror or exc}") from None


def save_tables(scores, text, evaldir):
    """Write `scores` to ``<evaldir>/scores.csv`` and `text` (the markdown table with its
    caption) to ``<evaldir>/scores.md``, each atomically."""
    with writing(evaldir / "scores.csv"), atomic_path(evaldir / "scores.csv") as tmp:
        scores.round(5).to_csv(tmp, index_label="target")
    with writing(evaldir / "scores.md"), atomic_path(evaldir / "scores.md") as tmp:
        tmp.write_text(text + "\n")
