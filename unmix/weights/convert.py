"""Convert open-unmix-pytorch checkpoints and Sony NNabla UMX weights into a model folder.

Sources (see `find_checkpoints`):

- a folder of ``<target>.pth`` as open-unmix's training writes it, with an optional
  ``separator.json`` (sample_rate, nfft, nhop, nb_channels) and ``<target>.json``
  (training arguments and history, kept as the converted ``<target>.json``);
  ``<target>.chkpnt`` ({'state_dict': ...}) is used where no ``.pth`` exists;
- published files named ``<target>-<hash8>.pth`` (torch hub names, e.g.
  ``vocals-b62c91ce.pth``), in a folder or given one by one;
- the state dict of a whole open-unmix ``Separator`` (every target in one file);
- Sony's NNabla UMX ``.h5`` parameter files (one file with ``vocals/fc1/affine/W``, ...
  for every target, or one file per target), or a folder of them;
- X-UMX (CrossNet-Open-Unmix), which becomes an "xumx" model folder (`unmix.models.model_folder`):
  asteroid's serialized package (``torch.save`` of {'model_name', 'state_dict', 'model_args',
  ...}, names like ``layer_enc.vocals.enc.0.weight``, ``layer_lstm.vocals.weight_ih_l0``,
  ``layer_dec.vocals.dec.3.weight``, ``mean_scale.input_mean_vocals``), and Sony's NNabla
  ``x-folder.h5`` (names as sony/ai-research-code x-umx/model.py creates them: ``input_mean_bass``,
  ``fc1_bass/affine/W``, ``fc1_bass/bn/gamma``, ``lstm_bass/lstm/weight_l0``, ...). Each source's
  branch has the parameters of an Open-Unmix target, so both are renamed to the layouts above
  and mapped by the same code.

The layout mapping (torch -> NNabla) is the table of `unmix.models.model_folder.param_shapes`:
Linear weights are transposed, each LSTM layer/direction keeps ``[W_ih | W_hh]`` per
gate (order i, f, g, o in both) and one bias ``b_ih + b_hh``. The architecture is
inferred from the shapes, so no configuration is needed.
"""
import json
import re
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from unmix.models import model_folder
from unmix.weights import pth
from unmix.errors import UnmixError
from unmix.io.files import atomic_folder
from unmix.io.paths import safe_name

DEFAULT_SAMPLE_RATE = 44100.0  # n_fft defaults to what the bins imply (4096 for 2049), n_hop to n_fft / 4

# Parts of older open-unmix models that live in the separator here: v1.0 models held
# their own STFT window (twice: as `stft` and as `transform.0`) and sample-rate buffer.
IGNORED_TORCH_KEYS = ("stft.window", "transform.0.window", "sample_rate")
# a whole open-unmix Separator's state dict: its targets' models, and its own STFT parts
SEPARATOR_PREFIX = "target_models."
SEPARATOR_KEYS = ("sample_rate", "stft.window", "istft.window")
TORCH_SUFFIXES = (".pth", ".pt", ".chkpnt")
# <target>.pth, or torch hub's <target>-<first 8 hex digits of sha256>.pth (umxse uses '_')
_NAME = re.compile(r"^(?P<target>.+?)(?:[-_][0-9a-f]{8})?$")
_NNABLA_TOP = ("input_mean", "input_scale", "output_scale", "output_mean", "fc1", "fc2", "fc3",
               "bn1", "bn2", "bn3", "lstm")
# asteroid's X-UMX: per-source modules -> open-unmix-pytorch names (Sequential indices: 2 is the ReLU)
_ASTEROID_MODULES = {"layer_enc": {"enc.0": "fc1", "enc.1": "bn1"}, "layer_lstm": {"": "lstm"},
                     "layer_dec": {"dec.0": "fc2", "dec.1": "bn2", "dec.3": "fc3", "dec.4": "bn3"}}
