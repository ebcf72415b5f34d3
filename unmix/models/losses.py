"""The losses of X-UMX (Sawata et al., ICASSP 2021) on numpy: values and gradients, NNabla-free.

As Sony's ``x-umx/loss.py`` and asteroid's ``egs/musdb18/X-UMX/train.py`` define them, for S
sources (4) and the 14 combinations C of 1 to S - 1 of them (`COMBINATIONS`):

    frequency domain   L_f = 1/14 sum_C mean((sum_{s in C} est_s - sum_{s in C} Y_s)^2)
                       est_s = mask_s * |X|, Y_s the source magnitudes (every bin)
    time domain        L_t = 1 + mean_{C, rows} wSDR(sum_{s in C} yhat_s, sum_{s in C} y_s, x)
                       rows: (sample, channel); x = sum_s y_s, the mixture
    wSDR(yh, y, x)     = -a cos(yh, y) - (1 - a) cos(x - yh, x - y),  a = |y|^2 / (|y|^2 + |x - y|^2 + eps)
    cos(u, v)          = <u, v> / (sqrt(eps + |u|^2) sqrt(eps + |v|^2) + eps),  eps = 1e-10
    multi-domain loss  L = L_f + mcoef * L_t   (mcoef 10)

Every quantity is a bilinear form of the sources, so both are computed from Gram matrices
(float64): L_f from the 4 x 4 products of ``d_s = est_s - Y_s``, L_t from the 8 x 8 products of
``(yhat_1..4, y_1..4)`` per row; the gradients are the same small matrices applied to the signals
(`combination_mse`, `combination_sdr`). tests/test_losses.py checks them against the formulas
written out combination by combination.
"""
import itertools

import numpy as np

MCOEF = 10.0  # Sony's --mcoef: L = L_f + mcoef * L_t
SDR_EPS = 1e-10


def combinations(nb_sources):
    """The subsets of 1 to ``nb_sources - 1`` sources, as index tuples, in the references' order
    (all singles, then pairs, then triples; 14 for 4 sources)."""
    return [c for size in range(1, nb_sources) for c in itertools.combinations(range(nb_sources), size)]


def _indicators(nb_sources):
    """``(K, S)`` float64: row k is 1 on the sources of combination k."""
    combos = combinations(nb_sources)
    ind = np.zeros((len(combos), nb_sources))
    for k, combo in enumerate(combos):
        ind[k, list(combo)] = 1.0
    return ind


def combination_weights(nb_sources):
    """``W[s, t]``: the number of combinations holding both s and t (s == t: holding s)."""
    ind = _indicators(nb_sources)
    return ind.T @ ind


# -- frequency domain ----------------------------------------------------------------------------
def combination_mse(diffs_gram, nb_values):
    """L_f from the Gram matrix of the differences.

    Args:
        diffs_gram: ``(S, S)`` float64, ``sum d_s d_t`` over all values, ``d_s = est_s - Y_s``.
        nb_values: values per source (the MSE's denominator: N * C * T * bins).

    Returns:
        float: ``1/K sum_C mean((sum_{s in C} d_s)^2) = sum_{s,t} W[s,t] G[s,t] / (K * M)``.
    """
    nb_sources = diffs_gram.shape[0]
    weights = combination_weights(nb_sources)
    return float(np.sum(weights * diffs_gram) / (len(combinations(nb_sources)) * nb_values))


def combination_mse_coefficients(nb_sources, nb_values):
    """``A`` ``(S, S)`` with ``dL_f/d d_s = sum_t A[s, t] d_t``: ``A = 2 W / (K M)``."""
    return 2.0 * combination_weights(nb_sources) / (len(combinations(nb_sources)) * nb_values)


def diffs_gram(est, target):
    """``(S, S)`` float64 Gram matrix of ``d_s = est_s - target_s``, accumulated per leading item.

    Args:
        est, target: ``(S, N, ...)`` float32; the products are summed in float64 one item n at a time.
    """
    nb_sources, nb_items = est.shape[:2]
    gram = np.zeros((nb_sources, nb_sources))
    for n in range(nb_items):
        d = (est[:, n] - target[:, n]).reshape(nb_sources, -1).astype(np.float64)
        gram += d @ d.T
    return gram


# -- time domain ---------------------------------------------------------------------------------
def signals_gram(est, target):
    """Per row, the Gram matrix of ``(est_1..S, target_1..S)``: ``(R, 2S, 2S)`` float64.

    Args:
        est, target: ``(S, R, L)`` time signals (R rows: samples x channels).
    """
    nb_sources, nb_rows, _ = est.shape
    gram = np.empty((nb_rows, 2 * nb_sources, 2 * nb_sources))
    for r in range(nb_rows):
        v = np.concatenate([est[:, r], target[:, r]]).astype(np.float64)
        gram[r] = v @ v.T
    return gram


