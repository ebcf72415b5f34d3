"""Model folders without NNabla: the architecture, the parameter table, and the files on disk.

A model folder holds

    separator.json   targets, sample_rate, n_fft, n_hop, nb_channels, architecture, and per
                     target its `ModelConfig` under "models"
    <target>.h5      the target's parameters (names and shapes of `param_shapes`), in the layout
                     NNabla's ``nn.save_parameters`` writes: one float32 dataset per name (or
                     float16 for the weight matrices of a `half_precision` folder)
                     (``fc1/affine/W`` is a dataset ``W`` in group ``fc1/affine``), each with the
                     attributes ``need_grad`` (bool) and ``index`` (its position, which
                     ``nn.load_parameters`` restores the order from)
    <target>.json    optional: the training configuration and history

or, as `unmix export` writes it, ``<target>.onnx`` graphs instead of the ``.h5`` files
(`unmix.models.onnx_graph`). Everything here is numpy, h5py and JSON, so reading, converting and
separating work on any Python; the NNabla network (`unmix.models.nnabla_graph`) is needed to train.

Two architectures (separator.json's ``architecture``; a folder without it is "umx"):

- "umx", Open-Unmix: one independent network per target;
- "xumx", CrossNet-Open-Unmix (X-UMX): one network for all its targets (its *sources*), whose
  per-source branches are Open-Unmix networks joined by two frame-wise means (the bridges, see
  `unmix.models.nnabla_graph.CrossNet`). Each source's branch has exactly the parameters of an Open-Unmix
  target (fc2 maps the bridged ``2 * hidden_size`` features to ``hidden_size`` in both), so an
  X-UMX folder stores them the same way, one ``<source>.h5`` per source, all with one config.
"""
import fcntl
import json
import math
import os
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from unmix.errors import UnmixError
from unmix.io.files import atomic_path
from unmix.io.paths import safe_name

