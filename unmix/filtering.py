"""Multichannel Wiener filtering (norbert-style EM), vectorized in numpy.

Numerically follows ``openunmix.filtering.wiener`` (open-unmix-pytorch 1.3):
initial estimates from the mixture phase or a ratio mask, an optional
residual source, scaling by the loudest mixture bin, then `iterations`
rounds of expectation maximization with local Gaussian models.

Public arrays use the reference layout: targets
``(nb_frames, nb_bins, nb_channels, nb_sources)`` float32 magnitudes, mixture
``(nb_frames, nb_bins, nb_channels)`` complex64. Internally every source and
channel is one contiguous ``(nb_frames, nb_bins)`` plane ("planar" layout
``(nb_sources, nb_channels, nb_frames, nb_bins)``), so that all the 1x1 / 2x2
covariance algebra is a handful of whole-array float32/complex64 operations:
no per-frame loops, no complex128, no 6-D temporaries. `wiener_planar` takes and
returns that layout directly (the Separator's path: no transposing copies).

With ``workers > 1`` the sources' models and the frame blocks are spread over
threads (numpy releases the GIL in its loops); every block is computed by the
same operations whichever thread runs it, so the result does not depend on the
number of workers.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import UnmixError

# Frames handled at once in the separation step: keeps the temporaries of one
# block (a few planes of block x nb_bins) cache-sized for 2049 bins.
_BLOCK_FRAMES = 32


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
                  workers=1):
    """`wiener` in the planar layout, with no transposing copies (the Separator's path).

    Args:
        targets: (nb_sources, {1, nb_channels}, nb_frames, nb_bins) float32 magnitudes.
        x: (nb_channels, nb_frames, nb_bins) complex64 mixture; not modified.
        workers: threads (1: this thread only); the result does not depend on it.

    Returns:
        (nb_sources[+1 if residual], nb_channels, nb_frames, nb_bins) complex64.
    """
    if iterations > 0 and x.shape[0] not in (1, 2):
        raise UnmixError(f"Wiener EM supports mono or stereo, got {x.shape[0]} channels")
    y = initial_estimates(targets, x, softmask, residual, eps, workers)
    if iterations > 0:
        # EM is not scale invariant (eps): bring the loudest bin to scale_factor
        max_abs = np.float32(max(1.0, float(np.abs(x).max()) / scale_factor))
        x = x / max_abs  # a new array: the caller's mixture stays as it is
        _run(lambda j: np.divide(y[j], max_abs, out=y[j]), _each(len(y)), workers)
        expectation_maximization(y, x, iterations, eps, workers)
        _run(lambda j: np.multiply(y[j], max_abs, out=y[j]), _each(len(y)), workers)
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


def initial_estimates(targets, x, softmask, residual, eps=1e-10, workers=1):
    """First source estimates, before EM (planar layout).

    Args:
        targets: (nb_sources, {1, nb_channels}, nb_frames, nb_bins) float32.
        x: (nb_channels, nb_frames, nb_bins) complex64 mixture.
        softmask: ratio mask ``targets / (eps + sum targets)`` times the mix;
            otherwise the magnitudes with the mixture phase.
        residual: append ``x - sum of estimates`` as one more source.
        workers: threads sharing the sources.

    Returns:
        (nb_sources[+1], nb_channels, nb_frames, nb_bins) complex64.
    """
    nb_sources = targets.shape[0]
    y = np.empty((nb_sources + int(bool(residual)),) + x.shape, np.complex64)
    if softmask:
        total = targets.sum(axis=0)
        total += np.float32(eps)
        _run(lambda j: np.multiply(x, targets[j] / total, out=y[j]), _each(nb_sources), workers)
    else:
        phase = np.empty_like(x)
        _run(lambda c: mixture_phase(x[c], out=phase[c]), _each(len(x)), workers)
        _run(lambda j: np.multiply(phase, targets[j], out=y[j]), _each(nb_sources), workers)
    if residual:
        np.subtract(x, y[:nb_sources].sum(axis=0), out=y[nb_sources])
    return y


def mixture_phase(x, out=None):
    """exp(i angle(x)) with angle 0 where x == 0, as the reference's atan2.

    x: (...) complex64 -> (...) complex64 of unit modulus (written into `out` if given).
    """
    magnitude = np.abs(x)
    phase = np.empty_like(x) if out is None else out
    phase.fill(1)
    np.divide(x, magnitude, out=phase, where=magnitude > 0)
    return phase


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
        workers: threads sharing the sources' models and the frame blocks.

    Returns:
        y, v (nb_sources, nb_frames, nb_bins) float32 and
        R (nb_sources, nb_channels, nb_channels, nb_bins) complex64.
    """
    nb_sources, nb_channels, nb_frames, nb_bins = y.shape
    if nb_channels not in (1, 2):
        raise UnmixError(f"Wiener EM supports 1 or 2 channels, got {nb_channels}")
    v = np.zeros((nb_sources, nb_frames, nb_bins), np.float32)
    R = np.zeros((nb_sources, nb_channels, nb_channels, nb_bins), np.complex64)
    regularization = np.float32(np.sqrt(np.float32(eps)))
    blocks = [slice(start, start + _BLOCK_FRAMES) for start in range(0, nb_frames, _BLOCK_FRAMES)]
    scratch = threading.local()  # one set of temporaries per thread, for this call only

    def work():
        if not hasattr(scratch, "arrays"):
            scratch.arrays = _Scratch()
        return scratch.arrays

    def model(j):
        get_local_gaussian_model(y[j], eps, v_out=v[j], R_out=R[j], work=work())

    def separate(frames):
        _separate(y[:, :, frames], x[:, frames], v[:, frames], R, regularization, work())

    for _ in range(iterations):
        _run(model, _each(nb_sources), workers)
        # every frame depends only on (v, R) now: separate block by block
        _run(separate, blocks, workers)
    return y, v, R


class _Scratch:
    """Temporaries reused by name and shape. Large numpy temporaries are fresh pages every
    time (the Separator makes glibc map them anew: see `unmix.separator`), and faulting them
    in costs about as much as the arithmetic of a block; these are allocated once per thread."""

    def __init__(self):
        self.arrays = {}

    def __call__(self, name, shape, dtype):
        key = (name, shape, np.dtype(dtype))
        if key not in self.arrays:
            self.arrays[key] = np.empty(shape, dtype)
        return self.arrays[key]


_POOLS = {}
_POOLS_LOCK = threading.Lock()


def _run(function, items, workers):
    """``function(item)`` for every item, on up to `workers` threads; re-raises their errors.
    The items must be independent (they are: sources, channels, blocks of frames)."""
    if workers <= 1 or len(items) <= 1:
        for item in items:
            function(item)
        return
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="unmix-wiener")
    for future in [pool.submit(function, item) for item in items]:
        future.result()


