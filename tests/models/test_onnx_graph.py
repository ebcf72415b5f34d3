"""unmix.models.onnx_graph: ONNX graph parity with the NNabla model, dynamic shapes, export and CLI.

Only the parity tests (marked nnabla) need NNabla: graphs are built from parameter arrays."""
import json

import numpy as np
import onnx
import pytest

from conftest import make_model_folder, perturbed
from unmix.cli import main
from unmix.errors import UnmixError
from unmix.models.model_folder import ModelConfig, save_params, write_separator_json
from unmix.models.export import export
from unmix.models.onnx_graph import (CONFIG_KEY, SOURCES_KEY, OnnxCrossNet, OnnxModel, build_onnx, build_xumx_onnx,
                                     stage_models)

STEREO = ModelConfig(nb_bins=33, nb_channels=2, hidden_size=8, nb_layers=3, max_bin=20)
CONFIGS = {
    "stereo_bidirectional_max_bin": STEREO,
    "mono": ModelConfig(nb_bins=33, nb_channels=1, hidden_size=8, nb_layers=2),
    "unidirectional": ModelConfig(nb_bins=33, nb_channels=2, hidden_size=6, nb_layers=2, unidirectional=True),
    "one_layer": ModelConfig(nb_bins=17, nb_channels=2, hidden_size=10, nb_layers=1, max_bin=9),
}


def random_mix(config, nb_frames, nb_samples=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 2, (nb_samples, config.nb_channels, config.nb_bins, nb_frames)).astype(np.float32)


def assert_parity(ref, out):
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def nnabla_model(config, params):
    from unmix.models.nnabla_graph import OpenUnmix

    return OpenUnmix(config, params)


@pytest.mark.nnabla
@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_with_nnabla_over_frame_counts(name):
    config = CONFIGS[name]
    model = nnabla_model(config, perturbed(config))
    onnx_model = OnnxModel(model, nb_threads=1)
    assert onnx_model.config == config
    for nb_frames in (1, 6, 23):  # one session: the frame count is dynamic
        mix = random_mix(config, nb_frames, seed=nb_frames)
        ref = model(mix)
        assert (ref > 0).mean() > 0.2, "the comparison must not be all clipped zeros"
        assert_parity(ref, onnx_model(mix))


def test_graph_is_small_checked_and_dynamic():
    proto = build_onnx(STEREO, perturbed(STEREO))
    onnx.checker.check_model(proto)
    assert len(proto.graph.node) <= 34  # 31 operations and the named stage ends features, lstm_out, target
    assert [n.op_type for n in proto.graph.node].count("LSTM") == STEREO.nb_layers
    lstm = next(n for n in proto.graph.node if n.op_type == "LSTM")
    assert onnx.helper.get_attribute_value(lstm.attribute[[a.name for a in lstm.attribute].index("direction")]) \
        == b"bidirectional"
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["nb_samples", 2, 33, "nb_frames"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert ModelConfig.from_dict(json.loads(meta[CONFIG_KEY])) == STEREO
    # the stage graphs of the Separator's sessions are built unchecked at run time: check them here
    for stage in ("encoder", "lstm", "decoder"):
        onnx.checker.check_model(build_onnx(STEREO, perturbed(STEREO), stage, check=False))


def test_nb_samples_is_dynamic_and_samples_are_independent():
    model = OnnxModel((STEREO, perturbed(STEREO)), nb_threads=1)
    mix = random_mix(STEREO, 9, nb_samples=3)
    batch = model(mix)
    assert np.allclose(model(mix[1:2]), batch[1:2], rtol=1e-5, atol=1e-6)


def test_wrong_input_shape_is_a_clear_error():
    model = OnnxModel((STEREO, perturbed(STEREO)), nb_threads=1)
    with pytest.raises(UnmixError, match="2 channels, 33 bins"):
        model(np.zeros((1, 1, 33, 4), np.float32))
    with pytest.raises(UnmixError, match="no ONNX model"):
        OnnxModel("/nonexistent/vocals.onnx")


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "model"
    configs = {"vocals": STEREO, "drums": STEREO}
    for seed, target in enumerate(configs, start=1):
        save_params(folder, target, STEREO, perturbed(STEREO, seed=seed))
    write_separator_json(folder, configs, sample_rate=44100, n_fft=64, n_hop=16)
    return folder


def test_export_cli_round_trip(model_folder, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(model_folder), str(out), "--format", "onnx"]) == 0
    assert "vocals.onnx" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["drums.onnx", "separator.json", "vocals.onnx"]
    meta = json.loads((out / "separator.json").read_text())
    assert meta["targets"] == ["vocals", "drums"] and meta["n_fft"] == 64 and meta["format"] == "onnx"
    mix = random_mix(STEREO, 11)
    for seed, target in enumerate(["vocals", "drums"], start=1):
        loaded = OnnxModel(out / f"{target}.onnx", nb_threads=1)
        assert loaded.config == STEREO
        assert_parity(OnnxModel((STEREO, perturbed(STEREO, seed=seed)), nb_threads=1)(mix), loaded(mix))


