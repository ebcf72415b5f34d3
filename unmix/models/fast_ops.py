"""Coarse NNabla functions for training Open-Unmix fast on the CPU.

NNabla 1.39's CPU backend runs on one thread and does its GEMMs in Eigen at about a tenth of
numpy's OpenBLAS rate; its LSTM is ten times slower than torch's. Each function below is one
`nnabla.function.PythonFunction` whose forward and backward run in numpy (multithreaded GEMMs) or
in numba kernels, so a training step is a handful of calls instead of thousands of small ones.
They live inside an ordinary NNabla graph: PF parameters, solvers, ``need_grad`` and
``clear_buffer`` work as usual, because each declares truthfully which data its backward reads
(``grad_depends_input_data`` / ``grad_depends_output_data``: NNabla frees the other buffers).

The functions (shapes for Open-Unmix; r = nb_frames * nb_samples rows, frame-major):

    scaled_affine  mix (N, C, T, bins), mean, scale (m,), W (C*m, s)  ->  ((mix[..., :m] + mean) * scale) @ W
    affine         x (r, i), W (i, o)                                 ->  x @ W
    batch_norm     x (r, f), beta, gamma, mean, var (1, f)            ->  training-mode batch norm over axis 0
    lstm_layer     x (T, B, I), w (D, 4, H, I + H), b (D, 4, H)       ->  (T, B, D * H), one (bi)LSTM layer
    mask_mse       z (r, C*n), scale, mean (n,), mix, y (N, C, T, n)  ->  mean((relu(z * scale + mean) * mix - y)^2)

and for X-UMX's losses (`unmix.models.losses`; S sources, L = (T - 1) * n_hop samples): the one
function the training graph uses,

    xumx_loss          mix, X real, X imag, Y, y, per source (z, scale, mean)  ->  L_f + mcoef L_t
                       (kernels in `unmix.models.xumx_loss`: the masks, the combinations from Gram
                       matrices, the four sources' ISTFT batched, and the backward of all of it)

and the separate steps it fuses, kept as an independent check of it (tests/test_xumx_loss.py):

    spectrogram_mask   z (r, C*n), scale, mean (n,)                    ->  relu(z * scale + mean) as (N, C, T, n)
    combination_mse    mix (N, C, T, n), Y (N, S, C, T, n), S masks    ->  L_f of the masks x mix
    masked_istft       mask, X real, X imag (N, C, T, n)               ->  ISTFT(mask * X) (N, C, L), center=True
    combination_sdr    y (N, S, C, L), S estimates (N, C, L)           ->  L_t (weighted SDR, 14 combinations)

The spectrograms come frames first, ``(nb_samples, nb_channels, nb_frames, nb_bins)``: the layout
the FFT produces (`unmix.dsp.transforms.stft(frames_first=True)`), in which every frame's bins are
contiguous, as the rows of the network are; the stock graph's ``(..., nb_bins, nb_frames)``
would make every read of the mixture a strided one (6x slower here).

They compute what the stock graph of `unmix.models.nnabla_graph` computes (tests/test_ops.py checks outputs and
gradients against it); sums that NNabla or torch would accumulate in float32 over millions of
values (losses, batch statistics) are accumulated in float64 here. Only the CPU uses them:
on a GPU the stock graph (cuDNN) stays.
"""
import threading

import numpy as np
import scipy.fft
from nnabla.function import PythonFunction
from numpy.lib.stride_tricks import sliding_window_view

from unmix.dsp import jit
from unmix.dsp import transforms
from unmix.models import losses, xumx_loss

# -- numba kernels of the LSTM ----------------------------------------------------------------------
_F32 = np.float32
_TANH_CLAMP = _F32(7.90531110763549805)


# error_model "numpy": no zero-division checks, which would keep LLVM from vectorising the
# gate math (a rational function has a division); inline, so that the loops see through them.
_vector_kernel = jit.kernel(error_model="numpy", inline="always")


@_vector_kernel
def _tanh(x):
    """tanh as a rational function (Eigen's float approximation; max error 4e-7): unlike libm's
    tanh and exp, it vectorises, which makes the gate math several times faster."""
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = x2 * _F32(-2.76076847742355e-16) + _F32(2.00018790482477e-13)
    p = x2 * p + _F32(-8.60467152213735e-11)
    p = x2 * p + _F32(5.12229709037114e-08)
    p = x2 * p + _F32(1.48572235717979e-05)
    p = x2 * p + _F32(6.37261928875436e-04)
    p = x2 * p + _F32(4.89352455891786e-03)
    q = x2 * _F32(1.19825839466702e-06) + _F32(1.18534705686654e-04)
    q = x2 * q + _F32(2.26843463243900e-03)
    q = x2 * q + _F32(4.89352518554385e-03)
    return x * p / q


@_vector_kernel
def _sigmoid(x):
    return _F32(0.5) * _tanh(_F32(0.5) * x) + _F32(0.5)


@jit.kernel
def _by_rows(w, h):
    """``h @ w.T`` for ``h`` ``(B, K)``, ``w`` ``(M, K)``: computed as ``(w @ h.T).T``, because
    OpenBLAS runs that product (M large, 16 columns) 1.8x faster than ``h @ w.T`` (16 rows)."""
    return np.ascontiguousarray(np.dot(w, np.ascontiguousarray(h.T)).T)


