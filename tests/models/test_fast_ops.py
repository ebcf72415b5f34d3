"""unmix.models.fast_ops against the stock NNabla graph they replace: outputs, running statistics and
gradients, on tiny shapes and on the shapes of a umxhq training step."""
import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from unmix.models import fast_ops
from unmix.models.nnabla_graph import BN_DECAY, BN_EPS, _lstm_layer

pytestmark = pytest.mark.nnabla

RNG = np.random.default_rng(0)


def variable(array, need_grad=True):
    return nn.Variable.from_numpy_array(np.asarray(array, np.float32), need_grad=need_grad)


def run(build, inputs, seed=0):
    """Forward `build(*variables)` and backward a random output gradient; returns the output and
    the input gradients (None where an input needs none)."""
    variables = [variable(a, need_grad=g) for a, g in inputs]
    with nn.auto_forward(False):
        out = build(*variables)
    for v in variables:
        v.grad.zero()
    out.forward()
    out.backward(np.random.default_rng(seed).normal(size=out.shape).astype(np.float32) if out.shape else 1.0)
    return out.d.copy(), [v.g.copy() if g else None for v, (_, g) in zip(variables, inputs)], variables


def assert_close(got, ref, rtol, what=""):
    scale = max(np.abs(ref).max(), 1e-30)
    assert np.abs(got - ref).max() <= rtol * scale, f"{what}: {np.abs(got - ref).max() / scale:.2e}"


def check(fast, stock, inputs, rtol):
    out_f, grads_f, vars_f = run(fast, inputs)
    out_s, grads_s, vars_s = run(stock, inputs)
    assert out_f.shape == out_s.shape
    assert_close(out_f, out_s, rtol, "output")
    for i, (gf, gs) in enumerate(zip(grads_f, grads_s)):
        if gs is not None:
            assert_close(gf, gs, rtol, f"gradient of input {i}")
    return vars_f, vars_s


# -- shapes: (rows, features) etc. tiny, then a umxhq step (batch 16 x 255 frames) ----------------------
AFFINE = [(7, 5, 3), (16 * 255, 512, 2 * 2049)]
LSTM = [(6, 3, 5, 4, 2), (5, 2, 3, 4, 1), (255, 16, 512, 256, 2)]  # T, B, I, H, D
SPECTRA = [(2, 2, 9, 6, 7, 4), (16, 2, 2049, 255, 1487, 512)]  # N, C, bins, T, max_bin, s


@pytest.mark.parametrize("rows,inputs,outputs", AFFINE)
def test_affine(rows, inputs, outputs):
    x, w = RNG.normal(size=(rows, inputs)), RNG.normal(size=(inputs, outputs)) / np.sqrt(inputs)
    check(fast_ops.affine, lambda x, w: F.affine(x, w), [(x, True), (w, True)], 2e-5)


@pytest.mark.parametrize("nb_samples,nb_channels,nb_bins,nb_frames,max_bin,hidden", SPECTRA)
def test_scaled_affine(nb_samples, nb_channels, nb_bins, nb_frames, max_bin, hidden):
    mix = RNG.uniform(0, 3, (nb_samples, nb_channels, nb_frames, nb_bins))
    mean, scale = -RNG.uniform(0, 1, max_bin), RNG.uniform(0.5, 2, max_bin)
    w = RNG.normal(size=(nb_channels * max_bin, hidden)) / np.sqrt(nb_channels * max_bin)

    def stock(mix, mean, scale, w):  # as OpenUnmix.build_encoder, from the frames-first layout
        x = F.slice(mix, stop=(nb_samples, nb_channels, nb_frames, max_bin))
        x = F.transpose(x, (2, 0, 1, 3))
        x = (x + F.reshape(mean, (1, 1, 1, max_bin))) * F.reshape(scale, (1, 1, 1, max_bin))
        return F.affine(F.reshape(x, (nb_frames * nb_samples, nb_channels * max_bin)), w)

    inputs = [(mix, False), (mean, True), (scale, True), (w, True)]
    check(lambda m, a, s, w: fast_ops.scaled_affine(m, a, s, w, max_bin), stock, inputs, 5e-5)


