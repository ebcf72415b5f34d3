"""Known pretrained models: one table, and a resolver that downloads, verifies, converts, caches.

``resolve_model(model)`` turns what a user passes as ``--model`` into the path of a model
folder (see `unmix.models.model_folder`):

- an existing model folder is used as it is;
- a name from `MODELS` (``umxhq``, ``umx``, ``umxl``, ...) is downloaded once into the
  cache (``$UNMIX_CACHE``, else ``$XDG_CACHE_HOME/unmix``, else ``~/.cache/unmix``), each
  file checked against its published hash, converted with `unmix.weights.convert.convert`, and kept
  as ``<cache>/<name>/``; later calls find it there and touch no network;
- ``bundled`` is the small model that ships inside the package (`BUNDLED_MODEL`);
- None is `DEFAULT_MODEL` (umxhq), downloaded like any name; when it cannot be downloaded
  (offline, connection refused, DNS failure, HTTP error) the bundled model, with a one-line
  notice on stderr. A corrupt download (hash mismatch) is an error, never a fallback.

Downloads go to ``<cache>/downloads/<name>/<target><ext>`` through a ``.part`` temporary
file renamed only once its hash matches, so an interrupted or corrupt download never looks
complete. They are deleted once the model folder is in place (the converted ``.h5`` files
hold the same weights).

Hashes. torch.hub names a file ``<stem>-<first 8 hex of its sha256>.<ext>`` and checks only
those 8 hex digits. Where the full sha256 of a published file is known it is stored and
checked in full; where it is not, the 8-hex prefix is stored (and checked as a prefix) and,
where a full sha512 is known, that too. No hash here is made up: see the notes per entry.

Mirrors and tests: ``base_url=`` (or ``$UNMIX_MODEL_URL``) replaces everything before the
file name of each URL, so ``https://zenodo.org/records/3370489/files/vocals-b62c91ce.pth``
is fetched as ``<base_url>/vocals-b62c91ce.pth``.
"""
import contextlib
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from tqdm import tqdm

from unmix.errors import UnmixError
from unmix.io.files import atomic_path
from unmix.io.paths import move_no_replace
from unmix.models.model_folder import read_separator_json, write_json
from unmix.weights import convert as convert_module

DEFAULT_MODEL = "umxhq"  # what None stands for: downloaded on first use
# A small model trained by this project on synthetic songs (see models/README.md). It ships inside
# the package, so separation works offline: None falls back to it when DEFAULT_MODEL cannot be fetched.
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "default_model"
BUNDLED_NAME = "bundled"  # its name for --model
BUNDLED_DESCRIPTION = ("Open-Unmix (hidden size 384, 3 layers, float16 weights) trained by unmix on synthetic "
                       "songs; ships with unmix (offline); knows synthetic music only")
# The causal model for real time (`unmix stream`): unidirectional LSTMs, 1024/256 STFT (23 ms).
REALTIME_MODEL = BUNDLED_MODEL.parent / "realtime_model"
REALTIME_NAME = "bundled-rt"
REALTIME_DESCRIPTION = ("causal Open-Unmix for streaming (unidirectional, hidden size 128, 3 layers, STFT 1024/256: "
                        "23 ms) trained by unmix on synthetic songs; ships with unmix (offline)")


def bundled_models():
    """name -> (folder, description) of the models that ship inside the package."""
    return {BUNDLED_NAME: (BUNDLED_MODEL, BUNDLED_DESCRIPTION), REALTIME_NAME: (REALTIME_MODEL, REALTIME_DESCRIPTION)}

ENV_CACHE = "UNMIX_CACHE"
ENV_BASE_URL = "UNMIX_MODEL_URL"
TIMEOUT_S = 30  # per socket operation: a stalled server fails instead of hanging forever
CHUNK_BYTES = 1 << 20
MUSIC_TARGETS = ("vocals", "drums", "bass", "other")


