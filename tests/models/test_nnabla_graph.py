"""unmix.models.nnabla_graph: shapes, parameter layout, training vs inference graph, folders."""
import json

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from conftest import perturbed
from unmix.errors import UnmixError
from unmix.models.nnabla_graph import (CrossNet, ModelConfig, OpenUnmix, _run, load_crossnet, load_target, param_shapes,
                         read_separator_json, save_target, write_separator_json)

pytestmark = pytest.mark.nnabla


def perturbed_model(config, seed=1):
    """An OpenUnmix whose every parameter is random (see conftest.perturbed)."""
    return OpenUnmix(config, perturbed(config, seed))


TINY = ModelConfig(nb_bins=33, nb_channels=2, hidden_size=8, nb_layers=3, max_bin=20)


def test_parameter_layout_matches_reference():
    shapes = param_shapes(TINY)
    assert shapes["fc1/affine/W"] == (2 * 20, 8)  # nb_channels * max_bin -> hidden
    assert shapes["lstm/lstm/weight_l0"] == (2, 4, 4, 8 + 4)  # bidirectional: hidden // 2 per direction
    assert shapes["lstm/lstm/weight"] == (2, 2, 4, 4, 2 * 4 + 4)
    assert shapes["lstm/lstm/bias"] == (3, 2, 4, 4)
    assert shapes["bn1/bn/mean"] == (1, 8) and shapes["bn3/bn/var"] == (1, 2 * 33)
    assert not any(k.endswith("/affine/b") for k in shapes), "fc layers have no bias"
    uni = param_shapes(ModelConfig(nb_bins=33, hidden_size=8, nb_layers=1, unidirectional=True))
    assert uni["lstm/lstm/weight_l0"] == (1, 4, 8, 16) and "lstm/lstm/weight" not in uni


def test_umxhq_size_parameter_count():
    # open-unmix-pytorch umxhq: 8.9 M parameters per target (torch counts separate b_ih and b_hh)
    config = ModelConfig(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487)
    shapes = param_shapes(config)
    ours = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(("/mean", "/var")))
    torch_bias_extra = int(np.prod(shapes["lstm/lstm/bias"]))
    assert ours + torch_bias_extra == pytest.approx(8.9e6, rel=0.01)


@pytest.mark.parametrize("config", [TINY, ModelConfig(nb_bins=33, nb_channels=1, hidden_size=8, nb_layers=2),
                                    ModelConfig(nb_bins=33, hidden_size=8, nb_layers=1, unidirectional=True)])
@pytest.mark.parametrize("nb_frames", [1, 5])
def test_inference_shape_and_mask(config, nb_frames):
    model = perturbed_model(config)
    mix = np.random.default_rng(0).uniform(0, 1, (2, config.nb_channels, 33, nb_frames)).astype(np.float32)
    out = model(mix)
    assert out.shape == mix.shape and out.dtype == np.float32
    assert np.all(out >= 0) and np.all(np.isfinite(out))
    mix[..., 0] = 0  # the output is a non-negative mask times the mixture
    assert np.all(model(mix)[..., 0] == 0)


def test_unidirectional_is_causal():
    config = ModelConfig(nb_bins=33, nb_channels=2, hidden_size=8, nb_layers=2, unidirectional=True)
    model = perturbed_model(config)
    mix = np.random.default_rng(0).uniform(0, 1, (1, 2, 33, 6)).astype(np.float32)
    changed = mix.copy()
    changed[..., 4:] *= 3
    np.testing.assert_allclose(model(mix)[..., :4], model(changed)[..., :4], rtol=1e-6)
    bi = perturbed_model(TINY)
    assert not np.allclose(bi(mix)[..., :4], bi(changed)[..., :4])


def test_training_graph_uses_batch_stats_and_dropout():
    model = perturbed_model(TINY)
    mix = nn.Variable((3, 2, 33, 4))
    mix.d = np.random.default_rng(0).uniform(0, 1, mix.shape)
    infer = model.build(mix, training=False)
    infer.forward()
    before = model.get_params()
    train = model.build(mix, training=True)
    nn.seed(1)
    train.forward()
    first = train.d.copy()
    train.forward()
    assert not np.allclose(first, infer.d), "training uses batch statistics"
    assert not np.allclose(first, train.d), "dropout is active between LSTM layers in training"
    after = model.get_params()
    assert not np.allclose(before["bn1/bn/mean"], after["bn1/bn/mean"]), "running statistics update"
    np.testing.assert_array_equal(before["fc1/affine/W"], after["fc1/affine/W"])


def test_training_graph_backward_gives_finite_gradients():
    model = perturbed_model(TINY)
    mix = nn.Variable((2, 2, 33, 3))
    mix.d = np.random.default_rng(0).uniform(0, 1, mix.shape)
    mix.d[..., 0] = 0  # exact zeros must not produce NaN gradients (no F.mul_n)
    loss = nn.functions.mean(model.build(mix, training=True))
    params = model.trainable_parameters()
    for p in params.values():
        p.grad.zero()
    loss.forward()
    loss.backward()
    for name, p in params.items():
        assert np.all(np.isfinite(p.g)), name
    assert np.abs(params["lstm/lstm/weight_l0"].g).sum() > 0


def test_set_params_checks_names_and_shapes():
    model = OpenUnmix(TINY)
    params = model.get_params()
    with pytest.raises(UnmixError, match="missing"):
        model.set_params({k: v for k, v in params.items() if k != "input_mean"})
    params["fc1/affine/W"] = params["fc1/affine/W"].T
    with pytest.raises(UnmixError, match="fc1/affine/W"):
        model.set_params(params)


