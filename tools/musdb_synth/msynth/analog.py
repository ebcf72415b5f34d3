"""A subtractive ("analog") synthesizer in numpy for synth bass, pads, leads, plucks and arpeggios.

The GM soundfonts' synth presets are a handful of fixed samples; real pop, synthpop and
electronic songs are full of subtractive synths: band-limited saw/pulse/triangle oscillators,
detuned unison ("supersaw"), a sub oscillator, a resonant low-pass whose cutoff follows an
envelope and an LFO, an amplitude ADSR, portamento between legato notes, vibrato. Each part
draws its own patch (a dict of plain floats/strings, stored in info.json).

    patch = draw_patch(rng, "pad")
    y = render(inst, n, patch, rng)       # pretty_midi Instrument -> (n, 2) float32
"""
import numpy as np
from scipy import signal

from .effects import SR, biquad

WAVES = ("saw", "pulse", "tri")
# patch ranges per role: amp attack/decay/sustain/release (s, s, 0..1, s); cutoff (Hz) at rest
# and filter-envelope depth (octaves); resonance (Q)
ROLES = {
    "bass":  dict(att=(0.001, 0.01), dec=(0.08, 0.6), sus=(0.3, 1.0), rel=(0.02, 0.15), cut=(150, 900),
                  env_oct=(0.5, 4.0), q=(0.7, 4.0), unison=(1, 2), sub_p=0.6, glide_p=0.4, vib=(0.0, 0.0)),
    "pad":   dict(att=(0.05, 0.9), dec=(0.3, 1.5), sus=(0.6, 1.0), rel=(0.3, 1.5), cut=(500, 4000),
                  env_oct=(0.0, 2.0), q=(0.7, 2.5), unison=(2, 7), sub_p=0.1, glide_p=0.0, vib=(0.0, 0.08)),
    "lead":  dict(att=(0.003, 0.08), dec=(0.1, 0.8), sus=(0.5, 1.0), rel=(0.05, 0.4), cut=(800, 6000),
                  env_oct=(0.0, 3.0), q=(0.7, 5.0), unison=(1, 5), sub_p=0.2, glide_p=0.5, vib=(0.05, 0.35)),
    "pluck": dict(att=(0.001, 0.01), dec=(0.08, 0.5), sus=(0.0, 0.35), rel=(0.05, 0.3), cut=(300, 2500),
                  env_oct=(1.5, 5.0), q=(0.7, 6.0), unison=(1, 4), sub_p=0.1, glide_p=0.0, vib=(0.0, 0.0)),
}
# which role an "other"/bass part plays on the analog synth
PART_ROLE = {"bass": "bass", "pad": "pad", "lead": "lead", "comp": "pluck", "comp2": "pluck", "arp": "pluck"}


def draw_patch(rng, role):
    """A synth patch for one part (all plain Python values)."""
    r = ROLES[role]
    u = lambda lo_hi: float(rng.uniform(*lo_hi))
    return dict(role=role, wave=str(rng.choice(WAVES, p=[0.55, 0.3, 0.15])), width=float(rng.uniform(0.12, 0.5)),
                unison=int(rng.integers(r["unison"][0], r["unison"][1] + 1)), detune_ct=float(rng.uniform(4, 25)),
                sub=bool(rng.random() < r["sub_p"]), sub_level=float(rng.uniform(0.2, 0.7)),
                att=u(r["att"]), dec=u(r["dec"]), sus=u(r["sus"]), rel=u(r["rel"]),
                cut=float(np.exp(rng.uniform(np.log(r["cut"][0]), np.log(r["cut"][1])))), env_oct=u(r["env_oct"]),
                fdec=float(rng.uniform(0.05, 0.8)), q=u(r["q"]), key_track=float(rng.uniform(0.0, 1.0)),
                lfo_hz=float(rng.uniform(0.1, 6.0)), lfo_oct=float(rng.choice([0.0, rng.uniform(0.1, 1.0)])),
                vib_st=u(r["vib"]), vib_hz=float(rng.uniform(4.5, 6.5)),
                glide_s=float(rng.uniform(0.02, 0.12)) if rng.random() < r["glide_p"] else 0.0,
                noise=float(rng.choice([0.0, rng.uniform(0.01, 0.08)])), drive=float(rng.uniform(1.0, 3.0)))


def oscillator(phase, dphase, wave, width=0.5):
    """Band-limited (polyBLEP) waveform from a running phase in cycles.

    phase: (L,) cumulative phase in cycles; dphase: (L,) cycles per sample (< 0.5).
    Returns (L,) float64: saw and triangle in about [-1, 1], the pulse between
    -2 (1 - width) and 2 width (zero mean).
    """
    t = phase % 1.0
    if wave == "tri":                                          # few harmonics: aliasing is negligible
        return 4.0 * np.abs(t - 0.5) - 1.0
    if wave == "saw":
        return 2.0 * t - 1.0 - _blep(t, dphase)
    t2 = (t + 1.0 - width) % 1.0                               # pulse = difference of two saws
    return (2.0 * t - 1.0 - _blep(t, dphase)) - (2.0 * t2 - 1.0 - _blep(t2, dphase))   # (zero mean)


def _blep(t, dt):
    """polyBLEP residual of a unit downward step at t = 0 (t in cycles, dt cycles per sample)."""
    out = np.zeros_like(t)
    a = t < dt
    x = t[a] / dt[a]
    out[a] = x + x - x * x - 1.0
    b = t > 1.0 - dt
    x = (t[b] - 1.0) / dt[b]
    out[b] = x * x + x + x + 1.0
    return out