@dataclass(frozen=True)
class WeightFile:
    """One published file and what is known of its hashes.

    Attributes:
        url: where its publisher serves it.
        sha256: the full 64-hex sha256, or a hex prefix of it (torch.hub's 8-hex file-name
            tag) that is checked as a prefix; None when nothing is known.
        sha512: the full 128-hex sha512, when known; None otherwise.
    """

    url: str
    sha256: Optional[str] = None
    sha512: Optional[str] = None

    @property
    def filename(self):
        return self.url.rsplit("/", 1)[-1]

    @property
    def verified_fully(self):
        """True when a full digest (not just a prefix) is checked."""
        return (self.sha256 is not None and len(self.sha256) == 64) or self.sha512 is not None


@dataclass(frozen=True)
class PretrainedModel:
    """One entry of the registry: where its weights are and what they are.

    Attributes:
        format: 'pth' (one open-unmix-pytorch state dict per target), 'nnabla-h5' (one Sony
            NNabla parameter file per target, or one for a whole X-UMX model) or 'nnabla-zip'
            (a zip of such .h5 files).
        files: for 'pth' / 'nnabla-h5' target -> file (X-UMX: {'x-umx': file}); for
            'nnabla-zip' {'archive': file}.
        architecture: 'umx' (Open-Unmix, a network per target) or 'xumx' (X-UMX: one network
            whose sources are the targets).
        nb_bins, max_bin, hidden_size, nb_layers, nb_channels: the architecture of each target
            (`unmix.models.nnabla_graph.ModelConfig`); sample_rate, n_fft, n_hop: its signal parameters.
    """

    name: str
    description: str
    license: str
    format: str
    targets: Tuple[str, ...]
    files: Dict[str, WeightFile]
    sample_rate: float
    n_fft: int
    n_hop: int
    nb_channels: int
    hidden_size: int
    max_bin: int
    nb_layers: int = 3
    architecture: str = "umx"
    source: str = ""  # the publisher's page (DOI / record), for people
    notes: str = ""  # provenance of the hashes and anything unverified

    @property
    def nb_bins(self):
        return self.n_fft // 2 + 1


def _zenodo(record, names):
    return {t: f"https://zenodo.org/records/{record}/files/{n}" for t, n in names.items()}


# max_bin: open-unmix's bandwidth_to_max_bin(44100, 4096, 16000) = 1487 (bins up to 16 kHz);
# for umxse (16 kHz, n_fft 1024, bandwidth 16000) every bin: 513.
MODELS: Dict[str, PretrainedModel] = {}


def _register(entry):
    MODELS[entry.name] = entry
    return entry


_UMXHQ_URLS = _zenodo(3370489, {"vocals": "vocals-b62c91ce.pth", "drums": "drums-9619578f.pth",
                                "bass": "bass-8d85a5bd.pth", "other": "other-b52fbbf7.pth"})
_register(PretrainedModel(
    name="umxhq",
    description="Open-Unmix trained on MUSDB18-HQ (uncompressed, full bandwidth); 4 stems, 44.1 kHz stereo",
    license="MIT",
    format="pth",
    targets=MUSIC_TARGETS,
    files={
        # full sha256s as recorded by independent downloads of the record (each starts with
        # the 8-hex tag of its file name, which torch.hub checks)
        "vocals": WeightFile(_UMXHQ_URLS["vocals"],
                             "b62c91cedbc7a066f1778ead5b5cecb377aa3a46a31af1cce7c5c8769339d083"),
        "drums": WeightFile(_UMXHQ_URLS["drums"],
                            "9619578f885c54737cb0234f9f9a4a679ee4f31438fd77fd1dbe02bb16c2da0a"),
        "bass": WeightFile(_UMXHQ_URLS["bass"],
                           "8d85a5bd3f996a8867fca0e8442e077e5a3f5ec747a6112742452a8f347b39c8"),
        "other": WeightFile(_UMXHQ_URLS["other"],
                            "b52fbbf76479e752bd72e02304c602ac7802aa5bfbfb9cd12054b2695d5093ab"),
    },
    sample_rate=44100.0, n_fft=4096, n_hop=1024, nb_channels=2, hidden_size=512, max_bin=1487,
    source="https://doi.org/10.5281/zenodo.3370489",
    notes="full sha256 of each file (35,637,796 bytes each)",
))