@jit.kernel(error_model="numpy")
def _lstm_forward(proj, d, w_hh, reverse, y, acts, cells, tanh_cells):
    """The recurrence of one direction `d`, in place. Each step reads and writes contiguous
    rows of 4H (or H) values per sample: the gate math vectorises and streams through memory.

    Args:
        proj: ``(T, B, D, 4H)`` input projections plus bias (gates i, f, g, o).
        w_hh: ``(4H, H)`` this direction's recurrent weights.
        reverse: run from the last frame to the first (the backward direction).
        y: ``(T, B, D * H)`` output; this direction writes ``y[:, :, d*H:(d+1)*H]``.
        acts: ``(T, B, D, 4H)`` gate activations, kept for the backward pass.
        cells, tanh_cells: ``(T, B, D, H)`` cell states and their tanh, kept likewise.
    """
    nb_frames, nb_samples = proj.shape[0], proj.shape[1]
    hidden = w_hh.shape[1]
    h = np.zeros((nb_samples, hidden), np.float32)
    c = np.zeros((nb_samples, hidden), np.float32)
    for step in range(nb_frames):
        t = nb_frames - 1 - step if reverse else step
        gates = _by_rows(w_hh, h)  # (B, 4H)
        for b in range(nb_samples):
            p, a, r = proj[t, b, d], acts[t, b, d], gates[b]
            cb, hb, cs, ts = c[b], h[b], cells[t, b, d], tanh_cells[t, b, d]
            yb = y[t, b, d * hidden:(d + 1) * hidden]
            for j in range(hidden):
                i = _sigmoid(r[j] + p[j])
                f = _sigmoid(r[hidden + j] + p[hidden + j])
                g = _tanh(r[2 * hidden + j] + p[2 * hidden + j])
                o = _sigmoid(r[3 * hidden + j] + p[3 * hidden + j])
                cell = f * cb[j] + i * g
                tc = _tanh(cell)
                cb[j], cs[j], ts[j] = cell, cell, tc
                hb[j] = yb[j] = o * tc
                a[j], a[hidden + j], a[2 * hidden + j], a[3 * hidden + j] = i, f, g, o


@jit.kernel(error_model="numpy")
def _lstm_backward(dy, d, w_hh_t, reverse, acts, cells, tanh_cells, dgates):
    """Backward through time of one direction `d`: the gradients of the gate pre-activations.

    Args:
        dy: ``(T, B, D * H)`` gradient of the layer's output.
        w_hh_t: ``(H, 4H)`` this direction's recurrent weights, transposed.
        acts, cells, tanh_cells: what `_lstm_forward` kept.
        dgates: ``(T, B, D, 4H)`` output, this direction's slice filled.
    """
    nb_frames, nb_samples = dy.shape[0], dy.shape[1]
    hidden = w_hh_t.shape[0]
    one = np.float32(1.0)
    dh_next = np.zeros((nb_samples, hidden), np.float32)
    dc_next = np.zeros((nb_samples, hidden), np.float32)
    no_cell = np.zeros(hidden, np.float32)
    for step in range(nb_frames - 1, -1, -1):
        t = nb_frames - 1 - step if reverse else step
        t_prev = t + 1 if reverse else t - 1
        for b in range(nb_samples):
            a, ts, dg = acts[t, b, d], tanh_cells[t, b, d], dgates[t, b, d]
            dyb, dhb, dcb = dy[t, b, d * hidden:(d + 1) * hidden], dh_next[b], dc_next[b]
            c_prev = cells[t_prev, b, d] if step > 0 else no_cell
            for j in range(hidden):
                i, f, g, o = a[j], a[hidden + j], a[2 * hidden + j], a[3 * hidden + j]
                tc = ts[j]
                dh = dyb[j] + dhb[j]
                dc = dcb[j] + dh * o * (one - tc * tc)
                dg[j] = dc * g * i * (one - i)
                dg[hidden + j] = dc * c_prev[j] * f * (one - f)
                dg[2 * hidden + j] = dc * i * (one - g * g)
                dg[3 * hidden + j] = dh * tc * o * (one - o)
                dcb[j] = dc * f
        dh_next = _by_rows(w_hh_t, np.ascontiguousarray(dgates[t, :, d]))  # (B, H)


# -- numba kernels of the elementwise functions ------------------------------------------------------
# Each works on one sample n (spectrogram layouts) or one block of columns (batch norm), so that
# `jit.run` spreads them over the cores and the sums, made per item and added in item order, do
# not depend on the number of threads. Rows of the frame-major layouts are r = t * N + n.
@jit.kernel
def _frames_of(mix, mean, n, out):
    """``out[t * N + n, c * m + b] = mix[n, c, t, b] + mean[b]`` for one sample n (b < m)."""
    nb_samples, nb_channels, nb_frames, _ = mix.shape
    m = mean.shape[0]
    for c in range(nb_channels):
        for t in range(nb_frames):
            src, dst = mix[n, c, t], out[t * nb_samples + n, c * m:(c + 1) * m]
            for b in range(m):
                dst[b] = src[b] + mean[b]


@jit.kernel(error_model="numpy")
def _mask_mse_sample(z, scale, mean, mix, y, n, q, dz, d_scale, d_mean, squares):
    """Sample n of `MaskMSE`: adds its squared errors per bin into ``squares[n]`` (float64); with
    ``q != 0`` also writes its rows of ``dz = du * scale`` and adds ``du * z`` and ``du`` per bin
    into ``d_scale[n]`` and ``d_mean[n]``, where ``du = q * (est - y) * mix`` wherever the
    pre-activation is positive. Sums per bin rather than into one scalar: a scalar float
    reduction would keep LLVM from vectorising the loop (it may not reorder the additions)."""
    nb_samples, nb_channels, nb_frames, nb_bins = mix.shape
    for c in range(nb_channels):
        for t in range(nb_frames):
            zr = z[t * nb_samples + n, c * nb_bins:(c + 1) * nb_bins]
            mr, yr, sq = mix[n, c, t], y[n, c, t], squares[n]
            if q == 0:
                for k in range(nb_bins):
                    pre = zr[k] * scale[k] + mean[k]
                    err = (pre * mr[k] if pre > 0 else np.float32(0.0)) - yr[k]
                    sq[k] += err * err
                continue
            dzr, ds, dm = dz[t * nb_samples + n, c * nb_bins:(c + 1) * nb_bins], d_scale[n], d_mean[n]
            for k in range(nb_bins):
                pre = zr[k] * scale[k] + mean[k]
                positive = pre > 0
                err = (pre * mr[k] if positive else np.float32(0.0)) - yr[k]
                sq[k] += err * err
                du = q * err * mr[k] if positive else np.float32(0.0)
                dzr[k] = du * scale[k]
                ds[k] += du * zr[k]
                dm[k] += du