_ASTEROID_IGNORED = ("encoder.0.window", "decoder.window")  # its STFT window, twice
_ASTEROID_SCALES = re.compile(r"^mean_scale\.(?P<name>input_mean|input_scale|output_mean|output_scale)_(?P<source>.+)$")
# Sony's X-UMX: <layer>_<source>[/...], e.g. fc1_bass/affine/W, input_mean_bass
_SONY_XUMX = re.compile(r"^(?P<layer>input_mean|input_scale|output_mean|output_scale|fc[123]|lstm)_(?P<source>[^/]+)"
                        r"(?P<rest>/.*)?$")
# what Sony's x-umx/model.py creates besides the network (its ISTFT kernels for nnabla <= 1.15)
_SONY_XUMX_IGNORED = ("conv_cos", "conv_sin")


# -- torch state dict -> parameters ----------------------------------------------------------
def state_dict_to_params(state_dict):
    """Map an open-unmix-pytorch ``OpenUnmix`` state dict to this package's parameters.

    Args:
        state_dict: torch name -> np.ndarray (e.g. from `unmix.weights.pth.load_state_dict`).

    Returns:
        (ModelConfig inferred from the shapes, name -> float32 array as `unmix.models.model_folder.param_shapes`).
    """
    sd = _strip_prefix(state_dict, "module.")  # saved from a DataParallel wrapper
    config = _torch_config(sd)
    _check_torch_keys(sd, config)
    p = {
        "input_mean": sd["input_mean"],
        "input_scale": sd["input_scale"],
        "output_scale": sd["output_scale"],
        "output_mean": sd["output_mean"],
    }
    for k in (1, 2, 3):
        p[f"fc{k}/affine/W"] = sd[f"fc{k}.weight"].T
        for ours, theirs in (("beta", "bias"), ("gamma", "weight"), ("mean", "running_mean"), ("var", "running_var")):
            p[f"bn{k}/bn/{ours}"] = sd[f"bn{k}.{theirs}"].reshape(1, -1)
    p.update(_torch_lstm(sd, config))
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in p.items()}
    _check_params(config, params, "state dict")
    return config, params


def _strip_prefix(sd, prefix):
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _torch_config(sd):
    """The ModelConfig that a torch state dict's shapes imply."""
    needed = ("input_mean", "output_scale", "fc1.weight", "lstm.weight_hh_l0")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise UnmixError(f"not an Open-Unmix state dict: it lacks {', '.join(missing)}")
    m, n = _length(sd, "input_mean"), _length(sd, "output_scale")
    fc1 = sd["fc1.weight"]
    if fc1.ndim != 2 or fc1.shape[1] % m:
        raise UnmixError(f"fc1.weight has shape {fc1.shape}, which does not fit input_mean of {m} bins")
    layers = 0
    while f"lstm.weight_ih_l{layers}" in sd:
        layers += 1
    return model_folder.ModelConfig(
        nb_bins=n,
        nb_channels=fc1.shape[1] // m,
        hidden_size=fc1.shape[0],
        nb_layers=max(layers, 1),
        max_bin=None if m == n else m,
        unidirectional="lstm.weight_ih_l0_reverse" not in sd,
    )


def _length(sd, key):
    if sd[key].ndim != 1:
        raise UnmixError(f"{key} has shape {sd[key].shape}, expected one axis")
    return sd[key].shape[0]


def torch_shapes(config):
    """torch state-dict name -> shape of an open-unmix-pytorch 1.3 ``OpenUnmix`` with `config`."""
    c, m, n, s = config.nb_channels, config.model_bins, config.nb_bins, config.hidden_size
    h, d = config.lstm_hidden_size, config.nb_directions
    shapes = {"input_mean": (m,), "input_scale": (m,), "output_scale": (n,), "output_mean": (n,),
              "fc1.weight": (s, c * m), "fc2.weight": (s, 2 * s), "fc3.weight": (c * n, s)}
    for k, size in ((1, s), (2, s), (3, c * n)):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"bn{k}.{leaf}"] = (size,)
    for layer in range(config.nb_layers):
        for sfx in ("", "_reverse")[:d]:
            shapes[f"lstm.weight_ih_l{layer}{sfx}"] = (4 * h, s if layer == 0 else d * h)
            shapes[f"lstm.weight_hh_l{layer}{sfx}"] = (4 * h, h)
            shapes[f"lstm.bias_ih_l{layer}{sfx}"] = (4 * h,)
            shapes[f"lstm.bias_hh_l{layer}{sfx}"] = (4 * h,)
    return shapes