def _sdr_terms(gram, eps):
    """The per-combination, per-row pieces of wSDR from the Gram matrices ``(R, 2S, 2S)``."""
    nb_sources = gram.shape[1] // 2
    c = _indicators(nb_sources)  # (K, S)
    zero, one = np.zeros_like(c), np.ones_like(c)
    roles = {  # coefficient vectors over (est, target) of each signal of a combination
        "yh": np.concatenate([c, zero], 1), "y": np.concatenate([zero, c], 1),
        "n": np.concatenate([zero, one - c], 1), "nh": np.concatenate([-c, one], 1),
    }

    def dot(a, b):  # (K, R)
        return np.einsum("ki,rij,kj->kr", roles[a], gram, roles[b])

    p, q, r = dot("yh", "y"), dot("yh", "yh"), dot("y", "y")
    pn, qn, rn = dot("n", "nh"), dot("nh", "nh"), dot("n", "n")
    alpha = r / (r + rn + eps)
    d1 = np.sqrt(eps + q) * np.sqrt(eps + r) + eps
    d2 = np.sqrt(eps + qn) * np.sqrt(eps + rn) + eps
    return roles, alpha, (p, q, r, d1), (pn, qn, rn, d2)


def combination_sdr(gram, eps=SDR_EPS):
    """L_t (the ``1 +`` included) from the per-row Gram matrices of `signals_gram`."""
    _, alpha, (p, _, _, d1), (pn, _, _, d2) = _sdr_terms(gram, eps)
    return float(1.0 + np.mean(-alpha * p / d1 - (1.0 - alpha) * pn / d2))


def combination_sdr_coefficients(gram, eps=SDR_EPS):
    """``A`` ``(R, S, 2S)`` with ``dL_t/d est_s[r] = sum_j A[r, s, j] v_j[r]``, ``v = (est, target)``.

    With ``cos1 = P / D1`` (``P = <yh, y>``, ``Q = |yh|^2``, ``R = |y|^2``) and likewise
    ``cos2 = Pn / D2`` of ``(nh, n) = (x - yh, x - y)``:
    ``d cos1 / d yh = y / D1 - P sqrt(eps + R) / (D1^2 sqrt(eps + Q)) yh`` and
    ``d cos2 / d yh = -(n / D2 - Pn sqrt(eps + Rn) / (D2^2 sqrt(eps + Qn)) nh)``; a does not
    depend on yh. Each combination's gradient goes to every source in it, divided by K * R
    (the mean).
    """
    roles, alpha, (p, q, r, d1), (pn, qn, rn, d2) = _sdr_terms(gram, eps)
    k1 = p * np.sqrt(eps + r) / (d1 * d1 * np.sqrt(eps + q))
    k2 = pn * np.sqrt(eps + rn) / (d2 * d2 * np.sqrt(eps + qn))
    # d wSDR / d yh as coefficients over v: (K, R, 2S)
    coef = (-alpha[..., None] * (roles["y"][:, None] / d1[..., None] - k1[..., None] * roles["yh"][:, None])
            + (1.0 - alpha)[..., None] * (roles["n"][:, None] / d2[..., None] - k2[..., None] * roles["nh"][:, None]))
    nb_combos, nb_rows = alpha.shape
    ind = _indicators(gram.shape[1] // 2)  # (K, S)
    return np.einsum("ks,krj->rsj", ind, coef) / (nb_combos * nb_rows)


# -- the whole loss on numpy (validation) --------------------------------------------------------
def multi_domain_loss(est_mag, target_mag, est_time, target_time, mcoef=MCOEF, eps=SDR_EPS):
    """``L_f + mcoef * L_t`` of one batch.

    Args:
        est_mag, target_mag: ``(S, N, C, ...)`` magnitudes (estimates: mask x mixture magnitude).
        est_time, target_time: ``(S, N, C, L)`` time signals (the estimates: ISTFT of the
            estimated magnitudes with the mixture's phase), cut to one length.

    Returns:
        ``(loss, L_f, L_t)`` floats.
    """
    nb_sources = est_mag.shape[0]
    loss_f = combination_mse(diffs_gram(est_mag, target_mag), est_mag[0].size)
    length = est_time.shape[-1]
    gram = signals_gram(est_time.reshape(nb_sources, -1, length), target_time.reshape(nb_sources, -1, length))
    loss_t = combination_sdr(gram, eps)
    return loss_f + mcoef * loss_t, loss_f, loss_t
