"""Audio effects a producer uses, on float32 arrays of shape (n,) or (n, 2) at SR Hz.

Every effect takes explicit parameters (drawn by the caller from its seeded generator) and
returns an array of the input's shape; none changes the length, so stems stay aligned.
"""
import numpy as np
from scipy import signal

SR = 44100


def _stereo(x):
    """(n,) or (n, 2) -> (n, 2) float32 copy."""
    x = np.asarray(x, np.float32)
    return np.stack([x, x], axis=1) if x.ndim == 1 else x.copy()


def biquad(kind, f0, gain_db=0.0, q=0.707):
    """RBJ audio-EQ-cookbook biquad (b, a). kind: peak, lowshelf, highshelf, highpass, lowpass."""
    A = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * min(f0, 0.45 * SR) / SR
    cw, alpha = np.cos(w0), np.sin(w0) / (2 * q)
    if kind == "peak":
        b = [1 + alpha * A, -2 * cw, 1 - alpha * A]
        a = [1 + alpha / A, -2 * cw, 1 - alpha / A]
    elif kind in ("lowshelf", "highshelf"):
        s = 1 if kind == "lowshelf" else -1
        sq = 2 * np.sqrt(A) * alpha
        b = [A * ((A + 1) - s * (A - 1) * cw + sq), s * 2 * A * ((A - 1) - s * (A + 1) * cw),
             A * ((A + 1) - s * (A - 1) * cw - sq)]
        a = [(A + 1) + s * (A - 1) * cw + sq, -s * 2 * ((A - 1) + s * (A + 1) * cw),
             (A + 1) + s * (A - 1) * cw - sq]
    elif kind == "highpass":
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
        a = [1 + alpha, -2 * cw, 1 - alpha]
    elif kind == "lowpass":
        b = [(1 - cw) / 2, 1 - cw, (1 - cw) / 2]
        a = [1 + alpha, -2 * cw, 1 - alpha]
    else:
        raise ValueError("unknown biquad kind %r" % kind)
    return np.array(b) / a[0], np.array(a) / a[0]


def eq(x, bands):
    """Apply a list of (kind, f0, gain_db, q) biquads in series."""
    y = np.asarray(x, np.float64)
    for kind, f0, g, q in bands:
        b, a = biquad(kind, f0, g, q)
        y = signal.lfilter(b, a, y, axis=0)
    return y.astype(np.float32)


def random_eq(rng, hp_range=(30, 120), n_peaks=2, max_db=6.0):
    """A producer's corrective/creative EQ: a high-pass, a low and a high shelf, n peaks."""
    bands = [("highpass", float(rng.uniform(*hp_range)), 0.0, 0.707),
             ("lowshelf", float(rng.uniform(80, 300)), float(rng.uniform(-max_db, max_db) / 2), 0.707),
             ("highshelf", float(rng.uniform(4000, 12000)), float(rng.uniform(-max_db, max_db)), 0.707)]
    for _ in range(n_peaks):
        bands.append(("peak", float(np.exp(rng.uniform(np.log(150), np.log(8000)))),
                      float(rng.uniform(-max_db, max_db)), float(rng.uniform(0.5, 3.0))))
    return bands


