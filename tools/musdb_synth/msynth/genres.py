"""The genre table: what a song of each genre plays, how fast, and how it is mixed.

Programs are General-MIDI program numbers (0-127). Choirs/voice patches (52-54, 85, 91) are
left out of "other" on purpose: in MUSDB18 backing voices belong to the vocals stem.
"""

PIANOS = [0, 1, 2, 3, 4, 5, 6, 7]
MALLETS = [8, 9, 10, 11, 12, 13, 14, 15]
ORGANS = [16, 17, 18, 19, 20, 21, 22, 23]
CLEAN_GTR = [24, 25, 26, 27, 28]
DIST_GTR = [29, 30, 31]
STRINGS = [40, 41, 42, 44, 45, 46, 48, 49, 50, 51]
BRASS = [56, 57, 58, 59, 60, 61, 62, 63]
REEDS = [64, 65, 66, 67, 68, 69, 70, 71]
PIPES = [72, 73, 74, 75, 76, 77, 78, 79]
SYNTH_LEADS = [80, 81, 82, 83, 84, 86, 87]
SYNTH_PADS = [88, 89, 90, 92, 93, 94, 95]
SYNTH_FX = [96, 97, 98, 99, 100, 101, 102, 103]
ETHNIC = [104, 105, 106, 107, 108, 109, 110, 111, 114]
ACOUSTIC_BASS = [32, 43]
ELECTRIC_BASS = [33, 34, 35, 36, 37]
SYNTH_BASS = [38, 39, 87]