_UMX_URLS = _zenodo(3370486, {"vocals": "vocals-c8df74a5.pth", "drums": "drums-5a48008b.pth",
                              "bass": "bass-646024d3.pth", "other": "other-f8e132cc.pth"})
_register(PretrainedModel(
    name="umx",
    description="Open-Unmix trained on MUSDB18 (AAC stems, 16 kHz bandwidth); 4 stems, 44.1 kHz stereo",
    license="MIT",
    format="pth",
    targets=MUSIC_TARGETS,
    files={
        # sha256: torch.hub's 8-hex prefix from the file name (the full digest is not known
        # here); sha512: full digests from the Arch User Repository's open-unmix-umx-weights
        "vocals": WeightFile(_UMX_URLS["vocals"], "c8df74a5",
                             "9c6db1a2ad96e9d94bf51c0178e1ae83101b5d4e150e7fc3bbb827c57747c109"
                             "7f892043feaf8fba8f679cceca6e30407d28c7f0abc86e868dc51aa19d6e136c"),
        "drums": WeightFile(_UMX_URLS["drums"], "5a48008b",
                            "316fadd245217df8f5031ac0d5c5b9686abd262bf62cd686891672157a88805c"
                            "57aa11d43eb85d985b757ec801911f6426e92fc4c9282553f1b8506c0ef55e93"),
        "bass": WeightFile(_UMX_URLS["bass"], "646024d3",
                           "159f541e0e21fcd9505d2cf4e6ec2623fb6850bdde2bcd84537f1060ba26e372"
                           "a9e43c1d1bbd3d4da6cb75f7d40993fde69e3e7bc48fb83775634948889cce37"),
        "other": WeightFile(_UMX_URLS["other"], "f8e132cc",
                            "19e77e74e5cf2311dcd74733e0d8dd63c3a8b9fab9282017661c90a41f1091ca"
                            "5fd1b628f3be371d6b4ab3f0d501d85fc13b8c5af3a426479ccf9f53769a0253"),
    },
    sample_rate=44100.0, n_fft=4096, n_hop=1024, nb_channels=2, hidden_size=512, max_bin=1487,
    source="https://doi.org/10.5281/zenodo.3370486",
    notes="sha256: 8-hex prefix only (torch.hub's check); sha512: full, from the AUR package",
))

_UMXL_URLS = _zenodo(5069601, {"vocals": "vocals-bccbd9aa.pth", "drums": "drums-69e0ebd4.pth",
                               "bass": "bass-2ca1ce51.pth", "other": "other-c8c5b3e6.pth"})
_register(PretrainedModel(
    name="umxl",
    description="Open-Unmix Extra: larger (hidden size 1024), trained on ~400 h of extra multi-track "
                "data; 4 stems, 44.1 kHz stereo. NON-COMMERCIAL use only (CC BY-NC-SA 4.0)",
    license="CC BY-NC-SA 4.0 (non-commercial)",
    format="pth",
    targets=MUSIC_TARGETS,
    files={  # sha256: torch.hub's 8-hex prefix from the file name
        "vocals": WeightFile(_UMXL_URLS["vocals"], "bccbd9aa"),
        "drums": WeightFile(_UMXL_URLS["drums"], "69e0ebd4"),
        "bass": WeightFile(_UMXL_URLS["bass"], "2ca1ce51"),
        "other": WeightFile(_UMXL_URLS["other"], "c8c5b3e6"),
    },
    sample_rate=44100.0, n_fft=4096, n_hop=1024, nb_channels=2, hidden_size=1024, max_bin=1487,
    source="https://doi.org/10.5281/zenodo.5069601",
    notes="sha256: 8-hex prefix only (torch.hub's check); no full digest known",
))

