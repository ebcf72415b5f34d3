"""X-UMX's multi-domain loss from the decoders' outputs, as coarse CPU kernels (numba + numpy FFTs).

One pass per sample computes, for the S sources at once (shapes: N samples, C channels, T frames,
n bins, L = (T - 1) * n_hop samples; rows of ``z`` are frame-major, r = t * N + n):

    masks        m_s = relu(z_s * scale_s + mean_s)                 (C, T, n), never stored
    L_f          d_s = m_s |X| - Y_s: the S x S Gram matrix of the d_s, per bin, in float64
    estimates    yhat_s = ISTFT(m_s X) (center=True, the mixture's phase): the S sources' frames
                 in one inverse FFT call, one overlap-add pass, divided by the window envelope
    L_t          per row (n, c) the 2S x 2S Gram matrix of (yhat_1..S, y_1..S), float64 sums

and `unmix.models.losses` turns the Gram matrices into the 14 combinations' losses and into the
coefficients of their gradients (``combination_mse_coefficients``, ``combination_sdr_coefficients``).
The backward pass, per sample: the time-domain gradients ``g_s = sum_j A[s, j] v_j`` (one pass
per row), the ISTFT's adjoint (``G = rfft(window * frames of g_s / env)``) of the S sources in
one FFT call, then one kernel pass for the mask gradients (the MSE term recomputed from z) and the
gradients of z, the output scale and the output mean.

Samples run on `workers` threads (the kernels are nogil, the FFTs release the GIL); every sum is
made per sample and added in sample order, so the results do not depend on the thread count.
`unmix.models.fast_ops.XumxLoss` wraps `forward` and `backward` as one NNabla function.
"""
from dataclasses import dataclass

import numpy as np
import scipy.fft

from unmix.dsp import jit, transforms
from unmix.models import losses

_F32 = np.float32


@dataclass
class Forward:
    """What `forward` computed and `backward` reads."""

    loss_f: float
    loss_t: float
    estimates: np.ndarray  # (N, S, C, L) float32, the ISTFT of the masked mixture
    signals_gram: np.ndarray  # (N * C, 2S, 2S) float64


# -- kernels ---------------------------------------------------------------------------------------
@jit.kernel(error_model="numpy")
def _masks_sample(zs, scales, means, mix, re, im, target_mag, n, spec, gram):
    """Sample n: the masked spectra ``spec[s, c, t] = m_s * X`` (complex64 ``(S, C, T, n)`` seen as
    float32 pairs ``(S, C, T, 2n)``) and the
    products ``gram[s, u, k] += d_s d_u`` per bin (float64, s <= u), ``d_s = m_s |X| - Y_s``.

    Args:
        zs: S arrays ``(T * N, C * n)``, the decoder outputs; scales, means: ``(S, n)``.
        mix, re, im: ``(N, C, T, n)``; target_mag: ``(N, S, C, T, n)``.
    """
    nb_sources = len(zs)
    nb_samples, nb_channels, nb_frames, nb_bins = mix.shape
    m = np.empty((nb_sources, nb_bins), np.float32)
    d = np.empty((nb_sources, nb_bins), np.float32)
    for c in range(nb_channels):
        for t in range(nb_frames):
            row = t * nb_samples + n
            mr, rr, ir = mix[n, c, t], re[n, c, t], im[n, c, t]
            for s in range(nb_sources):
                zr, sc, me, yr = zs[s][row, c * nb_bins:(c + 1) * nb_bins], scales[s], means[s], target_mag[n, s, c, t]
                ms, ds, out = m[s], d[s], spec[s, c, t]
                for k in range(nb_bins):
                    pre = zr[k] * sc[k] + me[k]
                    mask = pre if pre > 0 else _F32(0.0)
                    ms[k] = mask
                    ds[k] = mask * mr[k] - yr[k]
                    out[2 * k] = mask * rr[k]
                    out[2 * k + 1] = mask * ir[k]
            for s in range(nb_sources):
                for u in range(s, nb_sources):
                    gs, ds, du = gram[s, u], d[s], d[u]
                    for k in range(nb_bins):
                        gs[k] += np.float64(ds[k]) * np.float64(du[k])


