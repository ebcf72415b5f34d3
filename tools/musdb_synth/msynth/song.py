"""One song from a seed: plan, parts, stems, mix, written atomically in the MUSDB18-HQ layout

    <out>/<subset>/<track>/{mixture,vocals,drums,bass,other}.<wav|flac>   (44.1 kHz stereo PCM16)
    <out>/_meta/<track>/{info.json,vocal_notes.json}

mixture is the exact integer sum of the four stems.
"""
import json
import os
import shutil
import tempfile

import numpy as np
import pretty_midi
import soundfile as sf

from . import analog, assets, drums, fluid
from . import effects as fx
from . import mixing, parts, vocals
from .genres import GENRES
from .hydrogen import H2Kit
from .plan import make_plan
from .rng import child

OTHER_PARTS = ("comp", "comp2", "pad", "lead", "arp")
# GM synth programs (synth bass, leads, pads, FX) that the analog synth may play instead of a soundfont
SYNTH_PROGRAMS = frozenset([38, 39] + list(range(80, 104)))


def track_name(seed, plan):
    """Folder name of a song, e.g. 'Synth 03000 - funk A dorian 104bpm'."""
    key = pretty_midi.note_number_to_name(plan["key"] + 60)[:-1]
    return "Synth %05d - %s %s %s %dbpm" % (seed, plan["genre"], key, plan["mode"], round(plan["bpm"]))


def render_drum_hits(rng, hits, kinds, n, tmpdir, tag):
    """Render hits with a kit of one of `kinds`: a Hydrogen kit, a drum-only soundfont or a GM
    soundfont's drum bank. Returns ((n, 2) audio, info)."""
    kind = str(rng.choice(kinds))
    h2 = assets.h2_kits().get(kind, ())
    if h2 and rng.random() < 0.6:
        kit = H2Kit(h2[int(rng.integers(0, len(h2)))])
        return kit.render(hits, n, rng, pan_spread=float(rng.uniform(0.3, 1.2))), dict(backend="hydrogen", kit=kit.name, kind=kind)
    dsf = assets.drum_soundfonts()
    if kind == "acoustic" and dsf and rng.random() < 0.35:
        sf2, prog = dsf[int(rng.integers(0, len(dsf)))], 0
    else:
        gms = assets.gm_soundfonts()
        sf2 = gms[int(rng.integers(0, len(gms)))]
        prog = int(rng.choice(assets.FLUID_KITS[kind]))
    inst = pretty_midi.Instrument(program=prog, is_drum=True, name=tag)
    for t, note, vel in hits:
        inst.notes.append(pretty_midi.Note(vel, note, t, t + 0.1))
    fluid.add_ccs(inst, volume=100, pan=64)
    y = fluid.render(inst, sf2, n, tmpdir, tag)
    return y, dict(backend="fluidsynth", soundfont=os.path.basename(sf2), program=prog, kind=kind)


def drums_stem(rng, plan, n, dur, tmpdir):
    """(drums stem (n, 2), kick times, info): groove + optional percussion, each through a kit
    and a channel strip."""
    g = GENRES[plan["genre"]]
    hits, perc, info = drums.make_drums(rng, plan, g["drums"])
    out = np.zeros((n, 2), np.float32)
    if hits:
        y, info["kit"] = render_drum_hits(rng, hits, g["kits"], n, tmpdir, "drums")
        y, info["strip"] = mixing.channel_strip(rng, y, n, dur, "drums")
        out += y
    if perc:
        y, info["perc_kit"] = render_drum_hits(rng, perc, ["percussion"], n, tmpdir, "perc")
        y, info["perc_strip"] = mixing.channel_strip(rng, y, n, dur, "perc", pan_pos=float(rng.uniform(-0.6, 0.6)))
        out += y * float(rng.uniform(0.3, 0.7)) * (np.abs(out).max() + 1e-9) / (np.abs(y).max() + 1e-9)
    return out, drums.kick_times(hits), info


def melodic_stem(rng, insts, n, dur, tmpdir, kind, synth_rng=None, analog_p=0.0):
    """Render pretty_midi parts, each with its own randomly drawn GM soundfont (or, for a synth
    program with probability analog_p, an analog-synth patch) and channel strip, and sum them.
    synth_rng draws only the analog choices and patches, so analog_p = 0 gives the songs of the
    generator before the analog synth. Returns ((n, 2), [info per part])."""
    out, infos = np.zeros((n, 2), np.float32), []
    pans = list(rng.permutation([-0.7, -0.35, 0.0, 0.35, 0.7]))
    gms = assets.gm_soundfonts()
    for i, (inst, info) in enumerate(insts):
        if not inst.notes:
            continue
        sf2 = gms[int(rng.integers(0, len(gms)))]                # drawn for analog parts too: same stream
        fluid.add_ccs(inst, volume=int(rng.integers(90, 120)), pan=64)
        if analog_p > 0 and inst.program in SYNTH_PROGRAMS and synth_rng.random() < analog_p:
            patch = analog.draw_patch(synth_rng, analog.PART_ROLE.get(inst.name, "lead"))
            y, source = analog.render(inst, n, patch, synth_rng), dict(analog=patch)
        else:
            y, source = fluid.render(inst, sf2, n, tmpdir, "%s%d" % (kind, i)), dict(soundfont=os.path.basename(sf2))
        if not np.any(y):
            continue
        pos = None if kind == "bass" else float(pans[i % len(pans)] + rng.normal(0, 0.1))
        y, strip = mixing.channel_strip(rng, y, n, dur, kind, pan_pos=pos)
        y *= 10 ** (rng.normal(0, 3) / 20) / (mixing.rms_active(y) + 1e-9)
        out += y
        infos.append(dict(info, part=inst.name, strip=strip, **source))
    return out, infos


