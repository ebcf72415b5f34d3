"""The WORLD-vocoder singer: each syllable is spoken by espeak-ng or a Festival voice, analysed with WORLD
(f0, spectral envelope, aperiodicity), time-stretched to the note and re-synthesised on a sung
f0 contour (portamento, scoops, glides, vibrato, drift), with formant shift, breathiness and
consonant emphasis set per singer.
"""
import os
import subprocess

import numpy as np
import soundfile as sf
from scipy import signal

from .effects import SR


def draw_style(rng):
    """A singer's habits (all plain floats, stored in info.json)."""
    return dict(formant=float(rng.uniform(0.86, 1.16)), vib_rate=float(rng.uniform(4.5, 6.8)),
                vib_depth=float(rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.2, 0.6)])),
                vib_onset=float(rng.uniform(0.08, 0.4)), porta_s=float(rng.uniform(0.015, 0.09)),
                scoop_p=float(rng.uniform(0.1, 0.7)), scoop_st=float(rng.uniform(0.3, 1.5)),
                glide_p=float(rng.uniform(0.0, 0.25)), drift_st=float(rng.uniform(0.03, 0.15)),
                breath=float(rng.choice([0.0, rng.uniform(0.1, 0.5)])), consonant_gain=float(rng.uniform(0.7, 2.0)),
                speed=int(rng.integers(100, 170)), pitch_espeak=int(rng.integers(30, 70)))