@jit.kernel
def _overlap_add_sample(frames, window, inv_env, n_hop, pad, out):
    """``out[s, c] = (sum_t window * frames[s, c, t] placed at t * n_hop - pad) * inv_env``: the
    ISTFT (center=True) of ``(S, C, T, n_fft)`` inverse-FFT frames, cut to ``out``'s length L."""
    nb_sources, nb_channels, nb_frames, n_fft = frames.shape
    length = out.shape[-1]
    for s in range(nb_sources):
        for c in range(nb_channels):
            dest = out[s, c]
            dest[:] = 0.0
            for t in range(nb_frames):
                start = t * n_hop - pad
                lo, hi = max(0, -start), min(n_fft, length - start)
                frame = frames[s, c, t]
                for k in range(lo, hi):
                    dest[start + k] += frame[k] * window[k]
            for j in range(length):
                dest[j] *= inv_env[j]


@jit.kernel(error_model="numpy")
def _mask_gradients_sample(zs, scales, means, mix, re, im, target_mag, n, spec_g, a_f, bin_weights, dz, d_scale,
                           d_mean):
    """Sample n's gradients from the mask gradient ``dm_s = mix * sum_u a_f[s, u] d_u +
    bin_weights * (Re X Re G_s + Im X Im G_s)`` (the MSE term, the ISTFT's adjoint ``G``, given as
    float32 pairs ``(S, C, T, 2n)``): where the mask's pre-activation is positive, ``du = dm_s``:
    ``dz_s = du * scale_s``, ``d_scale[s] += du * z_s``, ``d_mean[s] += du`` (per bin, float64;
    this sample's rows). Branch-free inner loops, so that they vectorise."""
    nb_sources = len(zs)
    nb_samples, nb_channels, nb_frames, nb_bins = mix.shape
    pre = np.empty((nb_sources, nb_bins), np.float32)
    d = np.empty((nb_sources, nb_bins), np.float32)
    acc = np.empty(nb_bins, np.float32)
    for c in range(nb_channels):
        for t in range(nb_frames):
            row = t * nb_samples + n
            mr, rr, ir = mix[n, c, t], re[n, c, t], im[n, c, t]
            for s in range(nb_sources):
                zr, sc, me, yr = zs[s][row, c * nb_bins:(c + 1) * nb_bins], scales[s], means[s], target_mag[n, s, c, t]
                ps, ds = pre[s], d[s]
                for k in range(nb_bins):
                    p = zr[k] * sc[k] + me[k]
                    ps[k] = p
                    ds[k] = max(p, _F32(0.0)) * mr[k] - yr[k]
            for s in range(nb_sources):
                zr, sc = zs[s][row, c * nb_bins:(c + 1) * nb_bins], scales[s]
                gr, ps, out = spec_g[s, c, t], pre[s], dz[s][row, c * nb_bins:(c + 1) * nb_bins]
                dsc, dme = d_scale[s], d_mean[s]
                acc[:] = 0.0
                for u in range(nb_sources):
                    coef, du_ = a_f[s, u], d[u]
                    for k in range(nb_bins):
                        acc[k] += coef * du_[k]
                for k in range(nb_bins):
                    du = acc[k] * mr[k] + bin_weights[k] * (rr[k] * gr[2 * k] + ir[k] * gr[2 * k + 1])
                    du = du if ps[k] > 0 else _F32(0.0)
                    out[k] = du * sc[k]
                    dsc[k] += du * zr[k]
                    dme[k] += du


