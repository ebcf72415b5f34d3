"""Stateful step graphs: a causal (unidirectional) Open-Unmix network run frame by frame.

The graph is the network of `unmix.models.onnx_graph.build_onnx` with every LSTM layer's state
as inputs and outputs (ONNX's `LSTM` takes ``initial_h`` / ``initial_c`` and returns ``Y_h`` /
``Y_c``), so that a caller runs it on one frame (or a few) at a time and carries the state:

    mix    (nb_samples, nb_channels, nb_bins, nb_frames)   mixture magnitude of the new frames
    h, c   (nb_layers, nb_samples, hidden_size)            state after the previous frames (zeros first)
      -> target (nb_samples, nb_channels, nb_bins, nb_frames), h_out, c_out (the shape of h, c)

Running it frame after frame from zero state gives the outputs of the whole-track graph of a
unidirectional model (every layer only looks back). This is what `unmix export --streaming`
writes for plugins (``<target>.step.onnx``), and what `unmix.separation.streamer.Streamer` runs.
The model's config travels in the metadata as in `onnx_graph` (``unmix_config``).
"""
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from unmix.errors import UnmixError
from unmix.models import onnx_graph
from unmix.models.model_folder import ModelConfig, check_params, load_params

STEP_SUFFIX = ".step.onnx"
STATE_INPUTS = ("h", "c")
STATE_OUTPUTS = ("h_out", "c_out")


def step_file(target):
    """The file name of a target's step graph in an exported folder."""
    return f"{target}{STEP_SUFFIX}"


def state_shape(config, nb_samples=1):
    """Shape of each of ``h`` and ``c``: ``(nb_layers, nb_samples, hidden_size)``."""
    return (config.nb_layers, nb_samples, config.hidden_size)


def build_step_onnx(config, params, check=True):
    """The step graph of one unidirectional target network (see the module docstring).

    Args:
        config: its `ModelConfig` (``unidirectional`` must be set).
        params: name -> array (`unmix.models.model_folder.param_shapes`).
        check: run onnx.checker on it.

    Returns:
        ``onnx.ModelProto``.
    """
    if not config.unidirectional:
        raise UnmixError("a step graph needs a unidirectional (causal) model; a bidirectional LSTM "
                         "looks at future frames: stream it block-online (--chunk) instead")
    p = check_params(config, params)
    g = onnx_graph.Graph()
    x = g.name("features", onnx_graph.encoder(g, "mix", p, config))
    skip = x
    h_out, c_out = [], []
    for layer in range(config.nb_layers):
        x, h, c = _stateful_lstm_layer(g, x, p, layer, config)
        h_out.append(h)
        c_out.append(c)
    concat = g.op("Concat", [skip, x], axis=2)
    x = g.name("lstm_out", onnx_graph.fc2(g, concat, p))
    g.name("target", onnx_graph.decoder(g, x, p, config))
    for name, parts in zip(STATE_OUTPUTS, (h_out, c_out)):
        g.name(name, g.op("Concat", parts, axis=0) if len(parts) > 1 else parts[0])

    mix_dims = ["nb_samples", config.nb_channels, config.nb_bins, "nb_frames"]
    state_dims = [config.nb_layers, "nb_samples", config.hidden_size]
    inputs = [helper.make_tensor_value_info("mix", TensorProto.FLOAT, mix_dims)]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, state_dims) for n in STATE_INPUTS]
    outputs = [helper.make_tensor_value_info("target", TensorProto.FLOAT, mix_dims)]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, state_dims) for n in STATE_OUTPUTS]
    graph = helper.make_graph(g.nodes, "open_unmix_step", inputs, outputs, initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_graph.OPSET)], producer_name="unmix")
    proto.ir_version = 8
    helper.set_model_props(proto, {onnx_graph.CONFIG_KEY: json.dumps(config.to_dict()), "unmix_graph": "step"})
    if check:
        onnx.checker.check_model(proto)
    return proto


def _stateful_lstm_layer(g, x, p, layer, config):
    """One forward LSTM layer with its state: -> ``(Y (nb_frames, nb_samples, H), Y_h, Y_c)``,
    Y_h and Y_c ``(1, nb_samples, H)``, read from / for row `layer` of ``h`` and ``c``."""
    h = config.hidden_size
    w = p["lstm/lstm/weight_l0"] if layer == 0 else p["lstm/lstm/weight"][layer - 1]  # (1, 4, H, I + H)
    w = w[:, onnx_graph.ONNX_GATES]
    nb_inputs = w.shape[-1] - h
    bias = p["lstm/lstm/bias"][layer][:, onnx_graph.ONNX_GATES].reshape(1, 4 * h)
    bias = np.concatenate([bias, np.zeros_like(bias)], axis=1)  # ONNX B is [Wb | Rb]; ours is their sum
    name = f"lstm{layer}"
    rows = [g.const(f"{name}_row", [layer], np.int64), g.const(f"{name}_row_end", [layer + 1], np.int64),
            g.const(f"{name}_state_axis", [0], np.int64)]
    initial = [g.op("Slice", [state] + rows) for state in STATE_INPUTS]
    outs = [f"{name}_y", f"{name}_h", f"{name}_c"]
    g.nodes.append(helper.make_node(
        "LSTM",
        [x, g.const(f"{name}_W", w[..., :nb_inputs].reshape(1, 4 * h, nb_inputs)),
         g.const(f"{name}_R", w[..., nb_inputs:].reshape(1, 4 * h, h)), g.const(f"{name}_B", bias), "",
         *initial],
        outs, name=name, hidden_size=h, direction="forward"))
    y = g.op("Squeeze", [outs[0], g.const(f"{name}_direction_axis", [1], np.int64)])  # (nb_frames, nb_samples, H)
    return y, outs[1], outs[2]