_UMXSE_URLS = _zenodo(3786908, {"speech": "speech_f5e0d9f9.pth", "noise": "noise_04a6fc2d.pth"})
_register(PretrainedModel(
    name="umxse",
    description="Open-Unmix for speech enhancement (Voicebank+DEMAND, 28 speakers); speech / noise, "
                "16 kHz mono",
    license="MIT",
    format="pth",
    targets=("speech", "noise"),
    files={
        # These names use '_', so torch.hub checks nothing and the 8 hex digits in them are not
        # known to be a sha256 prefix: only the full sha512 (from the AUR's
        # open-unmix-umxse-weights) is checked.
        "speech": WeightFile(_UMXSE_URLS["speech"], None,
                             "32832e498f250281d8cc76f097d56d51204f171b77ee886d00cfadcdaa306a68"
                             "5fddc1b33aa1114cbd6eeee8708ec419599f6bc67353a8b22efdbd1e98fbfd0b"),
        "noise": WeightFile(_UMXSE_URLS["noise"], None,
                            "5dc71948bc55c3f89b4e2d26fcf32a9835537750eadf61d9e5d96468c7d7b480"
                            "200ae772b9db88d645d17a8a12b7226d80cc055e953d9ab5cba1c508f3b87d9e"),
    },
    sample_rate=16000.0, n_fft=1024, n_hop=512, nb_channels=1, hidden_size=256, max_bin=513,
    source="https://doi.org/10.5281/zenodo.3786908",
    notes="sha512 only (full, from the AUR package); the file-name tags are not checked",
))

# Sony's NNabla UMX weights (sony/ai-research-code, x-umx/umx.md): one zip of NNabla .h5
# parameter files per model. Sony publishes no checksum: only the zip's own CRCs are checked.
for _name, _data in (("umxhq", "MUSDB18-HQ"), ("umx", "MUSDB18")):
    _register(PretrainedModel(
        name=f"{_name}-nnabla",
        description=f"Sony's NNabla Open-Unmix trained on {_data}; 4 stems, 44.1 kHz stereo",
        license="not stated by Sony for the weights (their code: Apache-2.0)",
        format="nnabla-zip",
        targets=("bass", "drums", "vocals", "other"),
        files={"archive": WeightFile(f"https://nnabla.org/pretrained-models/open-unmix-nnabla/{_name}.zip")},
        sample_rate=44100.0, n_fft=4096, n_hop=1024, nb_channels=2, hidden_size=512, max_bin=1487,
        source="https://github.com/sony/ai-research-code/blob/master/x-umx/umx.md",
        notes="no published checksum: not verified beyond the zip CRCs",
    ))
del _name, _data

# Sony's NNabla X-UMX (CrossNet-Open-Unmix, sony/ai-research-code x-umx/README.md): one .h5 for
# the whole model. Sony publishes no checksum for it either: nothing is verified beyond HDF5's
# own structure (a truncated or corrupt file fails to convert).
_register(PretrainedModel(
    name="xumx",
    description="Sony's NNabla X-UMX (CrossNet-Open-Unmix) trained on MUSDB18; 4 stems, 44.1 kHz stereo",
    license="not stated by Sony for the weights (their code: Apache-2.0)",
    format="nnabla-h5",
    targets=("bass", "drums", "vocals", "other"),
    files={"x-umx": WeightFile("https://nnabla.org/pretrained-models/ai-research-code/x-umx/x-umx.h5")},
    sample_rate=44100.0, n_fft=4096, n_hop=1024, nb_channels=2, hidden_size=512, max_bin=1487,
    architecture="xumx",
    source="https://github.com/sony/ai-research-code/tree/master/x-umx",
    notes="no published checksum: not verified beyond reading it as HDF5",
))


