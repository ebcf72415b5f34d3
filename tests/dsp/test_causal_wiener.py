"""The causal Wiener filter against a plain numpy reference of the same formula."""
import numpy as np
import pytest

from unmix.dsp.causal_wiener import CausalWiener, forgetting_factor
from unmix.errors import UnmixError


def reference(targets, x, niter, lam, eps=1e-10, scale_factor=10.0):
    """The causal EM written plainly: per frame, per bin, complex128, np.linalg.solve.

    targets (J, C, T, F) magnitudes, x (C, T, F) complex -> (J, C, T, F)."""
    J, C, T, F = targets.shape
    x = x.astype(np.complex128)
    phase = np.where(np.abs(x) > 0, x / np.where(np.abs(x) > 0, np.abs(x), 1), 1)
    y0 = targets * phase[None]
    S = [np.zeros((J, C, C, F), np.complex128) for _ in range(niter)]
    W = [np.zeros((J, F)) for _ in range(niter)]
    out = np.zeros((J, C, T, F), np.complex128)
    scale = 1.0
    for t in range(T):
        scale = max(scale, np.abs(x[:, t]).max() / scale_factor)
        s2 = scale * scale
        y = y0[:, :, t].copy()
        for k in range(niter):
            v = np.mean(np.abs(y) ** 2, axis=1)
            for j in range(J):
                S[k][j] = lam * S[k][j] + np.einsum("cf,df->cdf", y[j], np.conj(y[j]))
            W[k] = lam * W[k] + v
            new = np.zeros_like(y)
            for f in range(F):
                R = [S[k][j, :, :, f] / (eps * s2 + W[k][j, f]) for j in range(J)]
                cxx = np.sqrt(eps) * s2 * np.eye(C) + sum(v[j, f] * R[j] for j in range(J))
                z = np.linalg.solve(cxx, x[:, t, f])
                for j in range(J):
                    new[j, :, f] = v[j, f] * R[j] @ z
            y = new
        out[:, :, t] = y
    return out


def random_inputs(nb_sources=3, nb_channels=2, nb_frames=25, nb_bins=33, level=1.0, seed=0):
    rng = np.random.default_rng(seed)
    sources = level * (rng.standard_normal((nb_sources, nb_channels, nb_frames, nb_bins))
                       + 1j * rng.standard_normal((nb_sources, nb_channels, nb_frames, nb_bins)))
    sources *= rng.uniform(0.1, 2.0, (nb_sources, 1, 1, nb_bins))  # sources differ by bin
    x = sources.sum(axis=0).astype(np.complex64)
    targets = np.abs(sources).astype(np.float32)
    return targets, x


def filtered(targets, x, niter, win, blocks=None, **options):
    wiener = CausalWiener(x.shape[0], x.shape[2], niter=niter, wiener_win_len=win, **options)
    if blocks is None:
        return wiener(targets, x)
    edges = list(range(0, x.shape[1], blocks)) + [x.shape[1]]
    return np.concatenate([wiener(targets[:, :, a:b], x[:, a:b]) for a, b in zip(edges, edges[1:])], axis=2)


@pytest.mark.parametrize("niter, win, nb_channels", [(1, 20, 2), (2, 20, 2), (1, 0, 2), (2, 8, 1)])
def test_matches_reference(niter, win, nb_channels):
    targets, x = random_inputs(nb_channels=nb_channels)
    got = filtered(targets, x, niter, win)
    want = reference(targets, x, niter, forgetting_factor(win))
    assert got.dtype == np.complex64 and got.shape == want.shape == (3, nb_channels, 25, 33)
    np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())


def test_loud_mixture_uses_the_running_scale():
    targets, x = random_inputs(level=300.0)
    x[:, :5] *= 0.01  # quiet at first, then loud: the scale grows during the stream
    targets[:, :, :5] *= 0.01
    got = filtered(targets, x, 1, 10)
    want = reference(targets, x, 1, forgetting_factor(10))
    np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())


@pytest.mark.parametrize("blocks", [1, 4, 11])
def test_blocks_carry_the_statistics(blocks):
    targets, x = random_inputs()
    whole = filtered(targets, x, 2, 12)
    np.testing.assert_array_equal(filtered(targets, x, 2, 12, blocks=blocks), whole)


def test_estimates_add_up_to_the_mixture():
    """The Wiener gains of all sources sum to the identity (up to the tiny regularization)."""
    targets, x = random_inputs(nb_frames=40)
    y = filtered(targets, x, 1, 30)
    # from the 5th frame on: the first frames' covariances are sums of one or two rank-1 terms,
    # nearly singular in some bins, where the regularization takes a visible share
    np.testing.assert_allclose(y.sum(axis=0)[:, 4:], x[:, 4:], atol=1e-4 * np.abs(x).max())
    # and each estimate moves from its initial magnitude towards the source, not elsewhere
    assert np.abs(np.abs(y) - targets).mean() < np.abs(targets).mean()


def test_niter_0_is_frame_local_and_residual():
    targets, x = random_inputs()
    y = filtered(targets[:2], x, 0, 10, residual=True)
    assert y.shape == (3, 2, 25, 33)
    np.testing.assert_allclose(y.sum(axis=0), x, atol=1e-5)


def test_forgetting_factor():
    assert forgetting_factor(0) == forgetting_factor(None) == 1.0
    assert forgetting_factor(300) == pytest.approx(1 - 1 / 300)
    with pytest.raises(UnmixError):
        CausalWiener(3, 10, niter=1)
