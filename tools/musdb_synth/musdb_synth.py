#!/usr/bin/env python3
"""Render synthetic MUSDB18-HQ-style songs (song i has seed SEED+i), in parallel processes.

    python musdb_synth.py --out DIR --n 6 --dur 20 --seed 3000 --subset train --jobs 2

Songs already on disk (their track folder exists) are skipped, so an interrupted run resumes.
See README.md for the setup recipe and what the songs contain.
"""
import argparse
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from msynth.genres import GENRES  # noqa: E402


def render_one(job):
    """Worker: render one song, return a one-line summary (or the error, so one bad seed does
    not stop a long run)."""
    from msynth.song import render_song
    seed, dur, out, subset, fmt, genre, analog_p, festival_p = job
    t = time.time()
    try:
        name, info = render_song(seed, dur, out, subset, fmt, genre, analog_p, festival_p)
    except Exception as e:                       # reported and counted; the run goes on
        return False, "seed %d FAILED: %s: %s" % (seed, type(e).__name__, e)
    v = info["vocals"]
    return True, "%-52s %6.1fs  drums=%s voice=%s/%s" % (
        name, time.time() - t, info["drums"].get("kit", {}).get("kit", info["drums"].get("kit", {}).get("soundfont")),
        v.get("language", "-"), v.get("voice", "-"))


def done_seeds(out, subset):
    """Seeds whose track folder already exists in out/subset."""
    d = os.path.join(out, subset)
    seeds = set()
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if name.startswith("Synth ") and name[6:11].isdigit():
            seeds.add(int(name[6:11]))
    return seeds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="dataset root (MUSDB18-HQ layout)")
    ap.add_argument("--n", type=int, default=3, help="number of songs")
    ap.add_argument("--dur", type=float, default=20.0, help="seconds per song")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first song")
    ap.add_argument("--subset", default="train")
    ap.add_argument("--format", default="wav", choices=["wav", "flac"])
    ap.add_argument("--genre", default=None, choices=sorted(GENRES), help="force one genre")
    ap.add_argument("--analog", type=float, default=0.6, metavar="P",
                    help="probability that a part with a GM synth program (synth bass, lead, pad, FX) is "
                         "played by the analog synth instead of a soundfont (0: the generator before it)")
    ap.add_argument("--festival", type=float, default=0.5, metavar="P",
                    help="probability that an English or vocalise song is sung by one of Festival's "
                         "recorded-speaker voices of the singer's gender instead of espeak-ng (0: the "
                         "generator before it)")
    ap.add_argument("--jobs", type=int, default=1, help="songs rendered in parallel processes")
    a = ap.parse_args(argv)
    if a.n < 1 or a.jobs < 1 or a.dur <= 1 or not 0 <= a.analog <= 1 or not 0 <= a.festival <= 1 or not (0 <= a.seed and a.seed + a.n <= 100000):
        print("error: need --n >= 1, --jobs >= 1, --dur > 1, 0 <= --analog, --festival <= 1 and seeds in 0..99999", file=sys.stderr)
        return 2
    skip = done_seeds(a.out, a.subset)
    jobs = [(s, a.dur, a.out, a.subset, a.format, a.genre, a.analog, a.festival) for s in range(a.seed, a.seed + a.n) if s not in skip]
    if len(jobs) < a.n:
        print("%d songs already there, rendering %d" % (a.n - len(jobs), len(jobs)), flush=True)
    t0, failed = time.time(), 0
    if a.jobs > 1:
        with mp.get_context("fork").Pool(a.jobs, maxtasksperchild=20) as pool:
            results = pool.imap_unordered(render_one, jobs)
            for ok, line in results:
                failed += not ok
                print(line, flush=True)
    else:
        for j in jobs:
            ok, line = render_one(j)
            failed += not ok
            print(line, flush=True)
    print("%d songs in %.0f s wall (%d jobs), %d failed" % (len(jobs), time.time() - t0, a.jobs, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
