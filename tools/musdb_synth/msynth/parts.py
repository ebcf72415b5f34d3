"""Bass and "other" parts (comping, second comping, pad, counter-melody lead, arpeggio) as
pretty_midi instruments. Notes are only written in bars where the part is active (plan.active),
so parts drop in and out with the arrangement.
"""
import numpy as np
import pretty_midi

from .plan import active, chord_at
from .theory import nearest_pitch, scale_pitches, voicing


def note(inst, t0, t1, pitch, vel):
    """Append one note (velocity clipped to 1..127, start >= 0)."""
    inst.notes.append(pretty_midi.Note(int(np.clip(vel, 1, 127)), int(pitch), max(0.0, t0), max(t0 + 0.03, t1)))


def bass_events(style, nsteps, root, fifth, nxt, kick_steps, rng):
    """(step, length, pitch) events of one chord slot for a bass style."""
    if style == "root8":
        return [(s, 2, root) for s in range(0, nsteps, 2)]
    if style == "root16":
        return [(s, 1, root) for s in range(nsteps)]
    if style == "rootfifth":
        return [(s, 4, root if (s // 4) % 2 == 0 else fifth) for s in range(0, nsteps, 4)]
    if style == "octave":
        return [(s, 2, root if (s // 2) % 2 == 0 else root + 12) for s in range(0, nsteps, 2)]
    if style == "offbeat":
        return [(s, 2, root) for s in range(2, nsteps, 4)]
    if style == "sync":
        ks = kick_steps or [0]
        return [(s, (ks[i + 1] - s) if i + 1 < len(ks) else nsteps - s, root) for i, s in enumerate(ks)]
    if style == "walk":
        tones = [root, root + 4 if rng.random() < 0.5 else root + 3, fifth, nearest_pitch(nxt % 12, root) + int(rng.choice([-1, 1]))]
        return [(s, 4, tones[(s // 4) % 4]) for s in range(0, nsteps, 4)]
    if style == "funk16":
        pat = [0, 3, 6, 7, 10, 12, 14]
        return [(s, 1, root + (12 if rng.random() < 0.25 else 0) + (7 if rng.random() < 0.15 else 0)) for s in pat if s < nsteps]
    if style == "dub":
        return [(s, 3, p) for s, p in ((0, root), (3, root), (6, fifth), (10, root + 12 if rng.random() < 0.3 else root)) if s < nsteps]
    if style == "tumbao":
        return [(s, 3, p) for s, p in ((3, root), (6, fifth), (11, root), (14, fifth)) if s < nsteps]
    if style == "808":
        return [(0, nsteps * 0.7, root), (int(nsteps * 0.75), nsteps * 0.25, root + (12 if rng.random() < 0.3 else 0))]
    return [(0, nsteps, root)]                                      # sustain


def bass_part(rng, plan, progs, styles, kick_times):
    """(instrument, info): a bass line following the chords in the bass register (E1..E3)."""
    prog = int(rng.choice(progs))
    style = str(rng.choice(styles))
    inst = pretty_midi.Instrument(program=prog, name="bass")
    legato = float(rng.uniform(0.55, 0.98))
    register = int(rng.integers(36, 45))
    s16 = plan["spb"] / 4
    chords = plan["chords"]
    for ci, (st, en, deg, pcs) in enumerate(chords):
        if not active(plan, "bass", st):
            continue
        root = nearest_pitch(pcs[0] % 12, register)
        nsteps = int(round((en - st) / s16))
        ks = sorted({int(round((t - st) / s16)) for t in kick_times if st - 1e-3 <= t < en - 1e-3})
        nxt = chords[(ci + 1) % len(chords)][3][0]
        for s, d, p in bass_events(style, nsteps, root, root + 7, nxt, ks, rng):
            t0 = st + s * s16 + rng.normal(0, 0.003)
            glide = style == "808" and rng.random() < 0.3
            if glide:                                          # 808 slide: pitch bend into the note
                inst.pitch_bends.append(pretty_midi.PitchBend(-2000, t0))
                inst.pitch_bends.append(pretty_midi.PitchBend(0, t0 + 0.08))
            note(inst, t0, t0 + max(d * s16 * legato, 0.06), p, rng.normal(96, 8))
    return inst, dict(program=prog, style=style)


def comp_part(rng, plan, progs, styles, part="comp"):
    """(instrument, info): chordal accompaniment (block chords, strums, arpeggios, skanks,
    power chords, stabs, montuno) in the middle register."""
    prog = int(rng.choice(progs))
    style = str(rng.choice(styles))
    inst = pretty_midi.Instrument(program=prog, name=part)
    center = int(rng.integers(55, 74))
    guitar = 24 <= prog <= 31 or prog in (104, 105, 106, 107)
    s16 = plan["spb"] / 4
    for st, en, deg, pcs in plan["chords"]:
        if not active(plan, part, st):
            continue
        v = voicing(pcs, center, 5 if guitar else int(rng.integers(3, 5)))
        nsteps = int(round((en - st) / s16))
        if style.startswith("power"):
            r = nearest_pitch(pcs[0] % 12, 45)
            v = [r, r + 7, r + 12]
        slots = {"block4": [(s, 4) for s in range(0, nsteps, 4)],
                 "offbeat": [(s, 1.5) for s in range(2, nsteps, 4)],
                 "strum": [(s, 2) for s in (0, 3, 6, 8, 10, 14) if s < nsteps],
                 "power8": [(s, 1.8) for s in range(0, nsteps, 2)],
                 "power16": [(s, 0.9) for s in range(nsteps)],
                 "stab": [(s, 1) for s in (0, 3, 6, 10, 12) if s < nsteps and rng.random() < 0.8],
                 "chank16": [(s, 0.6) for s in range(nsteps) if rng.random() < 0.55],
                 "sustain": [(0, nsteps)]}.get(style)
        if slots is None:                                       # arpeggios and montuno
            step = 1 if style in ("arp16", "montuno") else 2
            order = v + v[::-1][1:-1]
            for i, s in enumerate(range(0, nsteps, step)):
                t0 = st + s * s16
                p = order[i % len(order)] + (12 if style == "montuno" and i % 2 else 0)
                note(inst, t0, t0 + (1.5 if step == 1 else 3) * s16, p, rng.integers(55, 95))
            continue
        for s, d in slots:
            t0 = st + s * s16 + rng.normal(0, 0.004)
            down = rng.random() < 0.6
            for j, p in enumerate(v if down else v[::-1]):
                dt = j * (0.012 if guitar else 0.002)
                note(inst, t0 + dt, t0 + dt + d * s16 * 0.9, p, rng.normal(80, 9))
    return inst, dict(program=prog, style=style)


def pad_part(rng, plan, progs):
    """(instrument, info): sustained chords (strings, synth pads, organ, brass swells)."""
    prog = int(rng.choice(progs))
    inst = pretty_midi.Instrument(program=prog, name="pad")
    center = int(rng.integers(58, 74))
    for st, en, deg, pcs in plan["chords"]:
        if active(plan, "pad", st):
            for p in voicing(pcs, center, 3):
                note(inst, st, en + 0.05, p, rng.integers(45, 80))
    return inst, dict(program=prog)


def lead_part(rng, plan, progs, vocal_notes):
    """(instrument, info): a counter-melody on scale tones that favours chord tones and
    stays out of the sung notes' way (it plays mostly in the vocal rests)."""
    prog = int(rng.choice(progs))
    inst = pretty_midi.Instrument(program=prog, name="lead")
    busy = [(a - 0.1, b + 0.1) for a, b, *_ in vocal_notes]
    s16 = plan["spb"] / 4
    center = int(rng.integers(62, 82))
    pitches = scale_pitches(plan["key"], plan["scale"], center - 7, center + 8)
    p, t = center, 0.0
    avoid = rng.random() < 0.8
    while t < plan["bar"] * plan["n_bars"]:
        d = float(rng.choice([1, 2, 2, 3, 4, 6, 8])) * s16
        free = not (avoid and any(a < t + d and t < b for a, b in busy))
        if active(plan, "lead", t) and free and rng.random() < 0.75:
            chord = [c % 12 for c in chord_at(plan, t)[3]]
            cands = sorted(pitches, key=lambda q: abs(q - p) + (0 if q % 12 in chord else 2) + rng.random() * 3)
            p = cands[0] if rng.random() < 0.7 else cands[min(2, len(cands) - 1)]
            note(inst, t, t + d * 0.95, p, rng.integers(70, 110))
        t += d
    return inst, dict(program=prog, avoids_vocals=bool(avoid))


def arp_part(rng, plan, progs):
    """(instrument, info): a sequenced synth/mallet arpeggio in 16ths or 8ths, high register."""
    prog = int(rng.choice(progs))
    inst = pretty_midi.Instrument(program=prog, name="arp")
    step = int(rng.choice([1, 2]))
    s16 = plan["spb"] / 4
    center = int(rng.integers(66, 84))
    pattern = rng.permutation(4)
    for st, en, deg, pcs in plan["chords"]:
        if not active(plan, "arp", st):
            continue
        v = voicing(pcs, center, 4)
        for i, s in enumerate(range(0, int(round((en - st) / s16)), step)):
            t0 = st + s * s16
            note(inst, t0, t0 + step * s16 * 0.8, v[pattern[i % 4] % len(v)], rng.integers(60, 100))
    return inst, dict(program=prog, step=step)
