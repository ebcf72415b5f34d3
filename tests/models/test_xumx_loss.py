"""X-UMX's multi-domain loss: the coarse CPU function (`unmix.models.fast_ops.XumxLoss`, kernels of
`unmix.models.xumx_loss`) against the separate ops it replaced and the float64 formulas; the stock
NNabla graph (the GPU's, `CrossNet.build_loss(fast=False)`) against the fast one on the CPU
context, loss and every gradient; where Sony's x-umx/loss.py and asteroid's recipe agree and
where they could differ (ISTFT normalisation at the edges)."""
import nnabla as nn
import numpy as np
import pytest
from test_losses import ref_loss
from test_fast_ops import assert_close

from conftest import FIXTURES

from unmix.dsp import transforms
from unmix.models import fast_ops, losses, xumx_loss
from unmix.models.nnabla_graph import CrossNet, ModelConfig
from unmix.training.views import xumx_arrays

pytestmark = pytest.mark.nnabla


def batch(seed, nb_samples, nb_channels, n_fft, n_hop, nb_frames, nb_sources=4):
    """The five arrays of the training graph for random stems (`xumx_arrays` per sample)."""
    rng = np.random.default_rng(seed)
    stems = (rng.normal(size=(nb_samples, nb_sources, 2, (nb_frames - 1) * n_hop)) *
             rng.uniform(0.1, 1.0, (1, nb_sources, 1, 1))).astype(np.float32)
    per_sample = [xumx_arrays(s.sum(0), s, n_fft, n_hop, nb_channels) for s in stems]
    return [np.stack([p[k] for p in per_sample]) for k in range(5)]


def decoded(rng, arrays, nb_sources=4):
    """Random decoder outputs ``z`` ``(T * N, C * n)`` and output scalings, some masks clipped."""
    nb_samples, nb_channels, nb_frames, nb_bins = arrays[0].shape
    return [(rng.normal(size=(nb_frames * nb_samples, nb_channels * nb_bins)).astype(np.float32),
             rng.uniform(0.5, 1.5, nb_bins).astype(np.float32), rng.normal(0.3, 0.5, nb_bins).astype(np.float32))
            for _ in range(nb_sources)]


def run_loss(build, arrays, params):
    """Forward and backward of ``build(inputs, parameters)``: the loss and the parameters' gradients."""
    inputs = [nn.Variable.from_numpy_array(a, need_grad=False) for a in arrays]
    variables = [tuple(nn.Variable.from_numpy_array(v, need_grad=True) for v in p) for p in params]
    with nn.auto_forward(False):
        loss = build(inputs, variables)
    for p in variables:
        for v in p:
            v.grad.zero()
    loss.forward()
    loss.backward()
    return float(loss.d), [[v.g.copy() for v in p] for p in variables]


def separate_ops(inputs, variables, n_fft, n_hop, mcoef=10.0):
    """The loss from the separate ops (mask, combination MSE, masked ISTFT, combination SDR)."""
    mix, real, imag, target_mag, target_time = inputs
    masks = [fast_ops.spectrogram_mask(z, s, m, mix.shape[0]) for z, s, m in variables]
    loss_f = fast_ops.combination_mse(mix, target_mag, *masks)
    estimates = [fast_ops.masked_istft(m, real, imag, n_fft, n_hop) for m in masks]
    return loss_f + mcoef * fast_ops.combination_sdr(target_time, *estimates)