def adsr(L, hold, att, dec, sus, rel):
    """Amplitude envelope (L,) of a note held `hold` samples, then released."""
    i = np.arange(L, dtype=np.float64)
    a = np.minimum(i / max(att * SR, 1.0), 1.0)
    d = sus + (1.0 - sus) * np.exp(-np.maximum(i - att * SR, 0.0) / max(dec * SR, 1.0))
    env = np.where(i < att * SR, a, d)
    held = env[min(hold, L) - 1] if hold > 0 else 0.0
    return np.where(i < hold, env, held * np.exp(-(i - hold) / max(rel * SR / 5.0, 1.0)))


def lowpass_sweep(x, cutoffs, q):
    """A resonant low-pass whose cutoff moves: the note is filtered at fixed cutoffs about an
    octave apart (a resonant RBJ biquad then a Butterworth one: 24 dB/oct) and the outputs are
    crossfaded on a log-frequency axis (a time-varying filter at the cost of a few sosfilt calls).

    x: (L,) signal; cutoffs: (L,) Hz. Returns (L,) float64.
    """
    lc = np.log2(np.clip(cutoffs, 40.0, 0.45 * SR))
    k = int(np.clip(np.ceil(np.ptp(lc)) + 1, 1, 6))
    grid = np.linspace(lc.min(), lc.max(), k)
    ys = []
    for g in grid:
        sos = [np.concatenate(biquad("lowpass", 2 ** g, q=qq)) for qq in (q, 0.7071)]
        ys.append(signal.sosfilt(np.array(sos), x))
    if k == 1:
        return ys[0]
    pos = (lc - grid[0]) / (grid[1] - grid[0])                 # 0..k-1 on the grid
    out = np.zeros_like(x)
    for j in range(k):                                         # triangular (linear) crossfade weights
        out += np.clip(1.0 - np.abs(pos - j), 0.0, 1.0) * ys[j]
    return out


def render(inst, n, patch, rng, tail=2.0):
    """Render a pretty_midi Instrument's notes with `patch` -> (n, 2) float32, peak about 0.5.

    Unison voices are spread across the stereo field; legato notes (start before the previous
    end + 10 ms) glide from the previous pitch when patch['glide_s'] > 0.
    """
    out = np.zeros((n + int(tail * SR), 2))
    notes = sorted(inst.notes, key=lambda nt: nt.start)
    prev = None
    for nt in notes:
        i0 = int(round(nt.start * SR))
        if i0 >= n:
            break
        hold = max(int((nt.end - nt.start) * SR), 1)
        L = min(hold + int(patch["rel"] * SR * 1.2) + 1, len(out) - i0)
        f = 440.0 * 2 ** ((nt.pitch - 69) / 12.0)
        tt = np.arange(L) / SR
        semis = patch["vib_st"] * np.clip((tt - 0.2) / 0.3, 0, 1) * np.sin(2 * np.pi * patch["vib_hz"] * tt)
        if patch["glide_s"] > 0 and prev is not None and nt.start < prev.end + 0.01:
            semis = semis + (prev.pitch - nt.pitch) * np.exp(-tt / patch["glide_s"])
        freq = f * 2 ** (semis / 12.0)
        vel = nt.velocity / 127.0
        y = np.zeros((L, 2))
        U = patch["unison"]
        for u in range(U):
            det = 0.0 if U == 1 else patch["detune_ct"] * (2 * u / (U - 1) - 1)
            fu = freq * 2 ** (det / 1200.0)
            dph = np.minimum(fu / SR, 0.45)
            ph = rng.uniform(0, 1) + np.cumsum(dph)
            v = oscillator(ph, dph, patch["wave"], patch["width"]) / np.sqrt(U)
            side = 0.0 if U == 1 else (2 * u / (U - 1) - 1) * 0.8
            y[:, 0] += v * np.sqrt((1 - side) / 2) * np.sqrt(2)
            y[:, 1] += v * np.sqrt((1 + side) / 2) * np.sqrt(2)
        if patch["sub"]:
            dph = np.minimum(freq / 2 / SR, 0.45)
            sub = patch["sub_level"] * oscillator(np.cumsum(dph), dph, "pulse", 0.5)
            y += sub[:, None]
        if patch["noise"] > 0:
            y += patch["noise"] * rng.normal(0, 1, (L, 2))
        fenv = np.exp(-tt / patch["fdec"])
        oct_ = (patch["env_oct"] * vel * fenv + patch["lfo_oct"] * np.sin(2 * np.pi * patch["lfo_hz"] * (tt + nt.start))
                + patch["key_track"] * (nt.pitch - 60) / 12.0)
        cut = patch["cut"] * 2 ** oct_
        for c in range(2):
            y[:, c] = lowpass_sweep(y[:, c], cut, patch["q"])
        y = np.tanh(patch["drive"] * y) / patch["drive"]        # a little analog saturation
        y *= (adsr(L, hold, patch["att"], patch["dec"], patch["sus"], patch["rel"]) * (0.3 + 0.7 * vel))[:, None]
        out[i0:i0 + L] += y
        prev = nt
    peak = np.abs(out[:n]).max()
    return (out[:n] * (0.5 / peak if peak > 0 else 0.0)).astype(np.float32)