class DownloadError(UnmixError):
    """A download that could not happen or finish (offline, refused, DNS, HTTP error, cut off).

    Attributes:
        reason: what went wrong, short (for the default model's fallback notice).
    """

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


# -- public API ----------------------------------------------------------------------------
def list_models(cache_dir=None):
    """A help text: one line per model `--model NAME` takes (name, description, license, whether it
    is cached), then what None stands for."""
    rows = [(name, entry.description, entry.license) for name, entry in MODELS.items()]
    rows += [(name, description, "MIT") for name, (folder, description) in bundled_models().items()
             if _is_model_folder(folder)]
    width = max(len(name) for name, _, _ in rows)
    lines = []
    for name, description, license in rows:
        default = " (default)" if name == DEFAULT_MODEL else ""
        cached = " (cached)" if name in MODELS and _is_model_folder(cache_root(cache_dir) / name) else ""
        lines.append(f"{name:<{width}}  {description}{default}{cached} [license: {license}]")
    lines.append(f"\nWithout --model: {DEFAULT_MODEL}, downloaded once into {cache_root(cache_dir) / DEFAULT_MODEL}; "
                 f"when it cannot be downloaded (offline), the {BUNDLED_NAME} model, with a notice.")
    return "\n".join(lines)


def _is_model_folder(path):
    return (Path(path) / "separator.json").is_file()


def get_model_info(name):
    """The registry entry `name`, or UnmixError listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnmixError(f"unknown model '{name}': known models are {', '.join(MODELS)}") from None


def cache_root(cache_dir=None):
    """Where converted models live: `cache_dir`, else $UNMIX_CACHE, else $XDG_CACHE_HOME/unmix,
    else ~/.cache/unmix (empty variables count as unset)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "unmix"
    return Path.home() / ".cache" / "unmix"


def resolve_model(model=None, cache_dir=None, base_url=None, progress=True):
    """The model folder for `model`: a local folder, a registry name (downloaded once), or ``bundled``.

    Args:
        model: a model folder (has separator.json), a name from `MODELS`, or ``bundled``; an
            existing path wins over a name (as in open-unmix), so ``./umx`` is a folder, never the
            registry. None: `DEFAULT_MODEL`, or the bundled model when it cannot be downloaded.
        cache_dir: overrides the cache location (see `cache_root`).
        base_url: fetch files from ``<base_url>/<file name>`` instead of their publisher
            (a mirror, or a local test server); default $UNMIX_MODEL_URL, else the table's URLs.
        progress: show a tqdm progress bar per download.

    Returns:
        Path of a model folder.
    """
    if model is None:
        return _default_folder(cache_dir, base_url, progress)
    path = Path(str(model)).expanduser()
    if path.exists():
        if not _is_model_folder(path):
            raise UnmixError(f"{path} is not a model folder (no separator.json); "
                             "make one from .pth/.h5 weights with `unmix convert SRC DIR`")
        return path
    bundled = bundled_models()
    if str(model) in bundled:
        folder = bundled[str(model)][0]
        if not _is_model_folder(folder):
            raise UnmixError(f"the {model} model is missing from {folder}; reinstall unmix")
        return folder
    if str(model) not in MODELS:
        raise UnmixError(f"model '{model}' is neither a model folder nor a known model name "
                         f"(known: {', '.join([*MODELS, *bundled])})")
    entry = MODELS[str(model)]
    folder = cache_root(cache_dir) / entry.name
    if _is_model_folder(folder):
        return folder
    return _install(entry, folder, _base_url(base_url), progress)