@pytest.mark.parametrize("rows,features", [(12, 5), (16 * 255, 2 * 2049)])
def test_batch_norm_and_running_statistics(rows, features):
    x = RNG.normal(1.0, 2.0, (rows, features))
    beta, gamma = RNG.normal(size=(1, features)), RNG.uniform(0.5, 1.5, (1, features))
    mean, var = RNG.normal(size=(1, features)), RNG.uniform(0.5, 1.5, (1, features))
    inputs = [(x, True), (beta, True), (gamma, True), (mean, False), (var, False)]
    vars_f, vars_s = check(lambda *v: fast_ops.batch_norm(*v, decay_rate=BN_DECAY, eps=BN_EPS),
                           lambda *v: F.batch_normalization(*v, axes=[1], decay_rate=BN_DECAY, eps=BN_EPS,
                                                            batch_stat=True), inputs, 5e-5)
    for k in (3, 4):  # running mean and (unbiased) variance, updated in place as NNabla does
        assert_close(vars_f[k].d, vars_s[k].d, 5e-6, "running statistics")  # NNabla sums in float32
    unbiased = x.var(axis=0, ddof=1)
    np.testing.assert_allclose(vars_f[3].d[0], BN_DECAY * mean[0] + (1 - BN_DECAY) * x.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(vars_f[4].d[0], BN_DECAY * var[0] + (1 - BN_DECAY) * unbiased, rtol=1e-6)


@pytest.mark.parametrize("nb_frames,nb_samples,nb_inputs,hidden,directions", LSTM)
def test_lstm_layer(nb_frames, nb_samples, nb_inputs, hidden, directions):
    x = RNG.normal(size=(nb_frames, nb_samples, nb_inputs))
    bound = 1 / np.sqrt(hidden)
    w = RNG.uniform(-bound, bound, (directions, 4, hidden, nb_inputs + hidden))
    b = RNG.uniform(-bound, bound, (directions, 4, hidden))
    inputs = [(x, True), (w, True), (b, True)]
    check(fast_ops.lstm_layer, lambda x, w, b: _lstm_layer(x, w, b, hidden), inputs, 2e-5)


@pytest.mark.parametrize("nb_samples,nb_channels,nb_bins,nb_frames,_max_bin,_hidden", SPECTRA)
def test_mask_mse(nb_samples, nb_channels, nb_bins, nb_frames, _max_bin, _hidden):
    z = RNG.normal(size=(nb_frames * nb_samples, nb_channels * nb_bins))
    scale, mean = RNG.uniform(0.5, 2, nb_bins), RNG.normal(0.2, 0.5, nb_bins)
    mix = RNG.uniform(0, 3, (nb_samples, nb_channels, nb_frames, nb_bins))
    y = mix * RNG.uniform(0, 1, mix.shape)

    def stock(z, scale, mean, mix, y):  # as OpenUnmix.build_decoder (frames first), then the loss
        x = F.reshape(z, (nb_frames, nb_samples, nb_channels, nb_bins))
        x = x * F.reshape(scale, (1, 1, 1, nb_bins)) + F.reshape(mean, (1, 1, 1, nb_bins))
        return F.mean(F.squared_error(F.relu(F.transpose(x, (1, 2, 0, 3))) * mix, y))

    inputs = [(z, True), (scale, True), (mean, True), (mix, False), (y, False)]
    # NNabla's F.mean sums 16.7 M float32 values in float32 (0.1% off): compare with float64
    out, grads, _ = run(fast_ops.mask_mse, inputs)
    pre = (z.reshape(nb_frames, nb_samples, nb_channels, nb_bins) * scale + mean).transpose(1, 2, 0, 3)
    np.testing.assert_allclose(out, np.mean((np.maximum(pre, 0) * mix - y) ** 2), rtol=1e-6)
    if z.size < 1e6:
        check(fast_ops.mask_mse, stock, inputs, 5e-5)
    else:
        du = 2 * (np.maximum(pre, 0) * mix - y) * mix * (pre > 0) / pre.size
        assert_close(grads[1], np.einsum("nctk,tnck->k", du, z.reshape(nb_frames, nb_samples, nb_channels, nb_bins)),
                     1e-5, "output_scale")
        assert_close(grads[2], du.sum(axis=(0, 1, 2)), 1e-5, "output_mean")
        assert_close(grads[0], (du * scale).transpose(2, 0, 1, 3).reshape(z.shape), 1e-5, "z")


def test_gradients_accumulate_where_a_variable_is_used_twice():
    x, w = RNG.normal(size=(4, 3)), RNG.normal(size=(3, 2))
    _, (gx, gw), _ = run(lambda x, w: fast_ops.affine(x, w) + fast_ops.affine(x, w), [(x, True), (w, True)])
    _, (gx1, gw1), _ = run(lambda x, w: fast_ops.affine(x, w), [(x, True), (w, True)])
    np.testing.assert_allclose(gx, 2 * gx1, rtol=1e-6)
    np.testing.assert_allclose(gw, 2 * gw1, rtol=1e-6)


def test_rational_tanh_and_sigmoid():
    x = np.linspace(-20, 20, 200001).astype(np.float32)
    tanh = np.array([fast_ops._tanh(v) for v in x[::100]])
    sigmoid = np.array([fast_ops._sigmoid(v) for v in x[::100]])
    assert np.abs(tanh - np.tanh(x[::100].astype(np.float64))).max() < 5e-7
    assert np.abs(sigmoid - 1 / (1 + np.exp(-x[::100].astype(np.float64)))).max() < 5e-7
