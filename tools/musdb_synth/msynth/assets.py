"""Sound sources found on the machine (all from Debian packages, see ../setup.sh).

GM soundfonts: fluid-soundfont-gm, timgm6mb-soundfont, musescore-general-soundfont,
fluidr3mono-gm-soundfont. Drum-only soundfonts: avldrums.lv2-soundfont. Hydrogen kits:
hydrogen-data, hydrogen-drumkits. Voices: espeak-ng's variants; Festival's recorded-speaker voices
(festival, festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts).
"""
import functools
import glob
import os
import shutil
import subprocess

from .hydrogen import H2Kit

GM_SOUNDFONTS = [
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",
]
DRUM_SOUNDFONTS = [
    "/usr/lib/lv2/avldrums.lv2/Black_Pearl_4_LV2.sf2",
    "/usr/lib/lv2/avldrums.lv2/Red_Zeppelin_4_LV2.sf2",
]
H2_ROOT = "/usr/share/hydrogen/data/drumkits"
# Festival voices made from recordings of one speaker each (diphone concatenation, HTS): their
# spectral envelopes are real voices', unlike espeak-ng's formant synthesis. English only.
FESTIVAL_ROOT = "/usr/share/festival/voices"
FESTIVAL_VOICES = {"kal_diphone": "M", "ked_diphone": "M", "cmu_us_slt_arctic_hts": "F"}
# Hydrogen kits by kind (the rest of the folder is used as "acoustic" if it is a full kit)
H2_KIND = {"TR808EmulationKit": "electronic", "HardElectro1": "electronic", "ElectricEmpireKit": "electronic",
           "VariBreaks": "electronic", "Gimme A Hand 1.0": "percussion", "circAfrique v4": "percussion"}
# GM drum-bank programs by kind (bank 128): 0 standard, 8 room, 16 power, 24 electronic,
# 25 TR-808, 32 jazz, 40 brush, 48 orchestra
FLUID_KITS = {"acoustic": [0, 8, 16], "electronic": [24, 25], "brush": [40, 32], "orchestra": [48],
              "percussion": [0]}
# espeak-ng variants that do not sound like a person singing
BAD_VARIANTS = {"Demonic", "Half-LifeAnnouncementSystem", "UniversalRobot", "anikaRobot", "fast_test", "Tweaky",
                "croak", "Mr_Serious", "RicishayMax", "RicishayMax2", "RicishayMax3", "whisper"}


def existing(paths):
    """The paths that exist, resolved, without duplicates (in order)."""
    out = []
    for p in paths:
        rp = os.path.realpath(p)
        if os.path.exists(rp) and rp not in out:
            out.append(rp)
    return out


@functools.lru_cache(maxsize=None)
def gm_soundfonts():
    """General-MIDI soundfonts present, or a clear error naming the recipe."""
    found = existing(GM_SOUNDFONTS)
    if not found:
        raise SystemExit("no GM soundfont found: run tools/musdb_synth/setup.sh")
    return tuple(found)


@functools.lru_cache(maxsize=None)
def drum_soundfonts():
    """Drum-only soundfonts present (GM drum map on bank 128 / program 0)."""
    return tuple(existing(DRUM_SOUNDFONTS))


@functools.lru_cache(maxsize=None)
def h2_kits():
    """{kind: (kit folder, ...)} of the Hydrogen kits whose samples map to a usable kit."""
    kinds = {}
    for d in sorted(glob.glob(os.path.join(H2_ROOT, "*", "drumkit.xml"))):
        folder = os.path.dirname(d)
        name = os.path.basename(folder)
        kind = H2_KIND.get(name, "acoustic")
        try:
            kit = H2Kit(folder)
        except Exception:            # a kit with a broken drumkit.xml is skipped, not fatal
            continue
        if kind == "percussion" or kit.is_full_kit():
            kinds.setdefault(kind, []).append(folder)
    return {k: tuple(v) for k, v in kinds.items()}


@functools.lru_cache(maxsize=None)
def voices():
    """[(variant, gender 'M'/'F')] of espeak-ng's voice variants, minus robotic ones."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], check=True, capture_output=True, text=True).stdout
    res = []
    for line in out.splitlines()[1:]:
        f = line.split()
        if len(f) >= 5 and f[3] not in BAD_VARIANTS:
            res.append((os.path.basename(f[4]), f[2].split("/")[-1]))
    return tuple(res)


@functools.lru_cache(maxsize=None)
def festival_voices():
    """[(voice, gender 'M'/'F')] of the Festival voices installed; empty without Festival."""
    if not shutil.which("festival"):
        return ()
    found = {os.path.basename(d) for d in glob.glob(os.path.join(FESTIVAL_ROOT, "*", "*"))}
    return tuple((v, g) for v, g in FESTIVAL_VOICES.items() if v in found)
