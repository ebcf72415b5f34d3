"""Shared fixtures: a tiny model folder that separates quickly, short audio files, and no network.

NNabla (Python 3.8-3.10 only) is needed by the tests marked ``nnabla`` and by the modules in
`NNABLA_MODULES` (marked whole); everything else runs without it. Where NNabla does not import,
those modules are not collected and the marked tests are skipped; `make test-py312` deselects
them with ``-m "not nnabla"``.
"""
import errno
import importlib.util
import ipaddress
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unmix.models.model_folder import ModelConfig, init_params, save_params, write_separator_json

TARGETS = ["vocals", "drums", "bass", "other"]
RATE = 44100
HAS_NNABLA = importlib.util.find_spec("nnabla") is not None
NNABLA_MODULES = ["models/test_nnabla_graph.py", "models/test_fast_ops.py", "models/test_fast_ops_xumx.py",
                  "training/test_train.py", "training/test_solver.py", "training/test_train_parity.py",
                  "training/test_train_xumx.py", "training/test_train_xumx_parity.py", "models/test_xumx_loss.py"]
collect_ignore = [] if HAS_NNABLA else NNABLA_MODULES
# the shared synthetic dataset (design.md, "Data at hand"): beside the repository, or where
# UNMIX_MUSDB_SYNTH_MINI says; the tests that read it skip when it is absent
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # small files made from the references (tools/fixtures)
MUSDB_SYNTH_MINI = Path(os.environ.get("UNMIX_MUSDB_SYNTH_MINI")
                        or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "musdb-synth-mini")


def pytest_collection_modifyitems(config, items):
    if HAS_NNABLA:
        return
    skip = pytest.mark.skip(reason="needs NNabla (Python 3.8-3.10: pip install 'unmix[train]')")
    for item in items:
        if "nnabla" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def offline(tmp_path_factory):
    """No test reaches the network, and none sees the user's model cache.

    Model downloads go to a loopback port that is bound but never listens (every connection is
    refused), so what needs the default model falls back to the bundled one as it does offline;
    the cache is a fresh folder. Behind that, name lookups of anything but the loopback fail as
    a DNS failure would, and connections outside the loopback range are refused.

    Yields:
        the unreachable base URL.
    """
    closed_port = socket.socket()
    closed_port.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed_port.getsockname()[1]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNMIX_MODEL_URL", url)
        mp.setenv("UNMIX_CACHE", str(tmp_path_factory.mktemp("unmix-cache")))
        mp.setattr(socket, "getaddrinfo", _loopback_only(socket.getaddrinfo, lookup=True))
        mp.setattr(socket.socket, "connect", _loopback_only(socket.socket.connect))
        yield url
    closed_port.close()


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _loopback_only(call, lookup=False):
    """`call` (socket.getaddrinfo or socket.socket.connect) refusing hosts outside the loopback."""
    def guarded(*args, **kwargs):
        if lookup:
            host = args[0]
            if host is not None and not _is_loopback(host.decode() if isinstance(host, bytes) else host):
                raise socket.gaierror(socket.EAI_NONAME, f"tests are offline: no lookup of {host}")
        else:
            sock, address = args[0], args[1]
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
                raise OSError(errno.ENETUNREACH, f"tests are offline: no connection to {address[0]}")
        return call(*args, **kwargs)

    return guarded


def make_model_folder(folder, targets=TARGETS, nb_channels=2, hidden_size=8, seed=0):
    """A model folder of random tiny Open-Unmix models with the real bin layout (n_fft 4096)."""
    config = ModelConfig(nb_bins=2049, nb_channels=nb_channels, hidden_size=hidden_size, nb_layers=1, max_bin=1487)
    write_separator_json(folder, {t: config for t in targets}, sample_rate=RATE)
    for i, target in enumerate(targets):
        save_params(folder, target, config, init_params(config, seed + i))
    return folder


def make_xumx_folder(folder, sources=("bass", "drums", "vocals", "other"), nb_channels=2, hidden_size=8, seed=0):
    """A model folder of a random tiny X-UMX (every parameter random, see `perturbed`), real bin layout."""
    config = ModelConfig(nb_bins=2049, nb_channels=nb_channels, hidden_size=hidden_size, nb_layers=2, max_bin=1487)
    write_separator_json(folder, {s: config for s in sources}, sample_rate=RATE, architecture="xumx")
    for i, source in enumerate(sources):
        save_params(folder, source, config, perturbed(config, seed + i + 1))
    return folder


def perturbed(config, seed=1):
    """Parameters that are all random, running statistics included (not the identity of `init_params`)."""
    rng = np.random.default_rng(seed)
    params = {k: v + rng.uniform(-0.3, 0.3, v.shape).astype(np.float32)
              for k, v in init_params(config, seed).items()}
    return {k: np.abs(v) + 0.1 if k.endswith("/var") else v for k, v in params.items()}


def tone(seconds=1.0, nb_channels=2, rate=RATE):
    """A two-tone test signal ``(nb_channels, nb_timesteps)``."""
    t = np.arange(int(seconds * rate)) / rate
    sig = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 97 * t)
    return np.stack([sig * (1 - 0.2 * c) for c in range(nb_channels)]).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_xumx(tmp_path_factory):
    return make_xumx_folder(tmp_path_factory.mktemp("models") / "tiny-xumx")


@pytest.fixture
def song(tmp_path):
    path = tmp_path / "song.wav"
    sf.write(path, tone().T, RATE)
    return path
