"""Oracle estimates (sigsep-mus-oracle): what ideal masks, or the mixture itself, score.

An oracle estimates the sources of a track from its true sources, on an STFT with the mixture's
phase; its scores bound what a spectrogram-masking model can reach (IRM1, IRM2, IBM) or give
the input SDR to beat (MIX). `OracleEstimator` plugs an oracle into the evaluation run
(`unmix.evaluation.evaluate`) where a model's separator would go.

Arrays are ``(nb_channels, nb_timesteps)``.
"""
import numpy as np

from unmix.dsp import transforms
from unmix.errors import UnmixError
from unmix.io.musdb import MUSDB_SOURCES

# Oracle estimates (sigsep-mus-oracle), from the true sources, on an STFT with the mixture's
# phase; a lower or upper bound to compare a model with.
#   IRM1 / IRM2: ratio masks of magnitudes (alpha 1) / powers (alpha 2) of the sources;
#   IBM: binary masks, 1 where |source| >= 0.5 |mixture| (sigsep's IBM.py sets mask values
#        > 0.5 to 1 and < 0.5 to 0, leaving an exact 0.5 as is; here that rare bin gets 1);
#   MIX: the mixture itself as every estimate, the usual "input SDR" lower bound (sigsep's
#        MIX.py divides it by the number of sources instead; BSSEval v4 compares estimates with
#        the true images without rescaling, so the two give different scores).
ORACLES = ("IRM1", "IRM2", "IBM", "MIX")
# The oracles' STFT: sigsep-mus-oracle's (IRM.py, IBM.py: scipy.signal.stft with nperseg 2048,
# its default hop of half a frame, periodic Hann), which the published oracle scores come from;
# not the models' 4096/1024, which gives IRM2 0.5-1.4 dB more SDR on musdb-synth-mini.
# Frames are centred as in scipy (padding n_fft / 2 each side), so only the padded edges
# differ (reflected here, zeros in scipy); the masks are scale-free, so scipy's window
# scaling does not matter.
ORACLE_N_FFT, ORACLE_N_HOP = 2048, 1024
ORACLE_TARGETS = MUSDB_SOURCES + ("accompaniment",)


def oracle_estimates(mixture, sources, method, n_fft=ORACLE_N_FFT, n_hop=ORACLE_N_HOP, eps=np.finfo(float).eps):
    """Oracle estimates of the four sources and the accompaniment (see `ORACLES`).

    Each channel is processed on its own, as in sigsep-mus-oracle, on an STFT of
    `n_fft` / `n_hop` (default sigsep's, `ORACLE_N_FFT` / `ORACLE_N_HOP`).

    Args:
        mixture: ``(nb_channels, nb_timesteps)``.
        sources: source -> ``(nb_channels, nb_timesteps)`` (vocals, drums, bass, other).
        method: IRM1, IRM2, IBM or MIX.

    Returns:
        dict target -> float32 ``(nb_channels, nb_timesteps)`` for vocals, drums, bass, other
        and accompaniment (drums + bass + other; MIX: the mixture).
    """
    if method not in ORACLES:
        raise UnmixError(f"unknown oracle '{method}': use one of {', '.join(ORACLES)}")
    if method == "MIX":
        est = {s: mixture.astype(np.float32) for s in MUSDB_SOURCES}
        est["accompaniment"] = est["vocals"]
        return est
    else:
        est = {s: np.empty(mixture.shape, np.float32) for s in MUSDB_SOURCES}
        for c in range(mixture.shape[0]):  # one channel at a time bounds memory on long songs
            masked = _oracle_channel(mixture[c], {s: a[c] for s, a in sources.items()}, method, n_fft, n_hop, eps)
            for s in MUSDB_SOURCES:
                est[s][c] = masked[s]
    est["accompaniment"] = est["drums"] + est["bass"] + est["other"]
    return est


def _oracle_channel(mix, sources, method, n_fft, n_hop, eps):
    """One channel ``(nb_timesteps,)`` -> source -> masked mixture ``(nb_timesteps,)``."""
    spec = transforms.stft(mix, n_fft, n_hop)  # (nb_bins, nb_frames)
    out = {}
    if method == "IBM":
        mix_mag = eps + np.abs(spec)
        for s in MUSDB_SOURCES:
            mask = (np.abs(transforms.stft(sources[s], n_fft, n_hop)) / mix_mag) >= 0.5
            out[s] = transforms.istft(spec * mask, n_fft, n_hop, length=mix.shape[-1])
        return out
    alpha = 1 if method == "IRM1" else 2
    powers = {s: np.abs(transforms.stft(sources[s], n_fft, n_hop)) ** alpha for s in MUSDB_SOURCES}
    total = eps + sum(powers.values())
    for s in MUSDB_SOURCES:
        out[s] = transforms.istft(spec * (powers[s] / total), n_fft, n_hop, length=mix.shape[-1])
    return out


class OracleEstimator:
    """Oracle estimates of `targets` (see `oracle_estimates`), called as a model's estimator is:
    ``estimator(mixture, sources, rate) -> target -> estimate``."""

    def __init__(self, method, targets=None):
        if method not in ORACLES:
            raise UnmixError(f"unknown oracle '{method}': use one of {', '.join(ORACLES)}")
        targets = list(targets or MUSDB_SOURCES)
        unknown = [t for t in targets if t not in ORACLE_TARGETS]
        if unknown:
            raise UnmixError(f"an oracle estimates {', '.join(ORACLE_TARGETS)}, not {', '.join(unknown)}")
        self.method, self.targets = method, targets

    def __call__(self, mixture, sources, rate):
        est = oracle_estimates(mixture, sources, self.method)
        return {t: est[t] for t in self.targets}

    def settings(self):
        """What decides the scores (see `unmix.evaluation.evaluate.run_settings`)."""
        out = {"oracle": self.method, "targets": list(self.targets)}
        if self.method != "MIX":  # the mixture needs no STFT
            out["oracle_stft"] = {"n_fft": ORACLE_N_FFT, "n_hop": ORACLE_N_HOP, "window": "hann"}
        return out