def compress(x, thr_db=-18.0, ratio=3.0, att=0.005, rel=0.08, makeup=True):
    """Feed-forward peak compressor with attack/release smoothing of the gain (in dB).

    thr_db is relative to the signal's peak, so the amount of compression does not depend
    on the input level. Returns the compressed signal, peak-matched to the input if makeup.
    """
    x = np.asarray(x, np.float32)
    e = np.abs(x) if x.ndim == 1 else np.abs(x).max(axis=1)
    pk = e.max() + 1e-9
    lvl = 20 * np.log10(e / pk + 1e-9)
    g_db = np.minimum(0.0, (thr_db - lvl) * (1 - 1 / ratio))
    # one-pole smoothing, attack when the gain falls, release when it recovers; on a 1 ms grid
    hop = 44
    gd = g_db[: len(g_db) // hop * hop].reshape(-1, hop).min(axis=1) if len(g_db) >= hop else g_db[:1]
    a_att, a_rel = np.exp(-hop / (att * SR)), np.exp(-hop / (rel * SR))
    sm = np.empty_like(gd)
    cur = 0.0
    for i, g in enumerate(gd):
        coef = a_att if g < cur else a_rel
        cur = coef * cur + (1 - coef) * g
        sm[i] = cur
    g = np.interp(np.arange(len(x)), np.arange(len(sm)) * hop + hop / 2, sm)
    y = x * (10 ** (g / 20)).astype(np.float32)[(...,) + ((None,) if x.ndim == 2 else ())]
    if makeup:
        y *= pk / (np.abs(y).max() + 1e-9)
    return y.astype(np.float32)


def saturate(x, drive, kind="tanh", mix=1.0):
    """Waveshaping saturation. drive >= 1; kind tanh (tape/tube), hard (clipper), asym (tube,
    even harmonics, DC removed). Peak level kept; mix blends with the dry signal."""
    x = np.asarray(x, np.float32)
    pk = np.abs(x).max() + 1e-9
    u = drive * x / pk
    if kind == "tanh":
        y = np.tanh(u) / np.tanh(drive)
    elif kind == "hard":
        y = np.clip(u, -1, 1)
    elif kind == "asym":
        y = np.where(u >= 0, np.tanh(u), np.tanh(0.6 * u) / 0.6)
        y = y - y.mean(axis=0)
        y = y / (np.abs(y).max() + 1e-9)
    else:
        raise ValueError("unknown saturation kind %r" % kind)
    y = (mix * y * pk + (1 - mix) * x).astype(np.float32)
    return y * (pk / (np.abs(y).max() + 1e-9))


def reverb_ir(rng, rt60, predelay=0.02, damping_hz=6000.0, kind="plate", width=1.0):
    """Stereo synthetic reverb impulse response (m, 2), unit energy per channel.

    kind: plate (dense from the start), hall (early reflections then a slower build),
    room (short, bright early reflections). width 0..1 blends the two channels' noise
    (0 = mono tail).
    """
    n = int(rt60 * 1.2 * SR)
    t = np.arange(n) / SR
    env = np.exp(-6.91 * t / rt60)
    if kind == "hall":
        env *= 1 - np.exp(-t / 0.03)
    noise = rng.normal(0, 1, (n, 2))
    noise[:, 1] = width * noise[:, 1] + (1 - width) * noise[:, 0]
    ir = noise * env[:, None]
    b, a = signal.butter(1, damping_hz / (SR / 2))
    ir = signal.lfilter(b, a, ir, axis=0)
    if kind in ("room", "hall"):                       # a few discrete early reflections
        for _ in range(int(rng.integers(4, 10))):
            k = int(rng.uniform(0.003, 0.04 if kind == "room" else 0.08) * SR)
            if k < n:
                ir[k] += rng.uniform(-1, 1, 2) * 4
    ir = np.concatenate([np.zeros((int(predelay * SR), 2)), ir])
    return (ir / np.sqrt((ir ** 2).sum(axis=0, keepdims=True))).astype(np.float32)


def reverb(x, ir, wet):
    """x + wet * reverb(x), the reverb scaled to x's variance; output length = input length."""
    st = _stereo(x)
    n = len(st)
    rev = np.stack([signal.fftconvolve(st[:, c], ir[:, c])[:n] for c in range(2)], axis=1)
    return (st + wet * rev * np.sqrt(st.var() / (rev.var() + 1e-12))).astype(np.float32)


def delay(x, time_s, feedback, wet, ping_pong=False, lowpass_hz=5000.0):
    """Feedback echo (mono or ping-pong), each repeat low-passed like a tape/analog delay."""
    st = _stereo(x)
    n, d = len(st), max(int(time_s * SR), 1)
    b, a = signal.butter(1, lowpass_hz / (SR / 2))
    out = np.zeros_like(st)
    tap = st.copy()
    gain = 1.0
    for k in range(1, 12):
        gain *= feedback if k > 1 else 1.0
        if gain < 0.02 or k * d >= n:
            break
        tap = signal.lfilter(b, a, tap, axis=0).astype(np.float32)
        side = tap[:, ::-1] if (ping_pong and k % 2) else tap
        out[k * d:] += gain * side[: n - k * d]
    return (st + wet * out).astype(np.float32)


def pan(x, position):
    """Constant-power pan of a mono (or stereo, summed to mono) signal; position -1..1."""
    m = np.asarray(x, np.float32)
    m = m.mean(axis=1) if m.ndim == 2 else m
    th = (position + 1) * np.pi / 4
    return (np.stack([m * np.cos(th), m * np.sin(th)], axis=1) * np.sqrt(2)).astype(np.float32)


def balance(x, position):
    """Stereo balance: attenuate one side of a stereo signal (-1 = left only ... 1 = right only)."""
    st = _stereo(x)
    st[:, 0] *= min(1.0, 1 - position)
    st[:, 1] *= min(1.0, 1 + position)
    return st


def width(x, amount):
    """Mid/side stereo width: 0 = mono, 1 = unchanged, up to 2 = wider."""
    st = _stereo(x)
    mid, side = (st[:, 0] + st[:, 1]) / 2, (st[:, 0] - st[:, 1]) / 2 * amount
    return np.stack([mid + side, mid - side], axis=1).astype(np.float32)


def haas_double(x, delay_s, level):
    """Widen a mono part: the right channel gets a short delayed copy (Haas effect)."""
    st = _stereo(x)
    d = int(delay_s * SR)
    st[d:, 1] = (1 - level) * st[d:, 1] + level * st[:-d or None, 0][: len(st) - d]
    return st


def automation(n, points):
    """Piecewise-linear gain curve (n,) through (time_s, gain) points (held at the ends)."""
    t = np.arange(n) / SR
    ts, gs = zip(*sorted(points))
    return np.interp(t, ts, gs).astype(np.float32)


def random_automation(rng, n, dur, n_points=6, depth_db=4.0):
    """A producer's level rides: a few random breakpoints within +-depth_db."""
    ts = np.sort(rng.uniform(0, dur, n_points))
    gs = 10 ** (rng.uniform(-depth_db, depth_db, n_points) / 20)
    return automation(n, list(zip(ts, gs)))


def apply_gain(x, g):
    """Multiply (n,) or (n, 2) by a gain curve (n,)."""
    return (x * (g[:, None] if x.ndim == 2 else g)).astype(np.float32)
