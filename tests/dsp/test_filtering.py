"""Wiener filter: parity with openunmix 1.3 (fixtures) and norbert, shapes, sums, bad values."""
from pathlib import Path

import numpy as np
import pytest

from unmix.errors import UnmixError
from unmix.dsp.filtering import expectation_maximization, get_local_gaussian_model, wiener, wiener_planar, wiener_windowed
from conftest import FIXTURES

REFERENCE_FILE = FIXTURES / "wiener_reference.npz"
MIN_SNR_DB = 60.0


def snr_db(reference, estimate):
    """Reference energy over error energy, in dB (inf when identical)."""
    reference = reference.astype(np.complex128)
    error = np.sum(np.abs(reference - estimate) ** 2)
    return np.inf if error == 0 else 10 * np.log10(np.sum(np.abs(reference) ** 2) / error)


def random_input(rng, nb_frames=16, nb_bins=9, nb_channels=2, nb_sources=3, scale=30.0, low=0.0):
    """Magnitudes in [low, 1] * scale * 2 and a complex normal mixture of std ~ scale."""
    targets = scale * 2 * rng.uniform(low, 1.0, (nb_frames, nb_bins, nb_channels, nb_sources))
    shape = (nb_frames, nb_bins, nb_channels)
    mix = scale * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return targets.astype(np.float32), mix.astype(np.complex64)


def _fixture_cases():
    keys = np.load(REFERENCE_FILE).files
    return [k for k in keys if not k.endswith(("/targets", "/mix"))]


def _parse_case(key):
    """'stereo/niter1_softmask0_residual1_win10' -> (input, niter, softmask, residual, win)."""
    name, case = key.split("/")
    fields = dict((f.rstrip("0123456789"), int(f[len(f.rstrip("0123456789")):])) for f in case.split("_"))
    return name, fields["niter"], bool(fields["softmask"]), bool(fields["residual"]), fields.get("win")


def test_fixture_covers_the_grid():
    cases = [_parse_case(k) for k in _fixture_cases()]
    assert {c[1] for c in cases} == {0, 1, 2}
    assert {(c[2], c[3]) for c in cases if c[0] == "stereo"} == {(s, r) for s in (0, 1) for r in (0, 1)}
    assert {c[0] for c in cases} == {"stereo", "mono", "broadcast"}
    assert any(c[4] for c in cases)


@pytest.mark.parametrize("key", _fixture_cases())
def test_matches_openunmix_reference(key):
    data = np.load(REFERENCE_FILE)
    name, niter, softmask, residual, win = _parse_case(key)
    targets, mix, expected = data[f"{name}/targets"], data[f"{name}/mix"], data[key]
    if win:
        assert win < mix.shape[0]
        estimate = wiener_windowed(targets, mix, niter, softmask, residual, wiener_win_len=win)
    else:
        estimate = wiener(targets, mix, niter, softmask=softmask, residual=residual)
    assert estimate.shape == expected.shape and estimate.dtype == np.complex64
    assert snr_db(expected, estimate) >= MIN_SNR_DB


def _norbert_reference(targets, mix, niter, softmask, residual):
    """norbert's wiener (same EM; it hard-codes scale 10 and mutates x) in float32, eps 1e-10."""
    norbert = pytest.importorskip("norbert")
    eps = 1e-10
    if not residual:
        return norbert.wiener(targets.copy(), mix.copy(), niter, use_softmask=softmask, eps=eps)
    # norbert has no residual option: build the same initial estimates, then its EM
    if softmask:
        y = norbert.softmask(targets, mix, eps=eps)
    else:
        y = targets * np.exp(1j * np.angle(mix[..., None]))
    y = np.concatenate([y, (mix - y.sum(-1))[..., None]], axis=-1).astype(np.complex64)
    if niter == 0:
        return y
    max_abs = max(1.0, np.abs(mix).max() / 10.0)
    return norbert.expectation_maximization(y / max_abs, mix / max_abs, niter, eps=eps)[0] * max_abs


