"""Shared fixtures: a tiny model folder that separates quickly, and short audio files."""
import numpy as np
import pytest
import soundfile as sf

from unmix.model import ModelConfig, OpenUnmix, save_target, write_separator_json

TARGETS = ["vocals", "drums", "bass", "other"]
RATE = 44100


def make_model_folder(folder, targets=TARGETS, nb_channels=2, hidden_size=8, seed=0):
    """A model folder of random tiny Open-Unmix models with the real bin layout (n_fft 4096)."""
    config = ModelConfig(nb_bins=2049, nb_channels=nb_channels, hidden_size=hidden_size, nb_layers=1, max_bin=1487)
    write_separator_json(folder, {t: config for t in targets}, sample_rate=RATE)
    for i, target in enumerate(targets):
        save_target(folder, target, OpenUnmix(config, seed=seed + i))
    return folder


def perturbed(config, seed=1):
    """A model whose every parameter (running statistics included) is random, not identity."""
    model = OpenUnmix(config, seed=seed)
    rng = np.random.default_rng(seed)
    params = {k: v + rng.uniform(-0.3, 0.3, v.shape).astype(np.float32) for k, v in model.get_params().items()}
    params = {k: np.abs(v) + 0.1 if k.endswith("/var") else v for k, v in params.items()}
    model.set_params(params)
    return model


def tone(seconds=1.0, nb_channels=2, rate=RATE):
    """A two-tone test signal ``(nb_channels, nb_timesteps)``."""
    t = np.arange(int(seconds * rate)) / rate
    sig = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 97 * t)
    return np.stack([sig * (1 - 0.2 * c) for c in range(nb_channels)]).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def song(tmp_path):
    path = tmp_path / "song.wav"
    sf.write(path, tone().T, RATE)
    return path