class Singer:
    """sing(word, midi, dur, prev_hz, vel) -> (audio at SR, seconds of consonant before the onset)."""

    def __init__(self, rng, voice, language, style, tmpdir, fs_an=22050, frame_ms=5.0, engine="espeak"):
        import pyworld                                          # imported here: only vocals need it
        self.pw = pyworld
        self.rng, self.voice, self.lang, self.style, self.tmp = rng, voice, language, style, tmpdir
        self.fs, self.fp, self.engine = fs_an, frame_ms, engine
        self.band = fs_an / 2.0                                 # highest frequency the speech source has
        self.cache, self.spoken = {}, {}

    def speak(self, word):
        """The spoken syllable at fs_an (float64), by the singer's engine."""
        if self.engine == "festival":
            if word not in self.spoken:
                self.festival([word])
            return self.spoken[word]
        return self.espeak(word)

    def festival(self, words):
        """Speak several words with one Festival process (its start-up costs more than a word)
        into self.spoken; the source's band (8 kHz for the 16 kHz diphone voices) sets self.band."""
        words = [w for w in dict.fromkeys(words) if w not in self.spoken]
        if not words:
            return
        base = os.path.join(self.tmp, "fest_%d" % (abs(hash((self.voice, tuple(words)))) % 10 ** 12))
        lines = ["(voice_%s)" % self.voice]
        for i, w in enumerate(words):
            lines.append('(utt.save.wave (utt.synth (Utterance Text "%s")) "%s_%d.wav" \'riff)'
                         % (w.replace('"', "").replace("\\", ""), base, i))
        with open(base + ".scm", "w") as fh:
            fh.write("\n".join(lines) + "\n")
        subprocess.run(["festival", "-b", base + ".scm"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        os.remove(base + ".scm")
        for i, w in enumerate(words):
            x, sr = sf.read("%s_%d.wav" % (base, i), dtype="float64")
            os.remove("%s_%d.wav" % (base, i))
            self.band = min(self.fs, sr) / 2.0
            self.spoken[w] = self.trim(signal.resample_poly(x, self.fs, sr) if sr != self.fs else x)

    def espeak(self, word):
        """The spoken syllable at fs_an, leading/trailing silence trimmed (float64)."""
        wav = os.path.join(self.tmp, "sy_%d.wav" % (abs(hash((self.lang, self.voice, word))) % 10 ** 12))
        subprocess.run(["espeak-ng", "-v", "%s+%s" % (self.lang, self.voice), "-s", str(self.style["speed"]),
                        "-p", str(self.style["pitch_espeak"]), "-w", wav, word], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x, sr = sf.read(wav, dtype="float64")
        os.remove(wav)
        if sr != self.fs:
            x = signal.resample_poly(x, self.fs, sr)
        return self.trim(x)

    def trim(self, x):
        """x without its leading/trailing silence (below 1 % of the peak)."""
        nz = np.nonzero(np.abs(x) > 0.01 * (np.abs(x).max() + 1e-12))[0]
        return x[max(nz[0] - 100, 0): nz[-1] + 200] if len(nz) else np.zeros(int(0.2 * self.fs))

    def analyse(self, word):
        """(sp, ap, voiced) of a syllable on the 44.1 kHz frequency grid (cached per word)."""
        if word in self.cache:
            return self.cache[word]
        x = self.speak(word)
        f0, t = self.pw.dio(x, self.fs, frame_period=self.fp, f0_floor=60, f0_ceil=600)
        f0 = self.pw.stonemask(x, f0, t, self.fs)
        sp = self.pw.cheaptrick(x, f0, t, self.fs)
        ap = self.pw.d4c(x, f0, t, self.fs)
        nb = sp.shape[1]
        if abs(self.style["formant"] - 1.0) > 1e-3:             # formant (timbre) shift
            src = np.clip(np.arange(nb) / self.style["formant"], 0, nb - 1)
            sp = np.stack([np.interp(src, np.arange(nb), row) for row in sp])
        voiced = f0 > 0
        if self.style["breath"] > 0:                            # breathy voice: more aperiodic energy
            ap = np.where(voiced[:, None], np.maximum(ap, self.style["breath"] * np.linspace(0.3, 1, nb)), ap)
        sp = np.where(voiced[:, None], sp, sp * self.style["consonant_gain"] ** 2)
        self.cache[word] = self.extend_band(sp, ap, voiced)
        return self.cache[word]

    def extend_band(self, sp, ap, voiced):
        """Envelope for synthesis at 44.1 kHz: identical below the source's band (fs_an/2 = 11025
        Hz for espeak-ng), above it the level of the band's top quarter (8-10.5 kHz for espeak-ng)
        extrapolated at -12 dB/oct (voiced) or -5 dB/oct (unvoiced, sibilants), with
        aperiodicity >= 0.9 (air and breath noise)."""
        nb = sp.shape[1]
        fft_an = (nb - 1) * 2
        fft_hi = fft_an * SR // self.fs
        f_an = np.arange(nb) * self.fs / fft_an
        f_hi = np.arange(fft_hi // 2 + 1) * SR / fft_hi
        lo_ref, hi_ref = 8000 * self.band / 11025, 10500 * self.band / 11025
        ref = np.log(sp[:, (f_an > lo_ref) & (f_an < hi_ref)] + 1e-16).mean(axis=1, keepdims=True)
        slope = np.where(voiced, 2.76, 1.15)[:, None]           # ln-power per octave
        hi = f_hi > self.band
        sp_hi = np.empty((len(sp), len(f_hi)))
        sp_hi[:, :nb] = sp
        sp_hi[:, hi] = np.exp(ref - slope * np.log2(f_hi[hi] / (9250.0 * self.band / 11025))[None, :])
        ap_hi = np.empty_like(sp_hi)
        ap_hi[:, :nb] = ap
        top = np.searchsorted(f_an, self.band, side="right") - 1      # the source's last bin
        ap_hi[:, hi] = np.maximum(ap[:, top:top + 1], 0.9)
        return sp_hi, ap_hi, voiced

    def contour(self, n_frames, head, target_hz, prev_hz, glide_to):
        """Sung f0 deviation in semitones per frame: portamento from prev_hz, or a scoop;
        an optional glide to another pitch in the note's second half; vibrato after its
        onset delay; a slow random drift."""
        s = self.style
        tt = np.arange(n_frames) * self.fp / 1000.0 - head * self.fp / 1000.0
        pos = np.maximum(tt, 0)
        semis = np.zeros(n_frames)
        if prev_hz:
            semis += 12 * np.log2(prev_hz / target_hz) * np.exp(-pos / s["porta_s"]) * (tt >= 0)
        elif self.rng.random() < s["scoop_p"]:
            semis -= s["scoop_st"] * np.exp(-pos / 0.05) * (tt >= 0)
        if glide_to is not None:
            t_end = tt[-1] if len(tt) else 0.0
            semis += glide_to * np.clip((tt - 0.55 * t_end) / (0.25 * t_end + 1e-6), 0, 1)
        ramp = np.clip((tt - s["vib_onset"]) / 0.25, 0, 1)
        rate = s["vib_rate"] * (1 + 0.05 * self.rng.normal())
        semis += s["vib_depth"] * ramp * np.sin(2 * np.pi * rate * tt + self.rng.uniform(0, 6.28))
        drift = np.cumsum(self.rng.normal(0, 0.02, n_frames))
        return semis + s["drift_st"] * drift / (np.abs(drift).max() + 1e-9)

    def sing(self, word, midi, dur, prev_hz=None, vel=1.0, glide_to=None):
        """Audio (float32 at SR) of one sung syllable and its pre-roll (s) before the onset."""
        sp, ap, voiced = self.analyse(word)
        n = len(voiced)
        vi = np.nonzero(voiced)[0]
        if len(vi) == 0:
            vi = np.array([0, n - 1])
        v0, v1 = int(vi[0]), int(vi[-1])
        head = min(v0, int(80 / self.fp))                        # leading consonant, <= 80 ms
        tail = min(n - 1 - v1, int(90 / self.fp))                # trailing consonant
        N = max(int(dur * 1000 / self.fp), 8)
        nv = max(N - tail, 4)
        idx = np.concatenate([np.arange(v0 - head, v0), np.linspace(v0, v1, nv), np.arange(v1 + 1, v1 + 1 + tail)])
        i0 = np.floor(idx).astype(int)
        fr = (idx - i0)[:, None]
        i1 = np.minimum(i0 + 1, n - 1)
        spn = np.exp((1 - fr) * np.log(sp[i0] + 1e-16) + fr * np.log(sp[i1] + 1e-16))
        apn = (1 - fr) * ap[i0] + fr * ap[i1]
        vn = np.concatenate([voiced[v0 - head:v0], np.ones(nv, bool), np.zeros(tail, bool)])
        target = 440.0 * 2 ** ((midi - 69) / 12)
        f0 = target * 2 ** (self.contour(len(idx), head, target, prev_hz, glide_to) / 12) * vn
        y = self.pw.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(spn), np.ascontiguousarray(apn),
                               SR, self.fp)
        fi, fo = int(0.004 * SR), int(0.03 * SR)
        if len(y) > fi + fo:
            y[:fi] *= np.linspace(0, 1, fi)
            y[-fo:] *= np.linspace(1, 0, fo)
        return (y * vel).astype(np.float32), head * self.fp / 1000.0
