"""The X-UMX loss ops of unmix.models.fast_ops (mask, combination MSE, masked ISTFT, combination SDR) against
the stock NNabla graph of the same formulas (Sony's x-umx/loss.py written with F functions), the
numpy ISTFT, F.istft and the float64 formulas of tests/test_losses.py."""
import itertools

import nnabla.functions as F
import numpy as np
import pytest
from test_losses import ref_loss
from test_fast_ops import assert_close, check, variable

from unmix.models import fast_ops
from unmix.dsp import transforms

pytestmark = pytest.mark.nnabla

RNG = np.random.default_rng(5)
COMBOS = [c for k in (1, 2, 3) for c in itertools.combinations(range(4), k)]


def _sum(variables):
    total = variables[0]
    for v in variables[1:]:
        total = total + v
    return total


def stock_mse(mix, y, *masks):
    """Sony's mse_loss: the mean of the 14 combinations' MSE, stock functions."""
    nb_samples, nb_sources = y.shape[:2]
    ys = [F.reshape(F.slice(y, (0, s, 0, 0, 0), (nb_samples, s + 1) + y.shape[2:]), mix.shape) for s in range(4)]
    return _sum([F.mean(F.squared_error(_sum([masks[i] for i in c]) * mix, _sum([ys[i] for i in c])))
                 for c in COMBOS]) / 14.0


def stock_sdr(y, *est, eps=1e-10):
    """Sony's sdr_loss / sdr_loss_core on (N, S, C, L) targets and (N, C, L) estimates."""
    nb_samples, _, nb_channels, length = y.shape
    ys = [F.reshape(F.slice(y, (0, s, 0, 0), (nb_samples, s + 1, nb_channels, length)), (-1, length)) for s in range(4)]
    est = [F.reshape(e, (-1, length)) for e in est]
    mix = _sum(ys)
    terms = []
    for c in COMBOS:
        yh, gt = _sum([est[i] for i in c]), _sum([ys[i] for i in c])
        ns, ns_hat = mix - gt, mix - yh

        def total(a, b):
            return F.sum(a * b, 1, keepdims=True)

        alpha = total(gt, gt) / (total(gt, gt) + total(ns, ns) + eps)
        cln = total(yh, gt) / ((eps + total(yh, yh)) ** 0.5 * (eps + total(gt, gt)) ** 0.5 + eps)
        noise = total(ns, ns_hat) / ((eps + total(ns_hat, ns_hat)) ** 0.5 * (eps + total(ns, ns)) ** 0.5 + eps)
        terms.append(-alpha * cln - (1.0 - alpha) * noise)
    return 1.0 + F.mean(F.concatenate(*terms, axis=0))


@pytest.mark.parametrize("nb_samples,nb_channels,nb_frames,nb_bins", [(2, 2, 5, 7), (3, 1, 4, 9)])
def test_spectrogram_mask_matches_stock(nb_samples, nb_channels, nb_frames, nb_bins):
    z = RNG.normal(size=(nb_frames * nb_samples, nb_channels * nb_bins))
    scale, mean = RNG.normal(size=nb_bins), RNG.normal(size=nb_bins)

    def stock(z, scale, mean):
        x = F.reshape(z, (nb_frames, nb_samples, nb_channels, nb_bins))
        x = x * F.reshape(scale, (1, 1, 1, nb_bins)) + F.reshape(mean, (1, 1, 1, nb_bins))
        return F.transpose(F.relu(x), (1, 2, 0, 3))

    check(lambda z, s, m: fast_ops.spectrogram_mask(z, s, m, nb_samples), stock, [(z, True), (scale, True), (mean, True)],
          1e-5)


def test_combination_mse_matches_stock_and_formula():
    shape = (2, 2, 6, 9)
    mix, y = RNG.random(shape), RNG.random((2, 4) + shape[1:])
    masks = [(RNG.random(shape) * 1.5, True) for _ in range(4)]
    inputs = [(mix, False), (y, False)] + masks
    vars_f, _ = check(fast_ops.combination_mse, stock_mse, inputs, 1e-5)
    loss = fast_ops.combination_mse(*vars_f)
    loss.forward()
    est = np.stack([m[0] * mix for m in masks])
    want = ref_loss(est, np.moveaxis(y, 1, 0), np.ones((4, 1, 1, 2)), np.ones((4, 1, 1, 2)))[1]
    np.testing.assert_allclose(float(loss.d), want, rtol=1e-6)