def test_export_selected_target_and_single_file(model_folder, tmp_path):
    out = tmp_path / "only"
    assert main(["export", str(model_folder), str(out), "--targets", "drums"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["drums.onnx", "separator.json"]
    assert json.loads((out / "separator.json").read_text())["targets"] == ["drums"]
    single = tmp_path / "vocals_model.onnx"
    assert export(model_folder, single, targets=["vocals"]) == [single]
    assert OnnxModel(single, nb_threads=1).config == STEREO


def test_export_errors_write_nothing(model_folder, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["export", str(model_folder), str(out), "--targets", "vocals", "bass"]) == 1
    assert "no target 'bass'" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", str(model_folder), str(tmp_path / "two.onnx")]) == 1
    assert "single file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), str(out)]) == 1
    assert "neither a model folder nor a known model name" in capsys.readouterr().err


@pytest.mark.nnabla
def test_staged_inference_matches_nnabla_stages():
    """encode / recur / decode (what the Separator runs on long tracks) match the NNabla stages."""
    config = ModelConfig(nb_bins=33, nb_channels=2, hidden_size=8, nb_layers=2, max_bin=20)
    model = nnabla_model(config, perturbed(config, seed=3))
    rng = np.random.default_rng(3)
    fast = OnnxModel(model, nb_threads=1)
    mag = rng.uniform(0, 2, (1, 2, 33, 9)).astype(np.float32)
    enc = fast.encode(mag)
    np.testing.assert_allclose(enc, model.encode(mag), atol=1e-5)
    rec = fast.recur(enc)
    np.testing.assert_allclose(rec, model.recur(enc), atol=1e-5)
    out = fast.decode(rec, mag)
    np.testing.assert_allclose(out, model.decode(rec, mag), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, fast(mag), rtol=1e-5, atol=1e-6)


def test_exported_folder_separates_with_model_like_its_source(tiny_model, song, tmp_path, capsys):
    """`unmix export` writes a model folder that --model takes: ONNX graphs, no .h5."""
    import soundfile as sf

    out = tmp_path / "exported"
    assert main(["export", str(tiny_model), str(out)]) == 0
    targets = json.loads((tiny_model / "separator.json").read_text())["targets"]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{t}.onnx" for t in targets] + ["separator.json"])
    assert main(["separate", str(song), "--model", str(out), "--outdir", str(tmp_path / "from_onnx")]) == 0
    assert main(["separate", str(song), "--model", str(tiny_model), "--outdir", str(tmp_path / "from_h5")]) == 0
    for target in targets:
        a, _ = sf.read(tmp_path / "from_onnx" / "song" / f"{target}.wav")
        b, _ = sf.read(tmp_path / "from_h5" / "song" / f"{target}.wav")
        np.testing.assert_array_equal(a, b)
    capsys.readouterr()
    assert main(["export", str(tiny_model), str(out)]) == 1
    assert "exists; use --force" in capsys.readouterr().err
    assert main(["export", str(tiny_model), str(out), "--force", "--targets", "vocals"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["separator.json", "vocals.onnx"]  # replaced whole


def test_exported_graph_runs_in_a_plain_onnxruntime_session(model_folder, tmp_path):
    """What another runtime sees: input `mix`, output `target`, symbolic batch and frame axes."""
    import onnxruntime as ort

    export(model_folder, tmp_path / "out")
    session = ort.InferenceSession(str(tmp_path / "out" / "vocals.onnx"), providers=["CPUExecutionProvider"])
    (mix_info,), (target_info,) = session.get_inputs(), session.get_outputs()
    assert (mix_info.name, mix_info.shape, mix_info.type) == ("mix", ["nb_samples", 2, 33, "nb_frames"], "tensor(float)")
    assert (target_info.name, target_info.shape) == ("target", ["nb_samples", 2, 33, "nb_frames"])
    mix = random_mix(STEREO, 13)
    expected = OnnxModel((STEREO, perturbed(STEREO, seed=1)), nb_threads=1)(mix)
    assert_parity(expected, session.run(["target"], {"mix": mix})[0])


def test_a_graph_without_named_stages_is_refused(model_folder, tmp_path):
    proto = build_onnx(STEREO, perturbed(STEREO))
    for node in proto.graph.node:  # as an older export: the stage ends unnamed
        node.output[:] = [{"features": "f", "lstm_out": "l"}.get(o, o) for o in node.output]
        node.input[:] = [{"features": "f", "lstm_out": "l"}.get(i, i) for i in node.input]
    with pytest.raises(UnmixError, match="lacks the named stages .* export the model folder again"):
        OnnxModel(proto)


@pytest.mark.nnabla
def test_nnabla_backend_on_an_exported_folder_is_one_line(tiny_model, song, tmp_path, capsys):
    export(tiny_model, tmp_path / "exported")
    assert main(["separate", str(song), "--model", str(tmp_path / "exported"), "--outdir", str(tmp_path / "o"),
                 "--backend", "nnabla"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks vocals.h5: it holds the ONNX graph" in err[0]


def test_stages_cut_from_a_full_graph_are_checked_graphs_equal_to_the_built_stages():
    from unmix.models.onnx_graph import stage_models

    params = perturbed(STEREO)
    cut = stage_models(build_onnx(STEREO, params), STEREO)
    mix = random_mix(STEREO, 7)
    built = OnnxModel((STEREO, params), nb_threads=1)
    for stage, proto in cut.items():
        onnx.checker.check_model(proto)
        assert len(proto.graph.initializer) == len(build_onnx(STEREO, params, stage).graph.initializer), stage
    np.testing.assert_array_equal(OnnxModel(build_onnx(STEREO, params), nb_threads=1)(mix), built(mix))


# -- X-UMX ----------------------------------------------------------------------------------------
XSOURCES = ["bass", "drums", "vocals", "other"]


def xumx_params(config, sources=XSOURCES):
    return {s: perturbed(config, seed=i + 1) for i, s in enumerate(sources)}


@pytest.mark.nnabla
@pytest.mark.parametrize("name", ["stereo_bidirectional_max_bin", "mono", "unidirectional"])
def test_xumx_parity_with_nnabla_over_frame_counts(name):
    from unmix.models.nnabla_graph import CrossNet

    config = CONFIGS[name]
    params = xumx_params(config)
    net, onnx_net = CrossNet(config, params, XSOURCES), OnnxCrossNet((config, params, XSOURCES), nb_threads=1)
    for nb_frames in (1, 6, 23):
        mix = random_mix(config, nb_frames, seed=nb_frames)
        ref, out = net(mix), onnx_net(mix)
        assert list(out) == XSOURCES
        for source in XSOURCES:
            assert (ref[source] > 0).mean() > 0.2
            assert_parity(ref[source], out[source])


def test_xumx_graph_is_checked_and_its_stages_cut_at_the_bridges():
    proto = build_xumx_onnx(STEREO, xumx_params(STEREO), XSOURCES)
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("LSTM") == 4 * STEREO.nb_layers and ops.count("Mean") == 2
    assert [o.name for o in proto.graph.output] == [f"target_{s}" for s in XSOURCES]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[SOURCES_KEY]) == XSOURCES
    stages = stage_models(proto, STEREO, XSOURCES)
    assert set(stages) == {"encoder"} | {f"{stage}_{s}" for s in XSOURCES for stage in ("lstm", "decoder")}
    for stage in stages.values():
        onnx.checker.check_model(stage)
    lstm_out = stages["decoder_bass"].graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in lstm_out] == ["nb_frames", "nb_samples", 2 * STEREO.hidden_size]
    # each LSTM and decoder holds its own source's weights only
    for stage in ("lstm_drums", "decoder_vocals"):
        source = stage.split("_")[1]
        assert all(t.name.startswith(f"{source}/") for t in stages[stage].graph.initializer), stage
    assert [n.op_type for n in stages["lstm_drums"].graph.node].count("LSTM") == STEREO.nb_layers


def test_xumx_targets_decode_a_subset_with_the_same_values():
    params = xumx_params(STEREO)
    mix = random_mix(STEREO, 9)
    full = OnnxCrossNet((STEREO, params, XSOURCES), nb_threads=1)(mix)
    part = OnnxCrossNet((STEREO, params, XSOURCES), targets=["other", "bass"], nb_threads=1)
    assert part.targets == ["other", "bass"]
    out = part(mix)
    assert list(out) == ["other", "bass"]
    for source, value in out.items():
        np.testing.assert_array_equal(value, full[source])
    with pytest.raises(UnmixError, match="decodes bass, other, not vocals"):
        OnnxCrossNet(build_xumx_onnx(STEREO, params, XSOURCES, targets=["other", "bass"]), targets=["vocals"])


def test_xumx_export_file_and_folder_and_wrong_loaders(tiny_xumx, tmp_path, capsys):
    assert main(["export", str(tiny_xumx), str(tmp_path / "x.onnx")]) == 0
    net = OnnxCrossNet(tmp_path / "x.onnx", nb_threads=1)
    assert net.sources == XSOURCES and net.targets == XSOURCES
    with pytest.raises(UnmixError, match="is an X-UMX graph: load it with OnnxCrossNet"):
        OnnxModel(tmp_path / "x.onnx")
    assert main(["export", str(tiny_xumx), str(tmp_path / "folder")]) == 0
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["separator.json", "xumx.onnx"]
    assert main(["export", str(tiny_xumx), str(tmp_path / "part"), "--targets", "vocals"]) == 1
    assert "needs all its sources" in capsys.readouterr().err and not (tmp_path / "part").exists()
    export(make_model_folder(tmp_path / "umx", targets=["vocals"]), tmp_path / "umx.onnx")
    with pytest.raises(UnmixError, match="is an Open-Unmix graph, not an X-UMX one"):
        OnnxCrossNet(tmp_path / "umx.onnx")


def test_exported_xumx_folder_separates_like_its_source(tiny_xumx, tmp_path):
    from conftest import tone
    from unmix.separation.separator import load_separator

    export(tiny_xumx, tmp_path / "exported")
    audio = tone(0.5)
    ref = load_separator(tiny_xumx, targets=["drums", "vocals"], niter=1, nb_threads=1).separate(audio, 44100)
    out = load_separator(tmp_path / "exported", targets=["drums", "vocals"], niter=1, nb_threads=1).separate(audio, 44100)
    assert list(out) == list(ref) == ["drums", "vocals"]
    for target, value in ref.items():
        np.testing.assert_allclose(out[target], value, rtol=0, atol=1e-6)
