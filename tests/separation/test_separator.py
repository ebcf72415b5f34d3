"""unmix.separation.separator against open-unmix-pytorch's Separator (committed fixtures), and its contract.

The networks run in ONNX Runtime, as `unmix separate` runs them (no NNabla needed); the test
marked nnabla runs the same cases with the NNabla networks."""
from pathlib import Path

import numpy as np
import pytest

from unmix.weights.convert import state_dict_to_params
from unmix.errors import UnmixError
from unmix.models.model_folder import ModelConfig, init_params
from unmix.models.onnx_graph import OnnxModel
from unmix.separation.separator import Separator
from conftest import FIXTURES

REFERENCE = np.load(FIXTURES / "separator.npz")
N_FFT, N_HOP, RATE, WIN = REFERENCE["signal"]
TARGETS = ["vocals", "drums", "bass"]
CASES = {  # as in tools/fixtures/make_separator_fixtures.py: (niter, residual, softmask)
    "niter0": (0, False, False),
    "niter1": (1, False, False),
    "niter0_residual": (0, True, False),
    "niter1_residual": (1, True, False),
    "niter2_softmask": (2, False, True),
}


def reference_params():
    """target -> (ModelConfig, params) of the reference's random-weight models."""
    weights = {}
    for target in TARGETS:
        prefix = f"sd/{target}/"
        sd = {k[len(prefix):]: REFERENCE[k] for k in REFERENCE.files if k.startswith(prefix)}
        weights[target] = state_dict_to_params(sd)
    return weights


MODELS = {target: OnnxModel(weights, nb_threads=1) for target, weights in reference_params().items()}


def snr_db(ref, est):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref.astype(np.float64) - est) ** 2))


def make(niter=1, residual=None, softmask=False, win=int(WIN), models=MODELS):
    return Separator(models, RATE, int(N_FFT), int(N_HOP), niter=niter, softmask=softmask, residual=residual,
                     wiener_win_len=win)


@pytest.mark.parametrize("case", CASES)
def test_matches_reference_separator(case):
    check_case(case, MODELS)


@pytest.mark.nnabla
@pytest.mark.parametrize("case", ["niter1", "niter0_residual"])
def test_matches_reference_separator_with_nnabla_networks(case):
    from unmix.models.nnabla_graph import OpenUnmix

    check_case(case, {target: OpenUnmix(*weights) for target, weights in reference_params().items()})


def check_case(case, models):
    niter, residual, softmask = CASES[case]
    estimates = make(niter, "residual" if residual else None, softmask, models=models)(REFERENCE["audio"])
    expected = [k.split("/")[2] for k in REFERENCE.files if k.startswith(f"est/{case}/")]
    assert list(estimates) == expected
    for name, est in estimates.items():
        ref = REFERENCE[f"est/{case}/{name}"]
        assert est.shape == ref.shape and est.dtype == np.float32
        assert snr_db(ref, est) >= 60, name


@pytest.mark.parametrize("win", [1, 7, 10, 1000, None])
def test_window_length_only_changes_wiener_windows(win):
    """niter 0 has no cross-frame coupling in the filter: any window gives the same result."""
    audio = REFERENCE["audio"]
    ref = REFERENCE["est/niter0/vocals"]
    assert snr_db(ref, make(0, win=win)(audio)["vocals"]) >= 60


def test_layouts_lengths_and_rates():
    sep = make(niter=1)
    audio = REFERENCE["audio"][0]  # (nb_channels, nb_timesteps)
    est = sep.separate(audio, RATE)
    assert set(est) == set(TARGETS) and est["vocals"].shape == audio.shape
    batched = sep.separate(np.stack([audio, audio[::-1]]), RATE)
    assert batched["drums"].shape == (2,) + audio.shape
    np.testing.assert_allclose(batched["drums"][0], est["drums"], atol=1e-5)
    resampled = sep.separate(audio[:, :7001], 22050)  # resampled to the model's rate and back
    assert resampled["bass"].shape == (2, 7001)
    mono = sep.separate(audio[:1], RATE)  # mono in: duplicated for the stereo model, mono out
    assert mono["vocals"].shape == (1, audio.shape[1])


def test_mixture_is_recovered_with_residual():
    audio = REFERENCE["audio"]
    est = make(niter=1, residual="accompaniment")(audio)
    total = sum(est.values())
    assert snr_db(audio, total) > 40


def test_silence_gives_silence_not_nan():
    est = make(niter=1)(np.zeros((1, 2, 6000), np.float32))
    for value in est.values():
        assert np.all(np.isfinite(value)) and np.abs(value).max() == 0