def write_track(tdir, ints, mix_i, fmt):
    """Write the stems and mixture into tdir atomically (a temp folder renamed at the end)."""
    parent = os.path.dirname(tdir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    for k, a in list(ints.items()) + [("mixture", mix_i)]:
        sf.write(os.path.join(tmp, "%s.%s" % (k, fmt)), a.astype(np.int16), fx.SR, subtype="PCM_16")
    if os.path.exists(tdir):
        shutil.rmtree(tdir)
    os.replace(tmp, tdir)


def render_song(seed, dur, out_root, subset, fmt="wav", genre=None, analog_p=0.0, festival_p=0.0):
    """Render song `seed` (dur seconds) into out_root/subset; returns (track name, info).
    analog_p: probability that a part with a GM synth program is played by the analog synth;
    festival_p: probability that an English song is sung by a Festival voice. With both 0 the
    song is the one of the generator before these two options."""
    n = int(round(dur * fx.SR))
    plan = make_plan(child(seed, "plan"), dur, genre)
    g = GENRES[plan["genre"]]
    name = track_name(seed, plan)
    info = dict(seed=seed, dur=dur, analog_p=analog_p, festival_p=festival_p, plan={k: v for k, v in plan.items() if k not in ("chords", "scale", "active")})
    info["plan"]["chords"] = [(round(a, 3), round(b, 3), d) for a, b, d, _ in plan["chords"]]
    info["plan"]["active_bars"] = {k: int(sum(v)) for k, v in plan["active"].items()}
    tmpdir = tempfile.mkdtemp(prefix="msynth_")
    try:
        stems = {}
        stems["vocals"], vnotes, info["vocals"] = vocals.vocal_stem(child(seed, "vocals"), plan, n, tmpdir, g["density"],
                                                                 child(seed, "festival"), festival_p)
        stems["drums"], kicks, info["drums"] = drums_stem(child(seed, "drums"), plan, n, dur, tmpdir)
        rng = child(seed, "bass")
        bass = parts.bass_part(rng, plan, g["bass"][0], g["bass"][1], kicks)
        stems["bass"], info["bass"] = melodic_stem(rng, [bass], n, dur, tmpdir, "bass", child(seed, "analog-bass"), analog_p)
        rng = child(seed, "other")
        other = [parts.comp_part(rng, plan, *g["comp"]), parts.comp_part(rng, plan, *g["comp"], part="comp2")]
        if g["pads"]:
            other.append(parts.pad_part(rng, plan, g["pads"]))
        other.append(parts.lead_part(rng, plan, g["leads"], vnotes))
        other.append(parts.arp_part(rng, plan, g["leads"] + g["comp"][0]))
        stems["other"], info["other"] = melodic_stem(rng, other, n, dur, tmpdir, "other", child(seed, "analog-other"),
                                                    analog_p)
        rng = child(seed, "mix")
        info["mix"] = dict(ltas_strength=float(rng.uniform(0.2, 0.8)), eq_db={})
        for k in mixing.STEMS:
            stems[k], gdb = mixing.match_ltas(rng, stems[k], k, info["mix"]["ltas_strength"])
            info["mix"]["eq_db"][k] = [round(float(v), 1) for v in gdb]
        stems, info["mix"]["level_db"] = mixing.set_levels(rng, stems)
        if rng.random() < 0.6:
            info["mix"]["bus_comp"] = (float(rng.uniform(-12, -3)), float(rng.uniform(1.5, 4)))
            stems = mixing.bus_gain(rng, stems, *info["mix"]["bus_comp"])
        ints, mix_i = mixing.to_int16(rng, stems)
        write_track(os.path.join(out_root, subset, name), ints, mix_i, fmt)
        meta = os.path.join(out_root, "_meta", name)
        os.makedirs(meta, exist_ok=True)
        with open(os.path.join(meta, "info.json"), "w") as fh:
            json.dump(info, fh, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        with open(os.path.join(meta, "vocal_notes.json"), "w") as fh:
            json.dump([(round(a, 4), round(b, 4), p, w) for a, b, p, w, _ in vnotes], fh, ensure_ascii=False)
        return name, info
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