BN_EPS = 1e-5  # batch norm epsilon, as torch's BatchNorm1d
UMX, XUMX = "umx", "xumx"
ARCHITECTURES = (UMX, XUMX)
XUMX_SOURCES = ("bass", "drums", "vocals", "other")  # Sony's and asteroid's order
SEPARATOR_JSON = "separator.json"
MODEL_FILE_SUFFIXES = (".h5", ".json", ".onnx")  # <target><suffix>: what unmix writes per target
# the ranges a separator.json may hold: wide enough for any real model, narrow enough that a
# crafted file cannot make a separation allocate without bound or come out as garbage
SAMPLE_RATES = (1000.0, 1_000_000.0)
N_FFTS = (16, 65536)
MAX_TARGETS = 64
CONFIG_RANGES = {"nb_channels": (1, 2), "hidden_size": (1, 16384), "nb_layers": (1, 16)}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one target model (saved as JSON beside its weights)."""

    nb_bins: int = 2049
    nb_channels: int = 2
    hidden_size: int = 512
    nb_layers: int = 3
    max_bin: Optional[int] = None
    unidirectional: bool = False

    @property
    def model_bins(self):
        """Bins the network sees (``max_bin`` or all)."""
        return self.max_bin or self.nb_bins

    @property
    def nb_directions(self):
        return 1 if self.unidirectional else 2

    @property
    def lstm_hidden_size(self):
        return self.hidden_size if self.unidirectional else self.hidden_size // 2

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        fields = cls.__dataclass_fields__
        if not isinstance(d, dict):
            raise UnmixError(f"a model config must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - set(fields)
        if unknown:
            raise UnmixError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


def param_shapes(config):
    """Expected parameter names -> shapes for `config` (the on-disk contract)."""
    c, m, n, s = config.nb_channels, config.model_bins, config.nb_bins, config.hidden_size
    d, h, layers = config.nb_directions, config.lstm_hidden_size, config.nb_layers
    shapes = OrderedDict(
        [
            ("input_mean", (m,)),
            ("input_scale", (m,)),
            ("output_scale", (n,)),
            ("output_mean", (n,)),
            ("fc1/affine/W", (c * m, s)),
        ]
    )
    shapes.update(_bn_shapes("bn1", s))
    shapes["lstm/lstm/weight_l0"] = (d, 4, h, s + h)
    if layers > 1:
        shapes["lstm/lstm/weight"] = (layers - 1, d, 4, h, d * h + h)
    shapes["lstm/lstm/bias"] = (layers, d, 4, h)
    shapes["fc2/affine/W"] = (2 * s, s)
    shapes.update(_bn_shapes("bn2", s))
    shapes["fc3/affine/W"] = (s, c * n)
    shapes.update(_bn_shapes("bn3", c * n))
    return shapes


def _bn_shapes(name, size):
    return [(f"{name}/bn/{k}", (1, size)) for k in ("beta", "gamma", "mean", "var")]


def is_trainable(name):
    """False for the batch-norm running statistics (NNabla's ``need_grad``)."""
    return not name.endswith(("/mean", "/var"))


def init_params(config, seed=0):
    """Random parameters initialised as torch initialises the reference (numpy, seeded)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("/affine/W"):
            bound = 1.0 / np.sqrt(shape[0])  # kaiming_uniform(a=sqrt(5)) of nn.Linear
            value = rng.uniform(-bound, bound, shape)
        elif name.startswith("lstm/"):
            bound = 1.0 / np.sqrt(config.lstm_hidden_size)
            value = rng.uniform(-bound, bound, shape)
            if name == "lstm/lstm/bias":  # torch's b_ih + b_hh: two uniform draws
                value += rng.uniform(-bound, bound, shape)
        elif name.endswith(("/gamma", "/var", "input_scale", "output_scale", "output_mean")):
            value = np.ones(shape)
        else:  # beta, running mean, input_mean
            value = np.zeros(shape)
        params[name] = value.astype(np.float32)
    return params


def check_params(config, params):
    """`params` as float32 arrays in `param_shapes` order; names and shapes must match exactly.

    Returns:
        OrderedDict name -> float32 array.
    """
    expected = param_shapes(config)
    missing, unknown = set(expected) - set(params), set(params) - set(expected)
    if missing or unknown:
        raise UnmixError(f"parameters do not fit the model: missing {sorted(missing)}, unknown {sorted(unknown)}")
    checked = OrderedDict()
    for name, shape in expected.items():
        value = np.asarray(params[name], dtype=np.float32)
        if value.shape != tuple(shape):
            raise UnmixError(f"parameter {name} has shape {value.shape}, the model expects {tuple(shape)}")
        checked[name] = value
    return checked


# -- parameter files ----------------------------------------------------------------------------
def write_h5_params(path, params):
    """Write name -> array as ``nn.save_parameters(path, extension=".h5")`` does (atomically).

    Args:
        params: name -> array, in the order NNabla creates them (`param_shapes` order).
    """
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for index, (name, value) in enumerate(params.items()):
                f[name] = np.asarray(value)
                f[name].attrs["need_grad"] = is_trainable(name)
                f[name].attrs["index"] = index


def read_h5_params(path):
    """name -> array from an NNabla ``.h5`` parameter file (read with h5py: no global scope).

    Only numeric datasets, each no larger than the file itself (NNabla and unmix store them
    uncompressed), so a crafted file cannot make the reader allocate what it does not hold;
    corrupt HDF5 internals, whatever h5py raises for them, are one UnmixError.
    """
    params = {}
    limit = os.path.getsize(path) if os.path.isfile(path) else 0

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.dtype.kind not in "fiub":
            raise UnmixError(f"dataset {name} holds {obj.dtype}, not numbers")
        if obj.size * obj.dtype.itemsize > limit:
            raise UnmixError(f"dataset {name} declares {obj.size * obj.dtype.itemsize} bytes, more than the file holds")
        params[name] = obj[()]

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except UnmixError as exc:
        raise UnmixError(f"cannot read parameters from {path}: {exc}") from None
    except OSError as exc:  # not HDF5, truncated, unreadable
        raise UnmixError(f"cannot read parameters from {path}: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # noqa: BLE001 -- corrupt internals: h5py raises OSError, KeyError, RuntimeError, ...
        raise UnmixError(f"cannot read parameters from {path}: corrupt HDF5 file ({' '.join(str(exc).split())})") from None
    return params


def half_precision(params):
    """`params` with the weight matrices stored as float16, the vectors kept float32.

    The matrices (``*/affine/W`` and the LSTM weights) hold 98% of a network's values, so a
    folder shrinks to about half. Biases, batch-norm parameters and statistics and the input /
    output scaling stay float32: they are small, and ``input_scale`` (1 / std of a bin) can
    exceed float16's largest value, 65504. `check_params` widens everything back to float32 on
    loading, so a half-precision folder runs on every backend unchanged; how far its outputs move
    is for the caller to check (`tools/default_model/train_default_model.sh` requires 1e-3 x max output).
    """
    return OrderedDict((name, np.asarray(value).astype(np.float16 if _is_matrix(name) else np.float32))
                       for name, value in params.items())


def _is_matrix(name):
    return name.endswith("/affine/W") or name.startswith("lstm/lstm/weight")


def save_params(folder, target, config, params, extra_json=None, half=False):
    """Write ``<folder>/<target>.h5`` (checked against `config`) and, if given, ``<target>.json``.

    With `half`, the weight matrices are stored in float16 (`half_precision`).
    """
    folder = Path(folder)
    safe_name(target, "target")
    params = check_params(config, params)
    write_h5_params(folder / f"{target}.h5", half_precision(params) if half else params)
    if extra_json is not None:
        write_json(folder / f"{target}.json", extra_json)


def target_config(folder, target, meta=None):
    """The `ModelConfig` of `target` in the model folder (`meta`: its separator.json, if read)."""
    meta = read_separator_json(folder) if meta is None else meta
    if target not in meta["targets"]:
        raise UnmixError(f"model folder {folder} has no target '{target}' (it has {', '.join(meta['targets'])})")
    return ModelConfig.from_dict(meta["models"][target])


def load_params(folder, target):
    """One target's ``(ModelConfig, name -> float32 array)`` from the ``.h5`` of a model folder."""
    config = target_config(folder, target)
    path = Path(folder) / f"{target}.h5"
    if not path.is_file():
        onnx_only = (Path(folder) / f"{target}.onnx").is_file()
        why = (": it holds the ONNX graph that `unmix export` wrote, which ONNX Runtime runs "
               "(not --backend nnabla, --device gpu or training)") if onnx_only else ""
        raise UnmixError(f"model folder {folder} lacks {path.name}{why}")
    params = check_params(config, read_h5_params(path))
    for name, value in params.items():  # HDF5 has no checksums: flipped bits show up here, or not at all
        if not np.isfinite(value).all():
            raise UnmixError(f"{path}: parameter {name} holds NaN or infinite values (a corrupt file?)")
        if name.endswith("/var") and (value < 0).any():
            raise UnmixError(f"{path}: parameter {name} holds negative variances (a corrupt file?)")
    return config, params


# -- separator.json -----------------------------------------------------------------------------
def write_separator_json(folder, configs, sample_rate, n_fft=4096, n_hop=1024, architecture=UMX, **extra):
    """Write ``separator.json``: the architecture, the targets, their configs and the signal parameters.

    Args:
        configs: target name -> ModelConfig (for "xumx": every source, all with one config).
    """
    for target in configs:
        safe_name(target, "target")
    nb_channels = {c.nb_channels for c in configs.values()}
    if len(nb_channels) != 1:
        raise UnmixError("all targets of a model folder must have the same number of channels")
    _check_architecture(architecture, configs)
    meta = {
        "architecture": architecture,
        "targets": list(configs),
        "sample_rate": float(sample_rate),
        "n_fft": int(n_fft),
        "n_hop": int(n_hop),
        "nb_channels": nb_channels.pop(),
        "models": {t: c.to_dict() for t, c in configs.items()},
        **extra,
    }
    write_json(Path(folder) / "separator.json", meta)


def read_separator_json(folder):
    """The parsed ``separator.json`` of a model folder, checked (`validate_separator_json`),
    with a clear error when absent."""
    path = Path(folder) / SEPARATOR_JSON
    if not path.is_file():
        raise UnmixError(f"{folder} is not a model folder (no separator.json)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # unreadable, not JSON, not UTF-8
        raise UnmixError(f"{path} is not a valid separator.json: {' '.join(str(exc).split())}") from None
    try:
        return validate_separator_json(meta)
    except UnmixError as exc:
        raise UnmixError(f"{path}: {exc}") from None


def validate_separator_json(meta):
    """`meta` (a parsed separator.json) if every value lies in its range; else UnmixError.

    The targets must be safe file names (they name ``<target>.h5`` and the stems); the sample
    rate a number within `SAMPLE_RATES`; ``n_fft`` an integer within `N_FFTS`; ``n_hop`` an integer from 1 to ``n_fft / 2`` (a longer hop leaves the
    inverse STFT without overlap: garbage); the configs integers within `CONFIG_RANGES`.
    """
    if not isinstance(meta, dict):
        raise UnmixError("not a valid separator.json: not a JSON object")
    for key in ("targets", "sample_rate", "models"):
        if key not in meta:
            raise UnmixError(f"not a valid separator.json: no '{key}'")
    targets, models = meta["targets"], meta["models"]
    if not isinstance(targets, list) or not targets or len(targets) > MAX_TARGETS:
        raise UnmixError(f"'targets' must be a list of 1 to {MAX_TARGETS} names")
    for target in targets:
        safe_name(target, "target")
    if len(set(targets)) != len(targets):
        raise UnmixError(f"'targets' names a target twice: {targets}")
    if not isinstance(models, dict) or any(t not in models for t in targets):
        raise UnmixError("'models' must hold the config of every target")
    configs = {t: _checked_config(t, models[t]) for t in targets}
    _number(meta, "sample_rate", *SAMPLE_RATES)
    if "n_fft" in meta:
        n_fft = _integer(meta, "n_fft", *N_FFTS)
        if "n_hop" in meta:
            _integer(meta, "n_hop", 1, n_fft // 2)
    if "nb_channels" in meta:
        channels = _integer(meta, "nb_channels", *CONFIG_RANGES["nb_channels"])
        if {c.nb_channels for c in configs.values()} != {channels}:
            raise UnmixError(f"nb_channels {channels} is not that of every model")
    _check_architecture(architecture(meta), configs)
    return meta


def _checked_config(target, config):
    """The ModelConfig of `target` from its separator.json dict, every field of the right type
    and range."""
    if not isinstance(config, dict):
        raise UnmixError(f"the config of '{target}' is not a JSON object")
    config = ModelConfig.from_dict(config)
    for name, (low, high) in CONFIG_RANGES.items():
        _integer(asdict(config), name, low, high, f"'{target}' ")
    nb_bins = _integer(asdict(config), "nb_bins", 2, N_FFTS[1] // 2 + 1, f"'{target}' ")
    if config.max_bin is not None:
        _integer(asdict(config), "max_bin", 1, nb_bins, f"'{target}' ")
    if not isinstance(config.unidirectional, bool):
        raise UnmixError(f"'{target}' unidirectional must be true or false, got {config.unidirectional!r}")
    if not config.unidirectional and config.hidden_size % 2:
        raise UnmixError(f"'{target}' hidden_size {config.hidden_size} must be even for a bidirectional LSTM")
    return config


def _integer(meta, key, low, high, where=""):
    """``meta[key]``, an integer (not a bool) from `low` to `high`, else UnmixError."""
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UnmixError(f"{where}{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _number(meta, key, low, high):
    """``meta[key]``, a finite number (not a bool) from `low` to `high`, else UnmixError."""
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise UnmixError(f"{key} must be a number from {low:g} to {high:g}, got {value!r}")
    return value


def training_lock_file(folder, name):
    """``<folder>/.<name>.lock``: the file a training of `name` into `folder` holds locked
    (`unmix.training.checkpoint.lock_training`)."""
    return Path(folder) / f".{name}.lock"


_LOCK_FILE = re.compile(r"\.(.+)\.lock")


def _lock_held(path):
    """True when another process holds the ``flock`` of `path`."""
    try:
        with open(path, "rb") as file:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def check_replaceable(folder, targets=()):
    """Raise UnmixError unless the existing `folder` holds only files unmix writes into a model
    folder, so that ``--force`` may replace it: separator.json and ``<target>.h5/.json/.onnx``
    (`MODEL_FILE_SUFFIXES`) of the targets its separator.json names or of `targets` (what is
    about to be written), and ``xumx.onnx``. Anything else, a subfolder included, is the
    user's: named in the message, and the folder is kept. A training's ``.<name>.lock``
    (`training_lock_file`) is unmix's too: ignored when a killed run left it, refused while a
    training holds it.
    """
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        raise UnmixError(f"{folder} exists and is not a folder; --force replaces model folders only")
    names = set(targets)
    try:
        names.update(read_separator_json(folder)["targets"])
    except UnmixError:
        pass  # no (valid) separator.json: only the targets being written are known
    known = {SEPARATOR_JSON, "xumx.onnx"} | {t + s for t in names for s in MODEL_FILE_SUFFIXES}
    for entry in sorted(os.listdir(folder)):
        lock = _LOCK_FILE.fullmatch(entry)
        if lock and (folder / entry).is_file() and not (folder / entry).is_symlink():
            if _lock_held(folder / entry):
                raise UnmixError(f"{folder} is being trained for '{lock.group(1)}' by another process; "
                                 "wait for it or choose another folder")
            continue
        if entry not in known or not (folder / entry).is_file() or (folder / entry).is_symlink():
            raise UnmixError(f"{folder} holds {entry}, which unmix did not write there: --force replaces a model "
                             "folder only; remove it yourself or choose another folder")


def architecture(meta):
    """The architecture of a parsed separator.json: "umx" (also when it says none) or "xumx"."""
    return meta.get("architecture", UMX)


def _check_architecture(name, configs):
    """A known architecture; X-UMX sources share one config (their bridges average their features).

    Args:
        configs: target -> ModelConfig or its dict.
    """
    if name not in ARCHITECTURES:
        raise UnmixError(f"unknown architecture '{name}' (known: {', '.join(ARCHITECTURES)})")
    as_dicts = [c.to_dict() if isinstance(c, ModelConfig) else dict(c) for c in configs.values()]
    if name == XUMX and any(c != as_dicts[0] for c in as_dicts):
        raise UnmixError("the sources of an X-UMX model must all have the same config")


def add_target(folder, target, config, sample_rate, n_fft, n_hop):
    """separator.json with `target` added to the targets already in the folder (Open-Unmix only)."""
    _, configs, extra = folder_models(folder)
    if extra.get("architecture", UMX) != UMX:  # one X-UMX network: no target can be added to it
        raise UnmixError(f"{folder} holds an {extra['architecture']} model: train Open-Unmix targets into "
                         "another folder")
    configs[target] = config
    write_separator_json(folder, configs, sample_rate, n_fft, n_hop, **extra)


def folder_models(folder):
    """``(meta, configs, extra)`` of a folder's separator.json: its content, target -> ModelConfig for
    the targets whose weights are there, and the keys other than the signal parameters
    (``(None, {}, {})`` without the file)."""
    folder = Path(folder)
    if not (folder / "separator.json").is_file():
        return None, {}, {}
    meta = read_separator_json(folder)
    configs = {t: ModelConfig.from_dict(meta["models"][t]) for t in meta["targets"]
               if (folder / f"{t}.h5").is_file()}
    extra = {k: v for k, v in meta.items()
             if k not in ("targets", "models", "sample_rate", "n_fft", "n_hop", "nb_channels")}
    return meta, configs, extra


def write_json(path, obj):
    """Atomically write `obj` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
