"""MUSDB18-HQ tracks for the evaluation tests (two 2 s synthetic songs whose stems lie on the
16-bit grid, so a 16-bit WAV or FLAC file holds exactly these samples), and a comparison of
museval's per-track JSON texts."""
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from unmix.evaluation.scores import METRICS

RATE = 44100
SECONDS = 2.0
TRACK_NAMES = ("Alpha - First Song", "Beta - Second Song")
TARGETS = ["vocals", "drums"]


def synth_sources(index, seconds=SECONDS):
    """Four stereo sources ``(nb_channels, nb_timesteps)`` on the 16-bit grid, different per track."""
    rng = np.random.default_rng(index)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 220.0 * (1 + 0.25 * index)
    mono = {
        "vocals": 0.15 * np.sin(2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * 5 * t)),
        "drums": 0.2 * np.clip(rng.standard_normal(t.size), -2, 2) * (np.mod(t, 0.5) < 0.05),
        "bass": 0.15 * np.sin(2 * np.pi * (55 + 10 * index) * t),
        "other": 0.05 * (np.sin(2 * np.pi * 660 * t) + np.sin(2 * np.pi * (880 + 40 * index) * t)),
    }  # peaks below 0.8 even summed: nothing clips in the files
    # quantised as a 16-bit file stores them, so the files hold exactly these values
    return {s: np.round(np.stack([a, (0.6 + 0.2 * index) * a]) * 32767) / 32768 for s, a in mono.items()}


def write_hq(root, ext, subset="test", names=TRACK_NAMES, seconds=SECONDS, mixture=True):
    """MUSDB18-HQ layout ``root/subset/<name>/{mixture,vocals,drums,bass,other}<ext>``."""
    for index, name in enumerate(names):
        folder = Path(root) / subset / name
        folder.mkdir(parents=True, exist_ok=True)
        sources = synth_sources(index, seconds)
        for source, audio in sources.items():
            sf.write(folder / f"{source}{ext}", audio.T, RATE, subtype="PCM_16")
        if mixture:
            sf.write(folder / f"mixture{ext}", sum(sources.values()).T, RATE, subtype="PCM_16")
    return Path(root)


def assert_same_scores(ours, theirs, tol=1e-3):
    """Two museval JSON texts: the same layout, and values within `tol` dB (the fast scorer's
    bound; the JSON keeps 5 decimals, so the last one may differ), NaN alike."""
    a, b = json.loads(ours), json.loads(theirs)
    strip = [[(f["time"], f["duration"], sorted(f["metrics"])) for f in t["frames"]] for t in b["targets"]]
    assert [[(f["time"], f["duration"], sorted(f["metrics"])) for f in t["frames"]] for t in a["targets"]] == strip
    assert {k: v for k, v in a.items() if k != "targets"} == {k: v for k, v in b.items() if k != "targets"}
    for ta, tb in zip(a["targets"], b["targets"]):
        assert ta["name"] == tb["name"]
        for m in METRICS:
            np.testing.assert_allclose([np.nan if f["metrics"][m] is None else float(f["metrics"][m])
                                        for f in ta["frames"]],
                                       [np.nan if f["metrics"][m] is None else float(f["metrics"][m])
                                        for f in tb["frames"]], rtol=0, atol=tol)