@jit.kernel
def _bn_moments(x, start, stop, mean, var):
    """Float64 mean and biased variance (two passes) of columns ``start:stop`` of ``(r, f)``."""
    rows = x.shape[0]
    for r in range(rows):
        for j in range(start, stop):
            mean[j] += x[r, j]
    for j in range(start, stop):
        mean[j] /= rows
    for r in range(rows):
        for j in range(start, stop):
            dev = x[r, j] - mean[j]
            var[j] += dev * dev
    for j in range(start, stop):
        var[j] /= rows


@jit.kernel
def _bn_forward(x, start, stop, mean, scale, beta, out):
    """``out = (x - mean) * scale + beta`` on columns ``start:stop``, scale = gamma / sqrt(var + eps)."""
    for r in range(x.shape[0]):
        for j in range(start, stop):
            out[r, j] = np.float32((x[r, j] - mean[j]) * scale[j] + beta[j])


@jit.kernel(error_model="numpy")
def _bn_backward(x, g, start, stop, mean, inv, gamma, d_beta, d_gamma, dx):
    """Batch-norm gradients on columns ``start:stop`` (float64 sums; see `BatchNorm`); ``dx`` is
    written unless it has no rows."""
    rows = x.shape[0]
    for r in range(rows):
        for j in range(start, stop):
            d_beta[j] += g[r, j]
            d_gamma[j] += g[r, j] * ((x[r, j] - mean[j]) * inv[j])
    if dx.shape[0] == 0:
        return
    width = stop - start
    shift, xh_scale, xh_shift = np.empty(width, np.float32), np.empty(width, np.float32), np.empty(width, np.float32)
    out_scale = np.empty(width, np.float32)
    for j in range(start, stop):  # dx = a (g - d_beta / r) - a (x - mean) inv d_gamma / r, a = gamma inv
        out_scale[j - start] = gamma[j] * inv[j]
        shift[j - start] = d_beta[j] / rows
        xh_scale[j - start] = inv[j] * d_gamma[j] / rows
        xh_shift[j - start] = mean[j] * inv[j] * d_gamma[j] / rows
    for r in range(rows):
        gr, xr, dr = g[r, start:stop], x[r, start:stop], dx[r, start:stop]
        for j in range(width):
            dr[j] = out_scale[j] * (gr[j] - shift[j] - (xr[j] * xh_scale[j] - xh_shift[j]))


def _column_blocks(nb_columns, workers=2):
    """``(start, stop)`` blocks of columns, one per worker (the batch-norm kernels' items)."""
    edges = np.linspace(0, nb_columns, workers + 1).astype(int)
    return list(zip(edges[:-1], edges[1:]))


_BLAS_LOCK = threading.Lock()
_BLAS = {}


def _one_blas_thread():
    """A context in which BLAS runs single-threaded: numba's ``np.dot`` (scipy's OpenBLAS) inside
    two concurrent recurrences would otherwise spawn threads for 16-row products and fight for the
    two cores (276 ms -> 107 ms per layer). threadpoolctl sees scipy's OpenBLAS only once
    ``scipy.linalg.cython_blas`` is imported, which is what numba calls."""
    with _BLAS_LOCK:
        if "controller" not in _BLAS:
            import scipy.linalg.cython_blas  # noqa: F401  (makes scipy's OpenBLAS visible)
            from threadpoolctl import ThreadpoolController

            _BLAS["controller"] = ThreadpoolController()
    return _BLAS["controller"].limit(limits=1, user_api="blas")


# -- helpers -------------------------------------------------------------------------------------------
def _arr(ndarray):
    """A writable float32 numpy view of an NNabla NdArray (data or grad)."""
    return ndarray.cast(np.float32)


def _set_or_add(ndarray, value, accumulate):
    """Write a gradient, or add it when NNabla asks to accumulate (a variable used twice)."""
    target = _arr(ndarray)
    if accumulate:
        target += value
    else:
        target[...] = value


class _Op(PythonFunction):
    """Common parts: name, a single output, the context of the graph."""

    @property
    def name(self):
        return type(self).__name__

    def min_outputs(self):
        return 1


