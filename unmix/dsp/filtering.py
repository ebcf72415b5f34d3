"""Multichannel Wiener filtering (norbert-style EM), in float32 kernels compiled by numba.

Numerically follows ``openunmix.filtering.wiener`` (open-unmix-pytorch 1.3):
initial estimates from the mixture phase or a ratio mask, an optional
residual source, scaling by the loudest mixture bin, then `iterations`
rounds of expectation maximization with local Gaussian models.

Public arrays use the reference layout: targets
``(nb_frames, nb_bins, nb_channels, nb_sources)`` float32 magnitudes, mixture
``(nb_frames, nb_bins, nb_channels)`` complex64. Internally every source and
channel is one contiguous ``(nb_frames, nb_bins)`` plane ("planar" layout
``(nb_sources, nb_channels, nb_frames, nb_bins)``); the 1x1 / 2x2 covariance
algebra runs frame by frame over rows of bins, in float32 and complex64 (no
complex128, no 6-D temporaries). `wiener_planar` takes and returns that layout
directly (the Separator's path: no transposing copies).

With ``workers > 1`` the sources' models and blocks of frames are spread over
threads (the kernels release the GIL); every frame is computed by the same
operations whichever thread runs it, so the result does not depend on the
number of workers.
"""
import numpy as np

from unmix.errors import UnmixError
from unmix.dsp.jit import kernel
from unmix.dsp.jit import run as _run


def wiener(
    targets_spectrograms,
    mix_stft,
    iterations=1,
    softmask=False,
    residual=False,
    scale_factor=10.0,
    eps=1e-10,
    out=None,
    workers=1,
):
    """Separate `mix_stft` with the source magnitudes, refined by EM.

    Args:
        targets_spectrograms: (nb_frames, nb_bins, {1, nb_channels}, nb_sources)
            nonnegative magnitudes (cast to float32).
        mix_stft: (nb_frames, nb_bins, nb_channels) complex mixture STFT
            (cast to complex64), nb_channels 1 or 2 when iterations > 0.
        iterations: EM iterations; 0 returns the initial estimates.
        softmask: initial estimates by ratio mask instead of mixture phase.
        residual: append a source "mix minus all targets" before EM.
        scale_factor: the mixture is scaled so its max |.| is at most this
            (never scaled up) during EM, as the reference does for stability.
        eps: regularization (sqrt(eps) on the mixture covariance diagonal).
        out: optional preallocated (nb_frames, nb_bins, nb_channels,
            nb_sources[+1]) complex64 array to write into.
        workers: threads for the EM; the result does not depend on it.

    Returns:
        (nb_frames, nb_bins, nb_channels, nb_sources[+1 if residual]) complex64.

    Raises:
        UnmixError: EM asked for on more than 2 channels.
        ValueError: shapes that do not match (a caller's bug).
    """
    targets, mix = _check_inputs(targets_spectrograms, mix_stft, iterations)
    nb_frames, nb_bins, nb_channels = mix.shape
    nb_out = targets.shape[-1] + int(bool(residual))
    out = _output_array(out, (nb_frames, nb_bins, nb_channels, nb_out))
    if mix.size == 0:
        return out
    y = wiener_planar(_planar_targets(targets), _planar_mix(mix), iterations, softmask, residual,
                      scale_factor, eps, workers)
    out[...] = y.transpose(2, 3, 1, 0)
    return out


