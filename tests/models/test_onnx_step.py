"""Step graphs (LSTM state in and out) and `unmix export --streaming`, run as a plugin would."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import unmix
from streaming_models import N_FFT, N_HOP, RATE, db_below, make_causal_folder, noise, stream
from unmix.cli import main
from unmix.dsp import transforms
from unmix.errors import UnmixError
from unmix.models.model_folder import ModelConfig
from unmix.models.onnx_graph import OnnxModel
from unmix.models.onnx_step import StepModel, build_step_onnx, state_shape
from conftest import perturbed


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    return make_causal_folder(tmp_path_factory.mktemp("models") / "causal", targets=("vocals", "drums", "bass"))


@pytest.fixture(scope="module")
def exported(causal, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "rt"
    assert main(["export", str(causal), str(out), "--streaming"]) == 0
    return out


CONFIG = ModelConfig(nb_bins=129, nb_channels=2, hidden_size=12, nb_layers=3, max_bin=100, unidirectional=True)


def test_step_graph_frame_by_frame_equals_the_whole_track():
    params = perturbed(CONFIG, seed=3)  # every parameter random, batch-norm statistics included
    whole = OnnxModel((CONFIG, params), nb_threads=1)
    step = StepModel((CONFIG, params))
    mag = np.abs(np.random.default_rng(0).standard_normal((1, 2, 129, 30))).astype(np.float32)
    want = whole(mag)
    got = np.concatenate([step(mag[..., t:t + 1]) for t in range(30)], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    step.reset()  # a new stream; frames given a few at a time carry the same state
    got = np.concatenate([step(mag[..., a:b]) for a, b in ((0, 7), (7, 8), (8, 30))], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert step.h.shape == step.c.shape == state_shape(CONFIG) == (3, 1, 12)


def test_step_graph_interface():
    proto = build_step_onnx(CONFIG, perturbed(CONFIG))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["mix", "h", "c"]
    assert [o.name for o in proto.graph.output] == ["target", "h_out", "c_out"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["unmix_config"]) == CONFIG.to_dict() and meta["unmix_graph"] == "step"
    with pytest.raises(UnmixError, match="block-online"):
        bidi = ModelConfig(nb_bins=129, hidden_size=12, nb_layers=1)
        build_step_onnx(bidi, perturbed(bidi))


def test_export_streaming_folder(causal, exported):
    names = sorted(p.name for p in exported.iterdir())
    assert names == sorted([f"{t}{ext}" for t in ("vocals", "drums", "bass") for ext in (".onnx", ".step.onnx")]
                           + ["separator.json"])
    meta = json.loads((exported / "separator.json").read_text())
    streaming = meta["streaming"]
    assert streaming["step_graphs"]["drums"] == "drums.step.onnx"
    assert streaming["stft"]["n_fft"] == N_FFT and streaming["stft"]["n_hop"] == N_HOP
    assert streaming["latency_samples"] == {"blocks_of_n_hop": N_FFT - N_HOP, "blocks_of_any_size": N_FFT - 1}
    # the folder also separates offline, like any export
    audio = noise(8000)
    want = unmix.load_separator(causal, niter=0).separate(audio, RATE)
    got = unmix.load_separator(exported, niter=0).separate(audio, RATE)
    assert db_below(got["bass"], want["bass"]) >= 60


def test_streamer_from_the_export_gives_the_same_stems(causal, exported):
    audio = noise(15000)
    outs = []
    for folder in (causal, exported):
        st = unmix.load_separator(folder, niter=1).streamer(block_size=N_HOP)
        outs.append(stream(st, audio, [N_HOP]))
    for target in outs[0]:
        assert db_below(outs[1][target], outs[0][target]) >= 100


def test_a_plugin_with_onnx_runtime_alone(causal, exported):
    """What a plugin does with the folder's description: STFT frames, the step graphs with their
    state carried frame by frame, the mixture's phase (niter 0), the inverse STFT."""
    meta = json.loads((exported / "separator.json").read_text())["streaming"]
    sessions = {t: ort.InferenceSession(str(exported / f)) for t, f in meta["step_graphs"].items()}
    audio = noise(6000)
    spec = transforms.stft(audio, meta["stft"]["n_fft"], meta["stft"]["n_hop"])  # (C, F, T)
    state = {t: [np.zeros(s.get_inputs()[1].shape[:1] + [1] + s.get_inputs()[1].shape[2:], np.float32)] * 2
             for t, s in sessions.items()}
    estimates = {t: np.zeros_like(spec) for t in sessions}
    for frame in range(spec.shape[-1]):
        x = spec[None, :, :, frame:frame + 1]
        for target, session in sessions.items():
            h, c = state[target]
            magnitude, h, c = session.run(None, {"mix": np.abs(x).astype(np.float32), "h": h, "c": c})
            state[target] = [h, c]
            phase = np.where(np.abs(x) > 0, x / np.where(np.abs(x) > 0, np.abs(x), 1), 1)
            estimates[target][..., frame:frame + 1] = (magnitude * phase)[0]
    want = unmix.load_separator(causal, niter=0).separate(audio, RATE)
    for target, value in estimates.items():
        got = transforms.istft(value, meta["stft"]["n_fft"], meta["stft"]["n_hop"], length=audio.shape[1])
        assert db_below(got, want[target]) >= 60


def test_export_streaming_refuses_bidirectional(tmp_path, capsys):
    folder = make_causal_folder(tmp_path / "bidi", unidirectional=False)
    assert main(["export", str(folder), str(tmp_path / "out"), "--streaming"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--chunk" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
