"""unmix.weights.convert: open-unmix-pytorch and Sony NNabla weights -> model folder, checked against torch.

The parity fixtures hold random-weight open-unmix-pytorch models, their inputs and
the reference outputs (tools/fixtures/make_parity_fixtures.py); converted models must give
the same output within 1e-4 of its peak: run by ONNX Runtime (no NNabla needed), and by the
NNabla network in the test marked nnabla.
"""
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from unmix.weights import convert
from unmix.models import model_folder
from unmix.cli import main
from unmix.errors import UnmixError
from conftest import FIXTURES

CASES = ["stereo_bi", "mono", "unidir", "one_layer"]
TOLERANCE = 1e-4  # of max|reference output|


def load_case(case):
    """(state dict, constructor kwargs, input, reference output) of a parity fixture."""
    with np.load(FIXTURES / f"parity_{case}.npz") as z:
        sd = {k[len("sd/"):]: z[k] for k in z.files if k.startswith("sd/")}
        return sd, json.loads(str(z["config"])), z["input"], z["output"]


def onnx_net(config, params):
    from unmix.models.onnx_graph import OnnxModel

    return OnnxModel((config, params), nb_threads=1)


def load_target(folder, target):
    """The converted target of a model folder, run by ONNX Runtime."""
    return onnx_net(*model_folder.load_params(folder, target))


def assert_matches_reference(net, mag, ref):
    out = net(mag)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= TOLERANCE * np.abs(ref).max()


@pytest.mark.parametrize("case", CASES)
def test_state_dict_parity(case):
    sd, kwargs, mag, ref = load_case(case)
    config, params = convert.state_dict_to_params(sd)
    assert config == model_folder.ModelConfig(nb_bins=kwargs["nb_bins"], nb_channels=kwargs["nb_channels"],
                                       hidden_size=kwargs["hidden_size"], nb_layers=kwargs["nb_layers"],
                                       max_bin=kwargs.get("max_bin"),
                                       unidirectional=kwargs.get("unidirectional", False))
    assert all(v.dtype == np.float32 for v in params.values())
    assert_matches_reference(onnx_net(config, params), mag, ref)


@pytest.mark.nnabla
@pytest.mark.parametrize("case", CASES)
def test_state_dict_parity_in_nnabla(case):
    from unmix.models.nnabla_graph import OpenUnmix

    sd, _, mag, ref = load_case(case)
    assert_matches_reference(OpenUnmix(*convert.state_dict_to_params(sd)), mag, ref)


def test_layout_mapping():
    sd, _, _, _ = load_case("stereo_bi")
    _, params = convert.state_dict_to_params(sd)
    assert np.array_equal(params["fc1/affine/W"], sd["fc1.weight"].T)
    assert np.array_equal(params["bn3/bn/var"][0], sd["bn3.running_var"])
    h = 8  # hidden 16, bidirectional
    w = params["lstm/lstm/weight"][1, 1]  # layer 2, backward direction: (4, H, 2H + H)
    assert np.array_equal(w[2, 3, : 2 * h], sd["lstm.weight_ih_l2_reverse"][2 * h + 3])  # gate g, unit 3
    assert np.array_equal(w[2, 3, 2 * h:], sd["lstm.weight_hh_l2_reverse"][2 * h + 3])
    bias = sd["lstm.bias_ih_l0"] + sd["lstm.bias_hh_l0"]
    assert np.array_equal(params["lstm/lstm/bias"][0, 0].ravel(), bias)


def test_old_open_unmix_keys_are_ignored():
    sd, _, mag, ref = load_case("one_layer")
    # open-unmix 1.0 models held their STFT window (twice) and a sample-rate buffer
    old = {"stft.window": np.ones(512, np.float32), "transform.0.window": np.ones(512, np.float32),
           "sample_rate": np.array(44100), **sd}
    config, params = convert.state_dict_to_params(old)
    assert_matches_reference(onnx_net(config, params), mag, ref)
    # saved from a DataParallel wrapper: every key starts with 'module.'
    config, params = convert.state_dict_to_params({f"module.{k}": v for k, v in sd.items()})
    assert_matches_reference(onnx_net(config, params), mag, ref)


def test_bad_state_dicts():
    sd, _, _, _ = load_case("one_layer")
    with pytest.raises(UnmixError, match="unknown extra.weight"):
        convert.state_dict_to_params({**sd, "extra.weight": np.zeros(3)})
    with pytest.raises(UnmixError, match="missing bn2.running_var"):
        convert.state_dict_to_params({k: v for k, v in sd.items() if k != "bn2.running_var"})
    with pytest.raises(UnmixError, match=r"bn2.weight has shape \(5,\), expected \(12,\)"):
        convert.state_dict_to_params({**sd, "bn2.weight": np.ones(5, np.float32)})
    with pytest.raises(UnmixError, match="not an Open-Unmix state dict: it lacks fc1.weight"):
        convert.state_dict_to_params({k: v for k, v in sd.items() if k != "fc1.weight"})


