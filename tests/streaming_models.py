"""Helpers of the streaming tests: tiny causal model folders, test signals, feeding a streamer."""
import numpy as np

from unmix.models.model_folder import ModelConfig, init_params, save_params, write_separator_json

RATE = 44100
N_FFT, N_HOP = 512, 128


def make_causal_folder(folder, targets=("vocals", "drums"), nb_channels=2, hidden_size=16, nb_layers=2,
                       unidirectional=True, seed=0):
    """A tiny random model folder with n_fft 512 / n_hop 128 (unidirectional by default)."""
    config = ModelConfig(nb_bins=N_FFT // 2 + 1, nb_channels=nb_channels, hidden_size=hidden_size,
                         nb_layers=nb_layers, max_bin=200, unidirectional=unidirectional)
    write_separator_json(folder, {t: config for t in targets}, sample_rate=RATE, n_fft=N_FFT, n_hop=N_HOP)
    for i, target in enumerate(targets):
        save_params(folder, target, config, init_params(config, seed + i))
    return folder


def noise(nb_samples, nb_channels=2, seed=0):
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((nb_channels, nb_samples))).astype(np.float32)


def stream(st, audio, sizes):
    """Feed `audio` in blocks of `sizes` (cycled) and flush; returns target -> the whole output."""
    outs, pos, i = [], 0, 0
    while pos < audio.shape[1]:
        n = sizes[i % len(sizes)]
        outs.append(st.feed(audio[:, pos:pos + n]))
        pos, i = pos + n, i + 1
    outs.append(st.flush())
    return {t: np.concatenate([o[t] for o in outs], axis=-1) for t in outs[0]}


def db_below(estimate, reference):
    """How far the error lies below the reference, in dB."""
    error = np.sum((estimate.astype(np.float64) - reference) ** 2)
    return 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(error, 1e-30))