def _check_torch_keys(sd, config):
    """One clear error for missing or unknown keys, or the first wrong shape."""
    expected = torch_shapes(config)
    ignored = {k for k in sd if k in IGNORED_TORCH_KEYS or k.endswith(".num_batches_tracked")}
    missing = sorted(set(expected) - set(sd))
    unknown = sorted(set(sd) - set(expected) - ignored)
    if missing or unknown:
        parts = ([f"missing {_few(missing)}"] if missing else []) + ([f"unknown {_few(unknown)}"] if unknown else [])
        raise UnmixError(f"state dict does not fit an Open-Unmix model ({config_summary(config)}): {'; '.join(parts)}")
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise UnmixError(f"state dict {key} has shape {tuple(sd[key].shape)}, expected {shape} "
                             f"for {config_summary(config)}")


def _torch_lstm(sd, config):
    """NNabla LSTM parameters from torch's per-layer, per-direction tensors."""
    h, d = config.lstm_hidden_size, config.nb_directions
    weights, biases = [], []
    for layer in range(config.nb_layers):
        w_dirs, b_dirs = [], []
        for sfx in ("", "_reverse")[:d]:
            w = np.concatenate([sd[f"lstm.weight_ih_l{layer}{sfx}"], sd[f"lstm.weight_hh_l{layer}{sfx}"]], axis=1)
            w_dirs.append(w.reshape(4, h, -1))  # rows are gate-major: (i, f, g, o) x H
            b_dirs.append((sd[f"lstm.bias_ih_l{layer}{sfx}"] + sd[f"lstm.bias_hh_l{layer}{sfx}"]).reshape(4, h))
        weights.append(np.stack(w_dirs))
        biases.append(np.stack(b_dirs))
    out = {"lstm/lstm/weight_l0": weights[0], "lstm/lstm/bias": np.stack(biases)}
    if config.nb_layers > 1:
        out["lstm/lstm/weight"] = np.stack(weights[1:])
    return out


# -- Sony NNabla parameters -> parameters ----------------------------------------------------
def nnabla_to_params(named):
    """Map Sony's NNabla UMX parameters of one target (target prefix already removed).

    Sony names batch norms after their affine layer (``fc1/bn/gamma`` of shape
    ``(1, 1, S)``); here they are ``bn1/bn/gamma`` of shape ``(1, S)``.

    Returns:
        (ModelConfig, name -> float32 array).
    """
    params = {}
    for name, value in named.items():
        name = re.sub(r"^fc([123])/bn/", r"bn\1/bn/", name)
        params[name] = np.asarray(value, dtype=np.float32)
    needed = ("input_mean", "output_scale", "fc1/affine/W", "lstm/lstm/weight_l0")
    missing = [k for k in needed if k not in params]
    if missing:
        raise UnmixError(f"not Open-Unmix NNabla parameters: they lack {', '.join(missing)}")
    m, n = params["input_mean"].size, params["output_scale"].size
    fc1, w0 = params["fc1/affine/W"], params["lstm/lstm/weight_l0"]
    if fc1.ndim != 2 or fc1.shape[0] % m or w0.ndim != 4:
        raise UnmixError(f"fc1/affine/W {fc1.shape} and lstm/lstm/weight_l0 {w0.shape} do not fit an Open-Unmix model")
    rest = params.get("lstm/lstm/weight")
    config = model_folder.ModelConfig(
        nb_bins=n,
        nb_channels=fc1.shape[0] // m,
        hidden_size=fc1.shape[1],
        nb_layers=1 + (rest.shape[0] if rest is not None else 0),
        max_bin=None if m == n else m,
        unidirectional=w0.shape[0] == 1,
    )
    expected = model_folder.param_shapes(config)
    for name, value in params.items():
        # vectors and batch-norm parameters differ only in their unit axes; weights must match exactly
        squeezable = name in expected and not name.endswith("/W") and not name.startswith("lstm/")
        if squeezable and value.size == np.prod(expected[name]):
            params[name] = value.reshape(expected[name])
    _check_params(config, params, "NNabla parameters")
    return config, params


