"""Oracle estimates: masks recover separable sources, and equal sigsep-mus-oracle's on its STFT."""
import numpy as np
import scipy.signal
from hq_tracks import RATE, synth_sources

from unmix.evaluation import oracles
from unmix.io.musdb import MUSDB_SOURCES


def test_oracle_estimates_recover_separable_sources():
    """Sources apart in frequency are recovered by every mask; IRM1 masks sum to one."""
    t = np.arange(RATE) / RATE
    tones = {"vocals": 1000.0, "drums": 4000.0, "bass": 80.0, "other": 9000.0}
    sources = {s: 0.2 * np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)]) for s, f in tones.items()}
    mixture = sum(sources.values())
    inner = slice(4096, -4096)  # away from the reflect-padded edges
    for method in ("IRM1", "IRM2", "IBM"):
        est = oracles.oracle_estimates(mixture, sources, method)
        assert set(est) == set(oracles.ORACLE_TARGETS)
        for s in tones:
            assert est[s].shape == mixture.shape and est[s].dtype == np.float32
            err = est[s][:, inner] - sources[s][:, inner]
            snr = 10 * np.log10(np.sum(sources[s][:, inner] ** 2) / np.sum(err ** 2))
            assert snr > 30, (method, s, snr)
        np.testing.assert_allclose(est["accompaniment"], est["drums"] + est["bass"] + est["other"], atol=1e-6)
    irm1 = oracles.oracle_estimates(mixture, sources, "IRM1")
    np.testing.assert_allclose(sum(irm1[s] for s in tones), mixture, atol=1e-4)
    mix = oracles.oracle_estimates(mixture, sources, "MIX")
    for target in oracles.ORACLE_TARGETS:
        np.testing.assert_array_equal(mix[target], mixture.astype(np.float32))


def _sigsep_oracle(mixture, sources, method):
    """sigsep-mus-oracle's IRM.py / IBM.py masks on scipy's STFT (nperseg 2048, hop 1024, Hann)."""
    eps = np.finfo(float).eps
    spec = lambda a: scipy.signal.stft(a, nperseg=2048)[-1]  # noqa: E731  (nb_channels, nb_bins, nb_frames)
    mix = spec(mixture)
    if method == "IBM":
        masks = {s: (np.abs(spec(a)) / (eps + np.abs(mix))) >= 0.5 for s, a in sources.items()}
    else:
        alpha = {"IRM1": 1, "IRM2": 2}[method]
        powers = {s: np.abs(spec(a)) ** alpha for s, a in sources.items()}
        masks = {s: p / (eps + sum(powers.values())) for s, p in powers.items()}
    return {s: scipy.signal.istft(mix * m)[1][:, :mixture.shape[-1]] for s, m in masks.items()}


def test_oracles_use_sigseps_stft():
    """The same estimates as sigsep-mus-oracle away from the edges (zero- vs reflect-padded)."""
    assert (oracles.ORACLE_N_FFT, oracles.ORACLE_N_HOP) == (2048, 1024)
    sources = synth_sources(1, seconds=1.0)
    mixture = sum(sources.values())
    inner = slice(2048, -2048)
    for method in ("IRM1", "IRM2", "IBM"):
        ours = oracles.oracle_estimates(mixture, sources, method)
        theirs = _sigsep_oracle(mixture, sources, method)
        for s in MUSDB_SOURCES:
            np.testing.assert_allclose(ours[s][:, inner], theirs[s][:, inner], atol=2e-6, err_msg=f"{method} {s}")
