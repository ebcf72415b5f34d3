"""What a job may ask for, checked on the server: models, targets, split, niter, output format.

The page sends names (a model name, a format id), never paths: each is looked up here and
turned into what `unmix.load_separator` and `unmix.separation.stems.StemFormat` take.
Models are the registry's (downloaded on first use when not cached), the bundled one, and any
other model folder in the cache folder (`unmix.weights.registry.cache_root`).
"""
import shutil
from dataclasses import dataclass
from typing import Tuple

from unmix.errors import UnmixError
from unmix.models.model_folder import read_separator_json
from unmix.separation.separator import AUTO_RESIDUAL
from unmix.separation.stems import StemFormat
from unmix.weights import registry

KARAOKE_TARGET = "vocals"
KARAOKE_RESIDUAL = AUTO_RESIDUAL  # the karaoke split: vocals, and the mixture minus them
MODES = ("stems", "karaoke")
MAX_NITER = 3  # each EM iteration costs about as much as the networks; more gains little
DEFAULT_NITER = 1
# format id -> (label, StemFormat keywords); what the browser's mixer decodes, too
FORMATS = {
    "wav": ("WAV, 32-bit float", dict(ext=".wav", bits=32)),
    "wav16": ("WAV, 16-bit", dict(ext=".wav", bits=16)),
    "flac": ("FLAC, 24-bit", dict(ext=".flac", bits=24)),
    "mp3": ("MP3, 320 kbit/s", dict(ext=".mp3", mp3_bitrate=320)),
}
DEFAULT_FORMAT = "wav"
SETTINGS = ("model", "mode", "targets", "niter", "format")  # what the page remembers


@dataclass(frozen=True)
class ModelChoice:
    """A model the page may choose: its name, what `load_separator` takes, its targets."""

    name: str
    label: str
    model: str  # a model folder or a registry name
    targets: Tuple[str, ...]
    cached: bool

    def to_json(self):
        return dict(name=self.name, label=self.label, targets=list(self.targets), cached=self.cached,
                    karaoke=KARAOKE_TARGET in self.targets)


def models():
    """name -> `ModelChoice`: cached registry models first, then other cached folders, the
    bundled model, and the registry models that would be downloaded on first use."""
    root = registry.cache_root()
    cached, later = {}, {}
    for name, entry in registry.MODELS.items():
        folder = root / name
        if (folder / "separator.json").is_file():
            cached[name] = ModelChoice(name, f"{name}: {entry.description}", str(folder), tuple(entry.targets), True)
        else:
            later[name] = ModelChoice(name, f"{name} (downloaded on first use): {entry.description}", name,
                                      tuple(entry.targets), False)
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if folder.name in registry.MODELS or folder.name == registry.BUNDLED_NAME or folder.name.startswith("."):
            continue
        try:
            meta = read_separator_json(folder)
        except UnmixError:  # not a model folder (the web app's data, downloads in progress, ...)
            continue
        cached[folder.name] = ModelChoice(folder.name, f"{folder.name} (model folder in {root})", str(folder),
                                          tuple(meta["targets"]), True)
    bundled = read_separator_json(registry.BUNDLED_MODEL)
    cached[registry.BUNDLED_NAME] = ModelChoice(
        registry.BUNDLED_NAME, f"{registry.BUNDLED_NAME}: {registry.BUNDLED_DESCRIPTION}",
        str(registry.BUNDLED_MODEL), tuple(bundled["targets"]), True)
    return {**cached, **later}


def default_model(choices):
    """The registry's default model when it is cached, else the first cached one."""
    default = choices.get(registry.DEFAULT_MODEL)
    if default is not None and default.cached:
        return default.name
    return next(name for name, c in choices.items() if c.cached)


def formats():
    """format id -> label of the formats this machine can write (mp3 needs ffmpeg)."""
    return {k: label for k, (label, _) in FORMATS.items() if k != "mp3" or shutil.which("ffmpeg")}


def options_json(max_upload):
    """What the page offers, as JSON: models, formats, modes, niter range and defaults."""
    choices = models()
    return dict(models=[c.to_json() for c in choices.values()], default_model=default_model(choices),
                formats=[dict(id=k, label=v) for k, v in formats().items()], default_format=DEFAULT_FORMAT,
                modes=list(MODES), karaoke=[KARAOKE_TARGET, KARAOKE_RESIDUAL], niter=dict(
                    default=DEFAULT_NITER, max=MAX_NITER), max_upload=max_upload)


def job_options(values, choices=None):
    """Check what a page asked for (strings, as from a query string) and return the job's options:
    ``{model, mode, targets, niter, format}``. Raises UnmixError naming the first bad value."""
    choices = models() if choices is None else choices
    name = values.get("model") or default_model(choices)
    if name not in choices:
        raise UnmixError(f"unknown model {name!r}: choose one of {', '.join(choices)}")
    choice = choices[name]
    mode = values.get("mode") or "stems"
    if mode not in MODES:
        raise UnmixError(f"unknown split {mode!r}: use {' or '.join(MODES)}")
    if mode == "karaoke":
        if KARAOKE_TARGET not in choice.targets:
            raise UnmixError(f"model {name} has no {KARAOKE_TARGET} target: the karaoke split needs one")
        targets = [KARAOKE_TARGET]
    else:
        targets = [t for t in (values.get("targets") or "").split(",") if t] or list(choice.targets)
        unknown = [t for t in targets if t not in choice.targets]
        if unknown:
            raise UnmixError(f"model {name} has no target {', '.join(unknown)} (it has {', '.join(choice.targets)})")
        targets = [t for t in choice.targets if t in targets]  # the model's order, each once
    niter = values.get("niter", DEFAULT_NITER)
    try:
        niter = int(niter)
    except (TypeError, ValueError):
        raise UnmixError(f"niter must be an integer, got {niter!r}") from None
    if not 0 <= niter <= MAX_NITER:
        raise UnmixError(f"niter must be from 0 to {MAX_NITER}, got {niter}")
    fmt = values.get("format") or DEFAULT_FORMAT
    if fmt not in formats():
        raise UnmixError(f"unknown output format {fmt!r}: use {', '.join(formats())}")
    return dict(model=name, mode=mode, targets=targets, niter=niter, format=fmt)


def separator_options(options, choices=None):
    """`unmix.load_separator` keywords for a job's options."""
    choices = models() if choices is None else choices
    if options["model"] not in choices:
        raise UnmixError(f"model {options['model']} is no longer available")
    residual = KARAOKE_RESIDUAL if options["mode"] == "karaoke" else None
    return dict(model=choices[options["model"]].model, targets=list(options["targets"]), niter=options["niter"],
                residual=residual)


def stem_format(options):
    """The `StemFormat` of a job's options."""
    return StemFormat(**FORMATS[options["format"]][1])