def _check_params(config, params, what):
    expected = model_folder.param_shapes(config)
    missing, unknown = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or unknown:
        parts = ([f"missing {_few(missing)}"] if missing else []) + ([f"unknown {_few(unknown)}"] if unknown else [])
        raise UnmixError(f"{what} do not fit an Open-Unmix model ({config_summary(config)}): {'; '.join(parts)}")
    for name, shape in expected.items():
        if params[name].shape != tuple(shape):
            raise UnmixError(f"{what}: {name} has shape {params[name].shape}, expected {tuple(shape)} "
                             f"for {config_summary(config)}")


def config_summary(config):
    """A short description of a ModelConfig for messages."""
    kind = "unidirectional" if config.unidirectional else "bidirectional"
    return (f"{config.nb_channels} ch, {config.nb_bins} bins (max_bin {config.model_bins}), "
            f"hidden {config.hidden_size}, {config.nb_layers} {kind} LSTM layers")


def _few(names, limit=6):
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# -- X-UMX: per-source parameters in the Open-Unmix layouts ------------------------------------
def is_asteroid_xumx(sd):
    """True for the state dict of asteroid's X-UMX (per-source ``layer_enc.<source>.`` modules)."""
    return any(k.startswith("layer_enc.") for k in sd)


def split_asteroid_xumx(sd, sources=None):
    """asteroid's X-UMX state dict -> source -> open-unmix-pytorch ``OpenUnmix`` state dict.

    Args:
        sd: torch name -> array.
        sources: the model's order (its ``model_args['sources']``); default: as the encoders appear.

    Returns:
        source -> state dict, in source order (map each with `state_dict_to_params`).
    """
    found = list(dict.fromkeys(k.split(".")[1] for k in sd if k.startswith("layer_enc.")))
    sources = list(sources or found)
    if sorted(sources) != sorted(found):
        raise UnmixError(f"X-UMX package: model_args names the sources {sources}, the weights have {found}")
    parts = {s: {} for s in sources}
    for key, value in sd.items():
        renamed = _asteroid_name(key, set(sources))
        if renamed is None:
            if key in _ASTEROID_IGNORED or key.endswith(".num_batches_tracked"):
                continue
            raise UnmixError(f"X-UMX package: unknown key {key}")
        source, name = renamed
        parts[source][name] = value
    return parts


def _asteroid_name(key, sources):
    """``(source, open-unmix name)`` of an asteroid X-UMX key, or None if it is none of the network's."""
    scale = _ASTEROID_SCALES.match(key)
    if scale:
        return (scale["source"], scale["name"]) if scale["source"] in sources else None
    module, _, rest = key.partition(".")
    source, _, rest = rest.partition(".")
    if module not in _ASTEROID_MODULES or source not in sources:
        return None
    for theirs, ours in _ASTEROID_MODULES[module].items():
        head = f"{theirs}." if theirs else ""
        if rest.startswith(head) and "." not in rest[len(head):]:
            return source, f"{ours}.{rest[len(head):]}"
    return None


def split_sony_xumx(named):
    """Sony's X-UMX NNabla parameters -> source -> Sony UMX names (``fc1/affine/W``, ``input_mean``,
    ..., what `nnabla_to_params` maps), sources in Sony's order (bass, drums, vocals, other)."""
    parts = {}
    for name, value in named.items():
        if name in _SONY_XUMX_IGNORED:
            continue
        match = _SONY_XUMX.match(name)
        if not match:
            raise UnmixError(f"X-UMX NNabla parameters: unknown name {name}")
        parts.setdefault(match["source"], {})[match["layer"] + (match["rest"] or "")] = value
    order = [s for s in model_folder.XUMX_SOURCES if s in parts] + sorted(set(parts) - set(model_folder.XUMX_SOURCES))
    return {s: parts[s] for s in order}