@pytest.mark.parametrize("nb_samples,nb_channels,n_fft,n_hop,nb_frames", [(2, 2, 64, 16, 12), (3, 1, 32, 8, 9)])
def test_fused_loss_equals_the_separate_ops_and_the_formulas(nb_samples, nb_channels, n_fft, n_hop, nb_frames):
    arrays = batch(1, nb_samples, nb_channels, n_fft, n_hop, nb_frames)
    params = decoded(np.random.default_rng(2), arrays)
    fused, grads = run_loss(lambda i, v: fast_ops.xumx_loss_of(*i, v, n_fft, n_hop, 10.0), arrays, params)
    ops, grads_ops = run_loss(lambda i, v: separate_ops(i, v, n_fft, n_hop), arrays, params)
    np.testing.assert_allclose(fused, ops, rtol=1e-6)
    for got, want in zip(grads, grads_ops):
        for g, w in zip(got, want):
            assert_close(g, w, 1e-5, "gradient")
    # the float64 formulas, combination by combination (tests/test_losses.py)
    mix, real, imag, target_mag, target_time = arrays
    masks = np.stack([np.maximum(z.reshape(nb_frames, nb_samples, nb_channels, -1) * s + m, 0).transpose(1, 2, 0, 3)
                      for z, s, m in params])  # (S, N, C, T, n)
    spec = np.swapaxes(masks * (real + 1j * imag), -1, -2)
    est_time = transforms.istft(spec, n_fft, n_hop, center=True, length=target_time.shape[-1])
    want, _, _ = ref_loss(masks * mix, np.moveaxis(target_mag, 1, 0), est_time, np.moveaxis(target_time, 1, 0))
    np.testing.assert_allclose(fused, want, rtol=1e-6)


def test_fused_loss_does_not_depend_on_the_threads():
    arrays = batch(3, 3, 2, 64, 16, 10)
    params = decoded(np.random.default_rng(4), arrays)
    kwargs = dict(zs=tuple(p[0] for p in params), scales=np.stack([p[1] for p in params]),
                  means=np.stack([p[2] for p in params]), mix=arrays[0], re=arrays[1], im=arrays[2],
                  target_mag=arrays[3], target_time=arrays[4], n_fft=64, n_hop=16)
    one, two = (xumx_loss.forward(**kwargs, workers=w) for w in (1, 2))
    assert (one.loss_f, one.loss_t) == (two.loss_f, two.loss_t)
    for a, b in zip(xumx_loss.backward(one, 1.0, 10.0, **kwargs, workers=1),
                    xumx_loss.backward(two, 1.0, 10.0, **kwargs, workers=2)):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("nb_channels", [2, 1])