# -- the functions ---------------------------------------------------------------------------------------
class ScaledAffine(_Op):
    """Crop, standardise and project the mixture ``(N, C, T, bins)``:
    ``x_s = (mix[..., :m] + mean) * scale``, rows ``(t, n)`` frame-major, columns ``(c, b)``;
    output ``x_s @ W`` ``(T * N, s)``.

    With ``u = mix[..., :m] + mean`` as rows, the forward pass computes ``u @ (diag(scale) W)``
    (scaling W's rows instead of the 8x larger input) and keeps u for the backward pass, where,
    with ``g`` the output gradient: ``dW = diag(scale) u^T g`` (one GEMM), and instead of the
    ``(T*N, C*m)`` input gradient ``g W^T`` (a GEMM as large as the forward one), the parameter
    gradients are contracted from it: ``d scale[b] = sum_{c,k} W[cb, k] (u^T g)[cb, k]`` and
    ``d mean[b] = scale[b] sum_{c,k} W[cb, k] sum_r g[r, k]``. The mixture gets no gradient.
    """

    def __init__(self, max_bin, ctx=None):
        super().__init__(ctx)
        self.max_bin = max_bin
        self._u = None

    def setup_impl(self, inputs, outputs):
        nb_samples, _, nb_frames, _ = inputs[0].shape
        outputs[0].reset_shape((nb_frames * nb_samples, inputs[3].shape[1]), True)

    def forward_impl(self, inputs, outputs):
        mix, mean = inputs[0].data.data, inputs[1].data.data
        scale, w = inputs[2].data.data, inputs[3].data.data
        nb_samples, nb_channels, nb_frames, _ = mix.shape
        u = np.empty((nb_frames * nb_samples, nb_channels * self.max_bin), np.float32)
        jit.run(lambda n: _frames_of(mix, mean, n, u), range(nb_samples), workers=2)
        np.matmul(u, w * np.tile(scale, nb_channels)[:, None], out=_arr(outputs[0].data))
        self._u = u

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        u, self._u = self._u, None
        g = outputs[0].grad.data
        mean_down, scale_down, w_down = propagate_down[1:4]
        if propagate_down[0]:
            raise NotImplementedError("ScaledAffine gives no gradient to the mixture")
        if not (mean_down or scale_down or w_down):
            return
        scale, w = inputs[2].data.data, inputs[3].data.data
        m = self.max_bin
        nb_channels = w.shape[0] // m
        ug = u.T @ g  # (C*m, s)
        if w_down:
            _set_or_add(inputs[3].grad, ug * np.tile(scale, nb_channels)[:, None], accum[3])
        if scale_down:
            d_scale = np.einsum("jk,jk->j", w, ug, dtype=np.float64).reshape(nb_channels, m).sum(0)
            _set_or_add(inputs[2].grad, d_scale, accum[2])
        if mean_down:
            wg = (w.astype(np.float64) @ g.sum(0, dtype=np.float64)).reshape(nb_channels, m).sum(0)
            _set_or_add(inputs[1].grad, scale * wg, accum[1])

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return j in (2, 3)  # the contractions read scale and W; u is kept from the forward pass


class Affine(_Op):
    """``y = x @ W`` (a linear layer without bias). Backward: ``dx = g W^T``, ``dW = x^T g``."""

    def setup_impl(self, inputs, outputs):
        outputs[0].reset_shape((inputs[0].shape[0], inputs[1].shape[1]), True)

    def forward_impl(self, inputs, outputs):
        np.matmul(inputs[0].data.data, inputs[1].data.data, out=_arr(outputs[0].data))

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        g = outputs[0].grad.data
        if propagate_down[0]:
            _set_or_add(inputs[0].grad, g @ inputs[1].data.data.T, accum[0])
        if propagate_down[1]:
            _set_or_add(inputs[1].grad, inputs[0].data.data.T @ g, accum[1])

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return i != j  # dx reads W, dW reads x


class BatchNorm(_Op):
    """Batch norm in training mode over axis 0 of ``(r, f)``, as NNabla's (and torch's
    BatchNorm1d): ``y = gamma (x - mu) / sqrt(var + eps) + beta`` with the batch's mean ``mu`` and
    biased variance ``var``; the running statistics become ``decay * running + (1 - decay) * batch``
    (the variance unbiased, ``var * r / (r - 1)``). Statistics accumulate in float64.

    Backward, with ``xh = (x - mu) / sqrt(var + eps)`` and ``g`` the output gradient:
    ``d beta = sum_r g``, ``d gamma = sum_r g xh``,
    ``dx = gamma / sqrt(var + eps) * (g - d beta / r - xh * d gamma / r)``.
    """

    def __init__(self, decay_rate, eps, ctx=None):
        super().__init__(ctx)
        self.decay_rate, self.eps = decay_rate, eps

    def setup_impl(self, inputs, outputs):
        outputs[0].reset_shape(inputs[0].shape, True)

    def forward_impl(self, inputs, outputs):
        x = inputs[0].data.data
        beta, gamma = inputs[1].data.data[0].astype(np.float64), inputs[2].data.data[0].astype(np.float64)
        rows, features = x.shape
        mean, var = np.zeros(features), np.zeros(features)
        blocks = _column_blocks(features)
        jit.run(lambda blk: _bn_moments(x, *blk, mean, var), blocks, workers=len(blocks))
        inv = 1.0 / np.sqrt(var + self.eps)
        y = _arr(outputs[0].data)
        jit.run(lambda blk: _bn_forward(x, *blk, mean, gamma * inv, beta, y), blocks, workers=len(blocks))
        self._mean, self._inv = mean, inv
        running_mean, running_var = _arr(inputs[3].data), _arr(inputs[4].data)
        running_mean[...] = self.decay_rate * running_mean + (1 - self.decay_rate) * mean
        running_var[...] = self.decay_rate * running_var + (1 - self.decay_rate) * var * rows / max(rows - 1, 1)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        x, g = inputs[0].data.data, outputs[0].grad.data
        gamma = inputs[2].data.data[0].astype(np.float64)
        rows, features = x.shape
        d_beta, d_gamma = np.zeros(features), np.zeros(features)
        dx = np.empty(x.shape if propagate_down[0] else (0, features), np.float32)
        blocks = _column_blocks(features)
        jit.run(lambda blk: _bn_backward(x, g, *blk, self._mean, self._inv, gamma, d_beta, d_gamma, dx),
                blocks, workers=len(blocks))
        if propagate_down[0]:
            _set_or_add(inputs[0].grad, dx, accum[0])
        if propagate_down[1]:
            _set_or_add(inputs[1].grad, d_beta[None], accum[1])
        if propagate_down[2]:
            _set_or_add(inputs[2].grad, d_gamma[None], accum[2])

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return j in (0, 2)  # x (for xh) and gamma