def is_sony_xumx(named):
    """True for Sony's X-UMX parameter names (``fc1_<source>/...``), which no UMX file has."""
    return any(n.startswith(("fc1_", "lstm_")) for n in named)


# -- finding checkpoints -------------------------------------------------------------------------
def target_name(path):
    """The target of a checkpoint file: ``vocals-b62c91ce.pth`` -> ``vocals``."""
    return _NAME.match(Path(path).stem).group("target")


def find_checkpoints(src):
    """target -> checkpoint path(s) found at `src` (a file or a folder).

    Returns:
        (kind, mapping): kind "torch" with target -> Path, or "nnabla" with target ->
        name -> array (the target prefix removed), or "nnabla-xumx" with source -> name ->
        array (Sony UMX names, see `split_sony_xumx`).
    """
    src = Path(src)
    if src.is_file():
        files = [src]
    elif src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file())
    else:
        raise UnmixError(f"{src} does not exist")
    torch_files = [p for p in files if p.suffix in TORCH_SUFFIXES]
    if torch_files:
        return "torch", _torch_targets(torch_files)
    h5_files = [p for p in files if p.suffix == ".h5"]
    if h5_files:
        return _nnabla_targets(h5_files)
    raise UnmixError(f"no checkpoints found in {src} (expected <target>.pth, <target>-<hash>.pth or NNabla .h5)")


def _torch_targets(files):
    """target -> file; ``.pth`` wins over the training's ``.chkpnt`` of the same target."""
    found = {}
    for path in sorted(files, key=lambda p: p.suffix == ".chkpnt"):
        target = target_name(path)
        if target in found and found[target].suffix != ".chkpnt" and path.suffix == ".chkpnt":
            continue
        if target in found:
            raise UnmixError(f"two checkpoints for target '{target}': {found[target].name} and {path.name}")
        found[target] = path
    return found


def _nnabla_targets(files):
    """("nnabla", target -> NNabla parameters): names without a target prefix belong to the file's
    target; or ("nnabla-xumx", source -> parameters) for one X-UMX file."""
    named = {path: model_folder.read_h5_params(path) for path in files}
    xumx = [path for path, params in named.items() if is_sony_xumx(params)]
    if xumx and len(files) > 1:
        raise UnmixError(f"{xumx[0].name} holds a whole X-UMX model: convert it alone, not with "
                         f"{', '.join(p.name for p in files if p != xumx[0])}")
    if xumx:
        return "nnabla-xumx", split_sony_xumx(named[xumx[0]])
    found = {}
    for path in files:
        for name, value in named[path].items():
            head, _, rest = name.partition("/")
            target, name = (target_name(path), name) if head in _NNABLA_TOP or not rest else (head, rest)
            group = found.setdefault(target, {})
            if name in group:
                raise UnmixError(f"parameter {target}/{name} appears twice in {', '.join(p.name for p in files)}")
            group[name] = value
    return "nnabla", found


# -- signal parameters -----------------------------------------------------------------------
def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UnmixError(f"cannot read {path}: {exc}") from None


def _first(mappings, *keys):
    for mapping in mappings:
        for key in keys:
            if isinstance(mapping, dict) and mapping.get(key) is not None:
                return mapping[key]
    return None