def wiener_planar(targets, x, iterations=1, softmask=False, residual=False, scale_factor=10.0, eps=1e-10,
                  workers=1, out=None):
    """`wiener` in the planar layout, with no transposing copies (the Separator's path).

    Args:
        targets: (nb_sources, {1, nb_channels}, nb_frames, nb_bins) float32 magnitudes.
        x: (nb_channels, nb_frames, nb_bins) complex64 mixture; not modified.
        workers: threads (1: this thread only); the result does not depend on it.
        out: optional complex64 array of the result's shape to write into (a caller that
            filters window after window reuses it instead of mapping fresh pages each time).

    Returns:
        (nb_sources[+1 if residual], nb_channels, nb_frames, nb_bins) complex64.
    """
    if iterations < 0:  # no EM loop would run and `y` would come back unfilled
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    targets = np.ascontiguousarray(targets, np.float32)
    x = np.ascontiguousarray(x, np.complex64)
    if iterations > 0 and x.shape[0] not in (1, 2):
        raise UnmixError(f"Wiener EM supports mono or stereo, got {x.shape[0]} channels")
    y = _output_array(out, (targets.shape[0] + int(bool(residual)),) + x.shape)
    if iterations == 0:
        return initial_estimates(targets, x, softmask, residual, eps, workers, out=y)
    # EM is not scale invariant (eps): bring the loudest bin to scale_factor. The estimates
    # and the mixture are divided by max_abs, and the final estimates multiplied back, inside
    # the kernels (the same arithmetic as scaling whole arrays, without the passes).
    max_abs = np.float32(max(1.0, float(np.abs(x).max()) / scale_factor))
    # the first models come straight from the initial estimates, which are never stored
    v, R = _models(_initial_stats_kernel, (targets, _floats(x), bool(softmask), bool(residual), np.float32(eps),
                                           max_abs), y.shape, eps, workers)
    for it in range(iterations):
        if it:
            v, R = _models(_stats_kernel, (_floats(y),), y.shape, eps, workers)
        _separate(y, x, v, R, eps, workers, x_scale=max_abs, y_scale=max_abs if it == iterations - 1 else 1)
    return y


def wiener_windowed(
    targets_spectrograms,
    mix_stft,
    iterations,
    softmask,
    residual,
    wiener_win_len=300,
    scale_factor=10.0,
    eps=1e-10,
):
    """Apply `wiener` independently on consecutive windows of frames.

    Same as the reference Separator's loop: windows of `wiener_win_len`
    frames (the last one shorter), None or 0 meaning the whole signal.
    Shapes as `wiener`; the result is one preallocated complex64 array.
    """
    targets, mix = _check_inputs(targets_spectrograms, mix_stft, iterations)
    nb_frames = mix.shape[0]
    nb_out = targets.shape[-1] + int(bool(residual))
    out = np.empty(mix.shape + (nb_out,), np.complex64)
    win = int(wiener_win_len) if wiener_win_len else max(nb_frames, 1)
    if win < 0:
        raise ValueError(f"wiener_win_len must be positive or None, got {wiener_win_len}")
    for pos in range(0, nb_frames, win):
        frames = slice(pos, min(nb_frames, pos + win))
        wiener(
            targets[frames], mix[frames], iterations, softmask, residual,
            scale_factor=scale_factor, eps=eps, out=out[frames],
        )
    return out


def initial_estimates(targets, x, softmask, residual, eps=1e-10, workers=1, out=None):
    """First source estimates, before EM (planar layout).

    Args:
        targets: (nb_sources, {1, nb_channels}, nb_frames, nb_bins) float32.
        x: (nb_channels, nb_frames, nb_bins) complex64 mixture.
        softmask: ratio mask ``targets / (eps + sum targets)`` times the mix;
            otherwise the magnitudes with the mixture phase (phase 0 where x == 0,
            as the reference's atan2).
        residual: append ``x - sum of estimates`` as one more source.
        workers: threads sharing the blocks of frames.
        out: optional complex64 array of the result's shape to write into.

    Returns:
        (nb_sources[+1], nb_channels, nb_frames, nb_bins) complex64.
    """
    targets = np.ascontiguousarray(targets, np.float32)
    x = np.ascontiguousarray(x, np.complex64)
    y = _output_array(out, (targets.shape[0] + int(bool(residual)),) + x.shape)
    _run(lambda frames: _estimates_kernel(targets, _floats(x), bool(softmask), bool(residual), np.float32(eps),
                                          _floats(y), frames.start, frames.stop),
         _blocks(x.shape[1]), workers)
    return y


def expectation_maximization(y, x, iterations=2, eps=1e-10, workers=1):
    """Refine source estimates in place with the simplified EM of norbert.

    Each iteration re-estimates every source's local Gaussian model (PSD v_j
    and spatial covariance R_j), then applies the multichannel Wiener gains
    ``v_j R_j Cxx^-1`` with ``Cxx = sqrt(eps) I + sum_j v_j R_j``.

    Args:
        y: (nb_sources, nb_channels, nb_frames, nb_bins) complex64, updated.
        x: (nb_channels, nb_frames, nb_bins) complex64 mixture.
        iterations: number of EM iterations.
        eps: regularization.
        workers: threads sharing the blocks of frames.

    Returns:
        y, v (nb_sources, nb_frames, nb_bins) float32 and
        R (nb_sources, nb_channels, nb_channels, nb_bins) complex64.
    """
    if y.shape[1] not in (1, 2):
        raise UnmixError(f"Wiener EM supports 1 or 2 channels, got {y.shape[1]}")
    x = np.ascontiguousarray(x, np.complex64)
    v = np.zeros((y.shape[0],) + y.shape[2:], np.float32)
    R = np.zeros(y.shape[:2] + y.shape[1:2] + y.shape[3:], np.complex64)
    for _ in range(iterations):
        v, R = _models(_stats_kernel, (_floats(y),), y.shape, eps, workers)
        _separate(y, x, v, R, eps, workers)
    return y, v, R


