"""Mixing: per-part channel strips, stem levels, a sum-preserving bus gain, and the int16
quantisation that keeps the mixture the exact sum of the stems.
"""
import numpy as np
from scipy import signal

from . import effects as fx

STEMS = ("vocals", "drums", "bass", "other")
# stem level (dB, of the active part's RMS) relative to the drums: mean, sd
STEM_LEVEL_DB = {"vocals": (-1.0, 2.5), "drums": (0.0, 1.5), "bass": (-3.0, 2.5), "other": (-2.0, 2.5)}


def channel_strip(rng, x, n, dur, kind, pan_pos=None):
    """A producer's channel strip for one part (n, 2): EQ, compression, optional saturation,
    panning or stereo width, a reverb send, level rides. Returns (audio, settings)."""
    info = {}
    hp = {"bass": (25, 45), "drums": (20, 40)}.get(kind, (40, 200))
    y = fx.eq(x, fx.random_eq(rng, hp_range=hp, n_peaks=int(rng.integers(1, 4)), max_db=6.0))
    if rng.random() < 0.7:
        info["comp"] = (float(rng.uniform(-24, -8)), float(rng.uniform(1.5, 6)))
        y = fx.compress(y, *info["comp"], att=float(rng.uniform(0.002, 0.03)), rel=float(rng.uniform(0.05, 0.3)))
    if rng.random() < {"bass": 0.5, "drums": 0.35}.get(kind, 0.25):
        info["saturation"] = (float(rng.uniform(1.5, 6)), str(rng.choice(["tanh", "hard", "asym"])))
        y = fx.saturate(y, *info["saturation"], mix=float(rng.uniform(0.3, 1.0)))
    if kind == "bass":                                        # bass is recorded (DI/amp) in mono
        info["pan"] = float(rng.uniform(-0.1, 0.1))
        y = fx.pan(y, info["pan"])
    elif pan_pos is not None:
        info["pan"] = pan_pos
        y = fx.balance(y, pan_pos) if rng.random() < 0.5 else fx.pan(y, pan_pos)
    info["width"] = float(rng.uniform(0.6, 1.5)) if kind != "bass" else 1.0
    y = fx.width(y, info["width"])
    if kind != "bass" or rng.random() < 0.2:
        info["reverb"] = (str(rng.choice(["plate", "hall", "room"])), float(rng.uniform(0.3, 2.5)),
                          float(rng.uniform(0.0, 0.3)))
        ir = fx.reverb_ir(rng, info["reverb"][1], float(rng.uniform(0, 0.04)), float(rng.uniform(3000, 9000)),
                          info["reverb"][0])
        y = fx.reverb(y, ir, info["reverb"][2])
    if rng.random() < 0.5:
        info["automation_db"] = float(rng.uniform(1, 5))
        y = fx.apply_gain(y, fx.random_automation(rng, n, dur, int(rng.integers(3, 8)), info["automation_db"]))
    return y, info


def rms_active(x, thr=1e-4):
    """RMS over the frames (samples) whose level exceeds thr; 0 for silence."""
    e = np.sqrt((x ** 2).mean(axis=1)) if x.ndim == 2 else np.abs(x)
    return float(np.sqrt((x[e > thr] ** 2).mean())) if (e > thr).any() else 0.0


def set_levels(rng, stems):
    """Scale each stem so its active RMS sits at a random level around STEM_LEVEL_DB."""
    out, levels = {}, {}
    for k in STEMS:
        levels[k] = float(rng.normal(*STEM_LEVEL_DB[k]))
        r = rms_active(stems[k])
        out[k] = stems[k] * (10 ** (levels[k] / 20) / r if r > 0 else 0.0)
    return out, levels


