"""unmix.models.model_folder: model folders without NNabla, in exactly the layout NNabla writes and reads."""
import json

import h5py
import numpy as np
import pytest
from conftest import perturbed

from unmix.errors import UnmixError
from unmix.models.model_folder import (ModelConfig, architecture, check_params, half_precision, load_params, param_shapes,
                               read_h5_params, read_separator_json, save_params, write_h5_params, write_separator_json)

TINY = ModelConfig(nb_bins=33, nb_channels=2, hidden_size=8, nb_layers=3, max_bin=20)


def h5_dump(path):
    """Everything an .h5 holds, in visit order: name -> (kind, dtype, shape, values, attributes with types)."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: (type(v).__name__, np.asarray(v).dtype.str, v.item() if np.ndim(v) == 0 else v.tolist())
                     for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                out[name] = ("dataset", obj.dtype.str, obj.shape, obj[()].tobytes(), attrs)
            else:
                out[name] = ("group", attrs)

        f.visititems(visit)
        out["/"] = ("root", dict(f.attrs))
    return out


@pytest.mark.nnabla
def test_h5_is_what_nnabla_save_parameters_writes(tmp_path):
    from unmix.models.nnabla_graph import OpenUnmix

    model = OpenUnmix(TINY, perturbed(TINY))
    import nnabla as nn

    nn.save_parameters(str(tmp_path / "nnabla.h5"), params=model.parameters, extension=".h5")
    write_h5_params(tmp_path / "ours.h5", check_params(TINY, perturbed(TINY)))
    ours, theirs = h5_dump(tmp_path / "ours.h5"), h5_dump(tmp_path / "nnabla.h5")
    assert list(ours) == list(theirs) and ours == theirs
    assert ours["bn1/bn/mean"][4]["need_grad"] == ("bool_", "|b1", False)
    assert ours["fc2/affine/W"][4] == {"need_grad": ("bool_", "|b1", True), "index": ("int64", "<i8", 12)}


@pytest.mark.nnabla
def test_nnabla_load_parameters_reads_our_file_back_identically(tmp_path):
    import nnabla as nn

    params = perturbed(TINY, seed=4)
    save_params(tmp_path, "vocals", TINY, params)
    scope = {}
    with nn.parameter_scope("", scope):
        nn.load_parameters(str(tmp_path / "vocals.h5"))
        loaded = nn.get_parameters(grad_only=False)
    assert list(loaded) == list(param_shapes(TINY))  # NNabla's order: the index attributes
    for name, var in loaded.items():
        assert var.d.dtype == np.float32 and np.array_equal(var.d, params[name]), name
        assert var.need_grad == (not name.endswith(("/mean", "/var"))), name


def test_save_and_load_round_trip_without_nnabla(tmp_path):
    params = perturbed(TINY, seed=2)
    write_separator_json(tmp_path, {"vocals": TINY}, sample_rate=44100, n_fft=64, n_hop=16)
    save_params(tmp_path, "vocals", TINY, params, extra_json={"note": "tiny"})
    config, loaded = load_params(tmp_path, "vocals")
    assert config == TINY and list(loaded) == list(param_shapes(TINY))
    assert all(np.array_equal(loaded[k], v) for k, v in params.items())
    assert json.loads((tmp_path / "vocals.json").read_text()) == {"note": "tiny"}
    assert read_h5_params(tmp_path / "vocals.h5").keys() == params.keys()
    assert not list(tmp_path.glob(".*part*")), "no temporary files left"
    with pytest.raises(UnmixError, match="no target 'drums'"):
        load_params(tmp_path, "drums")


def test_half_precision_stores_matrices_in_float16_and_loads_float32(tmp_path):
    params = perturbed(TINY, seed=3)
    params["input_scale"][0] = 1e5  # beyond float16's range: vectors must stay float32
    write_separator_json(tmp_path, {"vocals": TINY}, sample_rate=44100, n_fft=64, n_hop=16)
    save_params(tmp_path, "vocals", TINY, params, half=True)
    with h5py.File(tmp_path / "vocals.h5", "r") as f:
        stored = {name: f[name].dtype for name in params}
    matrices = {"fc1/affine/W", "fc2/affine/W", "fc3/affine/W", "lstm/lstm/weight_l0", "lstm/lstm/weight"}
    assert {k for k, v in stored.items() if v == np.float16} == matrices
    assert all(v == np.float32 for k, v in stored.items() if k not in matrices)
    _, loaded = load_params(tmp_path, "vocals")
    for name, value in params.items():
        assert loaded[name].dtype == np.float32
        expected = value.astype(np.float16).astype(np.float32) if name in matrices else value
        assert np.array_equal(loaded[name], expected), name
    assert loaded["input_scale"][0] == np.float32(1e5)


def test_half_precision_moves_network_outputs_less_than_1e3_of_their_max():
    from unmix.models.onnx_graph import OnnxModel

    config = ModelConfig(nb_bins=257, nb_channels=2, hidden_size=64, nb_layers=3, max_bin=200)
    params = perturbed(config, seed=4)
    mag = np.abs(np.random.default_rng(0).normal(size=(1, 2, 257, 40))).astype(np.float32)
    full = OnnxModel((config, check_params(config, params)))(mag)
    half = OnnxModel((config, check_params(config, half_precision(params))))(mag)
    error = np.abs(half - full).max() / np.abs(full).max()
    assert 1e-6 < error < 1e-3  # moved (the weights were rounded), but by far less than 1e-3


def test_wrong_parameters_are_refused_before_writing(tmp_path):
    params = perturbed(TINY)
    with pytest.raises(UnmixError, match=r"missing \['input_mean'\]"):
        save_params(tmp_path, "vocals", TINY, {k: v for k, v in params.items() if k != "input_mean"})
    with pytest.raises(UnmixError, match="fc1/affine/W has shape"):
        save_params(tmp_path, "vocals", TINY, dict(params, **{"fc1/affine/W": params["fc1/affine/W"].T}))
    assert list(tmp_path.iterdir()) == []


def test_missing_h5_says_what_the_folder_holds(tmp_path):
    write_separator_json(tmp_path, {"vocals": TINY}, sample_rate=44100)
    with pytest.raises(UnmixError, match=r"lacks vocals\.h5$"):
        load_params(tmp_path, "vocals")
    (tmp_path / "vocals.onnx").write_bytes(b"graph")
    with pytest.raises(UnmixError, match="lacks vocals.h5: it holds the ONNX graph that `unmix export` wrote"):
        load_params(tmp_path, "vocals")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(UnmixError, match="not a model folder"):
        read_separator_json(tmp_path)
    (tmp_path / "separator.json").write_text("{broken")
    with pytest.raises(UnmixError, match="not a valid separator.json"):
        read_separator_json(tmp_path)


def test_architecture_is_written_and_read_umx_by_default(tmp_path):
    write_separator_json(tmp_path, {"vocals": TINY}, sample_rate=44100)
    assert architecture(read_separator_json(tmp_path)) == "umx"
    meta = json.loads((tmp_path / "separator.json").read_text())
    del meta["architecture"]  # folders written before X-UMX existed
    (tmp_path / "separator.json").write_text(json.dumps(meta))
    assert architecture(read_separator_json(tmp_path)) == "umx"
    write_separator_json(tmp_path, {"bass": TINY, "drums": TINY}, sample_rate=44100, architecture="xumx")
    assert architecture(read_separator_json(tmp_path)) == "xumx"


def test_unknown_architecture_and_unequal_xumx_sources_are_refused(tmp_path):
    with pytest.raises(UnmixError, match="unknown architecture 'tasnet'"):
        write_separator_json(tmp_path, {"vocals": TINY}, sample_rate=44100, architecture="tasnet")
    other = ModelConfig(nb_bins=33, nb_channels=2, hidden_size=4, nb_layers=3, max_bin=20)
    with pytest.raises(UnmixError, match="sources of an X-UMX model must all have the same config"):
        write_separator_json(tmp_path, {"bass": TINY, "drums": other}, sample_rate=44100, architecture="xumx")
    assert list(tmp_path.iterdir()) == []
    write_separator_json(tmp_path, {"bass": TINY}, sample_rate=44100, architecture="xumx")
    meta = json.loads((tmp_path / "separator.json").read_text())
    meta["architecture"] = "tasnet"
    (tmp_path / "separator.json").write_text(json.dumps(meta))
    with pytest.raises(UnmixError, match="separator.json: unknown architecture 'tasnet'"):
        read_separator_json(tmp_path)
