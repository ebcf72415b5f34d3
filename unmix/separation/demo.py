"""`unmix demo`: separate the bundled example song and draw what came out.

The example (``unmix/assets/example/example.flac``, 10 s, 44.1 kHz stereo) is a synthetic
song rendered by this project (tools/default_model/render_training_songs.sh example), so it is free of
third-party rights. The demo separates it with the default model (umxhq, or the bundled model
offline: `unmix.weights.registry.resolve_model`; `make demo` passes ``--model bundled``) and writes

    <outdir>/<target>.wav        one per target
    <outdir>/spectrograms.png    mixture and every stem, log-magnitude, same colour scale
"""
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unmix.errors import UnmixError
from unmix.io import audio as audio_io
from unmix.io.files import atomic_path
from unmix.separation.separator import load_separator

EXAMPLE_PATH = Path(__file__).resolve().parent.parent / "assets" / "example" / "example.flac"
PNG_NAME = "spectrograms.png"
FLOOR_DB = -80.0  # below the loudest bin of the mixture: the plots' colour range


def run_demo(outdir, model=None, backend="auto", example=EXAMPLE_PATH, progress=True):
    """Separate `example` and write the stems and a spectrogram PNG into `outdir`.

    Args:
        outdir: folder to write into (created; files already there are replaced).
        model: registry name or model folder; None: the default model.
        backend: 'auto', 'onnx' or 'nnabla' (see `unmix.load_separator`).
        example: the mixture to separate (default: the bundled example).
        progress: show a progress bar while separating.

    Returns:
        dict name -> written path: each target, and ``"png"``.
    """
    if not Path(example).is_file():
        raise UnmixError(f"example song {example} is missing; reinstall unmix")
    mixture, rate = audio_io.load(example)
    separator = load_separator(model, backend=backend)
    estimates = separator.separate(mixture, rate, progress=progress)
    outdir = Path(outdir).expanduser()
    outdir.mkdir(parents=True, exist_ok=True)
    written = {t: audio_io.save(outdir / f"{t}.wav", est, rate) for t, est in estimates.items()}
    written["png"] = plot_spectrograms(mixture, estimates, rate, outdir / PNG_NAME)
    return written


def log_spectrogram(audio, n_fft=2048, n_hop=512, max_frames=2000):
    """Channel-averaged power in dB of ``(nb_channels, nb_timesteps)`` audio:
    ``(nb_bins, nb_frames)``, Hann-windowed frames (the plot only, not the model's STFT).

    A long song gets a longer hop, at most `max_frames` frames: a picture a few hundred pixels
    wide shows no more, and the frames of a 5-minute song at hop 512 would take 1.3 GB."""
    mono = np.asarray(audio, dtype=np.float64).mean(axis=0)
    n_hop = max(n_hop, -(-mono.size // max_frames))
    if mono.size < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.size))
    nb_frames = 1 + (mono.size - n_fft) // n_hop
    idx = np.arange(n_fft)[None, :] + n_hop * np.arange(nb_frames)[:, None]
    frames = mono[idx] * np.hanning(n_fft)[None, :]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return 10.0 * np.log10(power.T + 1e-12)


def plot_spectrograms(mixture, estimates, rate, path):
    """One PNG: the mixture and each estimate as log spectrograms, stacked, on the mixture's
    colour scale (so a quiet stem looks quiet). Returns `path`.

    Drawn on matplotlib's Agg canvas without pyplot: the caller's backend is left alone."""
    panels = {"mixture": mixture, **estimates}
    specs = {name: log_spectrogram(a) for name, a in panels.items()}
    top = specs["mixture"].max()
    extent = (0.0, mixture.shape[-1] / rate, 0.0, rate / 2000.0)
    fig = Figure(figsize=(9, 1.8 * len(specs)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(specs), 1, sharex=True, squeeze=False)
    for ax, (name, spec) in zip(axes[:, 0], specs.items()):
        image = ax.imshow(spec, origin="lower", aspect="auto", extent=extent, cmap="magma",
                          vmin=top + FLOOR_DB, vmax=top)
        ax.set_ylabel("kHz")
        ax.set_title(name, loc="left", fontsize=10)
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", shrink=0.5)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    return Path(path)
