"""unmix trains the same X-UMX as asteroid's X-UMX recipe: the same loss, gradients and weights
after three Adam steps, from the same initial weights and batch (fixture of
tools/make_xumx_training_fixtures.py: asteroid 0.7's network and the recipe's own
``MultiDomainLoss``; LSTM dropout 0 there and here).

Each figure is compared with the reference's float32 run (max |diff| <= 1e-4 x max |ref|) and
with the same run in float64, against which unmix must be about as close as torch's float32 run is.
"""
import json

import numpy as np
import pytest

from conftest import FIXTURES
from unmix.models.nnabla_graph import CrossNet, ModelConfig
from unmix.training.views import xumx_arrays
from unmix.training.trainer import Trainer
from unmix.weights import convert

pytestmark = pytest.mark.nnabla

FIXTURE = FIXTURES / "training_xumx.npz"
BOUND = 1e-4


@pytest.fixture(scope="module")
def fixture():
    return np.load(FIXTURE)


def sources(f):
    return json.loads(str(f["args"]))["sources"]


def params(f, prefix, stats_from="sd0/"):
    """``<source>/<name>`` -> array from asteroid's tensors under `prefix` (running statistics from
    `stats_from`). For gradients, torch's two LSTM biases get the same gradient: keep one (the
    unmix bias is their sum)."""
    sd = {k[len(stats_from):]: f[k] for k in f.files if k.startswith(stats_from)}
    sd.update({k[len(prefix):]: f[k] for k in f.files if k.startswith(prefix)})
    if prefix.startswith("grad"):
        sd = {k: np.zeros_like(v) if ".bias_hh" in k else v for k, v in sd.items()}
    out = {}
    for source, part in convert.split_asteroid_xumx(sd, sources(f)).items():
        out.update({f"{source}/{k}": v for k, v in convert.state_dict_to_params(part)[1].items()})
    return out


def initial(f):
    """``(config, source -> name -> array)`` of the fixture's initial weights."""
    parts = convert.split_asteroid_xumx({k[4:]: f[k] for k in f.files if k.startswith("sd0/")}, sources(f))
    converted = {s: convert.state_dict_to_params(sd) for s, sd in parts.items()}
    return next(iter(converted.values()))[0], {s: p for s, (_, p) in converted.items()}


def bias_hh(f):
    """torch's ``b_hh`` halves of every branch's LSTM bias, in unmix's layout and names."""
    sd = {k[4:]: f[k] for k in f.files if k.startswith("sd0/")}
    sd.update({k.replace("_hh", "_ih"): np.zeros_like(v) for k, v in sd.items() if ".bias_hh" in k})
    return {k: v for k, v in params_from(sd, sources(f)).items() if k.endswith("lstm/lstm/bias")}


def params_from(sd, names):
    out = {}
    for source, part in convert.split_asteroid_xumx(sd, names).items():
        out.update({f"{source}/{k}": v for k, v in convert.state_dict_to_params(part)[1].items()})
    return out


def batch(f, n_fft, n_hop):
    """The five arrays of the training graph, batched (the loader's `xumx_arrays` per sample)."""
    per_sample = [xumx_arrays(x, y, n_fft, n_hop) for x, y in zip(f["mixture"], f["targets"])]
    return [np.stack([s[k] for s in per_sample]) for k in range(5)]


def relative(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def run(fixture):
    """unmix's fast CPU trainer on the fixture: first loss and gradients (no weight decay),
    three losses, final parameters."""
    f = fixture
    args = json.loads(str(f["args"]))
    config, weights = initial(f)
    assert config == ModelConfig(nb_bins=129, nb_channels=2, hidden_size=12, nb_layers=2, max_bin=100)
    arrays = batch(f, args["in_chan"], args["n_hop"])
    options = {"n_hop": args["n_hop"]}
    probe = Trainer(CrossNet(config, weights, sources(f)), lr=0.0, weight_decay=0.0, fast=True, dropout=0.0,
                    loss_options=options)
    probe.train_step(*arrays)
    grads = {k: v.g.copy() for k, v in probe.params.items()}
    model = CrossNet(config, weights, sources(f))
    trainer = Trainer(model, lr=1e-3, weight_decay=1e-5, fast=True, dropout=0.0, lstm_bias_hh=bias_hh(f),
                      loss_options=options)
    losses = [trainer.train_step(*arrays) for _ in range(3)]
    flat = {f"{s}/{k}": v for s, p in model.get_params().items() for k, v in p.items()}
    return f, grads, np.array(losses), flat


def test_the_batch_is_the_recipes(fixture):
    """The STFTs of the loader give the recipe's estimates: its masked magnitudes (from the same
    mixture magnitude) and their ISTFT are what asteroid's network returned, up to the network."""
    f = fixture
    mix, real, imag, target_mag, target_time = batch(f, 256, 64)
    assert mix.shape == (2, 2, 16, 129) and target_time.shape == (2, 4, 2, 960)
    assert f["time_hat"].shape == (4, 2, 2, 960)  # asteroid's ISTFT length: (T - 1) * n_hop
    np.testing.assert_array_equal(target_time, f["targets"][..., :960])


def test_loss_equals_the_recipe(run):
    f, _, losses, _ = run
    np.testing.assert_allclose(losses, f["loss"], rtol=1e-5)


def test_gradients_equal_the_recipe(run):
    f, grads, _, _ = run
    ref32, ref64 = params(f, "grad/"), params(f, "grad64/")
    assert set(grads) <= set(ref32) and len(grads) == 4 * 16  # every trainable parameter of 4 branches
    worst = {}
    for name, grad in grads.items():
        if name.endswith("/input_mean"):
            continue  # see below
        worst[name] = relative(grad, ref32[name])
        assert worst[name] <= BOUND, name
        assert relative(grad, ref64[name]) <= max(3 * relative(ref32[name], ref64[name]), 5e-6), name
    # fc1 -> bn1 removes any constant shift of its input: the input_mean gradient is 0 up to rounding
    for source in sources(f):
        scale = np.abs(ref32[f"{source}/input_scale"]).max()
        assert np.abs(grads[f"{source}/input_mean"]).max() < 1e-6 * scale


def test_weights_after_three_adam_steps_equal_the_recipe(run):
    f, _, _, weights = run
    ref32, ref64 = params(f, "sd3/", "sd3/"), params(f, "sd3_64/", "sd3_64/")
    assert set(weights) == set(ref32)
    for name, value in weights.items():
        assert relative(value, ref32[name]) <= BOUND, name
        assert relative(value, ref64[name]) <= BOUND, name