def test_target_names():
    assert convert.target_name("vocals-b62c91ce.pth") == "vocals"
    assert convert.target_name("speech_f5e0d9f9.pth") == "speech"  # umxse's published names
    assert convert.target_name("drums.pth") == "drums"
    assert convert.target_name("my-bass.chkpnt") == "my-bass"


# -- folders through the CLI ------------------------------------------------------------------
def torch_folder(folder, name="vocals.pth", separator=None, target_json=None):
    """A folder as open-unmix's training (or torch hub) leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "parity_stereo_bi.pth", folder / name)
    if separator is not None:
        (folder / "separator.json").write_text(json.dumps(separator))
    if target_json is not None:
        (folder / f"{convert.target_name(name)}.json").write_text(json.dumps(target_json))
    return folder


def run_cli(capsys, *argv):
    code = main(["convert", *map(str, argv)])
    return code, capsys.readouterr()


def test_cli_converts_training_folder(tmp_path, capsys):
    history = {"args": {"nfft": 4096, "nhop": 1024, "hidden_size": 16, "nb_channels": 2},
               "best_loss": 0.25, "train_loss_history": [1.0, 0.5]}
    src = torch_folder(tmp_path / "trained", separator={"sample_rate": 22050, "nfft": 4096, "nhop": 512,
                                                       "nb_channels": 2}, target_json=history)
    out = tmp_path / "converted"
    code, io = run_cli(capsys, src, out)
    assert code == 0 and str(out) in io.out
    meta = model_folder.read_separator_json(out)
    assert meta["targets"] == ["vocals"]
    assert (meta["sample_rate"], meta["n_fft"], meta["n_hop"], meta["nb_channels"]) == (22050, 4096, 512, 2)
    assert json.loads((out / "vocals.json").read_text()) == history
    _, _, mag, ref = load_case("stereo_bi")
    assert_matches_reference(load_target(out, "vocals"), mag, ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "trained"]  # no temp folder left


def test_cli_published_names_and_defaults(tmp_path, capsys):
    src = torch_folder(tmp_path / "hub", name="vocals-b62c91ce.pth")
    shutil.copy(FIXTURES / "parity_stereo_bi.pth", src / "drums-7e4f4ff5.pth")
    out = tmp_path / "umx"
    assert run_cli(capsys, src, out, "--targets", "vocals")[0] == 0
    meta = model_folder.read_separator_json(out)
    assert meta["targets"] == ["vocals"] and not (out / "drums.h5").exists()
    assert (meta["sample_rate"], meta["n_fft"], meta["n_hop"]) == (44100, 4096, 1024)
    _, _, mag, ref = load_case("stereo_bi")
    assert_matches_reference(load_target(out, "vocals"), mag, ref)
    # a single published file works too, and all targets of a folder by default
    assert run_cli(capsys, src / "drums-7e4f4ff5.pth", tmp_path / "one")[0] == 0
    assert model_folder.read_separator_json(tmp_path / "one")["targets"] == ["drums"]
    assert run_cli(capsys, src, tmp_path / "all")[0] == 0
    assert model_folder.read_separator_json(tmp_path / "all")["targets"] == ["drums", "vocals"]


def test_separator_state_dict(tmp_path):
    # torch.save(separator.state_dict()): every target in one file, with the STFT window and rate
    _, _, mag, ref = load_case("one_layer")
    out = convert.convert(FIXTURES / "parity_separator.pth", tmp_path / "sep")
    meta = model_folder.read_separator_json(out)
    assert meta["targets"] == ["bass", "drums"]
    assert (meta["sample_rate"], meta["n_fft"], meta["n_hop"]) == (16000, 512, 128)
    for target in ("bass", "drums"):
        assert_matches_reference(load_target(out, target), mag, ref)
    out = convert.convert(FIXTURES / "parity_separator.pth", tmp_path / "drums", targets=["drums"])
    assert model_folder.read_separator_json(out)["targets"] == ["drums"]


def test_existing_output_needs_force(tmp_path, capsys):
    src = torch_folder(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    code, io = run_cli(capsys, src, out)
    assert code == 1 and io.err.startswith("error: ") and io.err.count("\n") == 1
    assert "--force" in io.err and (out / "keep.txt").read_text() == "earlier work"
    code, io = run_cli(capsys, src, out, "--force")  # --force replaces a model folder, not the user's files
    assert code == 1 and "holds keep.txt, which unmix did not write" in io.err and io.err.count("\n") == 1
    assert (out / "keep.txt").read_text() == "earlier work" and not (out / "vocals.h5").exists()
    (out / "keep.txt").unlink()
    assert run_cli(capsys, src, out, "--force")[0] == 0 and (out / "vocals.h5").is_file()
    (out / "vocals.json").write_text("{}")  # a model folder's own files are replaced
    assert run_cli(capsys, src, out, "--force")[0] == 0 and not (out / "vocals.json").exists()
    code, io = run_cli(capsys, src, src, "--force")  # never replace the source weights
    assert code == 1 and (src / "vocals.pth").is_file()


@pytest.mark.parametrize("setup, message", [
    (lambda d: d, "does not exist"),
    (lambda d: d.mkdir() or d, "no checkpoints found"),
    (lambda d: torch_folder(d, separator={"sample_rate": 44100, "nb_channels": 1}), "says 1 channels"),
    (lambda d: torch_folder(d, separator={"nfft": 2048}), "2049 frequency bins but n_fft 2048"),
    (lambda d: (d.mkdir(), shutil.copy(FIXTURES / "parity_pth_zip.pth", d / "vocals.pth")) and d,
     "not an Open-Unmix state dict"),
    (lambda d: (d.mkdir(), (d / "vocals.pth").write_bytes(b"\x80\x02cos\nsystem\n(Vtrue\ntR.")) and d,
     "refusing to load"),
    (lambda d: torch_folder(d, target_json=None) and (d / "separator.json").write_text("{oops") and d,
     "cannot read"),
])
def test_cli_bad_inputs_give_one_line(tmp_path, capsys, setup, message):
    src = setup(tmp_path / "src")
    code, io = run_cli(capsys, src, tmp_path / "out")
    assert code == 1 and io.err.startswith("error: ") and io.err.count("\n") == 1
    assert message in io.err
    assert not (tmp_path / "out").exists()


def test_cli_unknown_target(tmp_path, capsys):
    code, io = run_cli(capsys, torch_folder(tmp_path / "src"), tmp_path / "out", "--targets", "bass")
    assert code == 1 and "no weights for bass" in io.err and "found: vocals" in io.err


def test_failed_write_keeps_previous_folder(tmp_path, monkeypatch):
    src = torch_folder(tmp_path / "src")
    out = tmp_path / "out"
    convert.convert(src, out)
    before = (out / "vocals.h5").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_folder, "write_separator_json", disk_full)
    with pytest.raises(UnmixError, match="cannot write .*No space left on device"):
        convert.convert(src, out, force=True)
    assert (out / "vocals.h5").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


# -- Sony NNabla .h5 --------------------------------------------------------------------------
def sony_names(params):
    """Our parameters under Sony's UMX names and shapes (batch norms named after fc, (1, 1, S))."""
    out = {}
    for name, value in params.items():
        if name.startswith("bn"):
            name = f"fc{name[2]}/bn/{name.rsplit('/', 1)[1]}"
            value = value.reshape(1, 1, -1)
        out[name] = value
    return out