def read_step_graph(path):
    """``(ModelConfig, ModelProto)`` of a step graph file written by `unmix export --streaming`."""
    if not Path(path).is_file():
        raise UnmixError(f"no step graph at {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise UnmixError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("unmix_graph") != "step" or onnx_graph.CONFIG_KEY not in meta:
        raise UnmixError(f"{path} is not a step graph written by `unmix export --streaming`")
    return ModelConfig.from_dict(json.loads(meta[onnx_graph.CONFIG_KEY])), proto


class StepModel:
    """One target's step graph in an ONNX Runtime session, carrying its LSTM state.

    Args:
        source: ``(ModelConfig, params)``, or the path of a ``.step.onnx`` file.
        nb_threads: intra-op threads (default 1: a frame is too little work to share).
    """

    def __init__(self, source, nb_threads=1):
        if isinstance(source, (str, os.PathLike)):
            self.config, proto = read_step_graph(source)
        else:
            self.config, params = source
            proto = build_step_onnx(self.config, params, check=False)  # checked by the tests
        self.session = _step_session(proto.SerializeToString(), nb_threads)
        self.reset()

    def reset(self):
        """Zero state: the start of a stream."""
        self.h = np.zeros(state_shape(self.config), np.float32)
        self.c = np.zeros_like(self.h)

    def __call__(self, mag):
        """``(1, nb_channels, nb_bins, nb_frames)`` float32 mixture magnitude of the next frames ->
        the target's magnitude, same shape; the state moves on by nb_frames."""
        target, self.h, self.c = self.session.run(
            ["target", "h_out", "c_out"], {"mix": onnx_graph.check_mag(self.config, mag), "h": self.h, "c": self.c})
        return target


def _step_session(serialized, nb_threads):
    """An ONNX Runtime CPU session for a step graph: no thread pool of its own (spinning
    threads would compete with the audio thread for a core), no per-call allocation arena growth."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(nb_threads or 1)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(serialized, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UnmixError(f"cannot load the step graph: {str(exc).splitlines()[0]}") from None


# -- export -----------------------------------------------------------------------------------
def streaming_meta(meta, targets):
    """The ``streaming`` section of an exported folder's separator.json: what a plugin needs to
    run the step graphs frame by frame (the STFT, the graphs' tensors, the filter, the delay)."""
    n_fft, n_hop = int(meta.get("n_fft", 4096)), int(meta.get("n_hop", 1024))
    config = ModelConfig.from_dict(meta["models"][targets[0]])
    return {
        "step_graphs": {t: step_file(t) for t in targets},
        "tensors": {
            "mix": "input (nb_samples, nb_channels, nb_bins, nb_frames) float32: |STFT| of the new frames",
            "h": f"input (nb_layers={config.nb_layers}, nb_samples, hidden_size={config.hidden_size}) float32: "
                 "the LSTM state after the previous frames (zeros at the start)",
            "c": "input, the shape of h: the LSTM cell state",
            "target": "output, the shape of mix: the target's magnitude",
            "h_out": "output: h after these frames (feed it back as h)",
            "c_out": "output: c after these frames (feed it back as c)",
        },
        "stft": {"n_fft": n_fft, "n_hop": n_hop, "window": "hann, periodic (torch.hann_window)", "center": True,
                 "pad_mode": "reflect", "onesided": True, "normalized": False,
                 "istft": "overlap-add of irfft(frame) * window, divided by the summed squared windows"},
        "filter": {"niter_0": "estimate_j = target_j * mix_stft / |mix_stft| (the mixture's phase)",
                   "causal_wiener": "unmix.dsp.causal_wiener: covariances from past frames with forgetting "
                                    "1 - 1 / wiener_win_len", "eps": 1e-10, "scale_factor": 10.0},
        "latency_samples": {"blocks_of_n_hop": n_fft - n_hop, "blocks_of_any_size": n_fft - 1},
    }


def export_streaming(model_folder, meta, out, targets=None, force=False):
    """`unmix export --streaming` of an Open-Unmix folder (`unmix.models.export`): a model folder
    with, per target, its whole-track graph ``<target>.onnx`` (the folder separates like any
    export) and its step graph ``<target>.step.onnx``, and the `streaming_meta` section in
    separator.json.

    Returns:
        the list of written ``.onnx`` paths.
    """
    targets = list(targets or meta["targets"])
    unknown = [t for t in targets if t not in meta["targets"]]
    if unknown:
        raise UnmixError(f"model {model_folder} has no target {', '.join(unknown)}")
    params = {t: load_params(model_folder, t) for t in targets}  # all errors before any write
    bidirectional = [t for t, (config, _) in params.items() if not config.unidirectional]
    if bidirectional:
        raise UnmixError(f"--streaming needs a unidirectional (causal) model; {', '.join(bidirectional)} is "
                         "bidirectional: export it without --streaming and stream it block-online (--chunk)")
    graphs = {}
    for target, (config, p) in params.items():
        graphs[f"{target}.onnx"] = onnx_graph.build_onnx(config, p)
        graphs[step_file(target)] = build_step_onnx(config, p)
    exported = {**meta, "targets": targets, "models": {t: meta["models"][t] for t in targets}, "format": "onnx",
                "streaming": streaming_meta(meta, targets)}
    onnx_graph.write_export(out, graphs, exported, force)
    return [out / name for name in graphs]