@pytest.mark.parametrize("audio, message", [
    (np.zeros((1, 2, 100), np.float32), "too short"),
    (np.full((1, 2, 6000), np.nan, np.float32), "NaN"),
    (np.zeros((1, 3, 6000), np.float32), "expected audio"),
])
def test_bad_audio(audio, message):
    with pytest.raises(UnmixError, match=message):
        make()(audio)


def test_bad_configuration():
    with pytest.raises(UnmixError, match="two sources"):
        make(niter=1, models={"vocals": MODELS["vocals"]})
    with pytest.raises(UnmixError, match="already a target"):
        make(residual="drums")
    config = ModelConfig(nb_bins=513, nb_channels=1, hidden_size=8, nb_layers=1)
    mono = OnnxModel((config, init_params(config)), nb_threads=1)
    with pytest.raises(UnmixError, match="same number of channels"):
        make(models={"vocals": MODELS["vocals"], "mono": mono})


def test_result_does_not_depend_on_thread_count():
    audio = REFERENCE["audio"]
    one = Separator(MODELS, RATE, int(N_FFT), int(N_HOP), niter=1, wiener_win_len=int(WIN), nb_threads=1)(audio)
    two = Separator(MODELS, RATE, int(N_FFT), int(N_HOP), niter=1, wiener_win_len=int(WIN), nb_threads=2)(audio)
    for target in one:
        np.testing.assert_array_equal(one[target], two[target])


@pytest.mark.parametrize("nb_channels,niter,softmask,residual", [(2, 1, False, None), (1, 0, True, "rest"),
                                                                 (2, 3, False, "rest")])
def test_warm_up_runs_the_kernels_of_the_options(nb_channels, niter, softmask, residual):
    from unmix.separation.separator import warm_up_kernels

    from unmix.dsp import filtering
    from unmix.dsp import transforms

    warm_up_kernels(nb_channels, niter, softmask, residual)  # raises if a kernel does not compile
    used = [transforms._overlap_add_kernel]
    if niter == 0:
        used.append(filtering._estimates_kernel)
    else:
        separate = filtering._separate_mono_kernel if nb_channels == 1 else filtering._separate_stereo_kernel
        used += [filtering._initial_stats_kernel, separate] + ([filtering._stats_kernel] if niter > 1 else [])
    assert all(kernel.signatures for kernel in used)  # compiled (or loaded) for these types


def test_a_fork_waits_for_the_warm_up_thread(monkeypatch):
    import os
    import threading
    import time

    from unmix.separation import separator

    finished = []

    def slow_warm_up():
        time.sleep(0.5)  # like a first compile of the kernels
        finished.append(True)

    thread = threading.Thread(target=slow_warm_up, daemon=True)
    monkeypatch.setattr(separator, "_WARM_UPS", [thread])
    thread.start()
    pid = os.fork()
    if pid == 0:  # the child: nothing to do
        os._exit(0)
    os.waitpid(pid, 0)
    assert finished == [True]  # the fork happened after the warm-up ended


def test_api_layouts_mono_and_the_transposed_hint():
    sep = make(niter=1)
    audio = REFERENCE["audio"][0]  # (nb_channels, nb_timesteps)
    mono = sep.separate(audio[0], RATE)  # 1-D: mono, estimates 1-D
    assert mono["vocals"].shape == audio[0].shape
    np.testing.assert_array_equal(mono["vocals"], sep.separate(audio[:1], RATE)["vocals"][0])
    for wrong, fix in ((audio.T, "audio.T"), (audio[:1].T, "audio.T"), (np.stack([audio.T] * 2), "transpose")):
        with pytest.raises(UnmixError, match=r"probably \(nb_timesteps, nb_channels\).*" + fix):
            sep.separate(wrong, RATE)
    with pytest.raises(UnmixError, match="must be"):
        sep.separate(np.zeros((1, 1, 2, 6000), np.float32), RATE)