def write_h5(path, named):
    """An .h5 laid out as nn.save_parameters writes it (one dataset per parameter)."""
    with h5py.File(path, "w") as f:
        for index, (name, value) in enumerate(named.items()):
            f.create_dataset(name, data=value).attrs.update({"need_grad": True, "index": index})


def test_sony_h5_with_target_scopes(tmp_path, capsys):
    sd, _, mag, ref = load_case("stereo_bi")
    _, params = convert.state_dict_to_params(sd)
    sd1, _, mag1, ref1 = load_case("one_layer")
    _, params1 = convert.state_dict_to_params(sd1)
    named = {f"vocals/{k}": v for k, v in sony_names(params).items()}
    named.update({f"bass/{k}": v for k, v in sony_names(params1).items()})
    write_h5(tmp_path / "umx.h5", named)
    out = tmp_path / "out"
    with pytest.raises(UnmixError, match="different numbers of bins"):
        convert.convert(tmp_path / "umx.h5", out)
    assert convert.convert(tmp_path / "umx.h5", out, targets=["vocals"]) == out
    assert_matches_reference(load_target(out, "vocals"), mag, ref)
    # a folder of per-target files without scopes
    folder = tmp_path / "sony"
    folder.mkdir()
    write_h5(folder / "bass.h5", sony_names(params1))
    assert run_cli(capsys, folder, tmp_path / "out_bass")[0] == 0
    meta = model_folder.read_separator_json(tmp_path / "out_bass")
    assert meta["targets"] == ["bass"] and meta["n_fft"] == 512 and meta["n_hop"] == 128
    assert_matches_reference(load_target(tmp_path / "out_bass", "bass"), mag1, ref1)


def test_sony_h5_bad_parameters(tmp_path):
    sd, _, _, _ = load_case("one_layer")
    _, params = convert.state_dict_to_params(sd)
    named = sony_names(params)
    named["fc2/bn/gamma"] = np.ones((1, 1, 7), np.float32)
    write_h5(tmp_path / "vocals.h5", named)
    with pytest.raises(UnmixError, match=r"bn2/bn/gamma has shape \(1, 1, 7\), expected \(1, 12\)"):
        convert.convert(tmp_path / "vocals.h5", tmp_path / "out")
    write_h5(tmp_path / "other.h5", {"some/weight": np.ones(3, np.float32)})
    with pytest.raises(UnmixError, match="not Open-Unmix NNabla parameters"):
        convert.convert(tmp_path / "other.h5", tmp_path / "out")
