"""unmix.models.losses against the X-UMX losses written out as Sony's x-umx/loss.py and asteroid's X-UMX
recipe define them (float64, one combination at a time), values and gradients."""
import itertools

import numpy as np

from unmix.models import losses

EPS = 1e-10


def ref_weighted_sdr(yh, y, x):
    """Mean over rows of -a cos(yh, y) - (1 - a) cos(x - yh, x - y); rows on axis 0 (sdr_loss_core)."""
    n, nh = x - y, x - yh
    alpha = np.sum(y * y, 1) / (np.sum(y * y, 1) + np.sum(n * n, 1) + EPS)
    cln = np.sum(yh * y, 1) / (np.sqrt(EPS + np.sum(yh * yh, 1)) * np.sqrt(EPS + np.sum(y * y, 1)) + EPS)
    noise = np.sum(n * nh, 1) / (np.sqrt(EPS + np.sum(nh * nh, 1)) * np.sqrt(EPS + np.sum(n * n, 1)) + EPS)
    return -alpha * cln - (1 - alpha) * noise


def ref_loss(est_mag, target_mag, est_time, target_time, mcoef=10.0):
    """L_f + mcoef L_t: the 14 combinations (4C1, 4C2, 4C3) each; (S, N, C, ...) arrays."""
    est_mag, target_mag = est_mag.astype(np.float64), target_mag.astype(np.float64)
    est_time, target_time = est_time.astype(np.float64), target_time.astype(np.float64)
    combos = [c for k in (1, 2, 3) for c in itertools.combinations(range(4), k)]
    assert len(combos) == 14
    loss_f = sum(np.mean((sum(est_mag[i] for i in c) - sum(target_mag[i] for i in c)) ** 2) for c in combos) / 14
    length = est_time.shape[-1]
    mix = target_time.sum(0).reshape(-1, length)
    rows = [ref_weighted_sdr(sum(est_time[i] for i in c).reshape(-1, length),
                             sum(target_time[i] for i in c).reshape(-1, length), mix) for c in combos]
    loss_t = 1.0 + np.mean(np.concatenate(rows))  # F.mean over the 14 * N * C rows
    return loss_f + mcoef * loss_t, loss_f, loss_t


def batch(seed=0, shape=(2, 2, 5, 9), length=64):
    rng = np.random.default_rng(seed)
    target_mag = rng.random((4,) + shape).astype(np.float32)
    est_mag = (target_mag * rng.uniform(0.5, 1.5, target_mag.shape)).astype(np.float32)
    target_time = rng.standard_normal((4,) + shape[:2] + (length,)).astype(np.float32)
    est_time = (target_time + 0.5 * rng.standard_normal(target_time.shape)).astype(np.float32)
    return est_mag, target_mag, est_time, target_time


def test_combinations_are_the_references():
    combos = losses.combinations(4)
    assert combos[:4] == [(0,), (1,), (2,), (3,)] and len(combos) == 14
    assert combos[4:10] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]  # Sony's combi_list, 0-based
    w = losses.combination_weights(4)
    assert np.all(np.diag(w) == 7) and np.all(w[~np.eye(4, dtype=bool)] == 3)


def test_multi_domain_loss_matches_the_formulas():
    for seed in range(3):
        args = batch(seed)
        got = losses.multi_domain_loss(*args)
        want = ref_loss(*args)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_perfect_estimates_give_the_minimum():
    _, target_mag, _, target_time = batch(1)
    loss, loss_f, loss_t = losses.multi_domain_loss(target_mag, target_mag, target_time, target_time)
    assert loss_f == 0 and abs(loss_t) < 1e-9  # cos = 1 for target and noise: wSDR = -1


def _numeric_gradient(f, x, index, h=1e-6):
    x1, x2 = x.copy(), x.copy()
    x1[index] += h
    x2[index] -= h
    return (f(x1) - f(x2)) / (2 * h)


def test_mse_gradient_coefficients():
    est, target, _, _ = (a.astype(np.float64) for a in batch(2))
    m = est[0].size

    def loss(e):
        return ref_loss(e, target, np.ones((4, 1, 1, 4)), np.ones((4, 1, 1, 4)))[1]

    a = losses.combination_mse_coefficients(4, m)
    grad = np.einsum("st,t...->s...", a, est - target)
    for index in [(0, 0, 0, 1, 2), (2, 1, 1, 4, 8), (3, 0, 1, 0, 0)]:
        np.testing.assert_allclose(grad[index], _numeric_gradient(loss, est, index), rtol=1e-6, atol=1e-12)


def test_sdr_gradient_coefficients():
    _, _, est, target = (a.astype(np.float64) for a in batch(3, shape=(2, 2, 1, 1), length=32))
    rows = est.reshape(4, -1, 32), target.reshape(4, -1, 32)

    def loss(e):
        return ref_loss(np.zeros((4, 1)), np.zeros((4, 1)), e, target)[2]

    coef = losses.combination_sdr_coefficients(losses.signals_gram(*rows))  # (R, S, 2S)
    v = np.concatenate(rows)  # (2S, R, L)
    grad = np.einsum("rsj,jrl->srl", coef, v).reshape(est.shape)
    for index in [(0, 0, 0, 3), (1, 1, 1, 31), (3, 1, 0, 17), (2, 0, 1, 0)]:
        np.testing.assert_allclose(grad[index], _numeric_gradient(loss, est, index), rtol=1e-5, atol=1e-10)