def test_api_dtypes_float_kept_integers_scaled():
    sep = make(niter=1)
    audio = np.clip(REFERENCE["audio"][0], -1, 1)
    ref = sep.separate(audio.astype(np.float32), RATE)["drums"]
    est64 = sep.separate(audio.astype(np.float64), RATE)["drums"]
    assert est64.dtype == np.float64
    np.testing.assert_array_equal(est64, ref)  # computed in float32, returned as float64
    assert sep.separate(audio.astype(np.float16), RATE)["drums"].dtype == np.float16
    pcm16 = np.round(audio * 32767).astype(np.int16)
    est16 = sep.separate(pcm16, RATE)["drums"]
    assert est16.dtype == np.float32
    np.testing.assert_array_equal(est16, sep.separate(pcm16.astype(np.float32) / 32768, RATE)["drums"])
    pcm8 = np.round(audio * 127 + 128).astype(np.uint8)  # 8-bit wav is unsigned, offset by 128
    np.testing.assert_array_equal(sep.separate(pcm8, RATE)["drums"],
                                  sep.separate((pcm8.astype(np.float32) - 128) / 128, RATE)["drums"])
    assert snr_db(ref, est16) > 30  # the same estimate as the float input, up to 16-bit quantisation
    with pytest.raises(UnmixError, match="not audio samples"):
        sep.separate(audio > 0, RATE)


def test_negative_niter_or_window_refused():
    with pytest.raises(UnmixError, match=">= 0"):
        make(niter=-1)
    with pytest.raises(UnmixError, match=">= 0"):
        make(win=-5)


def test_load_separator_adds_a_residual_to_a_single_target(tiny_model):
    from unmix.separation.separator import default_residual, load_separator

    assert load_separator(tiny_model, targets=["bass"]).targets == ["bass", "accompaniment"]
    assert load_separator(tiny_model, targets=["bass"], residual="rest").targets == ["bass", "rest"]
    assert load_separator(tiny_model, targets=["bass"], niter=0).targets == ["bass"]
    assert default_residual(["vocals", "drums"], 1) is None


# -- X-UMX: one network for several targets ------------------------------------------------------
XUMX_CASES = [(0, None, False), (1, None, False), (1, "residual", True)]


@pytest.fixture(scope="module")
def xumx_song():
    from conftest import tone

    rng = np.random.default_rng(4)
    return tone(1.0) + 0.05 * rng.standard_normal((2, 44100)).astype(np.float32)


@pytest.mark.parametrize("niter, residual, softmask", XUMX_CASES)
def test_xumx_windows_only_change_wiener_windows(tiny_xumx, xumx_song, niter, residual, softmask):
    """Encoders and decoders per window, LSTMs over the whole track: with niter 0 the estimates
    do not depend on the window length; with EM they are the reference's windowed Wiener filter."""
    from unmix.separation.separator import load_separator

    whole = load_separator(tiny_xumx, niter=0, wiener_win_len=None, nb_threads=1).separate(xumx_song, 44100)
    sep = load_separator(tiny_xumx, niter=niter, residual=residual, softmask=softmask, wiener_win_len=7, nb_threads=1)
    assert len({id(m) for m in sep.models.values()}) == 1 and len(sep.networks) == 1
    out = sep.separate(xumx_song, 44100)
    assert list(out) == ["bass", "drums", "vocals", "other"] + ([residual] if residual else [])
    for target, value in out.items():
        assert value.shape == xumx_song.shape and np.all(np.isfinite(value))
        if niter == 0:
            assert snr_db(whole[target], value) > 100, target
    if residual:  # the Wiener filter shares the mixture out (up to its regularisation)
        assert snr_db(xumx_song, sum(out.values())) > 30


@pytest.mark.nnabla
@pytest.mark.parametrize("niter, residual, softmask", XUMX_CASES)
def test_xumx_nnabla_networks_separate_like_onnx(tiny_xumx, xumx_song, niter, residual, softmask):
    from unmix.separation.separator import load_separator

    options = dict(targets=["vocals", "drums"], niter=niter, residual=residual, softmask=softmask, wiener_win_len=9,
                   nb_threads=1)
    ref = load_separator(tiny_xumx, backend="onnx", **options).separate(xumx_song, 44100)
    out = load_separator(tiny_xumx, backend="nnabla", **options).separate(xumx_song, 44100)
    assert list(out) == list(ref) == ["vocals", "drums"] + ([residual] if residual else [])
    for target, value in ref.items():
        assert snr_db(value, out[target]) > 80, target


def test_xumx_result_does_not_depend_on_thread_count(tiny_xumx, xumx_song):
    from unmix.separation.separator import load_separator

    one = load_separator(tiny_xumx, niter=1, nb_threads=1).separate(xumx_song, 44100)
    two = load_separator(tiny_xumx, niter=1, nb_threads=2).separate(xumx_song, 44100)
    for target, value in one.items():
        np.testing.assert_allclose(two[target], value, rtol=0, atol=1e-5)