def get_local_gaussian_model(y_j, eps=1e-10):
    """PSD and spatial covariance of one source.

    Args:
        y_j: (nb_channels, nb_frames, nb_bins) complex64 source estimate.
        eps: added to the weight so silent bins give R_j = 0, not NaN.

    Returns:
        v_j: (nb_frames, nb_bins) float32, mean power over channels.
        R_j: (nb_channels, nb_channels, nb_bins) complex64,
            ``sum_t y y^H / (eps + sum_t v_j)`` (Hermitian).
    """
    y = np.ascontiguousarray(y_j, np.complex64)[None]
    v, R = _models(_stats_kernel, (_floats(y),), y.shape, eps, workers=1)
    return v[0], R[0]


def _models(stats_kernel, inputs, shape, eps, workers):
    """Every source's (v, R) from `stats_kernel(*inputs, v, weight, cross_re, cross_im, lo, hi)`.

    The sums over frames are taken per block of frames (on the worker threads), then the
    blocks' sums are added in block order: the same result for any number of workers.
    shape: (nb_sources, nb_channels, nb_frames, nb_bins) of the estimates.
    """
    nb_sources, nb_channels, nb_frames, nb_bins = shape
    blocks = _blocks(nb_frames)
    v = np.empty((nb_sources, nb_frames, nb_bins), np.float32)
    # per block: sum_t v (weight), sum_t y_c1 conj(y_c2) (cross), for every source
    weight = np.zeros((len(blocks), nb_sources, nb_bins), np.float32)
    cross_re = np.zeros((len(blocks), nb_sources, nb_channels, nb_channels, nb_bins), np.float32)
    cross_im = np.zeros_like(cross_re)
    _run(lambda i: stats_kernel(*inputs, v, weight[i], cross_re[i], cross_im[i], blocks[i].start, blocks[i].stop),
         range(len(blocks)), workers)
    weight, cross_re, cross_im = weight.sum(axis=0), cross_re.sum(axis=0), cross_im.sum(axis=0)
    weight += np.float32(eps)
    R = np.empty(cross_re.shape, np.complex64)
    R.real = cross_re / weight[:, None, None]
    R.imag = cross_im / weight[:, None, None]
    for c1 in range(nb_channels):  # Hermitian: the kernels sum the upper triangle only
        for c2 in range(c1):
            R[:, c1, c2] = np.conj(R[:, c2, c1])
    return v, R


def _separate(y, x, v, R, eps, workers, x_scale=1.0, y_scale=1.0):
    """One Wiener step into y: ``y_j = v_j R_j Cxx^-1 (x / x_scale) * y_scale``, block by block."""
    regularization = np.float32(np.sqrt(np.float32(eps)))
    separate_kernel = _separate_mono_kernel if x.shape[0] == 1 else _separate_stereo_kernel
    r_re, r_im = np.ascontiguousarray(R.real), np.ascontiguousarray(R.imag)
    x_scale, y_scale = np.float32(x_scale), np.float32(y_scale)
    _run(lambda frames: separate_kernel(_floats(y), _floats(x), v, r_re, r_im, regularization, x_scale, y_scale,
                                        frames.start, frames.stop), _blocks(x.shape[1]), workers)


# -- kernels ------------------------------------------------------------------------------------
# The EM is a few dozen float operations per time-frequency point and source: as whole-array
# numpy operations it was ~30 passes over 10-40 MB arrays per window, memory-bound (68 ms CPU
# per umxhq window of 300 frames, 4 targets). These kernels go through the frames once per
# step, holding rows of nb_bins floats. The first EM models are computed from the initial
# estimates as they are made (not stored). Complex arrays are read through float32 views
# (re, im interleaved: `_floats`) and every innermost loop runs over the bins, so that LLVM
# vectorizes them (no fastmath: no reassociation, no fused multiply-adds, float32 throughout).
# Each frame is computed the same way whichever thread runs it, so the result does not depend
# on `workers`. Scratch rows are distinct arrays (`_scratch_rows`), never rows of one 2-D
# array: LLVM cannot tell those apart, and then does not vectorize (measured: 2-3x slower).