class LSTMLayer(_Op):
    """One LSTM layer, both directions, NNabla's parameter layout (gates i, f, g, o):
    ``w = [W_ih | W_hh]`` ``(D, 4, H, I + H)``, ``b`` ``(D, 4, H)``; ``x`` ``(T, B, I)`` ->
    ``(T, B, D * H)`` (forward outputs, then backward ones). Zero initial states.

    Forward: one GEMM for the input projections of all frames and directions, then each
    direction's recurrence as a numba kernel on its own thread:
    ``i, f, o = sigmoid(.)``, ``g = tanh(.)`` of ``P_t + W_hh h_{t-1}``,
    ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``.

    Backward through time (per direction, from the last step processed to the first), with
    ``dh_t = dy_t + W_hh^T da_{t+1}``, ``dc_t = dc_{t+1} f_{t+1} + dh_t o (1 - tanh^2 c_t)``, the
    gate pre-activation gradients ``da = [dc g i (1-i), dc c_{t-1} f (1-f), dc i (1-g^2),
    dh tanh(c_t) o (1-o)]``. After the loop, one GEMM each: ``dW_ih = da^T x``,
    ``dW_hh = da^T h_{t-1}``, ``dx = da W_ih``, ``db = sum da``.
    """

    def setup_impl(self, inputs, outputs):
        nb_frames, nb_samples, _ = inputs[0].shape
        d, _, hidden, _ = inputs[1].shape
        outputs[0].reset_shape((nb_frames, nb_samples, d * hidden), True)

    def _weights(self, inputs):
        w = inputs[1].data.data
        d, _, hidden, width = w.shape
        w = w.reshape(d, 4 * hidden, width)
        nb_inputs = width - hidden
        return w[:, :, :nb_inputs], w[:, :, nb_inputs:]  # W_ih (D, 4H, I), W_hh (D, 4H, H)

    def forward_impl(self, inputs, outputs):
        x, b = inputs[0].data.data, inputs[2].data.data
        nb_frames, nb_samples, nb_inputs = x.shape
        w_ih, w_hh = self._weights(inputs)
        d, gates, hidden = w_hh.shape
        proj = x.reshape(-1, nb_inputs) @ w_ih.reshape(d * gates, nb_inputs).T
        proj += b.reshape(d * gates)
        proj = proj.reshape(nb_frames, nb_samples, d, gates)
        y = _arr(outputs[0].data)
        self._acts = np.empty_like(proj)
        self._cells = np.empty((nb_frames, nb_samples, d, hidden), np.float32)
        self._tanh_cells = np.empty_like(self._cells)
        w_hh = [np.ascontiguousarray(w_hh[k]) for k in range(d)]
        with _one_blas_thread():
            jit.run(lambda k: _lstm_forward(proj, k, w_hh[k], k == 1, y, self._acts, self._cells,
                                            self._tanh_cells), range(d), workers=d)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        x, y, dy = inputs[0].data.data, outputs[0].data.data, outputs[0].grad.data
        nb_frames, nb_samples, nb_inputs = x.shape
        w_ih, w_hh = self._weights(inputs)
        d, gates, hidden = w_hh.shape
        dgates = np.empty((nb_frames, nb_samples, d, gates), np.float32)
        w_hh_t = [np.ascontiguousarray(w_hh[k].T) for k in range(d)]
        with _one_blas_thread():
            jit.run(lambda k: _lstm_backward(dy, k, w_hh_t[k], k == 1, self._acts, self._cells,
                                             self._tanh_cells, dgates), range(d), workers=d)
        self._acts = self._cells = self._tanh_cells = None  # 4.5 x the output: free them now
        rows = nb_frames * nb_samples
        da = dgates.reshape(rows, d * gates)
        if propagate_down[0]:
            _set_or_add(inputs[0].grad, (da @ w_ih.reshape(d * gates, nb_inputs)).reshape(x.shape), accum[0])
        if propagate_down[1]:
            dw = np.empty((d, gates, nb_inputs + hidden), np.float32)
            dw[:, :, :nb_inputs] = (da.T @ x.reshape(rows, nb_inputs)).reshape(d, gates, nb_inputs)
            h_prev = _previous_outputs(y.reshape(nb_frames, nb_samples, d, hidden))
            for k in range(d):
                dw[k, :, nb_inputs:] = da[:, k * gates:(k + 1) * gates].T @ h_prev[k].reshape(rows, hidden)
            _set_or_add(inputs[1].grad, dw.reshape(inputs[1].shape), accum[1])
        if propagate_down[2]:
            _set_or_add(inputs[2].grad, da.sum(axis=0).reshape(inputs[2].shape), accum[2])

    def grad_depends_output_data(self, i, o):
        return i == 1  # dW_hh reads the outputs (h_{t-1})

    def grad_depends_input_data(self, i, j):
        return (i, j) in ((0, 1), (1, 0))  # dx reads W_ih, dW_ih reads x


def _previous_outputs(h):
    """``h_{t-1}`` of each direction as processed: ``(D, T, B, H)`` from the outputs ``(T, B, D, H)``,
    zero where a direction started."""
    prev = np.zeros((h.shape[2],) + h.shape[:2] + h.shape[3:], np.float32)
    prev[0, 1:] = h[:-1, :, 0]
    if h.shape[2] > 1:
        prev[1, :-1] = h[1:, :, 1]
    return prev


class MaskMSE(_Op):
    """The end of the network and its loss in one pass:
    ``est = relu(z * scale + mean) * mix`` with ``z`` ``(T * N, C * n)`` reshaped to
    ``(T, N, C, n)`` and moved to the layout of ``mix`` and ``y``, ``(N, C, T, n)``; output
    ``mean((est - y)^2)`` (a scalar, accumulated in float64).

    Backward, with ``e = est - y``, ``M`` the number of values and ``q`` the scalar's gradient:
    ``du = q 2 e mix / M`` where ``z * scale + mean > 0`` (else 0); ``dz = du * scale``,
    ``d scale = sum du * z``, ``d mean = sum du`` (sums over all but the bin axis).
    """

    def setup_impl(self, inputs, outputs):
        outputs[0].reset_shape((), True)

    def _run(self, inputs, q, dz=None):
        """Sum of squared errors (float64) and, when q != 0, the parameter gradients."""
        z, scale, mean, mix, y = (inputs[k].data.data for k in range(5))
        nb_samples, nb_bins = mix.shape[0], mix.shape[3]
        sums = np.zeros((3, nb_samples, nb_bins))  # squared errors, d scale, d mean per sample and bin
        dz = np.empty((0, 0), np.float32) if dz is None else dz
        jit.run(lambda n: _mask_mse_sample(z, scale, mean, mix, y, n, np.float32(q), dz, sums[1], sums[2], sums[0]),
                range(nb_samples), workers=2)
        squares, d_scale, d_mean = sums.sum(axis=1)
        return squares.sum(), d_scale, d_mean

    def forward_impl(self, inputs, outputs):
        total, _, _ = self._run(inputs, 0.0)
        _arr(outputs[0].data)[...] = total / inputs[3].size

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if propagate_down[3] or propagate_down[4]:
            raise NotImplementedError("MaskMSE gives no gradient to the mixture or the target")
        if not any(propagate_down[:3]):
            return
        dz = np.empty(inputs[0].shape, np.float32)
        _, d_scale, d_mean = self._run(inputs, 2.0 * float(outputs[0].grad.data) / inputs[3].size, dz)
        for k, value in ((0, dz), (1, d_scale), (2, d_mean)):
            if propagate_down[k]:
                _set_or_add(inputs[k].grad, value, accum[k])

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return True