def bus_gain(rng, stems, thr_db, ratio):
    """A mix-bus compressor that keeps the stems summing to the mixture: the gain curve is
    computed from the sum and applied to every stem alike (a linear, time-varying gain)."""
    mix = sum(stems[k] for k in STEMS)
    e = np.abs(mix).max(axis=1)
    b, a = signal.butter(1, 8 / (fx.SR / 2))
    env = signal.filtfilt(b, a, e) + 1e-9
    lvl = 20 * np.log10(env / env.max())
    g = 10 ** (np.minimum(0.0, (thr_db - lvl) * (1 - 1 / ratio)) / 20)
    return {k: fx.apply_gain(stems[k], g.astype(np.float32)) for k in STEMS}


def to_int16(rng, stems, peak_range=(0.7, 0.95)):
    """int32 arrays of int16-range stems whose sum (the mixture) peaks at a random level below
    full scale; returns (stems, mixture) with mixture == sum(stems) exactly and in int16 range."""
    mix = sum(stems[k] for k in STEMS)
    scale = float(rng.uniform(*peak_range)) / (np.abs(mix).max() + 1e-12)
    while True:                            # rounding can push a sum sample over: back off a little
        ints = {k: np.round(np.clip(stems[k] * scale, -1, 1) * 32767).astype(np.int32) for k in STEMS}
        mix_i = sum(ints[k] for k in STEMS)
        if np.abs(mix_i).max() <= 32767:
            return ints, mix_i
        scale *= 0.995


LTAS_BANDS = np.array([63, 125, 250, 500, 1000, 2000, 4000, 8000, 12000, 16000], float)
# octave-band long-term spectra (dB re. loudest band) of the real MUSDB18 excerpts at hand
# (sigsep-mus-eval test fixture + stempeg example), as measured for the shared generator
LTAS_TARGET = {
    "vocals": [-33.5, -22.0, -6.0, -2.0, -1.5, -5.0, -11.5, -17.0, -23.5, -27.0],
    "drums":  [0.0, -5.5, -12.0, -13.0, -18.5, -17.0, -14.5, -18.0, -22.0, -27.5],
    "bass":   [-2.0, -1.0, -8.5, -5.0, -12.5, -19.0, -27.5, -47.5, -51.0, -52.5],
    "other":  [-32.0, -19.0, -6.0, -4.5, -4.0, -1.5, -7.5, -28.0, -43.0, -49.0],
}


def band_levels(x):
    """Octave-band levels (dB re. the loudest band) of a (n, 2) or (n,) signal."""
    mono = x.mean(axis=1) if x.ndim == 2 else x
    f, P = signal.welch(mono, fx.SR, nperseg=4096)
    lv = np.array([10 * np.log10(P[(f >= b / np.sqrt(2)) & (f < b * np.sqrt(2))].sum() + 1e-20) for b in LTAS_BANDS])
    return lv - lv.max()


def match_ltas(rng, x, stem, strength, jitter_db=3.0, limit_db=12.0, taps=2047):
    """Move the stem's octave-band long-term spectrum part of the way (strength 0..1) towards
    LTAS_TARGET[stem] plus per-band jitter, with a linear-phase FIR (cuts only, delay
    compensated). Returns (audio, gains_db)."""
    if not np.any(x):
        return x, np.zeros(len(LTAS_BANDS))
    cur = band_levels(x)
    tgt = np.array(LTAS_TARGET[stem]) + rng.normal(0, jitter_db, len(LTAS_BANDS))
    g_db = np.clip(strength * (tgt - cur), -limit_db, limit_db) * (cur > -70)   # never boost empty bands
    g_db -= g_db.max()
    fr = np.concatenate([[0], LTAS_BANDS, [fx.SR / 2]]) / (fx.SR / 2)
    h = signal.firwin2(taps, fr, 10 ** (np.concatenate([[g_db[0]], g_db, [g_db[-1]]]) / 20))
    d = taps // 2
    y = signal.fftconvolve(x, h[:, None], axes=0)[d:d + len(x)]
    return y.astype(np.float32), g_db