def _default_folder(cache_dir, base_url, progress):
    """`DEFAULT_MODEL`'s folder (downloaded once); the bundled one, with a notice, when the
    download cannot happen. Any other error (a corrupt download, a full disk) is raised."""
    try:
        return resolve_model(DEFAULT_MODEL, cache_dir, base_url, progress)
    except DownloadError as exc:
        if not _is_model_folder(BUNDLED_MODEL):
            raise
        print(f"notice: cannot download {DEFAULT_MODEL}, the default model ({exc.reason}): using the "
              f"{BUNDLED_NAME} model, trained on synthetic songs only (`unmix models` tells more)", file=sys.stderr)
        return BUNDLED_MODEL


# -- download, verify, convert ---------------------------------------------------------------
def _base_url(base_url):
    base = base_url if base_url is not None else os.environ.get(ENV_BASE_URL) or None
    return base.rstrip("/") if base else None


def file_url(weight_file, base_url=None):
    """The URL to fetch `weight_file` from: its own, or ``<base_url>/<its file name>``."""
    return weight_file.url if base_url is None else f"{base_url}/{weight_file.filename}"


def _install(entry, folder, base_url, progress):
    """Download every file of `entry`, convert them into `folder`, drop the downloads."""
    _check_cache(folder.parent)
    downloads = folder.parent / "downloads" / entry.name
    if progress:
        print(f"downloading {entry.name} into {folder} (once)", file=sys.stderr)
    for key, weight_file in entry.files.items():
        dest = downloads / (key + Path(weight_file.filename).suffix)
        if dest.is_file():  # complete (renamed only after its hash matched); check it again anyway
            _check_hashes(_hash_file(dest), weight_file, dest, file_url(weight_file, base_url))
        else:
            download(file_url(weight_file, base_url), dest, weight_file, progress)
    src = _unpack(entry, downloads)
    _convert_into(entry, src, folder)
    shutil.rmtree(downloads, ignore_errors=True)
    with contextlib.suppress(OSError):  # only when no other model's downloads wait there
        downloads.parent.rmdir()
    return folder


def _check_cache(root):
    """Raise a one-line UnmixError unless the cache folder `root` exists (or can be made) and
    takes files: $UNMIX_CACHE may name a file, or a folder this user cannot write."""
    where = f"the model cache {root}" + (f" (${ENV_CACHE})" if os.environ.get(ENV_CACHE) else "")
    if root.exists() and not root.is_dir():
        raise UnmixError(f"cannot use {where}: it is a file, not a folder; point ${ENV_CACHE} at a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise UnmixError(f"cannot use {where}: {exc.strerror or exc}; point ${ENV_CACHE} at a folder you can "
                         "write") from None


def _unpack(entry, downloads):
    """The folder to convert from: `downloads` itself, or the .h5 files of a zip."""
    if entry.format != "nnabla-zip":
        return downloads
    out = downloads / "unpacked"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    archive = downloads / "archive.zip"
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()  # CRC of every member: Sony publishes no hash
            if bad is not None:
                raise UnmixError(f"{archive} is corrupt (bad CRC in {bad}); delete it and try again")
            members = [m for m in zf.infolist() if not m.is_dir() and m.filename.endswith(".h5")]
            for m in members:  # flat, by base name: never write outside `out`
                (out / Path(m.filename).name).write_bytes(zf.read(m))
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise UnmixError(f"{archive} is not a valid zip file ({exc}); it was deleted, try again") from None
    if not members:
        raise UnmixError(f"{archive} holds no .h5 parameter files")
    return out


