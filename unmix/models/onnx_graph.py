"""CPU inference through ONNX Runtime: an ONNX graph written directly from a model's parameters.

NNabla's CPU backend runs on one thread and its step-by-step LSTM is slow; ONNX Runtime's
native `LSTM` operator is multi-threaded and about 8x faster (see design.md). The graph is the
network of `unmix.models.nnabla_graph.OpenUnmix` for inference, about 30 nodes:

    mix (nb_samples, nb_channels, nb_bins, nb_frames), nb_samples and nb_frames symbolic
      -> Slice to max_bin -> Transpose (nb_frames, nb_samples, nb_channels, max_bin)
      -> + input_mean -> * input_scale -> Reshape (nb_frames, nb_samples, nb_channels * max_bin)
      -> MatMul fc1 (bn1 scale folded in) -> + bn1 shift -> Tanh
      -> LSTM per layer (-> Transpose -> Reshape to (nb_frames, nb_samples, D * H)) -> Concat skip
      -> MatMul fc2 (+ bn2) -> Relu -> MatMul fc3 (+ bn3) -> Reshape (.., nb_channels, nb_bins)
      -> * output_scale + output_mean -> Transpose back -> Relu -> * mix

Batch norm uses its running statistics (inference), so it folds into the preceding MatMul:
``(x W - mean) / sqrt(var + eps) * gamma + beta = x (W * scale) + shift``.
The model's config travels in the ONNX metadata (``unmix_config``), so an exported file is
usable on its own.

X-UMX (`unmix.models.nnabla_graph.CrossNet`) is one graph of the same parts: each source's encoder, their
``Mean`` (bridge 1, the named tensor ``features``), each source's LSTM layers on it, the
``Concat`` of ``features`` and the ``Mean`` of the LSTM outputs (bridge 2, ``lstm_out``), and
each source's fc2 and decoder, ending in ``target_<source>`` (`build_xumx_onnx`); its sources
travel in the metadata (``unmix_sources``). The graphs are written from the parameter arrays (`unmix.models.model_folder`):
neither building nor running them needs NNabla.
"""
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from unmix.errors import UnmixError
from unmix.io.files import atomic_folder, atomic_path
from unmix.models.model_folder import BN_EPS, ModelConfig, check_params, check_replaceable, write_json

OPSET = 17
CONFIG_KEY = "unmix_config"
SOURCES_KEY = "unmix_sources"  # X-UMX graphs only: the sources, in the model's order
XUMX_GRAPH = "xumx.onnx"  # the X-UMX graph of an exported folder (all sources in one graph)
# ONNX LSTM gate order is i, o, f, c; ours (and torch's) is i, f, g, o
ONNX_GATES = [0, 3, 1, 2]


# -- graph ------------------------------------------------------------------------------------
class Graph:
    """Collects nodes and initializers with unique names (keeps `build_onnx` linear to read)."""

    def __init__(self):
        self.nodes, self.initializers = [], []
        self.prefix = ""  # of the weights' names: X-UMX's sources each have their own

    def const(self, name, value, dtype=np.float32):
        name = self.prefix + name
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def name(self, source_name, tensor):
        """An Identity giving `tensor` the name `source_name` (a stage boundary or an output)."""
        self.nodes.append(helper.make_node("Identity", [tensor], [source_name], name=source_name))
        return source_name

    def op(self, op_type, inputs, **attrs):
        """Add one node; returns the name of its (first) output."""
        name = f"{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name


STAGES = ("full", "encoder", "lstm", "decoder")
# the parts of each graph, and the named tensor each part ends in (the next part's input)
_PARTS = {"full": ("encoder", "lstm", "decoder"), "encoder": ("encoder",), "lstm": ("lstm",),
          "decoder": ("decoder",)}
_PART_INPUT = {"encoder": "mix", "lstm": "features", "decoder": "lstm_out"}
_PART_OUTPUT = {"encoder": "features", "lstm": "lstm_out", "decoder": "target"}