@jit.kernel
def _adjoint_frames_sample(g, window, inv_env, n_hop, pad, frames):
    """The frames of the ISTFT's adjoint: ``frames[s, c, t, k] = window[k] * (g[s, c] / env)[t *
    n_hop + k - pad]`` (0 outside the kept samples), from ``g`` ``(S, C, L)`` (divided in place)."""
    nb_sources, nb_channels, nb_frames, n_fft = frames.shape
    length = g.shape[-1]
    for s in range(nb_sources):
        for c in range(nb_channels):
            gs = g[s, c]
            for j in range(length):
                gs[j] *= inv_env[j]
            for t in range(nb_frames):
                start = t * n_hop - pad
                lo, hi = max(0, -start), min(n_fft, length - start)
                out = frames[s, c, t]
                out[:lo] = 0.0
                out[hi:] = 0.0
                for k in range(lo, hi):
                    out[k] = gs[start + k] * window[k]


@jit.kernel(fastmath={"reassoc", "contract"})
def _signals_gram_row(estimates, targets, gram):
    """``gram`` ``(2S, 2S)`` float64 of ``v = (estimates_1..S, targets_1..S)``, each ``(S, L)``
    float32: the products summed in float64 over blocks of samples (no float64 copy of v). The
    sums may be reassociated (vectorised): their order depends on the machine, not on the threads."""
    nb_sources, length = estimates.shape
    width = 2 * nb_sources
    block = 512
    v = np.empty((width, block))
    acc = np.zeros((width, width))
    for start in range(0, length, block):
        stop = min(start + block, length)
        for i in range(nb_sources):
            for j in range(stop - start):
                v[i, j] = estimates[i, start + j]
                v[nb_sources + i, j] = targets[i, start + j]
        for i in range(width):
            for u in range(i, width):
                total = 0.0
                vi, vu = v[i], v[u]
                for j in range(stop - start):
                    total += vi[j] * vu[j]
                acc[i, u] += total
    for i in range(width):
        for u in range(i, width):
            gram[i, u] = gram[u, i] = acc[i, u]


@jit.kernel
def _time_gradients_row(coef, estimates, targets, out):
    """``out[s] = sum_j coef[s, j] v_j`` (float32 ``(S, L)``) with ``v = (estimates, targets)``
    ``(S, L)`` each, accumulated in float64 per sample (a float64 row, one pass per term)."""
    nb_sources, length = estimates.shape
    total = np.empty(length)
    for s in range(nb_sources):
        cs, dest = coef[s], out[s]
        total[:] = 0.0
        for i in range(nb_sources):
            ce, ct, est, tgt = cs[i], cs[nb_sources + i], estimates[i], targets[i]
            for j in range(length):
                total[j] += ce * est[j] + ct * tgt[j]
        for j in range(length):
            dest[j] = total[j]