def test_combination_sdr_matches_stock_and_formula():
    y = RNG.normal(size=(2, 4, 2, 50))
    est = [(y[:, s] + 0.7 * RNG.normal(size=(2, 2, 50)), True) for s in range(4)]
    vars_f, _ = check(fast_ops.combination_sdr, stock_sdr, [(y, False)] + est, 2e-5)
    loss = fast_ops.combination_sdr(*vars_f)
    loss.forward()
    want = ref_loss(np.zeros((4, 1)), np.zeros((4, 1)), np.stack([e[0] for e in est]), np.moveaxis(y, 1, 0))[2]
    np.testing.assert_allclose(float(loss.d), want, rtol=1e-6)


def _spectrum(shape, n_fft, n_hop):
    """The STFT (center=True, frames first) of random audio, as real and imaginary parts."""
    nb_samples, nb_channels, nb_frames = shape
    audio = RNG.normal(size=(nb_samples, nb_channels, (nb_frames - 1) * n_hop)).astype(np.float32)
    spec = transforms.stft(audio, n_fft, n_hop, center=True, frames_first=True)
    return spec.real, spec.imag


@pytest.mark.parametrize("n_fft,n_hop,nb_frames", [(16, 4, 16), (32, 8, 12), (4096, 1024, 12)])
def test_masked_istft_forward(n_fft, n_hop, nb_frames):
    re, im = _spectrum((2, 2, nb_frames), n_fft, n_hop)
    mask = RNG.random(re.shape).astype(np.float32)
    out = fast_ops.masked_istft(variable(mask), variable(re), variable(im), n_fft, n_hop)
    out.forward()
    spec = np.swapaxes(mask * (re + 1j * im), -1, -2)
    want = transforms.istft(spec, n_fft, n_hop, center=True, length=(nb_frames - 1) * n_hop)
    assert out.shape == want.shape
    assert_close(out.d, want, 1e-5, "numpy istft")
    # NNabla's F.istft agrees everywhere, edges included (it divides by the window envelope too)
    stock = F.istft(variable(np.swapaxes(mask * re, -1, -2).reshape(-1, n_fft // 2 + 1, nb_frames)),
                    variable(np.swapaxes(mask * im, -1, -2).reshape(-1, n_fft // 2 + 1, nb_frames)),
                    n_fft, n_hop, n_fft, window_type="hanning", center=True, pad_mode="constant")
    stock.forward()
    assert stock.shape[-1] == out.shape[-1]
    assert_close(out.d.reshape(-1, out.shape[-1]), stock.d, 1e-5, "F.istft")


@pytest.mark.parametrize("n_fft,n_hop,nb_frames", [(16, 4, 6), (8, 4, 3), (4096, 1024, 8)])
def test_masked_istft_gradient_is_the_adjoint(n_fft, n_hop, nb_frames):
    # the output is linear in the mask: d<y, g>/d mask[i] = <ISTFT(X e_i), g> for every index i
    re, im = _spectrum((1, 2, nb_frames), n_fft, n_hop)
    mask_v, re_v, im_v = variable(np.zeros_like(re)), variable(re, False), variable(im, False)
    out = fast_ops.masked_istft(mask_v, re_v, im_v, n_fft, n_hop)
    g = RNG.normal(size=out.shape).astype(np.float32)
    mask_v.grad.zero()
    out.forward()
    out.backward(g)
    grad = mask_v.g.copy()
    indices = list(np.ndindex(re.shape)) if re.size < 300 else [tuple(RNG.integers(0, n) for n in re.shape)
                                                                 for _ in range(40)]
    indices += [(0, 1, 1, 0), (0, 0, nb_frames - 1, n_fft // 2)]  # DC and Nyquist
    want = []
    for index in indices:
        one_hot = np.zeros_like(re)
        one_hot[index] = 1.0
        mask_v.d = one_hot
        out.forward()
        want.append(np.sum(out.d.astype(np.float64) * g))
    assert_close(np.array([grad[i] for i in indices]), np.array(want), 1e-5, "adjoint")
