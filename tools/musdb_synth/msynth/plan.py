"""A song's plan: genre, key, tempo, chords, sections, and which part plays in which bar.

The plan is a dict of plain values (it goes into the song's info.json). Times are in seconds,
bars are 4/4 with 16 sixteenth-steps each; `swing` delays the off-8th sixteenths.
"""
import numpy as np

from .genres import GENRES, GENRE_WEIGHTS
from .theory import PROGRESSIONS, SCALES, chord_pcs

PARTS = ("drums", "perc", "bass", "comp", "comp2", "pad", "lead", "arp", "vocals", "harmony")

# probability that a part plays in a section (the arrangement: sources drop in and out)
SECTION_ACTIVITY = {
    "intro":  dict(drums=0.5, perc=0.3, bass=0.5, comp=0.9, comp2=0.3, pad=0.6, lead=0.4, arp=0.5, vocals=0.1, harmony=0.0),
    "verse":  dict(drums=0.9, perc=0.4, bass=0.95, comp=0.9, comp2=0.4, pad=0.4, lead=0.2, arp=0.4, vocals=0.95, harmony=0.15),
    "pre":    dict(drums=0.8, perc=0.5, bass=0.9, comp=0.8, comp2=0.5, pad=0.7, lead=0.2, arp=0.5, vocals=0.9, harmony=0.35),
    "chorus": dict(drums=1.0, perc=0.6, bass=1.0, comp=0.95, comp2=0.7, pad=0.8, lead=0.3, arp=0.6, vocals=0.97, harmony=0.65),
    "break":  dict(drums=0.35, perc=0.3, bass=0.4, comp=0.8, comp2=0.3, pad=0.7, lead=0.5, arp=0.5, vocals=0.5, harmony=0.2),
    "outro":  dict(drums=0.6, perc=0.3, bass=0.6, comp=0.9, comp2=0.3, pad=0.7, lead=0.4, arp=0.4, vocals=0.3, harmony=0.2),
}
SECTION_BARS = {"intro": (1, 3), "verse": (4, 5), "pre": (2, 3), "chorus": (4, 5), "break": (2, 3), "outro": (2, 3)}
NEXT_SECTION = {"intro": ["verse"], "verse": ["pre", "chorus", "chorus"], "pre": ["chorus"],
                "chorus": ["verse", "break", "chorus", "outro"], "break": ["chorus", "verse"], "outro": ["intro"]}


def pick(rng, weights):
    """Draw a key of a {name: weight} dict."""
    names = list(weights)
    p = np.array([weights[k] for k in names], float)
    return str(names[rng.choice(len(names), p=p / p.sum())])


def make_sections(rng, n_bars):
    """Sections covering n_bars: [(first_bar, end_bar, name)]. The song may start mid-form
    (as a random excerpt of a real song does)."""
    name = str(rng.choice(["intro", "intro", "verse", "chorus", "pre", "break"]))
    out, b = [], 0
    while b < n_bars:
        lo, hi = SECTION_BARS[name]
        length = int(rng.integers(lo, hi + 1))
        out.append((b, min(b + length, n_bars), name))
        b += length
        name = str(rng.choice(NEXT_SECTION[name]))
    return out


def make_activity(rng, sections, n_bars, genre, instrumental):
    """{part: list of n_bars bools}. Each part is on or off per section; comp or pad always
    plays somewhere in a section so the "other" stem has content, and parts a genre lacks
    (no drums in some folk/ballad, no pad list) stay off."""
    g = GENRES[genre]
    act = {p: [False] * n_bars for p in PARTS}
    for b0, b1, name in sections:
        on = {p: rng.random() < pr for p, pr in SECTION_ACTIVITY[name].items()}
        on["pad"] = on["pad"] and bool(g["pads"])
        if not (on["comp"] or on["pad"]):
            on["comp"] = True
        if instrumental:
            on["vocals"] = on["harmony"] = False
        on["harmony"] = on["harmony"] and on["vocals"]
        for p in PARTS:
            for b in range(b0, b1):
                act[p][b] = bool(on[p])
    if rng.random() > g.get("arp", 0.15):
        act["arp"] = [False] * n_bars
    if rng.random() < 0.5:
        act["comp2"] = [False] * n_bars
    for p in ("drums", "bass", "vocals") if not instrumental else ("drums", "bass"):
        if not any(act[p]):                     # keep every stem present in most songs
            b0, b1, _ = sections[int(rng.integers(0, len(sections)))]
            act[p][b0:b1] = [True] * (b1 - b0)
    return act


def make_plan(rng, dur, genre=None, instrumental_prob=0.04):
    """Everything the part generators need to agree on. dur: song length in seconds."""
    genre = genre or pick(rng, GENRE_WEIGHTS)
    g = GENRES[genre]
    mode = pick(rng, g["modes"])
    scale = SCALES[mode]
    key = int(rng.integers(0, 12))
    bpm = float(rng.uniform(*g["bpm"]))
    spb = 60.0 / bpm
    bar = 4 * spb
    n_bars = int(np.ceil((dur + 0.5) / bar))
    fam = g.get("prog", mode)
    progs = PROGRESSIONS[fam]
    prog = progs[int(rng.integers(0, len(progs)))]
    cpb = 2 if (bpm < 100 and len(prog) <= 4 and rng.random() < 0.35) else 1
    seventh_p = 0.7 if genre in ("jazz", "soul", "rnb", "funk", "blues") else 0.2
    chords, k = [], 0
    for b in range(n_bars):
        for c in range(cpb):
            deg = prog[k % len(prog)]
            k += 1
            st = b * bar + c * bar / cpb
            pcs = [p + key for p in chord_pcs(scale, deg, rng.random() < seventh_p)]
            chords.append((st, st + bar / cpb, int(deg), pcs))
    sections = make_sections(rng, n_bars)
    instrumental = bool(rng.random() < instrumental_prob)
    swing = float(rng.uniform(*g["swing"])) if g["swing"][1] > 0 and rng.random() < 0.7 else 0.0
    return dict(genre=genre, mode=mode, scale=scale, key=key, bpm=bpm, spb=spb, bar=bar, n_bars=n_bars,
                chords=chords, prog=[int(p) for p in prog], chords_per_bar=cpb, swing=swing,
                sections=sections, instrumental=instrumental,
                active=make_activity(rng, sections, n_bars, genre, instrumental))


def step_time(plan, bar_i, step):
    """Time (s) of sixteenth `step` (may be fractional or >= 16) in bar `bar_i`, with swing."""
    s16 = plan["spb"] / 4
    t = plan["bar"] * bar_i + step * s16
    if plan["swing"] and int(step) % 4 == 2 and step == int(step):
        t += plan["swing"] * plan["spb"]
    return t


def chord_at(plan, t):
    """The (start, end, degree, pcs) chord sounding at time t."""
    for c in plan["chords"]:
        if c[0] - 1e-6 <= t < c[1] - 1e-6:
            return c
    return plan["chords"][-1]


def active(plan, part, t):
    """Whether `part` plays at time t (by bar)."""
    b = int(t // plan["bar"])
    return 0 <= b < plan["n_bars"] and plan["active"][part][b]


def section_at(plan, bar_i):
    """Name of the section that bar bar_i belongs to."""
    for b0, b1, name in plan["sections"]:
        if b0 <= bar_i < b1:
            return name
    return plan["sections"][-1][2]