@pytest.mark.parametrize("nb_channels", [1, 2])
@pytest.mark.parametrize("niter", [0, 1, 2])
@pytest.mark.parametrize("softmask,residual", [(False, False), (True, False), (False, True)])
def test_matches_norbert(nb_channels, niter, softmask, residual):
    rng = np.random.default_rng(nb_channels * 10 + niter)
    targets, mix = random_input(rng, nb_channels=nb_channels)
    expected = _norbert_reference(targets, mix, niter, softmask, residual)
    estimate = wiener(targets, mix, niter, softmask=softmask, residual=residual)
    # norbert adds eps to 1x1 inverses and keeps v in float64: float32-rounding differences only
    assert snr_db(expected, estimate) >= MIN_SNR_DB


def test_scale_factor_normalisation():
    # with the loudest mix bin brought to scale_factor, the filter is scale equivariant
    rng = np.random.default_rng(3)
    targets, mix = random_input(rng)
    y = wiener(targets, mix, 1)
    assert snr_db(1000 * y, wiener(1000 * targets, 1000 * mix, 1)) >= MIN_SNR_DB
    # without it, sqrt(eps) weighs differently: quiet models against a loud mix lose energy
    quiet = targets * 1e-4
    normalised = wiener(quiet, mix, 1)
    unnormalised = wiener(quiet, mix, 1, scale_factor=1e9)
    assert snr_db(normalised, unnormalised) < 20
    assert np.sum(np.abs(normalised) ** 2) < 0.5 * np.sum(np.abs(unnormalised) ** 2)


@pytest.mark.parametrize("nb_channels", [1, 2])
@pytest.mark.parametrize("nb_sources", [1, 2, 3, 4])
@pytest.mark.parametrize("niter", [0, 1, 2])
@pytest.mark.parametrize("softmask", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_shapes_dtypes_and_sum_over_sources(nb_channels, nb_sources, niter, softmask, residual):
    rng = np.random.default_rng(nb_channels + 10 * nb_sources + 100 * niter)
    targets, mix = random_input(rng, nb_frames=12, nb_bins=7, nb_channels=nb_channels,
                                nb_sources=nb_sources, low=0.2)
    y = wiener(targets, mix, niter, softmask=softmask, residual=residual)
    assert y.shape == (12, 7, nb_channels, nb_sources + residual)
    assert y.dtype == np.complex64
    assert np.all(np.isfinite(y))
    total = y.sum(axis=-1)
    if niter == 0 and not softmask and not residual:
        # magnitudes with the mixture phase: the sum has the mix phase, not its modulus
        expected = targets.sum(axis=-1) * mix / np.abs(mix)
        np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-4)
        assert snr_db(mix, total) < 20
    else:
        # a residual completes the mix exactly; a ratio mask sums to S / (eps + S) = 1;
        # EM gives sum_j v_j R_j Cxx^-1 x = x - sqrt(eps) Cxx^-1 x
        assert snr_db(mix, total) >= MIN_SNR_DB


def test_mixture_phase_estimates_keep_target_magnitudes():
    rng = np.random.default_rng(5)
    targets, mix = random_input(rng)
    y = wiener(targets, mix, 0)
    np.testing.assert_allclose(np.abs(y), targets, rtol=1e-5)
    np.testing.assert_allclose(np.angle(y[..., 1]), np.angle(mix), atol=1e-5)


