"""Time unmix's BSSEval v4 scorer (unmix.evaluation.bsseval) against museval on the same 4-target track.

The track is the synthetic test songs of ../shared/data/musdb-synth-mini (12 s each) put end
to end until it lasts `--minutes`; the estimates are the IRM1 oracle's (unmix.evaluation.oracles'
`oracle_estimates`), song by song. Each scorer runs in its own fresh process, which reports
its time (scoring only, the arrays already in memory) and its peak resident memory
(``ru_maxrss``, including the ~0.2-1 GB of arrays both start with). Wall time and CPU time
(all threads) are both given: on a shared machine the CPU time is the steadier measure. Both score the same four
targets jointly, as ``museval.eval_mus_track`` does (vocals, drums, bass, other), with 1 s
windows; the largest difference between their finite values is printed too.

    .venv/bin/python benchmarks/bsseval_speed.py --minutes 1 4
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = ("vocals", "drums", "bass", "other")
# beside the repository (design.md, "Data at hand"), or where UNMIX_MUSDB_SYNTH_MINI says
DATA = Path(os.environ.get("UNMIX_MUSDB_SYNTH_MINI")
            or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "musdb-synth-mini")
RATE = 44100


def make_track(minutes, root):
    """``(references, estimates)``: target -> float64 / float32 ``(2, minutes * 60 * RATE)``."""
    from unmix.evaluation.oracles import oracle_estimates
    from unmix.io.musdb import find_tracks, load_track

    songs = find_tracks(root, "test", is_wav=True) + find_tracks(root, "train", is_wav=True)
    need = int(minutes * 60 * RATE)
    refs, ests, have = {t: [] for t in TARGETS}, {t: [] for t in TARGETS}, 0
    while have < need:
        for song in songs:
            mixture, sources, _ = load_track(song)
            est = oracle_estimates(mixture, sources, "IRM1")
            for t in TARGETS:
                refs[t].append(sources[t])
                ests[t].append(est[t])
            have += mixture.shape[-1]
            if have >= need:
                break
    return ({t: np.concatenate(refs[t], axis=-1)[:, :need] for t in TARGETS},
            {t: np.concatenate(ests[t], axis=-1)[:, :need] for t in TARGETS})


def run_scorer(scorer, data_path, out_path):
    """In a child process: score, save the scores, print time and peak memory as JSON."""
    data = np.load(data_path)
    refs = {t: data[f"ref_{t}"] for t in TARGETS}
    ests = {t: data[f"est_{t}"] for t in TARGETS}
    start, cpu = time.perf_counter(), _cpu_seconds()
    if scorer == "fast":
        from unmix.evaluation import bsseval

        scores = bsseval.eval_track(refs, ests, [list(TARGETS)], RATE, RATE)[0]
    else:
        import museval

        scores = np.stack(museval.evaluate([refs[t].T for t in TARGETS], [ests[t].T for t in TARGETS],
                                           win=RATE, hop=RATE, mode="v4"))
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    np.save(out_path, scores)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_mb": peak_mb}))


def _cpu_seconds():
    """CPU time of this process, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def max_difference(a, b):
    """Largest |a - b| over the finite values; raises if NaN/inf fall in different places."""
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not (np.array_equal(fa, fb) and np.array_equal(a[~fa], b[~fb], equal_nan=True)):
        raise AssertionError("the scorers disagree on which values are NaN or infinite")
    return float(np.abs(a[fa] - b[fa]).max()) if fa.any() else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 4])
    parser.add_argument("--root", default=str(DATA), help="MUSDB18-HQ layout folder with train/ and test/")
    parser.add_argument("--child", nargs=3, metavar=("SCORER", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_scorer(*args.child)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            refs, ests = make_track(minutes, args.root)
            data_path = Path(tmp) / "track.npz"
            np.savez(data_path, **{f"ref_{t}": refs[t] for t in TARGETS}, **{f"est_{t}": ests[t] for t in TARGETS})
            result = {}
            for scorer in ("fast", "museval"):
                out = Path(tmp) / f"{scorer}.npy"
                proc = subprocess.run([sys.executable, __file__, "--child", scorer, str(data_path), str(out)],
                                      check=True, capture_output=True, text=True)
                result[scorer] = json.loads(proc.stdout.strip().splitlines()[-1])
                result[scorer]["scores"] = np.load(out)
            diff = max_difference(result["fast"]["scores"], result["museval"]["scores"])
            rows.append((minutes, result, diff))
            fast, slow = result["fast"], result["museval"]
            print(f"{minutes:g} min: fast {fast['seconds']:.1f} s wall, {fast['cpu']:.1f} s CPU "
                  f"({fast['peak_mb']:.0f} MB); museval {slow['seconds']:.1f} s wall, {slow['cpu']:.1f} s CPU "
                  f"({slow['peak_mb']:.0f} MB); max difference {diff:.2g} dB", flush=True)
    print("\n| track | unmix.evaluation.bsseval wall / CPU | museval wall / CPU | speed-up wall / CPU "
          "| peak memory unmix / museval | max difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for minutes, r, diff in rows:
        fast, slow = r["fast"], r["museval"]
        print(f"| {minutes:g} min, 4 targets | {fast['seconds']:.1f} / {fast['cpu']:.1f} s "
              f"| {slow['seconds']:.1f} / {slow['cpu']:.1f} s "
              f"| {slow['seconds'] / fast['seconds']:.1f}x / {slow['cpu'] / fast['cpu']:.1f}x "
              f"| {fast['peak_mb'] / 1024:.2f} / {slow['peak_mb'] / 1024:.2f} GB | {diff:.1g} dB |")


if __name__ == "__main__":
    main()