def _stage_io(sources=None):
    """stage -> (input names, output name) of the graphs the runtime runs: Open-Unmix's
    encoder / lstm / decoder, or X-UMX's encoder, ``lstm_<source>`` (its LSTM alone: bridge 2 is
    a mean and a concatenation, done on numpy so that the LSTMs run side by side in sessions of
    their own) and ``decoder_<source>`` per source."""
    io = {"encoder": (["mix"], "features")}
    if sources is None:
        io["lstm"] = (["features"], "lstm_out")
        io["decoder"] = (["lstm_out", "mix"], "target")
    for source in sources or ():
        io[f"lstm_{source}"] = (["features"], f"recurrence_{source}")
    for source in sources or ():
        io[f"decoder_{source}"] = (["lstm_out", "mix"], f"target_{source}")
    return io


def build_onnx(config, params, stage="full", check=True):
    """The ONNX model of one target's network for inference, from its parameters.

    Args:
        config: the `ModelConfig`.
        params: name -> array as `unmix.models.model_folder.param_shapes` (e.g. from `load_params`).
        stage: "full": input ``mix``, output ``target``, both ``(nb_samples, nb_channels, nb_bins,
            nb_frames)``, with the stage boundaries as named tensors ``features`` and ``lstm_out``
            (`stage_models` cuts a full graph there). The three stages of `OpenUnmix.encode/recur/decode`
            for long tracks: "encoder" ``mix`` -> ``features`` ``(nb_frames, nb_samples, hidden_size)``;
            "lstm" ``features`` -> ``lstm_out`` ``(nb_frames, nb_samples, hidden_size)`` (LSTM, skip, fc2);
            "decoder" ``lstm_out``, ``mix`` -> ``target``. nb_samples and nb_frames are symbolic.
        check: run onnx.checker on it (what `export` writes is checked; the sessions that
            `OnnxModel` builds for every separation skip it: 0.15 s for four umxhq targets,
            and ONNX Runtime validates the graph itself).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage}")
    cfg, p = config, check_params(config, params)
    g = Graph()
    parts = _PARTS[stage]
    x = _PART_INPUT[parts[0]]
    for part in parts:
        x = g.name(_PART_OUTPUT[part], {"encoder": encoder, "lstm": _lstm, "decoder": decoder}[part](g, x, p, cfg))

    inputs = [_PART_INPUT[parts[0]]] + (["mix"] if parts == ("decoder",) else [])
    proto = _model(cfg, stage, g.nodes, inputs, [x], g.initializers)
    if check:
        onnx.checker.check_model(proto)
    return proto


def build_xumx_onnx(config, params, sources, targets=None, check=True):
    """The ONNX model of an X-UMX network for inference (`unmix.models.nnabla_graph.CrossNet`), from its parameters.

    Args:
        config: the `ModelConfig` of every source's branch.
        params: source -> name -> array (`unmix.models.model_folder.param_shapes`).
        sources: the source names in the model's order (every one is needed for the bridges).
        targets: the sources to decode (default: all); the graph's outputs are ``target_<source>``.

    Returns:
        ``onnx.ModelProto``: input ``mix`` ``(nb_samples, nb_channels, nb_bins, nb_frames)``, the
        bridges as named tensors ``features`` (c1, ``(nb_frames, nb_samples, hidden_size)``) and
        ``lstm_out`` (c2, ``(nb_frames, nb_samples, 2 * hidden_size)``), an output
        ``target_<source>`` (the shape of ``mix``) per target; `stage_models` cuts it.
    """
    checked = {s: check_params(config, params[s]) for s in sources}
    g = Graph()
    encoded = []
    for source in sources:
        g.prefix = f"{source}/"
        encoded.append(encoder(g, "mix", checked[source], config))
    c1 = g.name("features", g.op("Mean", encoded) if len(encoded) > 1 else encoded[0])
    recurrences = []
    for source in sources:
        g.prefix = f"{source}/"
        recurrences.append(g.name(f"recurrence_{source}", _recurrence(g, c1, checked[source], config)))
    lstm = g.op("Mean", recurrences) if len(recurrences) > 1 else recurrences[0]
    c2 = g.name("lstm_out", g.op("Concat", [c1, lstm], axis=2))
    outputs = []
    for source in targets or sources:
        g.prefix = f"{source}/"
        x = fc2(g, c2, checked[source])
        outputs.append(g.name(f"target_{source}", decoder(g, x, checked[source], config)))
    proto = _model(config, "xumx", g.nodes, ["mix"], outputs, g.initializers, sources=list(sources))
    if check:
        onnx.checker.check_model(proto)
    return proto


def _model(config, stage, nodes, inputs, outputs, initializers, sources=None):
    """The ModelProto of a graph whose inputs and outputs are named tensors (`_stage_io`)."""
    mix_dims = ["nb_samples", config.nb_channels, config.nb_bins, "nb_frames"]
    features = ["nb_frames", "nb_samples", config.hidden_size]
    bridged = ["nb_frames", "nb_samples", 2 * config.hidden_size] if sources else features
    dims = {"mix": mix_dims, "target": mix_dims, "features": features, "lstm_out": bridged}
    dims.update({f"target_{s}": mix_dims for s in sources or ()})
    dims.update({f"recurrence_{s}": features for s in sources or ()})
    graph = helper.make_graph(
        nodes, f"{'x_umx' if sources else 'open_unmix'}_{stage}",
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, dims[i]) for i in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, dims[o]) for o in outputs],
        initializer=initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="unmix")
    proto.ir_version = 8  # readable by onnxruntime >= 1.10
    props = {CONFIG_KEY: json.dumps(config.to_dict())}
    if sources:
        props[SOURCES_KEY] = json.dumps(sources)
    helper.set_model_props(proto, props)
    return proto


def stage_models(proto, config, sources=None):
    """The stage graphs cut out of a full graph (`build_onnx` "full" or `build_xumx_onnx`).

    Each stage keeps the nodes between its named input(s) and output, and the weights they use
    (cut here rather than by onnx.utils.Extractor, whose use of shape inference differs between
    onnx versions). An X-UMX graph (`sources` given) has a decoder stage per source it outputs.

    Returns:
        stage name -> ``onnx.ModelProto`` (the stages of `_stage_io`).
    """
    producers = {name: i for i, node in enumerate(proto.graph.node) for name in node.output}
    weights = {t.name: t for t in proto.graph.initializer}
    io = _stage_io(sources)
    if sources:  # an export may hold the decoders of some sources only
        io = {k: v for k, v in io.items() if not k.startswith("decoder_") or v[1] in producers}
    if not {"features", "lstm_out"} <= set(producers) or not any(k.startswith("decoder") for k in io) \
            or (sources is None and "target" not in producers):
        raise UnmixError("this ONNX graph lacks the named stages (mix, features, lstm_out, target) that "
                         "this version of unmix writes: export the model folder again")
    stages = {}
    for stage, (inputs, output) in io.items():
        used, seen, todo = set(), set(inputs), [output]
        while todo:  # back from the output to the stage's inputs
            name = todo.pop()
            if name in seen or name in weights or not name:
                continue
            seen.add(name)
            if name not in producers:
                raise UnmixError(f"the ONNX graph's {stage} stage needs {name}, which no node computes")
            used.add(producers[name])
            todo.extend(proto.graph.node[producers[name]].input)
        nodes = [proto.graph.node[i] for i in sorted(used)]
        needed = {name for node in nodes for name in node.input}
        stages[stage] = _model(config, stage, nodes, inputs, [output],
                               [t for name, t in weights.items() if name in needed], sources)
    return stages


def encoder(g, x, p, cfg):
    """mix -> crop -> standardise -> fc1/bn1 -> tanh: ``(nb_frames, nb_samples, hidden_size)``."""
    c, m, n = cfg.nb_channels, cfg.model_bins, cfg.nb_bins
    if m < n:
        x = g.op("Slice", [x, g.const("crop_start", [0], np.int64), g.const("crop_stop", [m], np.int64),
                           g.const("crop_axis", [2], np.int64)])
    x = g.op("Transpose", [x], perm=[3, 0, 1, 2])  # (nb_frames, nb_samples, nb_channels, max_bin)
    x = g.op("Add", [x, g.const("input_mean", p["input_mean"])])
    x = g.op("Mul", [x, g.const("input_scale", p["input_scale"])])
    x = g.op("Reshape", [x, g.const("shape_features", [0, 0, c * m], np.int64)])
    return g.op("Tanh", [_fc_bn(g, x, p, "fc1", "bn1")])


def _lstm(g, x, p, cfg):
    """Stacked LSTM, skip connection, fc2/bn2 -> relu: -> ``(nb_frames, nb_samples, hidden_size)``."""
    return fc2(g, g.op("Concat", [x, _recurrence(g, x, p, cfg)], axis=2), p)


def _recurrence(g, x, p, cfg):
    """The stacked LSTM alone: ``(nb_frames, nb_samples, hidden_size)`` -> same shape."""
    for layer in range(cfg.nb_layers):
        x = _lstm_layer(g, x, p, layer, cfg)
    return x


def fc2(g, x, p):
    """fc2/bn2 -> relu: ``(nb_frames, nb_samples, 2 * hidden_size)`` -> ``(.., hidden_size)``."""
    return g.op("Relu", [_fc_bn(g, x, p, "fc2", "bn2")])


def decoder(g, x, p, cfg):
    """fc3/bn3 -> output scaling -> relu -> * mix."""
    c, n = cfg.nb_channels, cfg.nb_bins
    x = _fc_bn(g, x, p, "fc3", "bn3")
    x = g.op("Reshape", [x, g.const("shape_bins", [0, 0, c, n], np.int64)])
    x = g.op("Mul", [x, g.const("output_scale", p["output_scale"])])
    x = g.op("Add", [x, g.const("output_mean", p["output_mean"])])
    x = g.op("Transpose", [x], perm=[1, 2, 3, 0])  # back to (nb_samples, nb_channels, nb_bins, nb_frames)
    x = g.op("Relu", [x])
    return g.op("Mul", [x, "mix"])


def _fc_bn(g, x, p, fc, bn):
    """``bn(x @ W)`` with the running statistics folded in: one MatMul and one Add."""
    gamma, beta, mean, var = (p[f"{bn}/bn/{k}"][0] for k in ("gamma", "beta", "mean", "var"))
    scale = gamma / np.sqrt(var + BN_EPS)
    x = g.op("MatMul", [x, g.const(f"{fc}_W", p[f"{fc}/affine/W"] * scale)])
    return g.op("Add", [x, g.const(f"{bn}_shift", beta - mean * scale)])


def _lstm_layer(g, x, p, layer, cfg):
    """One ONNX LSTM layer: ``(nb_frames, nb_samples, I)`` -> ``(nb_frames, nb_samples, D * H)``."""
    d, h = cfg.nb_directions, cfg.lstm_hidden_size
    w = p["lstm/lstm/weight_l0"] if layer == 0 else p["lstm/lstm/weight"][layer - 1]  # (D, 4, H, I + H)
    w = w[:, ONNX_GATES]
    nb_inputs = w.shape[-1] - h
    bias = p["lstm/lstm/bias"][layer][:, ONNX_GATES].reshape(d, 4 * h)
    # ONNX B is [Wb | Rb]; ours is their sum, so it all goes in Wb
    bias = np.concatenate([bias, np.zeros_like(bias)], axis=1)
    name = f"lstm{layer}"
    y = g.op(
        "LSTM",
        [x, g.const(f"{name}_W", w[..., :nb_inputs].reshape(d, 4 * h, nb_inputs)),
         g.const(f"{name}_R", w[..., nb_inputs:].reshape(d, 4 * h, h)), g.const(f"{name}_B", bias)],
        hidden_size=h, direction="bidirectional" if d == 2 else "forward",
    )  # Y: (nb_frames, D, nb_samples, H), backward outputs already in frame order
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3])
    return g.op("Reshape", [y, g.const(f"{name}_shape", [0, 0, d * h], np.int64)])


# -- runtime ----------------------------------------------------------------------------------
class OnnxModel:
    """An Open-Unmix target run by ONNX Runtime on the CPU; called like `OpenUnmix`.

    Args:
        source: the target's weights, as a ``(ModelConfig, params)`` pair or an object with
            ``config`` and ``get_params()`` (an `unmix.models.nnabla_graph.OpenUnmix`); or its full graph, as an
            ``onnx.ModelProto`` from `build_onnx` or the path of a ``.onnx`` file that `export` wrote.
        nb_threads: intra-op threads (default: all CPU cores).

    It runs three stage sessions, `encode` / `recur` / `decode` (each weight lives in one of
    them), which the Separator uses for long tracks; `__call__` chains them. ONNX Runtime
    sessions take concurrent calls (`concurrent_calls`): the Separator runs the targets side by side.
    """

    concurrent_calls = True
    architecture = "umx"  # see `unmix.models.architectures`

    def __init__(self, source, nb_threads=None):
        self.nb_threads = nb_threads
        self._whole_track = _shrinking_run_options()
        if isinstance(source, (str, os.PathLike)) or hasattr(source, "graph"):
            self.config, sources, protos = _read_graph(source)
            if sources is not None:
                raise UnmixError(f"{_label(source)} is an X-UMX graph: load it with OnnxCrossNet")
        else:
            config, params = source if isinstance(source, tuple) else (source.config, source.get_params())
            self.config = config
            protos = {stage: build_onnx(config, params, stage, check=False)  # checked by the tests
                      for stage in ("encoder", "lstm", "decoder")}
        self._stages = {stage: _session(proto.SerializeToString(), stage, nb_threads)
                        for stage, proto in protos.items()}

    def __call__(self, mag):
        """Inference: ``(nb_samples, nb_channels, nb_bins, nb_frames)`` float32 -> same shape."""
        return self.decode(self.recur(self.encode(mag)), mag)

    def encode(self, mag):
        """Like `OpenUnmix.encode`: -> ``(nb_frames, nb_samples, hidden_size)``."""
        return self._stage("encoder").run(["features"], {"mix": self._check_mag(mag)})[0]

    def recur(self, features, workers=None):
        """Like `OpenUnmix.recur`: -> ``(nb_frames, nb_samples, hidden_size)`` (one recurrence:
        `workers` means nothing to it)."""
        feeds = {"features": np.ascontiguousarray(features, np.float32)}
        return self._stage("lstm").run(["lstm_out"], feeds, self._whole_track)[0]

    def decode(self, features, mag, target=None):
        """Like `OpenUnmix.decode`: features of `recur` + mixture magnitude -> target magnitude
        (the network's one target, whatever `target` says)."""
        feeds = {"lstm_out": np.ascontiguousarray(features, np.float32), "mix": self._check_mag(mag)}
        return self._stage("decoder").run(["target"], feeds)[0]

    def _stage(self, stage):
        return self._stages[stage]

    def _check_mag(self, mag):
        return check_mag(self.config, mag)


class OnnxCrossNet:
    """An X-UMX network run by ONNX Runtime on the CPU; called like `unmix.models.nnabla_graph.CrossNet`.

    Args:
        source: ``(ModelConfig, source -> params, sources)``, or the graph of `build_xumx_onnx`
            as an ``onnx.ModelProto`` or the path of the ``.onnx`` file that `export` wrote.
        targets: the sources to decode (default: every one the graph outputs); the encoders and
            LSTMs of all sources run whatever the targets, since the bridges average them all.
        nb_threads: intra-op threads of the encoder and LSTM sessions (default: all CPU cores).
        decoder_threads: those of each decoder session (the Separator runs the decoders side by
            side, one per thread; default: `nb_threads`).

    Sessions: ``encoder`` (mix -> c1), ``lstm_<source>`` (c1 -> that source's LSTM outputs; `recur`
    runs them side by side, one thread each, and bridges them into c2) and ``decoder_<source>``.
    """

    concurrent_calls = True
    architecture = "xumx"

    def __init__(self, source, targets=None, nb_threads=None, decoder_threads=None):
        if isinstance(source, (str, os.PathLike)) or hasattr(source, "graph"):
            self.config, self.sources, protos = _read_graph(source)
            if self.sources is None:
                raise UnmixError(f"{_label(source)} is an Open-Unmix graph, not an X-UMX one")
        else:
            self.config, params, sources = source
            self.sources = list(sources)
            proto = build_xumx_onnx(self.config, params, self.sources, targets, check=False)  # checked by the tests
            protos = stage_models(proto, self.config, self.sources)
        available = [s for s in self.sources if f"decoder_{s}" in protos]
        unknown = sorted(set(targets or ()) - set(available))
        if unknown:
            raise UnmixError(f"the X-UMX graph decodes {', '.join(available)}, not {', '.join(unknown)}")
        self.targets = list(targets or available)
        threads = nb_threads or os.cpu_count() or 1
        self._whole_track = _shrinking_run_options()
        self.nb_threads = threads
        self._stages = {"encoder": _session(protos["encoder"].SerializeToString(), "encoder", threads)}
        for s in self.sources:  # one thread each: they run side by side (see `recur`)
            self._stages[f"lstm_{s}"] = _session(protos[f"lstm_{s}"].SerializeToString(), f"lstm_{s}", 1)
        for t in self.targets:
            self._stages[t] = _session(protos[f"decoder_{t}"].SerializeToString(), f"decoder_{t}",
                                       decoder_threads or threads)

    def __call__(self, mag):
        """Inference: ``(nb_samples, nb_channels, nb_bins, nb_frames)`` float32 -> target -> same shape."""
        bridged = self.recur(self.encode(mag))
        return {t: self.decode(bridged, mag, t) for t in self.targets}

    def encode(self, mag):
        """Like `CrossNet.encode`: -> c1 ``(nb_frames, nb_samples, hidden_size)``."""
        return self._stages["encoder"].run(["features"], {"mix": check_mag(self.config, mag)})[0]

    def recur(self, c1, workers=None):
        """Like `CrossNet.recur`: -> c2 ``(nb_frames, nb_samples, 2 * hidden_size)``.

        The sources' LSTMs run on up to `workers` threads (default `nb_threads`) side by side:
        one single-threaded session per thread is faster than one session on several threads
        (4 umxhq-sized LSTMs over 1 minute on 2 cores: 7.7 s in one 2-thread session, 5.0 s one
        after the other on one thread, half that two at a time)."""
        feeds = {"features": np.ascontiguousarray(c1, np.float32)}

        def run(source):
            return self._stages[f"lstm_{source}"].run([f"recurrence_{source}"], feeds, self._whole_track)[0]

        workers = max(1, min(workers or self.nb_threads, self.nb_threads, len(self.sources)))
        with ThreadPoolExecutor(workers, thread_name_prefix="unmix-lstm") as pool:
            total = None
            for value in pool.map(run, self.sources):  # summed as they come: one output held at a time
                total = value if total is None else total + value
        return np.concatenate([feeds["features"], total / np.float32(len(self.sources))], axis=2)

    def decode(self, c2, mag, source):
        """Like `CrossNet.decode`: c2 + mixture magnitude -> the magnitude of `source`."""
        feeds = {"lstm_out": np.ascontiguousarray(c2, np.float32), "mix": check_mag(self.config, mag)}
        return self._stages[source].run([f"target_{source}"], feeds)[0]


def check_mag(config, mag):
    """`mag` as contiguous float32, if it is ``(nb_samples, nb_channels, nb_bins, nb_frames)`` for `config`."""
    if mag.ndim != 4 or mag.shape[1:3] != (config.nb_channels, config.nb_bins):
        raise UnmixError(f"model expects (nb_samples, {config.nb_channels} channels, {config.nb_bins} bins, "
                         f"nb_frames), got shape {tuple(mag.shape)}")
    return np.ascontiguousarray(mag, dtype=np.float32)


def _label(source):
    return str(source) if isinstance(source, (str, os.PathLike)) else "(in memory)"


def _read_graph(source):
    """``(ModelConfig, sources or None, stage -> ModelProto)`` of a full graph written by `export`
    (path or proto); sources are those of an X-UMX graph, None for Open-Unmix."""
    label = _label(source)
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise UnmixError(f"no ONNX model at {source}")
        try:
            source = onnx.load(str(source))
        except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
            raise UnmixError(f"cannot load ONNX model {label}: {str(exc).splitlines()[0]}") from None
    meta = {p.key: p.value for p in source.metadata_props}
    if CONFIG_KEY not in meta:
        raise UnmixError(f"ONNX model {label} was not written by unmix (no {CONFIG_KEY} metadata)")
    try:
        config = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        sources = json.loads(meta[SOURCES_KEY]) if SOURCES_KEY in meta else None
        return config, sources, stage_models(source, config, sources)
    except UnmixError as exc:
        raise UnmixError(f"ONNX model {label}: {exc}") from None


def _session(source, label, nb_threads):
    """An ONNX Runtime CPU session for a path or serialized model."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = nb_threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # no arena of its own (with a frame count that changes from call to call it only grows):
    # the sessions share one process-wide arena instead
    opts.enable_cpu_mem_arena = False
    if _shared_arena(ort):
        opts.add_session_config_entry("session.use_env_allocators", "1")
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for unreadable files
        raise UnmixError(f"cannot load ONNX model {label}: {str(exc).splitlines()[0]}") from None


_ARENA_LOCK = threading.Lock()
_ARENA = []  # the registered allocator's memory info, once registered


def _shared_arena(ort):
    """Register, once per process, one CPU arena for all sessions; False if this onnxruntime cannot.

    Without an arena every run maps fresh pages for its intermediates (the Separator fixes
    glibc's mmap threshold), and faulting them in took a third of an encoder or decoder run
    (20.5 -> 13.6 ms per decoder window). An arena per session would each keep its session's
    largest run (12 sessions for 4 targets: +140 MB); the shared one keeps the largest single
    run's, and runs over a whole track give theirs back (`_shrinking_run_options`).
    """
    with _ARENA_LOCK:
        if not _ARENA:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                # extend strategy 1 (kSameAsRequested): grow by what a run needs, not by powers of two
                ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
            except (AttributeError, RuntimeError, TypeError):  # older onnxruntime: no shared allocators
                _ARENA.append(None)
            else:
                _ARENA.append(info)
        return _ARENA[0] is not None


def _shrinking_run_options():
    """RunOptions that hand the arena's free memory back after the run: for the runs over a
    whole track (the LSTM; the full graph), whose working set grows with the track's length."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


# -- export -----------------------------------------------------------------------------------
def check_unmix_graph(path):
    """Raise UnmixError unless `path` is a file holding an ONNX graph that unmix wrote: --force
    replaces nothing else."""
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        proto = onnx.load(str(path), load_external_data=False)
        written = any(p.key == CONFIG_KEY for p in proto.metadata_props)
    except Exception:  # not ONNX at all: protobuf's errors, or the ValueError above
        written = False
    if not written:
        raise UnmixError(f"{path} is not an ONNX graph that unmix wrote: --force replaces only those; "
                         "remove it yourself or choose another name")


def write_export(out, graphs, meta, force=False):
    """Write the folder `out` atomically: file name -> ONNX model, and `meta` as separator.json.
    With `force` an existing model folder is replaced, if it holds only files unmix writes."""
    replace = (lambda folder: check_replaceable(folder, meta["targets"])) if force else None
    try:
        with atomic_folder(out, replace=replace) as tmp:
            for name, proto in graphs.items():
                save_graph(proto, tmp / name)
            write_json(tmp / "separator.json", meta)
    except FileExistsError:
        raise UnmixError(f"{out} exists; use --force to replace it") from None
    except OSError as exc:
        raise UnmixError(f"cannot write {out}: {exc.strerror or exc}") from None


def save_graph(proto, path, replace=True):
    """Write an ONNX model atomically, with a clear error when the disk says no; an existing
    `path` is kept unless `replace` (checked at the rename)."""
    try:
        with atomic_path(path, replace=replace) as tmp:
            onnx.save_model(proto, str(tmp))
    except FileExistsError:
        raise UnmixError(f"{path} exists; use --force to replace it") from None
    except OSError as exc:
        raise UnmixError(f"cannot write {path}: {exc.strerror or exc}") from None