@pytest.mark.parametrize("nb_channels", [1, 2])
@pytest.mark.parametrize("niter", [0, 1, 2])
@pytest.mark.parametrize("softmask", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_silence_gives_zeros_not_nan(nb_channels, niter, softmask, residual):
    targets = np.zeros((10, 5, nb_channels, 2), np.float32)
    mix = np.zeros((10, 5, nb_channels), np.complex64)
    y = wiener_windowed(targets, mix, niter, softmask, residual, wiener_win_len=4)
    assert y.shape == (10, 5, nb_channels, 2 + residual)
    assert np.all(y == 0)


@pytest.mark.parametrize("niter", [1, 2])
def test_partly_silent_input_stays_finite(niter):
    rng = np.random.default_rng(11)
    targets, mix = random_input(rng, nb_frames=20)
    mix[:6] = 0  # silent intro
    targets[10:14] = 0  # the model hears nothing while the mix plays
    mix[:, 3] = 0  # one silent bin over the whole signal
    y = wiener_windowed(targets, mix, niter, False, True, wiener_win_len=8)
    assert np.all(np.isfinite(y))
    # EM filters the mixture: where it is silent every estimate is exactly silent
    assert np.all(y[:6] == 0) and np.all(y[:, 3] == 0)
    # where every model is silent, the targets get nothing and the residual gets the mix
    np.testing.assert_allclose(y[10:14, ..., :-1], 0, atol=1e-6)
    np.testing.assert_allclose(y[10:14, ..., -1], mix[10:14], rtol=1e-4, atol=1e-4)


def test_mono_in_stereo_is_stable():
    # identical channels make every spatial covariance singular: the 2x2 inverse
    # must not lose sqrt(eps) against large diagonal terms (NaN or zeros)
    rng = np.random.default_rng(2)
    targets, mix = random_input(rng, nb_channels=1, scale=300.0, low=0.1)
    targets2, mix2 = np.repeat(targets, 2, axis=2), np.repeat(mix, 2, axis=2)
    y2 = wiener(targets2, mix2, 2)
    assert np.all(np.isfinite(y2))
    np.testing.assert_allclose(y2[..., 0, :], y2[..., 1, :], rtol=1e-5, atol=1e-3)
    assert snr_db(mix2, y2.sum(-1)) >= MIN_SNR_DB
    # and it equals the mono filter of one channel
    assert snr_db(wiener(targets, mix, 2), y2[..., :1, :]) >= MIN_SNR_DB


def test_one_frame_windows_are_finite():
    rng = np.random.default_rng(4)
    targets, mix = random_input(rng, nb_frames=7)
    y = wiener_windowed(targets, mix, 2, True, False, wiener_win_len=1)
    assert np.all(np.isfinite(y))
    assert snr_db(mix, y.sum(-1)) >= MIN_SNR_DB


def test_windowed_equals_wiener_per_window():
    rng = np.random.default_rng(6)
    targets, mix = random_input(rng, nb_frames=23)
    y = wiener_windowed(targets, mix, 1, False, True, wiener_win_len=10)
    for start in (0, 10, 20):
        frames = slice(start, start + 10)
        np.testing.assert_array_equal(y[frames], wiener(targets[frames], mix[frames], 1, residual=True))
    whole = wiener(targets, mix, 1, residual=True)
    for win in (None, 0, 23, 300):
        np.testing.assert_array_equal(wiener_windowed(targets, mix, 1, False, True, wiener_win_len=win), whole)
    assert snr_db(whole, y) < 60  # windows really change the spatial models


def test_targets_with_one_channel_broadcast_over_stereo():
    rng = np.random.default_rng(8)
    targets, mix = random_input(rng, nb_channels=2)
    mono_targets = targets[..., :1, :]
    y = wiener(mono_targets, mix, 1)
    np.testing.assert_array_equal(y, wiener(np.repeat(mono_targets, 2, axis=2), mix, 1))


def test_inputs_are_cast_and_not_modified():
    rng = np.random.default_rng(9)
    targets, mix = random_input(rng, nb_channels=1)
    targets64, mix128 = targets.astype(np.float64), mix.astype(np.complex128)
    before = mix128.copy(), targets64.copy()
    y = wiener(targets64, mix128, 2, residual=True)
    assert y.dtype == np.complex64
    np.testing.assert_array_equal(mix128, before[0])
    np.testing.assert_array_equal(targets64, before[1])
    assert snr_db(wiener(targets, mix, 2, residual=True), y) >= MIN_SNR_DB


def test_out_argument_is_filled_and_returned():
    rng = np.random.default_rng(10)
    targets, mix = random_input(rng)
    out = np.full(mix.shape + (4,), np.nan, np.complex64)
    result = wiener(targets, mix, 1, residual=True, out=out)
    assert result is out
    np.testing.assert_array_equal(out, wiener(targets, mix, 1, residual=True))
    with pytest.raises(ValueError):
        wiener(targets, mix, 1, out=out)  # 3 sources into a 4-source buffer


def test_bad_shapes_and_channel_counts():
    rng = np.random.default_rng(12)
    targets, mix = random_input(rng, nb_channels=2)
    with pytest.raises(ValueError):
        wiener(targets[:-1], mix, 1)
    with pytest.raises(ValueError):
        wiener(targets[..., 0], mix, 1)
    with pytest.raises(ValueError):
        wiener_windowed(targets, mix, 1, False, False, wiener_win_len=-3)
    targets3, mix3 = random_input(rng, nb_channels=3)
    with pytest.raises(UnmixError):
        wiener(targets3, mix3, 1)
    # without EM any channel count works
    assert wiener(targets3, mix3, 0, softmask=True).shape == mix3.shape + (3,)


def test_empty_signal():
    y = wiener_windowed(np.zeros((0, 5, 2, 2), np.float32), np.zeros((0, 5, 2), np.complex64), 1, False, True)
    assert y.shape == (0, 5, 2, 3)


def test_local_gaussian_model_and_em_outputs():
    rng = np.random.default_rng(13)
    y_j = (rng.standard_normal((2, 30, 5)) + 1j * rng.standard_normal((2, 30, 5))).astype(np.complex64)
    v_j, R_j = get_local_gaussian_model(y_j, eps=1e-10)
    np.testing.assert_allclose(v_j, np.mean(np.abs(y_j) ** 2, axis=0), rtol=1e-5)
    expected = np.einsum("atf,btf->abf", y_j, y_j.conj()) / np.sum(v_j, axis=0)
    np.testing.assert_allclose(R_j, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(R_j, np.conj(R_j.transpose(1, 0, 2)))  # Hermitian
    y = np.stack([y_j, 2 * y_j])
    x = y.sum(axis=0)
    _, v, R = expectation_maximization(y.copy(), x, iterations=1)
    assert v.shape == (2, 30, 5) and R.shape == (2, 2, 2, 5)
    np.testing.assert_allclose(v[1], 4 * v[0], rtol=1e-5)


@pytest.mark.parametrize("nb_channels", [1, 2])
@pytest.mark.parametrize("niter,softmask,residual", [(0, False, True), (1, False, False), (2, True, True)])
def test_planar_filter_is_the_same_on_any_number_of_threads(nb_channels, niter, softmask, residual):
    rng = np.random.default_rng(21)
    targets, mix = random_input(rng, nb_frames=150, nb_bins=33, nb_channels=nb_channels, nb_sources=3)
    planar_targets = np.ascontiguousarray(targets.transpose(3, 2, 0, 1))
    planar_mix = np.ascontiguousarray(mix.transpose(2, 0, 1))
    one = wiener_planar(planar_targets, planar_mix, niter, softmask, residual, workers=1)
    for workers in (2, 3):  # 150 frames: four blocks of 32 frames and one of 22
        np.testing.assert_array_equal(wiener_planar(planar_targets, planar_mix, niter, softmask, residual,
                                                    workers=workers), one)
    # and the planar layout is `wiener` transposed
    np.testing.assert_array_equal(one.transpose(2, 3, 1, 0), wiener(targets, mix, niter, softmask, residual))
    out = np.empty_like(one)
    assert wiener_planar(planar_targets, planar_mix, niter, softmask, residual, out=out) is out
    np.testing.assert_array_equal(out, one)


def test_planar_filter_refuses_a_negative_iteration_count():
    """No EM loop runs for niter < 0: the planar filter used to return its unfilled buffer."""
    rng = np.random.default_rng(3)
    targets, mix = random_input(rng, nb_channels=2)
    planar_targets = np.ascontiguousarray(targets.transpose(3, 2, 0, 1))  # (J, C, T, F)
    planar_mix = np.ascontiguousarray(mix.transpose(2, 0, 1))  # (C, T, F)
    for niter in (-1, -5):
        with pytest.raises(ValueError, match="iterations must be >= 0"):
            wiener_planar(planar_targets, planar_mix, niter)