def test_stock_graph_equals_the_fast_one(nb_channels):
    """The GPU's graph (stock functions, F.istft) and the CPU's (coarse functions), on the CPU
    context: the same loss and the same gradient for every parameter of the four branches."""
    n_fft, n_hop, nb_frames = 64, 16, 10
    arrays = batch(5, 2, nb_channels, n_fft, n_hop, nb_frames)
    config = ModelConfig(nb_bins=n_fft // 2 + 1, nb_channels=nb_channels, hidden_size=8, nb_layers=2, max_bin=25)
    results = []
    for fast in (True, False):
        model = CrossNet(config, seed=11)
        inputs = [nn.Variable.from_numpy_array(a) for a in arrays]
        with nn.auto_forward(False):
            loss = model.build_loss(*inputs, fast=fast, dropout=0.0, n_hop=n_hop)
        params = model.trainable_parameters()
        for v in params.values():
            v.grad.zero()
        loss.forward()
        loss.backward()
        results.append((float(loss.d), {k: v.g.copy() for k, v in params.items()}))
    (fast_loss, fast_grads), (stock_loss, stock_grads) = results
    np.testing.assert_allclose(stock_loss, fast_loss, rtol=1e-5)
    assert fast_grads.keys() == stock_grads.keys() and len(fast_grads) == 4 * 16
    for name, grad in fast_grads.items():
        if name.endswith("/input_mean"):  # 0 up to rounding in both (bn1 removes any shift of its input)
            assert np.abs(grad).max() < 1e-5 and np.abs(stock_grads[name]).max() < 1e-5
            continue
        assert_close(stock_grads[name], grad, 1e-4, name)


def test_sony_and_asteroid_compute_the_same_loss():
    """Sony's loss.py (the stock graph's `stock_combination_mse` / `stock_combination_sdr` are it,
    function for function) and asteroid's recipe (the fixture's loss, tools/make_xumx_training_fixtures.py)
    use the same eps (1e-10, in the same three places) and the same combinations: on the recipe's
    estimates they give its L_f and L_t to float32 rounding."""

    from unmix.models.nnabla_graph import stock_combination_mse, stock_combination_sdr

    f = np.load(FIXTURES / "training_xumx.npz")
    spec_hat = np.transpose(f["spec_hat"], (0, 2, 3, 1, 4))  # (S, N, C, T, bins)
    targets = f["targets"]
    target_mag = np.abs(transforms.stft(targets, 256, 64, center=True, frames_first=True))  # (N, S, C, T, bins)
    length = f["time_hat"].shape[-1]
    est = [nn.Variable.from_numpy_array(a) for a in spec_hat]
    ref = [nn.Variable.from_numpy_array(np.ascontiguousarray(target_mag[:, s])) for s in range(4)]
    time_est = [nn.Variable.from_numpy_array(a.reshape(-1, length)) for a in f["time_hat"]]
    time_ref = [nn.Variable.from_numpy_array(np.ascontiguousarray(targets[:, s, :, :length]).reshape(-1, length))
                for s in range(4)]
    loss_f, loss_t = stock_combination_mse(est, ref), stock_combination_sdr(time_est, time_ref)
    loss_f.forward()
    loss_t.forward()
    np.testing.assert_allclose(float(loss_f.d), f["loss_f"], rtol=1e-5)
    np.testing.assert_allclose(float(loss_t.d), f["loss_t"], rtol=1e-5)
    np.testing.assert_allclose(float(loss_f.d) + 10 * float(loss_t.d), f["loss"][0], rtol=1e-5)


def test_istft_normalisation_at_the_edges():
    """NNabla 1.39's F.istft (center=True) divides by the window envelope everywhere, as torch.istft
    (asteroid) and unmix do: the same estimates, edges included. An ISTFT that divided the edges by
    the interior's constant window sum instead (what the deconvolution ISTFT of older NNabla did,
    which Sony's x-umx.h5 still carries as ``conv_cos`` / ``conv_sin``) changes the edge samples and L_t."""
    import nnabla.functions as F

    n_fft, n_hop, nb_frames = 64, 16, 12
    mix, real, imag, target_mag, target_time = batch(7, 2, 2, n_fft, n_hop, nb_frames)
    masks = np.random.default_rng(8).uniform(0, 1.2, (4,) + mix.shape).astype(np.float32)
    spec = np.swapaxes(masks * (real + 1j * imag), -1, -2)  # (S, N, C, bins, T)
    length = target_time.shape[-1]
    ours = transforms.istft(spec, n_fft, n_hop, center=True, length=length)
    flat = spec.reshape(-1, n_fft // 2 + 1, nb_frames)
    stock = F.istft(nn.Variable.from_numpy_array(flat.real.astype(np.float32)),
                    nn.Variable.from_numpy_array(flat.imag.astype(np.float32)), n_fft, n_hop, n_fft,
                    window_type="hanning", center=True, pad_mode="constant")
    stock.forward()
    assert stock.shape[-1] == length
    assert_close(stock.d.reshape(ours.shape), ours, 1e-5, "F.istft")
    # the constant normalisation: edges rescaled by env / constant
    window = transforms.hann_window(n_fft)
    env = transforms._envelope(window, nb_frames, n_hop)[n_fft // 2:n_fft // 2 + length]
    constant = ours * (env / env[len(env) // 2])
    edge = np.abs(env / env[len(env) // 2] - 1) > 1e-6
    assert edge[:n_fft // 2].any() and edge[-n_fft // 2:].any() and not edge[n_fft // 2:-n_fft // 2].any()
    targets = np.moveaxis(target_time, 1, 0)
    rows = (targets.reshape(4, -1, length),)
    gram_ours = losses.signals_gram(ours.reshape(4, -1, length), *rows)
    gram_constant = losses.signals_gram(constant.reshape(4, -1, length).astype(np.float32), *rows)
    l_ours, l_constant = losses.combination_sdr(gram_ours), losses.combination_sdr(gram_constant)
    assert 1e-4 < abs(l_constant - l_ours) / abs(l_ours) < 0.1