def _each(n):
    return list(range(n))


def get_local_gaussian_model(y_j, eps=1e-10, v_out=None, R_out=None, work=None):
    """PSD and spatial covariance of one source.

    Args:
        y_j: (nb_channels, nb_frames, nb_bins) complex64 source estimate.
        eps: added to the weight so silent bins give R_j = 0, not NaN.
        work: a `_Scratch` for the temporaries (None: fresh ones).

    Returns:
        v_j: (nb_frames, nb_bins) float32, mean power over channels.
        R_j: (nb_channels, nb_channels, nb_bins) complex64,
            ``sum_t y y^H / (eps + sum_t v_j)`` (Hermitian).
    """
    nb_channels, nb_frames, nb_bins = y_j.shape
    work = _Scratch() if work is None else work
    v_j = np.empty((nb_frames, nb_bins), np.float32) if v_out is None else v_out
    R_j = np.empty((nb_channels, nb_channels, nb_bins), np.complex64) if R_out is None else R_out
    power = _power(y_j[0], work)
    R_j[0, 0] = power.sum(axis=0)
    v_j[...] = power
    for c in range(1, nb_channels):
        power = _power(y_j[c], work)
        R_j[c, c] = power.sum(axis=0)
        v_j += power
    if nb_channels > 1:
        v_j *= np.float32(1.0 / nb_channels)
    weight = v_j.sum(axis=0)
    weight += np.float32(eps)
    for c1 in range(nb_channels):
        for c2 in range(c1 + 1, nb_channels):
            R_j[c1, c2] = _cross_sum(y_j[c1], y_j[c2], work)
            R_j[c2, c1] = np.conj(R_j[c1, c2])
    R_j /= weight
    return v_j, R_j


def _separate(y, x, v, R, regularization, work=None):
    """One Wiener step on a block of frames: y_j = v_j R_j Cxx^-1 x.

    y: (nb_sources, nb_channels, n, nb_bins) written in place; x:
    (nb_channels, n, nb_bins); v: (nb_sources, n, nb_bins); R: (nb_sources,
    nb_channels, nb_channels, nb_bins). Cxx^-1 x is shared by all sources, so
    it is computed once and each source costs one 2x2 matrix-vector product.
    work: a `_Scratch` for the temporaries (None: fresh ones).
    """
    work = _Scratch() if work is None else work
    if x.shape[0] == 1:
        z = _solve_mono(x, v, R, regularization, work)
    else:
        z = _solve_stereo(x, v, R, regularization, work)
    nb_channels = x.shape[0]
    tmp = work("separate_tmp", z.shape[1:], z.dtype)
    for j in range(v.shape[0]):
        for c1 in range(nb_channels):
            np.multiply(z[0], R[j, c1, 0], out=y[j, c1])
            for c2 in range(1, nb_channels):
                np.multiply(z[c2], R[j, c1, c2], out=tmp)
                y[j, c1] += tmp
            y[j, c1] *= v[j]