def _floats(z):
    """complex64 (..., n) -> its float32 view (..., 2n): re at even, im at odd positions."""
    return z.view(np.float32)


@kernel
def _scratch_rows(nb_bins):
    """Four distinct float32 rows of nb_bins."""
    return (np.empty(nb_bins, np.float32), np.empty(nb_bins, np.float32), np.empty(nb_bins, np.float32),
            np.empty(nb_bins, np.float32))


@kernel
def _estimate_frame(targets, x, t, softmask, residual, eps, scale, y, t_out, scratch):
    """Initial estimates of frame t of x (float32 view (C, T, 2F)), divided by `scale`, into
    frame t_out of y (float32 view (nb_sources[+1], C, T', 2F)); scratch: `_scratch_rows`."""
    phase_re, phase_im, total_re, total_im = scratch
    nb_sources, nb_target_channels = targets.shape[0], targets.shape[1]
    nb_channels, nb_bins = x.shape[0], x.shape[2] // 2
    ratio = phase_re  # softmask: the mask's denominator eps + sum_j targets_j; else phase = x / |x|
    for c in range(nb_channels):
        tc = c if nb_target_channels > 1 else 0
        mix = x[c, t]
        if softmask:
            ratio[:] = 0
            for j in range(nb_sources):
                target = targets[j, tc, t]
                for f in range(nb_bins):
                    ratio[f] += target[f]
            for f in range(nb_bins):
                ratio[f] += eps
        else:
            for f in range(nb_bins):
                # |x| in float32 (10x faster than float64 here): exact enough for spectra
                # between 1e-19 and 1e19; below, the square underflows and the phase is 0
                re, im = mix[2 * f], mix[2 * f + 1]
                magnitude = np.sqrt(re * re + im * im)
                positive = magnitude > 0  # else phase 0, as atan2(0, 0)
                phase_re[f] = re / magnitude if positive else np.float32(1)
                phase_im[f] = im / magnitude if positive else np.float32(0)
        total_re[:] = 0
        total_im[:] = 0
        for j in range(nb_sources):
            target, out = targets[j, tc, t], y[j, c, t_out]
            for f in range(nb_bins):
                if softmask:
                    gain = target[f] / ratio[f]
                    re, im = mix[2 * f] * gain, mix[2 * f + 1] * gain
                else:
                    re, im = phase_re[f] * target[f], phase_im[f] * target[f]
                total_re[f] += re
                total_im[f] += im
                out[2 * f] = re / scale
                out[2 * f + 1] = im / scale
        if residual:  # x - sum_j y_j
            out = y[nb_sources, c, t_out]
            for f in range(nb_bins):
                out[2 * f] = (mix[2 * f] - total_re[f]) / scale
                out[2 * f + 1] = (mix[2 * f + 1] - total_im[f]) / scale