def _convert_into(entry, src, folder):
    """Convert `src` into a temporary folder, pin the registry's metadata, rename onto `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".part", dir=folder.parent))
    try:
        out = Path(convert_module.convert(src, tmp / entry.name, targets=list(entry.targets), force=True))
        meta = read_separator_json(out)
        _check_converted(entry, meta)
        # the registry knows the signal parameters a bare state dict cannot tell
        meta.update(sample_rate=float(entry.sample_rate), n_fft=entry.n_fft, n_hop=entry.n_hop)
        meta["pretrained"] = {"name": entry.name, "license": entry.license, "source": entry.source}
        write_json(out / "separator.json", meta)
        if folder.exists() and not (folder / "separator.json").is_file():
            shutil.rmtree(folder)  # a leftover without separator.json is not a model
        if not folder.exists():  # else another process finished first: keep theirs
            with contextlib.suppress(FileExistsError):
                move_no_replace(out, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_converted(entry, meta):
    """The converted weights must be the architecture the registry describes."""
    got = meta.get("architecture", "umx")
    if got != entry.architecture:
        raise UnmixError(f"the weights of {entry.name} are an {got} model, the registry expects {entry.architecture}")
    for target, config in meta["models"].items():
        got = (config["nb_bins"], config["nb_channels"], config["hidden_size"], config["max_bin"] or config["nb_bins"])
        want = (entry.nb_bins, entry.nb_channels, entry.hidden_size, entry.max_bin)
        if got != want:
            raise UnmixError(f"the '{target}' weights of {entry.name} have (bins, channels, hidden, max_bin) "
                             f"{got}, the registry expects {want}")


def download(url, dest, weight_file=None, progress=True):
    """Fetch `url` into `dest` through a ``.part`` file; verify it against `weight_file`'s hashes.

    On a hash mismatch the download is deleted and UnmixError says so; `dest` appears only
    complete and verified.
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        digests = _fetch(url, tmp, progress)
        if weight_file is not None:
            _check_hashes(digests, weight_file, dest, url)
    return dest


def _fetch(url, path, progress):
    """Stream `url` into `path`; return {'sha256': hex, 'sha512': hex} of what was written."""
    hashes = {"sha256": hashlib.sha256(), "sha512": hashlib.sha512()}
    with _network_errors(url):
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    with contextlib.closing(response):
        total = int(response.headers.get("Content-Length") or 0) or None
        written = 0
        with open(path, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                           desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
            while True:
                with _network_errors(url, connected=True):
                    chunk = response.read(CHUNK_BYTES)
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as exc:  # disk full, permissions: not the network's fault
                    raise UnmixError(f"cannot write {path}: {exc}") from None
                for h in hashes.values():
                    h.update(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if total is not None and written != total:
        raise DownloadError(f"download of {url} stopped after {written} of {total} bytes; try again",
                            f"stopped after {written} of {total} bytes")
    return {k: h.hexdigest() for k, h in hashes.items()}


@contextlib.contextmanager
def _network_errors(url, connected=False):
    """Turn what urllib raises (HTTP status, no route, DNS, refused, timeout, reset) into one line.

    `connected`: the server answered already, so a failure now is a broken transfer, not
    a missing network.
    """
    try:
        yield
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
        raise DownloadError(f"download of {url} failed ({reason}); {_LOCAL_HINT}", reason) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or repr(exc)
        if connected:
            raise DownloadError(f"download of {url} was interrupted ({reason}); try again", reason) from None
        raise DownloadError(f"download of {url} failed ({reason}): this machine seems offline; "
                            f"{_LOCAL_HINT}", reason) from None


_LOCAL_HINT = ("get the weights another way and pass a local folder instead: "
               "`unmix convert SRC DIR`, then `--model DIR`")


def _hash_file(path):
    hashes = {"sha256": hashlib.sha256(), "sha512": hashlib.sha512()}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            for h in hashes.values():
                h.update(chunk)
    return {k: h.hexdigest() for k, h in hashes.items()}


def _check_hashes(digests, weight_file, dest, url):
    """Compare computed `digests` with every hash `weight_file` knows (a short sha256 is a prefix)."""
    expected = {"sha256": weight_file.sha256, "sha512": weight_file.sha512}
    for kind, want in expected.items():
        if want is None:
            continue
        got = digests[kind]
        if not got.startswith(want.lower()):
            Path(dest).unlink(missing_ok=True)
            what = "prefix " if len(want) < len(got) else ""
            raise UnmixError(f"{kind} of {url} is {got}, expected {what}{want}: "
                             "the download is corrupt or was changed and has been deleted")