# -- the passes --------------------------------------------------------------------------------------
def _inverse_envelope(n_fft, n_hop, nb_frames):
    """``1 / env`` over the L kept samples of the centred ISTFT (1 where the envelope vanishes)."""
    env = transforms._envelope(transforms.hann_window(n_fft), nb_frames, n_hop)
    env = env[n_fft // 2:n_fft // 2 + (nb_frames - 1) * n_hop]
    return np.where(env > 1e-11, 1.0 / np.maximum(env, 1e-11), 1.0).astype(np.float32)


def _bin_weights(n_fft):
    """The adjoint of irfft per bin: ``1 / n_fft`` at DC and Nyquist, ``2 / n_fft`` elsewhere."""
    weights = np.full(n_fft // 2 + 1, 2.0 / n_fft, np.float32)
    weights[0] = 1.0 / n_fft
    if n_fft % 2 == 0:
        weights[-1] = 1.0 / n_fft
    return weights


def forward(zs, scales, means, mix, re, im, target_mag, target_time, n_fft, n_hop, workers=2, eps=losses.SDR_EPS):
    """The losses L_f and L_t of one batch (see the module docstring).

    Args:
        zs: a tuple of S float32 ``(T * N, C * n)``, the decoder outputs (before the output scaling),
            rows frame-major.
        scales, means: ``(S, n)`` output scaling.
        mix, re, im: ``(N, C, T, n)`` the mixture's magnitude and complex spectrogram (frames first).
        target_mag: ``(N, S, C, T, n)``; target_time: ``(N, S, C, L)``, ``L = (T - 1) * n_hop``.

    Returns:
        `Forward`.
    """
    nb_sources = len(zs)
    nb_samples, nb_channels, nb_frames, nb_bins = mix.shape
    length = target_time.shape[-1]
    window, inv_env = transforms.hann_window(n_fft), _inverse_envelope(n_fft, n_hop, nb_frames)
    grams = np.zeros((nb_samples, nb_sources, nb_sources, nb_bins))
    estimates = np.empty((nb_samples, nb_sources, nb_channels, length), np.float32)
    signals = np.empty((nb_samples * nb_channels, 2 * nb_sources, 2 * nb_sources))

    def sample(n):
        spec = np.empty((nb_sources, nb_channels, nb_frames, nb_bins), np.complex64)
        _masks_sample(zs, scales, means, mix, re, im, target_mag, n, spec.view(np.float32), grams[n])
        frames = scipy.fft.irfft(spec, n=n_fft, axis=-1, workers=1)
        del spec
        _overlap_add_sample(frames, window, inv_env, n_hop, n_fft // 2, estimates[n])
        for c in range(nb_channels):
            _signals_gram_row(estimates[n, :, c], target_time[n, :, c], signals[n * nb_channels + c])

    jit.run(sample, range(nb_samples), workers)
    upper = grams.sum(axis=(0, 3))
    diffs = np.triu(upper) + np.triu(upper, 1).T
    return Forward(losses.combination_mse(diffs, mix.size), losses.combination_sdr(signals, eps), estimates, signals)


def backward(state, q_f, q_t, zs, scales, means, mix, re, im, target_mag, target_time, n_fft, n_hop, workers=2,
             eps=losses.SDR_EPS):
    """The gradients of ``q_f L_f + q_t L_t`` (arguments as `forward`, `state` its result).

    Returns:
        ``(dz, d_scale, d_mean)``: a tuple of S float32 ``(T * N, C * n)``, ``(S, n)`` and ``(S, n)`` float64.
    """
    nb_sources = len(zs)
    nb_samples, nb_channels, nb_frames, nb_bins = mix.shape
    window, inv_env = transforms.hann_window(n_fft), _inverse_envelope(n_fft, n_hop, nb_frames)
    a_f = (q_f * losses.combination_mse_coefficients(nb_sources, mix.size)).astype(np.float32)
    a_t = q_t * losses.combination_sdr_coefficients(state.signals_gram, eps)  # (N * C, S, 2S)
    bin_weights = _bin_weights(n_fft)
    dz = tuple(np.empty(z.shape, np.float32) for z in zs)
    sums = np.zeros((2, nb_samples, nb_sources, nb_bins))  # d scale, d mean per sample

    def sample(n):
        g = np.empty(state.estimates.shape[1:], np.float32)  # (S, C, L)
        for c in range(nb_channels):
            _time_gradients_row(a_t[n * nb_channels + c], state.estimates[n, :, c], target_time[n, :, c], g[:, c])
        frames = np.empty((nb_sources, nb_channels, nb_frames, n_fft), np.float32)
        _adjoint_frames_sample(g, window, inv_env, n_hop, n_fft // 2, frames)
        del g
        spec_g = scipy.fft.rfft(frames, axis=-1, workers=1).view(np.float32)  # (S, C, T, 2n): re, im pairs
        del frames
        _mask_gradients_sample(zs, scales, means, mix, re, im, target_mag, n, spec_g, a_f, bin_weights, dz,
                               sums[0, n], sums[1, n])

    jit.run(sample, range(nb_samples), workers)
    d_scale, d_mean = sums.sum(axis=1)
    return dz, d_scale, d_mean