class SpectrogramMask(_Op):
    """X-UMX's mask of one source: ``relu(z * scale + mean)`` with ``z`` ``(T * N, C * n)`` (rows
    frame-major) reshaped to ``(T, N, C, n)`` and moved to the spectrogram layout ``(N, C, T, n)``.

    Backward, with ``g`` the output gradient moved back to ``(T, N, C, n)`` and ``du = g`` where
    the mask is positive (else 0): ``dz = du * scale``, ``d scale = sum du * z``, ``d mean = sum du``
    (sums over all but the bin axis, float64).
    """

    def setup_impl(self, inputs, outputs):
        rows, width = inputs[0].shape
        nb_bins = inputs[1].shape[0]
        nb_channels = width // nb_bins
        nb_samples = self.nb_samples
        outputs[0].reset_shape((nb_samples, nb_channels, rows // nb_samples, nb_bins), True)

    def __init__(self, nb_samples, ctx=None):
        super().__init__(ctx)
        self.nb_samples = nb_samples

    def _frames(self, array, nb_bins):
        """``(T * N, C * n)`` -> ``(T, N, C, n)`` (a view)."""
        return array.reshape(-1, self.nb_samples, array.shape[1] // nb_bins, nb_bins)

    def forward_impl(self, inputs, outputs):
        z, scale, mean = (inputs[k].data.data for k in range(3))
        pre = self._frames(z, scale.shape[0]) * scale + mean
        np.maximum(pre, 0, out=pre)
        _arr(outputs[0].data)[...] = pre.transpose(1, 2, 0, 3)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down[:3]):
            return
        z, scale = inputs[0].data.data, inputs[1].data.data
        mask, g = outputs[0].data.data, outputs[0].grad.data
        du = np.where(mask > 0, g, np.float32(0)).transpose(2, 0, 1, 3)  # (T, N, C, n)
        if propagate_down[0]:
            _set_or_add(inputs[0].grad, (du * scale).reshape(z.shape), accum[0])
        if propagate_down[1]:
            d_scale = np.einsum("tncb,tncb->b", du, self._frames(z, scale.shape[0]), dtype=np.float64)
            _set_or_add(inputs[1].grad, d_scale, accum[1])
        if propagate_down[2]:
            _set_or_add(inputs[2].grad, du.sum(axis=(0, 1, 2), dtype=np.float64), accum[2])

    def grad_depends_output_data(self, i, o):
        return True  # where the mask is positive

    def grad_depends_input_data(self, i, j):
        return j in (0, 1)  # d scale reads z, dz reads scale


class CombinationMSE(_Op):
    """X-UMX's frequency-domain loss L_f (`unmix.models.losses`) of the S masks: inputs ``mix``
    ``(N, C, T, n)``, the source magnitudes ``Y`` ``(N, S, C, T, n)``, then one mask per source
    ``(N, C, T, n)``; ``d_s = mask_s * mix - Y_s``; output the scalar
    ``sum_{s,t} W[s,t] <d_s, d_t> / (K M)`` (float64 Gram matrix, one sample at a time).

    Backward, with ``q`` the scalar's gradient and ``A = 2 W / (K M)``:
    ``d mask_s = q * mix * sum_t A[s, t] d_t``. The mixture and the targets get none.
    """

    def setup_impl(self, inputs, outputs):
        outputs[0].reset_shape((), True)

    def _diffs(self, inputs, n):
        """``(S, C, T, n)`` differences of sample n."""
        mix, y = inputs[0].data.data[n], inputs[1].data.data[n]
        return np.stack([inputs[2 + s].data.data[n] * mix for s in range(len(inputs) - 2)]) - y

    def forward_impl(self, inputs, outputs):
        nb_sources = len(inputs) - 2
        gram = np.zeros((nb_sources, nb_sources))
        for n in range(inputs[0].shape[0]):
            d = self._diffs(inputs, n).reshape(nb_sources, -1).astype(np.float64)
            gram += d @ d.T
        _arr(outputs[0].data)[...] = losses.combination_mse(gram, inputs[0].size)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0] or propagate_down[1]:
            raise NotImplementedError("CombinationMSE gives no gradient to the mixture or the targets")
        nb_sources = len(inputs) - 2
        coef = (float(outputs[0].grad.data) * losses.combination_mse_coefficients(nb_sources, inputs[0].size))
        grads = {s: _arr(inputs[2 + s].grad) for s in range(nb_sources) if propagate_down[2 + s]}
        for n in range(inputs[0].shape[0]):
            d = self._diffs(inputs, n)
            mix = inputs[0].data.data[n]
            for s, grad in grads.items():
                value = np.tensordot(coef[s].astype(np.float32), d, axes=1) * mix
                if accum[2 + s]:
                    grad[n] += value
                else:
                    grad[n] = value

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return True


class MaskedISTFT(_Op):
    """The time signal of a masked mixture spectrogram with the mixture's phase:
    ``ISTFT(mask * X)`` (``mask * |X|`` with X's phase is ``mask * X``), as
    `unmix.dsp.transforms.istft` with ``center=True`` (torch.istft): inputs mask, X's real and
    imaginary parts ``(N, C, T, n)`` (frames first); output ``(N, C, L)``, ``L = (T - 1) * n_hop``
    (the padding of ``n_fft // 2`` cut on both sides, as Sony's F.istft(center=True)).

    Forward: ``frames_t = irfft(mask_t X_t)``, overlap-add of ``w * frames_t`` every n_hop
    samples, division by the summed squared window ``env``, cut. It is linear in the mask; its
    adjoint maps ``g`` ``(N, C, L)`` to ``G_t = rfft(w * h[t n_hop : t n_hop + n_fft])`` with
    ``h`` = g / env placed back into the uncut signal (zeros outside), and
    ``d mask = c / n_fft * (Re X Re G + Im X Im G)``, ``c = 1`` at DC and Nyquist (whose
    imaginary parts irfft ignores), 2 elsewhere. X gets no gradient.
    """

    def __init__(self, n_fft, n_hop, ctx=None):
        super().__init__(ctx)
        self.n_fft, self.n_hop = n_fft, n_hop
        self.window = transforms.hann_window(n_fft)

    def setup_impl(self, inputs, outputs):
        nb_samples, nb_channels, nb_frames, _ = inputs[0].shape
        outputs[0].reset_shape((nb_samples, nb_channels, (nb_frames - 1) * self.n_hop), True)

    def _inverse_envelope(self, nb_frames):
        """``1 / env`` of the kept samples (1 where the envelope vanishes, as transforms.istft)."""
        start = self.n_fft // 2
        env = transforms._envelope(self.window, nb_frames, self.n_hop)[start:start + (nb_frames - 1) * self.n_hop]
        return np.where(env > 1e-11, 1.0 / np.maximum(env, 1e-11), 1.0).astype(np.float32)

    def forward_impl(self, inputs, outputs):
        mask, re, im = (inputs[k].data.data for k in range(3))
        nb_frames = mask.shape[2]
        spec = np.empty(mask.shape, np.complex64)
        spec.real, spec.imag = mask * re, mask * im
        frames = scipy.fft.irfft(spec, n=self.n_fft, axis=-1, workers=2).astype(np.float32, copy=False)
        del spec
        full_len = self.n_fft + self.n_hop * (nb_frames - 1)
        signal = transforms._overlap_add(frames, self.window, self.n_hop, full_len, workers=2)
        start = self.n_fft // 2
        out = _arr(outputs[0].data)
        np.multiply(signal[..., start:start + out.shape[-1]], self._inverse_envelope(nb_frames), out=out)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if propagate_down[1] or propagate_down[2]:
            raise NotImplementedError("MaskedISTFT gives no gradient to the mixture")
        if not propagate_down[0]:
            return
        re, im = inputs[1].data.data, inputs[2].data.data
        g = outputs[0].grad.data
        nb_frames = re.shape[2]
        start = self.n_fft // 2
        h = np.zeros(g.shape[:-1] + (self.n_fft + self.n_hop * (nb_frames - 1),), np.float32)
        h[..., start:start + g.shape[-1]] = g * self._inverse_envelope(nb_frames)
        frames = sliding_window_view(h, self.n_fft, axis=-1)[..., ::self.n_hop, :]  # (N, C, T, n_fft)
        spec = scipy.fft.rfft(frames * self.window, axis=-1, workers=2)
        del h, frames
        spec.imag[..., 0] = 0
        if self.n_fft % 2 == 0:
            spec.imag[..., -1] = 0
        grad = re * spec.real + im * spec.imag
        weights = np.full(grad.shape[-1], 2.0 / self.n_fft, np.float32)
        weights[0] = 1.0 / self.n_fft
        if self.n_fft % 2 == 0:
            weights[-1] = 1.0 / self.n_fft
        grad *= weights
        _set_or_add(inputs[0].grad, grad, accum[0])

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return j in (1, 2)  # the adjoint reads X


class CombinationSDR(_Op):
    """X-UMX's time-domain loss L_t (`unmix.models.losses`): inputs the source signals ``y``
    ``(N, S, C, L)``, then one estimate per source ``(N, C, L)``; output the scalar
    ``1 + mean`` over the 14 combinations and the N * C rows of the weighted SDR, the mixture
    being ``sum_s y_s``. Forward: per row the float64 Gram matrix of ``v = (est_1..S, y_1..S)``.

    Backward: ``d est_s[row] = q sum_j A[row, s, j] v_j[row]`` with the coefficients ``A`` of
    `unmix.models.losses.combination_sdr_coefficients` (one small GEMM per row). y gets no gradient.
    """

    def setup_impl(self, inputs, outputs):
        outputs[0].reset_shape((), True)

    def _rows(self, inputs, n, c):
        """``(2S, L)`` float64: the estimates then the targets of row (n, c)."""
        nb_sources = len(inputs) - 1
        y = inputs[0].data.data
        v = [inputs[1 + s].data.data[n, c] for s in range(nb_sources)] + [y[n, s, c] for s in range(nb_sources)]
        return np.stack(v).astype(np.float64)

    def _gram(self, inputs):
        nb_samples, _, nb_channels, _ = inputs[0].shape
        nb_sources = len(inputs) - 1
        gram = np.empty((nb_samples * nb_channels, 2 * nb_sources, 2 * nb_sources))
        for n in range(nb_samples):
            for c in range(nb_channels):
                v = self._rows(inputs, n, c)
                gram[n * nb_channels + c] = v @ v.T
        return gram

    def forward_impl(self, inputs, outputs):
        _arr(outputs[0].data)[...] = losses.combination_sdr(self._gram(inputs))

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if propagate_down[0]:
            raise NotImplementedError("CombinationSDR gives no gradient to the targets")
        nb_samples, nb_sources, nb_channels, _ = inputs[0].shape
        coef = float(outputs[0].grad.data) * losses.combination_sdr_coefficients(self._gram(inputs))
        grads = {s: _arr(inputs[1 + s].grad) for s in range(nb_sources) if propagate_down[1 + s]}
        for n in range(nb_samples):
            for c in range(nb_channels):
                d = (coef[n * nb_channels + c] @ self._rows(inputs, n, c)).astype(np.float32)  # (S, L)
                for s, grad in grads.items():
                    if accum[1 + s]:
                        grad[n, c] += d[s]
                    else:
                        grad[n, c] = d[s]

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return True


class XumxLoss(_Op):
    """X-UMX's multi-domain loss ``L_f + mcoef L_t`` from the S decoders' outputs, in one function
    (`unmix.models.xumx_loss`: the masks, the combination MSE, the ISTFT of the masked mixture and
    the combination SDR, with their gradients). Inputs: ``mix``, ``real``, ``imag`` ``(N, C, T, n)``,
    ``target_mag`` ``(N, S, C, T, n)``, ``target_time`` ``(N, S, C, L)``, then per source ``z``
    ``(T * N, C * n)``, ``scale`` and ``mean`` ``(n,)``. Output the scalar loss; `last` keeps the
    parts (L_f, L_t) of the latest forward. Only z, scale and mean get gradients.

    The forward pass keeps the estimates' time signals (N S C L floats) for the backward pass.
    """

    def __init__(self, n_fft, n_hop, mcoef, ctx=None):
        super().__init__(ctx)
        self.n_fft, self.n_hop, self.mcoef = n_fft, n_hop, float(mcoef)
        self.state, self.last = None, None

    def setup_impl(self, inputs, outputs):
        outputs[0].reset_shape((), True)

    def _arrays(self, inputs):
        """The keywords of `xumx_loss.forward` from the inputs' data."""
        data = [v.data.data for v in inputs]
        per_source = data[5:]
        return dict(zs=tuple(per_source[0::3]), scales=np.stack(per_source[1::3]), means=np.stack(per_source[2::3]),
                    mix=data[0], re=data[1], im=data[2], target_mag=data[3], target_time=data[4],
                    n_fft=self.n_fft, n_hop=self.n_hop)

    def forward_impl(self, inputs, outputs):
        self.state = xumx_loss.forward(**self._arrays(inputs))
        self.last = (self.state.loss_f, self.state.loss_t)
        _arr(outputs[0].data)[...] = self.state.loss_f + self.mcoef * self.state.loss_t

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if any(propagate_down[:5]):
            raise NotImplementedError("XumxLoss gives no gradient to the mixture or the targets")
        q = float(outputs[0].grad.data)
        dz, d_scale, d_mean = xumx_loss.backward(self.state, q, q * self.mcoef, **self._arrays(inputs))
        self.state = None  # the estimates go with the graph's other buffers
        for s in range(len(dz)):
            for k, value in enumerate((dz[s], d_scale[s], d_mean[s])):
                i = 5 + 3 * s + k
                if propagate_down[i]:
                    _set_or_add(inputs[i].grad, value, accum[i])

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return True


# -- graph-building wrappers ---------------------------------------------------------------------------------
def scaled_affine(mix, mean, scale, w, max_bin):
    """``((mix[..., :max_bin] + mean) * scale) @ w`` for ``mix`` ``(N, C, T, bins)``: ``(T * N, s)``."""
    return ScaledAffine(max_bin)(mix, mean, scale, w)


def affine(x, w):
    """``x @ w``: ``(r, i)`` x ``(i, o)`` -> ``(r, o)``."""
    return Affine()(x, w)


def batch_norm(x, beta, gamma, mean, var, decay_rate, eps):
    """Training-mode batch norm over axis 0 of ``(r, f)``; updates ``mean`` and ``var`` in place."""
    return BatchNorm(decay_rate, eps)(x, beta, gamma, mean, var)


def lstm_layer(x, w, b):
    """One (bi)LSTM layer: ``(T, B, I)`` -> ``(T, B, D * H)``."""
    return LSTMLayer()(x, w, b)


def mask_mse(z, scale, mean, mix, y):
    """MSE of ``relu(z * scale + mean) * mix`` against ``y``, both ``(N, C, T, n)``: a scalar."""
    return MaskMSE()(z, scale, mean, mix, y)


def spectrogram_mask(z, scale, mean, nb_samples):
    """``relu(z * scale + mean)`` of ``(T * N, C * n)`` as a spectrogram ``(N, C, T, n)``."""
    return SpectrogramMask(nb_samples)(z, scale, mean)


def combination_mse(mix, targets, *masks):
    """X-UMX's L_f of the masks ``(N, C, T, n)`` applied to `mix`, against ``(N, S, C, T, n)``: a scalar."""
    return CombinationMSE()(mix, targets, *masks)


def masked_istft(mask, real, imag, n_fft, n_hop):
    """``ISTFT(mask * (real + i imag))`` (center=True) of ``(N, C, T, n)``: ``(N, C, (T - 1) * n_hop)``."""
    return MaskedISTFT(n_fft, n_hop)(mask, real, imag)


def xumx_loss_of(mix, real, imag, target_mag, target_time, decoded, n_fft, n_hop, mcoef):
    """X-UMX's multi-domain loss (a scalar) from ``decoded``: per source ``(z, scale, mean)``, the
    decoder output ``(T * N, C * n)`` and the output scaling; see `XumxLoss`."""
    return XumxLoss(n_fft, n_hop, mcoef)(mix, real, imag, target_mag, target_time, *[v for d in decoded for v in d])


def combination_sdr(targets, *estimates):
    """X-UMX's L_t of the estimates ``(N, C, L)`` against ``(N, S, C, L)``: a scalar."""
    return CombinationSDR()(targets, *estimates)