def test_folder_round_trip(tmp_path):
    model = perturbed_model(TINY)
    write_separator_json(tmp_path, {"vocals": TINY}, sample_rate=44100, n_fft=64, n_hop=16)
    save_target(tmp_path, "vocals", model, extra_json={"note": "tiny"})
    meta = read_separator_json(tmp_path)
    assert meta["targets"] == ["vocals"] and meta["n_fft"] == 64 and meta["nb_channels"] == 2
    assert json.loads((tmp_path / "vocals.json").read_text()) == {"note": "tiny"}
    loaded = load_target(tmp_path, "vocals")
    assert loaded.config == TINY
    for k, v in model.get_params().items():
        np.testing.assert_array_equal(loaded.get_params()[k], v)
    with pytest.raises(UnmixError, match="no target 'drums'"):
        load_target(tmp_path, "drums")
    assert not list(tmp_path.glob(".*part*")), "no temporary files left"


@pytest.mark.parametrize("config", [TINY, ModelConfig(nb_bins=33, hidden_size=8, nb_layers=2, unidirectional=True)])
def test_builtin_lstm_path_equals_step_by_step(config):
    """The GPU path runs NNabla's F.lstm (cuDNN) on the same parameters: checked here on the CPU."""
    model = perturbed_model(config)
    mix = np.random.default_rng(0).uniform(0, 1, (2, config.nb_channels, 33, 5)).astype(np.float32)
    builtin = OpenUnmix(config, model.get_params(), builtin_lstm=True)
    np.testing.assert_allclose(builtin(mix), model(mix), rtol=1e-5, atol=1e-6)


def test_use_gpu_without_cuda_extension_is_a_clear_error():
    pytest.importorskip("nnabla")
    try:
        import nnabla_ext.cuda  # noqa: F401
        pytest.skip("a CUDA extension is installed here")
    except ImportError:
        pass
    from unmix.models.nnabla_graph import use_gpu
    with pytest.raises(UnmixError, match="nnabla-ext-cuda"):
        use_gpu()


# -- X-UMX ----------------------------------------------------------------------------------------
SOURCES = ["bass", "drums", "vocals"]


def random_mix(config, nb_frames, nb_samples=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 2, (nb_samples, config.nb_channels, config.nb_bins, nb_frames)).astype(np.float32)


def test_crossnet_of_identical_branches_is_open_unmix():
    """With every source's branch the same, both bridges average equal features: each source's
    estimate is then exactly that branch run as an Open-Unmix model."""
    params = perturbed(TINY, seed=3)
    net = CrossNet(TINY, {s: params for s in SOURCES}, SOURCES)
    mix = random_mix(TINY, 7)
    ref = OpenUnmix(TINY, params)(mix)
    assert (ref > 0).mean() > 0.2
    for source, estimate in net(mix).items():
        np.testing.assert_allclose(estimate, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max(), err_msg=source)


def test_crossnet_bridges_are_means_over_the_sources():
    params = {s: perturbed(TINY, seed=i + 1) for i, s in enumerate(SOURCES)}
    net = CrossNet(TINY, params, SOURCES)
    mix = random_mix(TINY, 5)
    branches = {s: OpenUnmix(TINY, params[s]) for s in SOURCES}
    c1 = np.mean([b.encode(mix) for b in branches.values()], axis=0)
    np.testing.assert_allclose(net.encode(mix), c1, rtol=1e-6, atol=1e-6)
    lstm = np.mean([_run(lambda v, b=b: b.build_recurrence(v[0]), c1) for b in branches.values()], axis=0)
    c2 = net.recur(c1)
    assert c2.shape == (5, 2, 2 * TINY.hidden_size)
    np.testing.assert_allclose(c2, np.concatenate([c1, lstm], axis=2), rtol=1e-5, atol=1e-6)
    vocals = branches["vocals"].decode(_run(lambda v: branches["vocals"].build_fc2(v[0]), c2), mix)
    np.testing.assert_allclose(net.decode(c2, mix, "vocals"), vocals, rtol=1e-5, atol=1e-6)
    assert set(net.get_params()) == set(SOURCES) and net.nb_parameters() == 3 * branches["bass"].nb_parameters()


def test_crossnet_training_graph_runs_batch_statistics_and_dropout():
    net = CrossNet(TINY, {s: perturbed(TINY, seed=i + 1) for i, s in enumerate(SOURCES)}, SOURCES)
    mix = nn.Variable.from_numpy_array(random_mix(TINY, 6))
    out = net.build(mix, training=True)
    loss = sum(F.mean(F.squared_error(v, mix)) for v in out.values())
    loss.forward()
    loss.backward()
    grads = {s: net.nets[s].parameters["fc1/affine/W"].g for s in SOURCES}
    assert all(np.abs(g).max() > 0 for g in grads.values())  # each branch learns through the bridges


def test_load_crossnet_from_a_folder(tmp_path):
    from conftest import make_xumx_folder

    folder = make_xumx_folder(tmp_path / "x", sources=SOURCES)
    net = load_crossnet(folder)
    assert net.sources == SOURCES and net.config.hidden_size == 8
    mag = random_mix(net.config, 4, nb_samples=1)
    assert {s: v.shape for s, v in net(mag).items()} == {s: mag.shape for s in SOURCES}