# drum kit kinds: each maps to Hydrogen kits and FluidSynth drum programs in assets.py
GENRES = {
    "pop":     dict(bpm=(88, 128), modes={"major": 0.7, "minor": 0.3}, drums=["pop16", "rock", "four", "halftime"],
                    kits=["acoustic", "electronic"], bass=(ELECTRIC_BASS + SYNTH_BASS, ["root8", "sync", "octave"]),
                    comp=(PIANOS + CLEAN_GTR + [4, 5], ["block4", "strum", "arp8", "stab"]),
                    pads=STRINGS + SYNTH_PADS, leads=SYNTH_LEADS + MALLETS + [56, 65, 73], swing=(0, 0),
                    density=["medium", "dense", "sparse"], reverb=(0.8, 2.2), drive=0.3),
    "rock":    dict(bpm=(100, 150), modes={"major": 0.6, "minor": 0.4}, drums=["rock", "halftime", "train"],
                    kits=["acoustic"], bass=(ELECTRIC_BASS, ["root8", "rootfifth", "octave"]),
                    comp=(DIST_GTR + CLEAN_GTR, ["power8", "strum", "block4"]), pads=ORGANS + STRINGS,
                    leads=DIST_GTR + [30, 81], swing=(0, 0), density=["medium", "dense"], reverb=(0.6, 1.6),
                    drive=0.7),
    "punk":    dict(bpm=(150, 190), modes={"major": 0.7, "minor": 0.3}, drums=["punk"], kits=["acoustic"],
                    bass=(ELECTRIC_BASS, ["root8"]), comp=(DIST_GTR, ["power8"]), pads=[], leads=DIST_GTR,
                    swing=(0, 0), density=["dense"], reverb=(0.4, 1.0), drive=0.9),
    "metal":   dict(bpm=(90, 170), modes={"minor": 0.8, "dorian": 0.2}, drums=["metal", "rock"], kits=["acoustic"],
                    bass=(ELECTRIC_BASS, ["root16", "root8"]), comp=(DIST_GTR, ["power8", "power16"]),
                    pads=STRINGS + ORGANS, leads=DIST_GTR, swing=(0, 0), density=["medium", "sparse"],
                    reverb=(0.8, 2.0), drive=1.0),
    "funk":    dict(bpm=(92, 118), modes={"dorian": 0.5, "mixolydian": 0.3, "minor": 0.2}, drums=["funk", "pop16"],
                    kits=["acoustic"], bass=([36, 37, 33, 34], ["funk16", "sync"]),
                    comp=([7, 27, 28, 4, 16, 17], ["stab", "offbeat", "chank16"]), pads=BRASS + [61, 62],
                    leads=BRASS + REEDS + [80], swing=(0, 0.06), density=["dense", "medium"], reverb=(0.5, 1.2),
                    drive=0.4),
    "disco":   dict(bpm=(110, 130), modes={"major": 0.5, "minor": 0.5}, drums=["disco", "four"],
                    kits=["acoustic", "electronic"], bass=([33, 34, 38, 39], ["octave", "root8"]),
                    comp=([27, 28, 4, 5, 0], ["chank16", "offbeat", "stab"]), pads=STRINGS + [61, 89],
                    leads=BRASS + STRINGS + [80], swing=(0, 0), density=["medium", "dense"], reverb=(0.8, 1.8),
                    drive=0.2),
    "house":   dict(bpm=(118, 128), modes={"minor": 0.6, "major": 0.4}, drums=["four", "disco"], kits=["electronic"],
                    bass=(SYNTH_BASS, ["offbeat", "root8", "sync"]), comp=([0, 1, 4, 5, 81, 90], ["stab", "offbeat", "block4"]),
                    pads=SYNTH_PADS + SYNTH_FX + [50, 51], leads=SYNTH_LEADS + MALLETS, swing=(0, 0.04),
                    density=["sparse", "medium"], reverb=(1.0, 3.0), drive=0.4, arp=0.6),
    "edm":     dict(bpm=(124, 132), modes={"minor": 0.7, "major": 0.3}, drums=["four", "halftime"], kits=["electronic"],
                    bass=(SYNTH_BASS, ["offbeat", "root16", "sustain"]), comp=([81, 90, 62, 63, 80], ["stab", "block4", "arp16"]),
                    pads=SYNTH_PADS + SYNTH_FX, leads=SYNTH_LEADS, swing=(0, 0), density=["sparse", "medium"],
                    reverb=(1.5, 3.5), drive=0.6, arp=0.8),
    "hiphop":  dict(bpm=(80, 98), modes={"minor": 0.7, "dorian": 0.3}, drums=["boombap", "halftime"],
                    kits=["electronic", "acoustic"], bass=(SYNTH_BASS + [33, 32], ["sustain", "sync", "root8"]),
                    comp=(PIANOS + [4, 5, 11, 12, 46, 48], ["block4", "arp8", "stab"]), pads=STRINGS + SYNTH_PADS,
                    leads=MALLETS + REEDS + [73, 80], swing=(0.04, 0.14), density=["rap", "dense", "medium"],
                    reverb=(0.5, 1.5), drive=0.5),
    "trap":    dict(bpm=(130, 160), modes={"minor": 0.9, "major": 0.1}, drums=["trap"], kits=["electronic"],
                    bass=([38, 39, 87], ["808"]), comp=([0, 4, 10, 11, 46, 88, 89], ["arp8", "block4", "sustain"]),
                    pads=SYNTH_PADS + [48, 49], leads=MALLETS + SYNTH_LEADS + [72, 73], swing=(0, 0),
                    density=["rap", "medium"], reverb=(1.0, 2.5), drive=0.6),
    "rnb":     dict(bpm=(66, 96), modes={"minor": 0.5, "major": 0.3, "dorian": 0.2}, drums=["halftime", "boombap", "pop16"],
                    kits=["electronic", "acoustic"], bass=(SYNTH_BASS + ELECTRIC_BASS, ["sync", "sustain"]),
                    comp=([4, 5, 0, 16, 26, 27], ["block4", "arp8", "stab"]), pads=SYNTH_PADS + STRINGS,
                    leads=MALLETS + REEDS + [80], swing=(0.03, 0.12), density=["medium", "sparse"], reverb=(1.2, 2.8),
                    drive=0.3),
    "soul":    dict(bpm=(70, 110), modes={"major": 0.6, "minor": 0.4}, drums=["rock", "shuffle", "halftime"],
                    kits=["acoustic"], bass=([33, 34, 32], ["sync", "rootfifth", "walk"]),
                    comp=([16, 17, 0, 4, 26, 27], ["block4", "offbeat", "stab"]), pads=BRASS + STRINGS + [61],
                    leads=BRASS + REEDS, swing=(0, 0.12), density=["medium", "sparse"], reverb=(1.0, 2.2), drive=0.4),
    "jazz":    dict(bpm=(90, 180), modes={"major": 0.5, "dorian": 0.3, "minor": 0.2}, drums=["jazzride", "bossa"],
                    kits=["brush", "acoustic"], bass=([32, 43, 33], ["walk"]),
                    comp=([0, 1, 26, 11, 4], ["stab", "block4", "offbeat"]), pads=[],
                    leads=BRASS[:4] + REEDS[:4] + [73, 11, 56], swing=(0.10, 0.18), density=["medium", "sparse"],
                    reverb=(0.8, 2.0), drive=0.0),
    "blues":   dict(bpm=(70, 130), modes={"mixolydian": 1.0}, prog="blues", drums=["shuffle", "rock"], kits=["acoustic"],
                    bass=([33, 34, 32], ["walk", "rootfifth"]), comp=([25, 26, 27, 29, 0, 16, 17], ["strum", "block4", "stab"]),
                    pads=ORGANS, leads=[22, 26, 29, 65, 66, 56], swing=(0.10, 0.17), density=["medium", "sparse"],
                    reverb=(0.8, 1.8), drive=0.6),
    "reggae":  dict(bpm=(68, 92), modes={"minor": 0.5, "major": 0.5}, drums=["onedrop", "rock"], kits=["acoustic"],
                    bass=([33, 34, 38], ["dub"]), comp=([27, 28, 16, 17, 0], ["offbeat"]), pads=ORGANS + BRASS,
                    leads=BRASS + [22, 65, 80], swing=(0, 0.08), density=["medium", "sparse"], reverb=(1.0, 2.5),
                    drive=0.3),
    "country": dict(bpm=(90, 150), modes={"major": 0.9, "mixolydian": 0.1}, drums=["train", "rock", "shuffle"],
                    kits=["acoustic", "brush"], bass=([32, 33, 34], ["rootfifth"]),
                    comp=([25, 24, 105, 26, 0], ["strum", "arp8"]), pads=[40, 48, 49, 21],
                    leads=[110, 105, 26, 22, 40, 27], swing=(0, 0.08), density=["medium", "dense"], reverb=(0.6, 1.6),
                    drive=0.2),
    "folk":    dict(bpm=(70, 130), modes={"major": 0.6, "minor": 0.4}, drums=["ballad", "train", "none"],
                    kits=["brush", "acoustic", "percussion"], bass=([32, 43, 33], ["rootfifth", "sustain"]),
                    comp=([24, 25, 46, 105, 107, 21], ["arp8", "strum"]), pads=STRINGS + [21, 109],
                    leads=[40, 41, 73, 74, 75, 110, 22, 71], swing=(0, 0.1), density=["sparse", "medium"],
                    reverb=(1.0, 2.5), drive=0.0),
    "ballad":  dict(bpm=(60, 84), modes={"major": 0.6, "minor": 0.4}, drums=["ballad", "halftime", "none"],
                    kits=["acoustic", "brush"], bass=([32, 33, 34, 43], ["sustain", "rootfifth"]),
                    comp=([0, 1, 2, 4, 24, 46], ["arp8", "block4", "sustain"]), pads=STRINGS + SYNTH_PADS,
                    leads=STRINGS[:4] + [73, 68, 71, 10, 11], swing=(0, 0), density=["sparse", "medium"],
                    reverb=(1.8, 3.5), drive=0.0),
    "latin":   dict(bpm=(90, 130), modes={"minor": 0.5, "major": 0.5}, drums=["bossa", "latin"],
                    kits=["acoustic", "percussion"], bass=([32, 33, 34], ["tumbao", "rootfifth"]),
                    comp=([24, 0, 1, 25, 21], ["montuno", "arp8", "strum"]), pads=STRINGS + BRASS,
                    leads=BRASS + [73, 65, 22, 56, 114], swing=(0, 0.05), density=["medium", "dense"],
                    reverb=(0.8, 1.8), drive=0.1),
    "synthpop": dict(bpm=(100, 130), modes={"minor": 0.6, "major": 0.4}, drums=["pop16", "four", "rock"],
                     kits=["electronic"], bass=(SYNTH_BASS, ["root8", "octave", "root16"]),
                     comp=([80, 81, 90, 62, 63, 4, 5], ["stab", "arp16", "block4"]), pads=SYNTH_PADS + SYNTH_FX,
                     leads=SYNTH_LEADS, swing=(0, 0), density=["medium", "dense"], reverb=(1.0, 2.5), drive=0.4,
                     arp=0.5),
    "orchestral": dict(bpm=(60, 110), modes={"minor": 0.6, "major": 0.4}, drums=["ballad", "none", "halftime"],
                       kits=["acoustic", "orchestra"], bass=([42, 43, 32, 58], ["sustain", "rootfifth"]),
                       comp=([48, 49, 45, 46, 0, 47], ["block4", "arp8", "sustain"]), pads=STRINGS + [60, 61, 70],
                       leads=[40, 56, 60, 68, 71, 73, 72, 41], swing=(0, 0), density=["sparse", "medium"],
                       reverb=(2.0, 4.0), drive=0.0),
}

# how often each genre is drawn (rough shares of popular-music styles, with a long tail)
GENRE_WEIGHTS = {"pop": 14, "rock": 12, "punk": 3, "metal": 5, "funk": 4, "disco": 3, "house": 4, "edm": 4,
                 "hiphop": 8, "trap": 4, "rnb": 6, "soul": 4, "jazz": 4, "blues": 3, "reggae": 3, "country": 4,
                 "folk": 4, "ballad": 5, "latin": 3, "synthpop": 4, "orchestral": 2}