def signal_params(folder, models):
    """(sample_rate, n_fft, n_hop) from ``separator.json``, ``<target>.json`` args, the weights, or defaults.

    open-unmix writes ``separator.json`` as {sample_rate, nfft, nhop, nb_channels} and
    keeps its training arguments (nfft, nhop, ...) under "args" of ``<target>.json``;
    older models and Separator state dicts carry their sample rate and STFT window.
    Without any of these: 44100 Hz, n_fft from the number of bins (4096 for 2049), n_hop n_fft / 4.

    Args:
        folder: where ``separator.json`` may lie.
        models: target -> `Converted`.
    """
    sep_path = Path(folder) / "separator.json"
    sep = _read_json(sep_path) if sep_path.is_file() else {}
    histories = [m.history.get("args") for m in models.values() if isinstance(m.history, dict)]
    stored = [m.stored for m in models.values()]
    nb_bins = {m.config.nb_bins for m in models.values()}
    if len(nb_bins) != 1:
        raise UnmixError(f"targets have different numbers of bins {sorted(nb_bins)}: they need one STFT")
    nb_bins = nb_bins.pop()
    n_fft = int(_first([sep, *histories, *stored], "n_fft", "nfft") or 2 * (nb_bins - 1))
    n_hop = int(_first([sep, *histories, *stored], "n_hop", "nhop") or n_fft // 4)
    rate = float(_first([sep, *stored], "sample_rate", "rate") or DEFAULT_SAMPLE_RATE)
    if n_fft // 2 + 1 != nb_bins:
        raise UnmixError(f"weights have {nb_bins} frequency bins but n_fft {n_fft} gives {n_fft // 2 + 1}")
    channels = _first([sep], "nb_channels")
    for target, m in models.items():
        if channels is not None and int(channels) != m.config.nb_channels:
            raise UnmixError(f"{sep_path} says {channels} channels, the '{target}' weights have {m.config.nb_channels}")
    return rate, n_fft, n_hop


# -- the whole conversion --------------------------------------------------------------------
class Converted(NamedTuple):
    """One target's converted weights (or one X-UMX source's)."""

    config: model_folder.ModelConfig
    params: dict  # name -> float32 array, as unmix.models.model_folder.param_shapes
    history: Optional[dict]  # the training's <target>.json, kept beside the weights
    stored: dict  # signal parameters found in the weights: sample_rate, n_fft, n_hop
    architecture: str = model_folder.UMX


def _torch_state_dicts(files):
    """target -> (file, state dict, stored signal parameters, architecture) of torch checkpoint files.

    A file normally holds one target's ``OpenUnmix``; the state dict of a whole
    open-unmix ``Separator`` holds every target under ``target_models.<target>.``, and an
    asteroid X-UMX package every source (split into open-unmix state dicts, architecture "xumx").
    """
    out = {}
    for file_target, path in files.items():
        obj = pth.load(path)
        sd, model_args = pth.state_dict_from(obj, path), _asteroid_model_args(obj)
        stored = {}
        if "sample_rate" in sd and sd["sample_rate"].size == 1:
            stored["sample_rate"] = float(sd["sample_rate"])
        if "stft.window" in sd and sd["stft.window"].ndim == 1:
            stored["n_fft"] = int(sd["stft.window"].shape[0])
        parts, architecture = {file_target: sd}, model_folder.UMX
        if is_asteroid_xumx(sd):
            if len(files) > 1:
                raise UnmixError(f"{path.name} holds a whole X-UMX model: convert it alone")
            stored.update({ours: model_args[theirs] for ours, theirs in
                           (("sample_rate", "sample_rate"), ("n_fft", "in_chan"), ("n_hop", "n_hop"))
                           if model_args.get(theirs) is not None})
            parts, architecture = split_asteroid_xumx(sd, model_args.get("sources")), model_folder.XUMX
        elif any(k.startswith(SEPARATOR_PREFIX) for k in sd):
            parts = {}
            for key, value in sd.items():
                if key.startswith(SEPARATOR_PREFIX):
                    target, _, name = key[len(SEPARATOR_PREFIX):].partition(".")
                    parts.setdefault(target, {})[name] = value
                elif key not in SEPARATOR_KEYS:
                    raise UnmixError(f"{path.name}: unknown key {key} in a Separator state dict")
        for target, part in parts.items():
            if target in out:
                raise UnmixError(f"two checkpoints for target '{target}': {out[target][0].name} and {path.name}")
            out[target] = (path, part, stored, architecture)
    return out


def _asteroid_model_args(obj):
    """The ``model_args`` of a loaded asteroid package ({} for any other checkpoint)."""
    args = obj.get("model_args") if isinstance(obj, dict) else None
    return args if isinstance(args, dict) else {}


def load_sources(src, targets=None):
    """Read and map the weights of every target found at `src` (or of `targets`).

    Returns:
        target -> `Converted`.
    """
    src = Path(src)
    kind, found = find_checkpoints(src)
    if kind == "torch":
        found = _torch_state_dicts(found)
    xumx = kind == "nnabla-xumx" or any(item[3] == model_folder.XUMX for item in found.values() if kind == "torch")
    if xumx and targets and sorted(targets) != sorted(found):
        raise UnmixError(f"an X-UMX model needs all its sources ({', '.join(found)}) to separate any of them: "
                         "convert it whole (and pick targets when separating)")
    if targets and not xumx:
        absent = [t for t in targets if t not in found]
        if absent:
            raise UnmixError(f"no weights for {', '.join(absent)} in {src} (found: {', '.join(sorted(found))})")
        found = {t: found[t] for t in targets}
    folder = src if src.is_dir() else src.parent
    for target in found:  # names from the weights become file names: data, not paths
        safe_name(target, f"target name found in {src}")
    models = {}
    for target, item in found.items():
        if kind.startswith("nnabla"):
            try:
                config, params = nnabla_to_params(item)
            except UnmixError as exc:
                raise UnmixError(f"X-UMX source '{target}': {exc}" if xumx else str(exc)) from None
            models[target] = Converted(config, params, None, {}, model_folder.XUMX if xumx else model_folder.UMX)
            continue
        path, sd, stored, architecture = item
        try:
            config, params = state_dict_to_params(sd)
        except UnmixError as exc:
            where = f" (X-UMX source '{target}')" if xumx else ""
            raise UnmixError(f"{path.name}{where}: {exc}") from None
        json_path = folder / f"{target}.json"
        history = _read_json(json_path) if json_path.is_file() and not xumx else None
        models[target] = Converted(config, params, history, stored, architecture)
    return models


def convert(src, out, targets=None, force=False):
    """Convert checkpoints at `src` into the model folder `out` (written atomically).

    Args:
        src: a folder or file, see the module docstring.
        out: the model folder to write (``separator.json``, ``<target>.h5``, ``<target>.json``); the
            ``.h5`` files have NNabla's own layout, written with h5py (no NNabla needed).
        targets: names to convert (default: every target found).
        force: replace an existing `out`.

    Returns:
        Path of the written folder.
    """
    src, out = Path(src), Path(out)
    _check_out(src, out, force)
    models = load_sources(src, targets)
    if out.exists() and force:  # before the work too, not only at the swap
        model_folder.check_replaceable(out, list(models))
    rate, n_fft, n_hop = signal_params(src if src.is_dir() else src.parent, models)
    architecture = next(iter(models.values())).architecture
    configs = {t: m.config for t, m in models.items()}
    if architecture == model_folder.XUMX and len(set(configs.values())) > 1:
        raise UnmixError(f"the X-UMX sources at {src} have different architectures: "
                         + "; ".join(f"{t}: {config_summary(c)}" for t, c in configs.items()))

    def write(tmp):
        for target, m in models.items():
            model_folder.save_params(tmp, target, m.config, m.params, extra_json=m.history)
        model_folder.write_separator_json(tmp, configs, rate, n_fft, n_hop, architecture=architecture)

    _write_folder(out, write, (lambda folder: model_folder.check_replaceable(folder, list(models))) if force else None)
    return out


def _check_out(src, out, force):
    if out.exists() and not force:
        raise UnmixError(f"{out} exists; use --force to replace it")
    if out.exists() and not out.is_dir():
        raise UnmixError(f"{out} exists and is not a folder")
    if out.exists() and src.exists() and out.resolve() in (src.resolve(), *src.resolve().parents):
        raise UnmixError(f"{out} holds the source weights; write the model folder elsewhere")


def _write_folder(out, write, replace=None):
    """Run `write(tmp)` on a fresh folder beside `out`, then swap it into place (an existing
    `out` only if ``replace(out)`` allows it, see `unmix.io.files.atomic_folder`).

    A failure leaves `out` as it was (absent or the previous model folder).
    """
    try:
        with atomic_folder(out, replace=replace) as tmp:
            write(tmp)
    except FileExistsError:
        raise UnmixError(f"{out} exists; use --force to replace it") from None
    except OSError as exc:
        raise UnmixError(f"cannot write {out}: {exc.strerror or exc}") from None