def _solve_mono(x, v, R, regularization, work):
    """z = x / (sqrt(eps) + sum_j v_j R_j) for one channel: (1, n, nb_bins)."""
    cxx = work("cxx", v.shape[1:], np.float32)
    cxx.fill(regularization)
    product = work("product", v.shape[1:], np.float32)
    for j in range(v.shape[0]):
        cxx += np.multiply(v[j], R[j, 0, 0].real, out=product)
    return np.divide(x, cxx, out=work("z", x.shape, x.dtype))


def _solve_stereo(x, v, R, regularization, work):
    """z = Cxx^-1 x with Cxx = r I + S, S = sum_j v_j R_j, closed form 2x2.

    S is Hermitian PSD (real diagonal s00, s11, off-diagonal s01), so
    det(Cxx) = det(S) + r (s00 + s11) + r^2 is real and >= r^2. det(S) is
    clamped at 0: float32 cancellation must not make it negative. The
    adjugate is applied as adj(S) x + r x so the small regularization is not
    lost when added to large diagonal terms (exactly mono-in-stereo input).
    All temporaries come from `work` (the arithmetic is that of plain expressions).
    """
    shape = v.shape[1:]
    s00, s11 = work("s00", shape, np.float32), work("s11", shape, np.float32)
    s01 = work("s01", shape, np.complex64)
    for s in (s00, s11, s01):
        s.fill(0)
    product, cproduct = work("product", shape, np.float32), work("cproduct", shape, np.complex64)
    for j in range(v.shape[0]):
        s00 += np.multiply(v[j], R[j, 0, 0].real, out=product)
        s11 += np.multiply(v[j], R[j, 1, 1].real, out=product)
        s01 += np.multiply(v[j], R[j, 0, 1], out=cproduct)
    det = np.multiply(s00, s11, out=work("det", shape, np.float32))
    det -= _power(s01, work)
    np.maximum(det, 0, out=det)
    trace = np.add(s00, s11, out=work("trace", shape, np.float32))
    trace *= regularization
    det += trace
    det += regularization * regularization
    inv_det = np.reciprocal(det, out=det)

    z = work("z", x.shape, x.dtype)
    tmp = work("solve_tmp", shape, np.complex64)
    # z0 = (s11 x0 - s01 x1 + r x0) / det
    np.multiply(x[0], s11, out=z[0])
    np.multiply(x[1], s01, out=tmp)
    z[0] -= tmp
    np.multiply(x[0], regularization, out=tmp)
    z[0] += tmp
    # z1 = (s00 x1 - conj(s01) x0 + r x1) / det
    np.multiply(x[1], s00, out=z[1])
    np.conjugate(s01, out=s01)
    np.multiply(x[0], s01, out=tmp)
    z[1] -= tmp
    np.multiply(x[1], regularization, out=tmp)
    z[1] += tmp
    z *= inv_det
    return z


def _power(z, work=None):
    """|z|^2 of a complex64 array as float32, without the sqrt of np.abs."""
    if work is None:
        power = np.square(z.real)
        power += np.square(z.imag)
        return power
    power = np.square(z.real, out=work("power", z.shape, np.float32))
    power += np.square(z.imag, out=work("power_imag", z.shape, np.float32))
    return power


def _cross_sum(a, b, work=None):
    """sum over frames of a * conj(b): (nb_frames, nb_bins) -> (nb_bins,) complex64.

    Written with the same real products as `_power` (numpy's complex multiply
    may fuse them): for identical channels R_j[0, 1] then equals R_j[0, 0]
    bit for bit, and the 2x2 algebra of an exactly mono-in-stereo input
    cancels exactly instead of drowning sqrt(eps) in rounding noise.
    """
    work = _Scratch() if work is None else work
    tmp = work("cross_tmp", a.shape, np.float32)
    real = np.multiply(a.real, b.real, out=work("cross_real", a.shape, np.float32))
    real += np.multiply(a.imag, b.imag, out=tmp)
    imag = np.multiply(a.imag, b.real, out=work("cross_imag", a.shape, np.float32))
    imag -= np.multiply(a.real, b.imag, out=tmp)
    cross = np.empty(a.shape[1:], np.complex64)
    cross.real = real.sum(axis=0)
    cross.imag = imag.sum(axis=0)
    return cross


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
    if out.shape != shape or out.dtype != np.complex64:
        raise ValueError(f"out must be complex64 {shape}, got {out.dtype} {out.shape}")
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
