"""Drum grooves as hits [(time_s, gm_note, velocity)], humanised, with fills and crashes.

A style gives, per GM drum note, the sixteenth steps it plays in a bar (fractional steps are
32nds, e.g. trap hi-hat rolls) and a base velocity.
"""
import numpy as np

from .plan import active, section_at, step_time

KICK, SNARE, STICK, CLAP, HAT, PEDAL, OPEN, CRASH, RIDE, BELL, TAMB, COWBELL = 36, 38, 37, 39, 42, 44, 46, 49, 51, 53, 54, 56
SHAKER, CONGA_HI, CONGA_LO, BONGO_HI, BONGO_LO, CLAVE, RIM = 70, 63, 64, 60, 61, 75, 40
TOMS = [50, 48, 47, 45, 43, 41]
E8, Q = list(range(0, 16, 2)), [0, 4, 8, 12]

STYLES = {
    "rock":     {KICK: [0, 8, 10], SNARE: [4, 12], HAT: E8},
    "pop16":    {KICK: [0, 6, 8, 11], SNARE: [4, 12], HAT: list(range(16))},
    "halftime": {KICK: [0, 7, 10], SNARE: [8], HAT: E8},
    "four":     {KICK: Q, CLAP: [4, 12], HAT: [2, 6, 10, 14], OPEN: [2, 6, 10, 14]},
    "disco":    {KICK: Q, SNARE: [4, 12], HAT: E8, OPEN: [2, 6, 10, 14]},
    "punk":     {KICK: [0, 4, 8, 12], SNARE: [4, 12], HAT: E8},
    "metal":    {KICK: list(range(16)), SNARE: [4, 12], CRASH: Q},
    "funk":     {KICK: [0, 3, 6, 10], SNARE: [4, 12, 7, 15], HAT: list(range(16))},
    "boombap":  {KICK: [0, 7, 10], SNARE: [4, 12], HAT: E8},
    "trap":     {KICK: [0, 6, 11], SNARE: [8], HAT: E8 + [13, 13.5, 14, 14.5, 15, 15.5]},
    "shuffle":  {KICK: [0, 8], SNARE: [4, 12], HAT: E8},
    "jazzride": {RIDE: [0, 4, 6, 8, 12, 14], PEDAL: [4, 12], KICK: [0], STICK: [14]},
    "onedrop":  {KICK: [8], STICK: [8], HAT: E8},
    "train":    {KICK: [0, 8], SNARE: list(range(16)), HAT: [4, 12]},
    "ballad":   {KICK: [0, 10], STICK: [8], RIDE: E8},
    "bossa":    {KICK: [0, 3, 4, 8, 11, 12], STICK: [0, 3, 6, 10, 12], HAT: E8},
    "latin":    {KICK: [0, 6, 8, 14], CLAVE: [0, 3, 6, 10, 12], HAT: E8, CONGA_HI: [6, 14], CONGA_LO: [7, 15]},
    "none":     {},
}
BASE_VEL = {KICK: 104, SNARE: 106, STICK: 80, CLAP: 100, HAT: 78, PEDAL: 60, OPEN: 82, CRASH: 108, RIDE: 80,
            CLAVE: 80, CONGA_HI: 85, CONGA_LO: 85}
# percussion layer (goes to the drums stem, as in MUSDB18): note -> steps
PERC = [{SHAKER: list(range(16))}, {TAMB: [4, 12]}, {TAMB: E8}, {CONGA_HI: [6, 14], CONGA_LO: [7, 15, 10]},
        {BONGO_HI: [2, 6, 10, 14], BONGO_LO: [3, 11]}, {COWBELL: Q}, {CLAP: [4, 12]}, {SHAKER: E8}]


def accent(step):
    """Velocity offset by metric position (downbeats loudest)."""
    return 8 if step % 4 == 0 else (0 if step % 2 == 0 else -12)


def groove_hits(rng, plan, style, part="drums", pattern=None, loose=0.004):
    """Hits of one groove over the bars where `part` is active; fills before section changes,
    crashes on section starts, ghost notes, chorus variations."""
    pattern = STYLES[style] if pattern is None else pattern
    hits = []
    sections_start = {b0 for b0, _, _ in plan["sections"]}
    for b in range(plan["n_bars"]):
        if not plan["active"][part][b]:
            continue
        nxt = b + 1 in sections_start or (b % 4 == 3)
        fill = part == "drums" and style != "none" and nxt and rng.random() < 0.6
        last = 12 if fill else 16
        chorus = section_at(plan, b) == "chorus"
        if part == "drums" and (b in sections_start or (b % 4 == 0 and rng.random() < 0.3)) and style != "none":
            hits.append((step_time(plan, b, 0), CRASH if rng.random() < 0.8 else 57, int(rng.integers(95, 122))))
        for note, steps in pattern.items():
            if note == HAT and chorus and style in ("rock", "halftime", "boombap") and rng.random() < 0.5:
                note = RIDE if rng.random() < 0.5 else OPEN
            for s in steps:
                if s >= last or (note == OPEN and style == "four" and rng.random() < 0.5):
                    continue
                v = BASE_VEL.get(note, 85) + accent(int(s)) + rng.normal(0, 6)
                hits.append((step_time(plan, b, s) + rng.normal(0, loose), note, int(np.clip(v, 20, 127))))
        if part == "drums" and style not in ("none", "metal", "four"):
            for s in range(1, last, 2):                       # ghost notes on the snare
                if rng.random() < 0.05:
                    hits.append((step_time(plan, b, s), SNARE, int(rng.integers(22, 45))))
        if fill:
            kind = rng.integers(0, 3)
            for i, s in enumerate(np.arange(12, 16, 0.5 if kind == 2 else 1.0)):
                note = SNARE if kind == 1 else TOMS[min(int(i * 6 / (8 if kind == 2 else 4)), 5)]
                hits.append((step_time(plan, b, s) + rng.normal(0, loose), note, int(rng.integers(80, 122))))
    return sorted((max(0.0, t), n, v) for t, n, v in hits)


def make_drums(rng, plan, genre_drums):
    """(drum hits, percussion hits, info) for a song; the percussion layer is optional."""
    style = str(rng.choice(genre_drums))
    hits = groove_hits(rng, plan, style)
    perc, pinfo = [], None
    if any(plan["active"]["perc"]) and rng.random() < 0.55:
        k = int(rng.integers(0, len(PERC)))
        perc = groove_hits(rng, plan, style, part="perc", pattern=PERC[k], loose=0.007)
        pinfo = sorted(PERC[k])
    return hits, perc, dict(style=style, n_hits=len(hits), perc_notes=pinfo, n_perc_hits=len(perc))


def kick_times(hits):
    """Onset times of the kick drum (the bass locks to them)."""
    return [t for t, n, _ in hits if n in (35, 36)]
