"""A minimal Hydrogen drumkit sampler: velocity layers, GM note mapping by instrument name,
per-piece panning, hi-hat choke.

Many kits in Debian's hydrogen-drumkits give no MIDI note (or the same note for every piece),
so each instrument is mapped to a GM drum note from its name.
"""
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import soundfile as sf
from scipy import signal

from .effects import SR

# first matching rule wins; order matters (e.g. "ride bell" before "ride", "rimshot" before "snare")
NAME_RULES = [
    (r"kick|bass ?drum|bassdrum|\bbd\b", 36), (r"rim ?shot", 40), (r"side ?stick|stick|rim ?click|rim\b", 37),
    (r"roll", None), (r"snare|\bsd\b", 38), (r"clap", 39), (r"pedal|hat pd|hh pd", 44),
    (r"open|ohh|hat op|semi", 46), (r"closed|hat cl|\bchh\b|hi-?hat|hh|\bhat", 42),
    (r"china|splash", 55), (r"crash|cymbal", 49), (r"bell|cup", 53), (r"ride", 51), (r"cowbell", 56),
    (r"floor|tom ?low|low tom|tom 3", 43), (r"tom ?mid|mid(dle)? tom|tom 2", 47), (r"tom ?hi|high tom|tom 1|tom", 50),
    (r"tamb", 54), (r"shaker|maraca|cabasa", 70), (r"conga", 63), (r"bongo hi", 60), (r"bongo", 61),
    (r"clave|woodblock", 75), (r"cajon thump", 36), (r"cajon slap", 38), (r"snap", 39),
]
FALLBACK = {35: 36, 40: 38, 37: 38, 39: 38, 44: 42, 46: 42, 57: 49, 55: 49, 53: 51, 51: 42, 41: 43, 43: 45,
            45: 47, 47: 48, 48: 50, 50: 47, 54: 70, 70: 42, 63: 47, 64: 45, 60: 50, 61: 47, 75: 37, 56: 53}
PAN = {36: 0.0, 38: 0.05, 40: 0.05, 37: 0.05, 39: 0.0, 42: -0.35, 44: -0.35, 46: -0.35, 49: -0.5, 57: 0.5,
       55: -0.2, 51: 0.45, 53: 0.45, 50: -0.3, 48: -0.15, 47: 0.0, 45: 0.15, 43: 0.3, 41: 0.4, 54: 0.3, 70: -0.4,
       56: 0.2, 63: 0.3, 64: 0.4, 60: -0.3, 61: -0.2, 75: 0.25}


def gm_note(name):
    """GM drum note for a Hydrogen instrument name, or None."""
    n = name.lower()
    for pattern, note in NAME_RULES:
        if re.search(pattern, n):
            return note
    return None


class H2Kit:
    """Hydrogen drumkit folder -> sampler. render(hits, n, rng) gives (n, 2) float32."""

    def __init__(self, path):
        self.path = path
        root = ET.parse(os.path.join(path, "drumkit.xml")).getroot()
        ns = root.tag.split("}")[0] + "}" if "}" in root.tag else ""
        self.name = (root.findtext(ns + "name") or os.path.basename(path)).strip()
        self.inst = {}
        for ins in root.iter(ns + "instrument"):
            note = gm_note(ins.findtext(ns + "name") or "")
            if note is None or note in self.inst:
                continue
            gain = float(ins.findtext(ns + "gain") or 1.0)
            layers = []
            for lay in ins.iter(ns + "layer"):
                fn = os.path.join(path, lay.findtext(ns + "filename") or "")
                if os.path.exists(fn):
                    layers.append((float(lay.findtext(ns + "min") or 0), float(lay.findtext(ns + "max") or 1), fn,
                                   float(lay.findtext(ns + "gain") or 1.0)))
            if layers:
                self.inst[note] = (gain, layers)
        self.cache = {}

    def is_full_kit(self):
        """A kit usable for a whole groove: kick, snare (or clap) and a hi-hat or ride."""
        return 36 in self.inst and (38 in self.inst or 39 in self.inst) and (42 in self.inst or 51 in self.inst)

    def sample(self, fn):
        """Sample file as (m, 2) float32 at SR (cached)."""
        if fn not in self.cache:
            x, sr = sf.read(fn, dtype="float32", always_2d=True)
            if x.shape[1] == 1:
                x = np.repeat(x, 2, axis=1)
            if sr != SR:
                x = signal.resample_poly(x[:, :2], SR, sr, axis=0).astype(np.float32)
            self.cache[fn] = x[:, :2]
        return self.cache[fn]

    def resolve(self, note):
        """The kit's note for a GM note (through FALLBACK), or None."""
        for _ in range(5):
            if note in self.inst:
                return note
            note = FALLBACK.get(note)
            if note is None:
                return None
        return None

    def render(self, hits, n, rng, pan_spread=1.0):
        """Sum the velocity-layer samples of hits [(t, note, vel)] into (n, 2); open hats are
        choked by the next closed/pedal hat."""
        out = np.zeros((n, 2), np.float32)
        hat_times = sorted(t for t, nt, _ in hits if nt in (42, 44))
        for t, note, vel in hits:
            k = self.resolve(note)
            if k is None:
                continue
            gain, layers = self.inst[k]
            v = vel / 127.0
            cand = [lay for lay in layers if lay[0] <= v <= lay[1] + 1e-6] or [layers[-1]]
            _, _, fn, lg = cand[int(rng.integers(0, len(cand)))]
            x = self.sample(fn)
            i0 = int(t * SR)
            if i0 >= n:
                continue
            L = min(len(x), n - i0)
            if k == 46:
                nxt = [h for h in hat_times if h > t + 0.01]
                if nxt:
                    L = min(L, int((nxt[0] - t) * SR) + 441)
            amp = gain * lg * (0.25 + 0.75 * v) if len(layers) == 1 else gain * lg * (0.6 + 0.4 * v)
            p = PAN.get(note, 0.0) * pan_spread
            th = (p + 1) * np.pi / 4
            seg = x[:L] * amp
            if L > 441 and L < len(x):
                seg[-441:] *= np.linspace(1, 0, 441)[:, None]
            out[i0:i0 + L, 0] += seg[:, 0] * np.cos(th) * np.sqrt(2)
            out[i0:i0 + L, 1] += seg[:, 1] * np.sin(th) * np.sqrt(2)
        return out