@kernel
def _estimates_kernel(targets, x, softmask, residual, eps, y, lo, hi):
    """Initial estimates of frames lo..hi into y (float32 view (nb_sources[+1], C, T, 2F))."""
    scratch = _scratch_rows(x.shape[2] // 2)
    for t in range(lo, hi):
        _estimate_frame(targets, x, t, softmask, residual, eps, np.float32(1), y, t, scratch)


@kernel
def _accumulate_frame(y, j, t, v, weight, cross_re, cross_im):
    """Add frame t of source j (y: float32 view (J, C, T, 2F)) to its model's sums; v: (F,)
    receives the frame's mean power over channels. cross: (C, C, F), upper triangle."""
    nb_channels, nb_bins = y.shape[1], y.shape[3] // 2
    for c in range(nb_channels):
        a, power = y[j, c, t], cross_re[c, c]
        for f in range(nb_bins):
            p = a[2 * f] * a[2 * f] + a[2 * f + 1] * a[2 * f + 1]
            power[f] += p
            v[f] = p if c == 0 else v[f] + p
        # the off-diagonal terms use the same products as the power: for identical channels
        # R_j[0, 1] equals R_j[0, 0] bit for bit, and the 2x2 algebra of an exactly
        # mono-in-stereo input cancels exactly instead of drowning sqrt(eps) in rounding noise
        for c2 in range(c + 1, nb_channels):
            b, acc_re, acc_im = y[j, c2, t], cross_re[c, c2], cross_im[c, c2]
            for f in range(nb_bins):
                acc_re[f] += a[2 * f] * b[2 * f] + a[2 * f + 1] * b[2 * f + 1]
                acc_im[f] += a[2 * f + 1] * b[2 * f] - a[2 * f] * b[2 * f + 1]
    for f in range(nb_bins):
        if nb_channels > 1:
            v[f] *= np.float32(1.0 / nb_channels)
        weight[f] += v[f]


@kernel
def _stats_kernel(y, v, weight, cross_re, cross_im, lo, hi):
    """Model sums of frames lo..hi of the estimates y (float32 view (J, C, T, 2F)); v (J, T, F)."""
    for t in range(lo, hi):
        for j in range(y.shape[0]):
            _accumulate_frame(y, j, t, v[j, t], weight[j], cross_re[j], cross_im[j])


@kernel
def _initial_stats_kernel(targets, x, softmask, residual, eps, scale, v, weight, cross_re, cross_im, lo, hi):
    """`_stats_kernel` of the initial estimates (divided by `scale`), made frame by frame."""
    nb_out, nb_channels, nb_bins = targets.shape[0] + int(residual), x.shape[0], x.shape[2] // 2
    frame = np.empty((nb_out, nb_channels, 1, 2 * nb_bins), np.float32)  # one frame of estimates
    scratch = _scratch_rows(nb_bins)
    for t in range(lo, hi):
        _estimate_frame(targets, x, t, softmask, residual, eps, scale, frame, 0, scratch)
        for j in range(nb_out):
            _accumulate_frame(frame, j, 0, v[j, t], weight[j], cross_re[j], cross_im[j])


@kernel
def _separate_stereo_kernel(y, x, v, r_re, r_im, regularization, x_scale, y_scale, lo, hi):
    """One Wiener step on frames lo..hi: y_j = v_j R_j Cxx^-1 (x / x_scale) * y_scale
    (y, x: float32 views).

    Cxx = r I + S, S = sum_j v_j R_j, inverted in closed form. S is Hermitian PSD (real
    diagonal s00, s11, off-diagonal s01), so det(Cxx) = det(S) + r (s00 + s11) + r^2 is real
    and >= r^2. det(S) is clamped at 0: float32 cancellation must not make it negative. The
    adjugate is applied as adj(S) x + r x so the small regularization is not lost when added
    to large diagonal terms (exactly mono-in-stereo input).
    """
    nb_sources, nb_bins = y.shape[0], y.shape[3] // 2
    r = regularization
    s00, s11, s01_re, s01_im = _scratch_rows(nb_bins)  # S = sum_j v_j R_j
    z0r, z0i, z1r, z1i = _scratch_rows(nb_bins)  # Cxx^-1 x: re, im of channel 0, then of channel 1
    for t in range(lo, hi):
        s00[:] = 0
        s11[:] = 0
        s01_re[:] = 0
        s01_im[:] = 0
        for j in range(nb_sources):
            vt, a, b, cr, ci = v[j, t], r_re[j, 0, 0], r_re[j, 1, 1], r_re[j, 0, 1], r_im[j, 0, 1]
            for f in range(nb_bins):
                s00[f] += vt[f] * a[f]
                s11[f] += vt[f] * b[f]
                s01_re[f] += vt[f] * cr[f]
                s01_im[f] += vt[f] * ci[f]
        x0, x1 = x[0, t], x[1, t]
        for f in range(nb_bins):
            a, b, cr, ci = s00[f], s11[f], s01_re[f], s01_im[f]
            det = max(a * b - (cr * cr + ci * ci), np.float32(0))
            det += (a + b) * r
            det += r * r
            inv_det = np.float32(1) / det
            x0r, x0i = x0[2 * f] / x_scale, x0[2 * f + 1] / x_scale
            x1r, x1i = x1[2 * f] / x_scale, x1[2 * f + 1] / x_scale
            z0r[f] = (x0r * b - (x1r * cr - x1i * ci) + x0r * r) * inv_det  # s11 x0 - s01 x1 + r x0
            z0i[f] = (x0i * b - (x1r * ci + x1i * cr) + x0i * r) * inv_det
            z1r[f] = (x1r * a - (x0r * cr + x0i * ci) + x1r * r) * inv_det  # s00 x1 - conj(s01) x0 + r x1
            z1i[f] = (x1i * a - (x0i * cr - x0r * ci) + x1i * r) * inv_det
        for j in range(nb_sources):
            vt = v[j, t]
            for c in range(2):
                ar, ai, br, bi, out = r_re[j, c, 0], r_im[j, c, 0], r_re[j, c, 1], r_im[j, c, 1], y[j, c, t]
                for f in range(nb_bins):
                    re = (z0r[f] * ar[f] - z0i[f] * ai[f]) + (z1r[f] * br[f] - z1i[f] * bi[f])
                    im = (z0r[f] * ai[f] + z0i[f] * ar[f]) + (z1r[f] * bi[f] + z1i[f] * br[f])
                    out[2 * f] = re * vt[f] * y_scale
                    out[2 * f + 1] = im * vt[f] * y_scale


@kernel
def _separate_mono_kernel(y, x, v, r_re, r_im, regularization, x_scale, y_scale, lo, hi):
    """`_separate_stereo_kernel` for one channel: y_j = v_j R_j x / (r + sum_j v_j R_j)."""
    nb_sources, nb_bins = y.shape[0], y.shape[3] // 2
    cxx = np.empty(nb_bins, np.float32)
    for t in range(lo, hi):
        cxx[:] = regularization
        for j in range(nb_sources):
            vt, a = v[j, t], r_re[j, 0, 0]
            for f in range(nb_bins):
                cxx[f] += vt[f] * a[f]
        mix = x[0, t]
        for j in range(nb_sources):
            vt, ar, ai, out = v[j, t], r_re[j, 0, 0], r_im[j, 0, 0], y[j, 0, t]
            for f in range(nb_bins):
                zr, zi = mix[2 * f] / x_scale / cxx[f], mix[2 * f + 1] / x_scale / cxx[f]
                out[2 * f] = (zr * ar[f] - zi * ai[f]) * vt[f] * y_scale
                out[2 * f + 1] = (zr * ai[f] + zi * ar[f]) * vt[f] * y_scale


def _blocks(nb_frames, min_frames=32, max_blocks=16):
    """Consecutive blocks of frames, the tasks of the worker threads: at least `min_frames`
    frames each (less work is not worth a task) and at most `max_blocks` of them (each block
    holds its own model sums). They depend on nb_frames only, never on the workers."""
    size = max(min_frames, -(-nb_frames // max_blocks))
    return [slice(s, min(nb_frames, s + size)) for s in range(0, max(nb_frames, 1), size)]


def _planar_mix(mix):
    """(nb_frames, nb_bins, nb_channels) -> a new (nb_channels, nb_frames, nb_bins)."""
    x = np.empty((mix.shape[2], mix.shape[0], mix.shape[1]), np.complex64)
    x[...] = mix.transpose(2, 0, 1)
    return x


def _planar_targets(targets):
    """(nb_frames, nb_bins, C, nb_sources) -> (nb_sources, C, nb_frames, nb_bins)."""
    return np.ascontiguousarray(targets.transpose(3, 2, 0, 1))


def _output_array(out, shape):
    if out is None:
        return np.empty(shape, np.complex64)
    if out.shape != shape or out.dtype != np.complex64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous complex64 {shape}, got {out.dtype} {out.shape}")
    return out


def _check_inputs(targets_spectrograms, mix_stft, iterations):
    """Cast to float32 / complex64 and check that the shapes agree."""
    targets = np.asarray(targets_spectrograms, dtype=np.float32)
    mix = np.asarray(mix_stft, dtype=np.complex64)
    if mix.ndim != 3 or targets.ndim != 4:
        raise ValueError(
            "expected targets (nb_frames, nb_bins, nb_channels, nb_sources) and mix "
            f"(nb_frames, nb_bins, nb_channels), got {targets.shape} and {mix.shape}"
        )
    if targets.shape[:2] != mix.shape[:2] or targets.shape[2] not in (1, mix.shape[2]):
        raise ValueError(f"targets {targets.shape} do not match mix {mix.shape}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if iterations > 0 and mix.shape[2] not in (1, 2):
        raise UnmixError(f"Wiener EM supports mono or stereo, got {mix.shape[2]} channels")
    return targets, mix
