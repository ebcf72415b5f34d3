"""The open-unmix-pytorch side of `compare_training.py`; runs in the torch venv (Python 3.11).

    PYTHONPATH=tools/fixtures/stubs $TORCH_VENV/bin/python benchmarks/reference_train_worker.py CONFIG.json

One fresh process: a few warm-up steps then the timed steps of the reference's training loop
(``scripts/train.py`` of open-unmix-pytorch 1.3, function ``train``), one JSON line on stdout.

What runs is the reference's own code: ``openunmix.model.OpenUnmix``, the encoder of its script
(``transforms.make_filterbanks`` STFT with center=False + ``transforms.ComplexNorm``),
``torch.optim.Adam(lr, weight_decay)``, ``mse_loss``, a ``torch.utils.data.DataLoader`` over
``openunmix.data.MUSDBDataset.__getitem__`` (random track mix, gain and channel-swap
augmentations). Only the audio source differs: musdb cannot read FLAC track folders and this venv
has no audio library, so the driver decodes the training tracks once into ``<source>.npy``
(float32, (nb_timesteps, nb_channels)) and this worker hands them to ``__getitem__`` through a
stand-in of the musdb DB (``tracks``, ``setup["sources"]``, ``chunk_start``/``chunk_duration``,
``sources[name].audio``). The reference's real loader spawns one ffmpeg process per chunk
(musdb reads through stempeg, WAV included), so its data time here is a lower bound.

Per step the timers split: ``data_s`` (waiting for the next batch), ``stft_s`` (the encoder on x
and y: part of the reference's step, where unmix does it in its data workers), ``step_s``
(forward, MSE, backward, Adam step, ``loss.item()``).
"""
import json
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _import_openunmix():
    """openunmix.data imports tqdm, which only its folder datasets call: where the torch venv lacks
    it, a placeholder serves that import and is removed again (torch probes installed modules)."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        import types

        sys.modules["tqdm"] = types.ModuleType("tqdm")
        try:
            import openunmix.data  # noqa: F401
        finally:
            del sys.modules["tqdm"]
    from openunmix import data, model, transforms

    return data, model, transforms


data, model, transforms = _import_openunmix()

SOURCES = ("vocals", "drums", "bass", "other")  # musdb's mus.yaml order (setup["sources"])


class _CachedSource:
    """``track.sources[name]``: ``.audio`` is the current chunk, (nb_timesteps, nb_channels), as musdb."""

    def __init__(self, track, array):
        self.track, self.array = track, array

    @property
    def audio(self):
        t = self.track
        start = int(t.chunk_start * t.rate)
        stop = start + int(t.chunk_duration * t.rate)
        return np.asarray(self.array[start:stop], dtype=np.float64)  # stempeg's default dtype


class _CachedTrack:
    """A musdb Track's interface used by ``MUSDBDataset.__getitem__`` in training."""

    def __init__(self, folder, rate):
        self.name, self.rate = Path(folder).name, float(rate)
        arrays = {s: np.load(Path(folder) / f"{s}.npy", mmap_mode="r") for s in SOURCES}
        self.duration = min(a.shape[0] for a in arrays.values()) / self.rate
        self.chunk_start, self.chunk_duration = 0.0, None
        self.sources = {s: _CachedSource(self, a) for s, a in arrays.items()}


class _CachedDB:
    def __init__(self, folders, rate):
        self.tracks = [_CachedTrack(f, rate) for f in folders]
        self.setup = {"sources": {s: f"{s}.wav" for s in SOURCES}}


class CachedMUSDBDataset(data.MUSDBDataset):
    """The reference's MUSDBDataset (its ``__getitem__`` and ``__len__``) over decoded tracks."""

    def __init__(self, folders, rate, target, seq_duration, samples_per_track, seed):
        # what MUSDBDataset.__init__ sets, minus musdb.DB (it reads .wav / .stem.mp4 only)
        self.seed = seed
        random.seed(seed)
        self.is_wav = True
        self.seq_duration = seq_duration
        self.target = target
        self.subsets = "train"
        self.split = "train"
        self.samples_per_track = samples_per_track
        self.source_augmentations = data.aug_from_str(["gain", "channelswap"])  # the script's default
        self.random_track_mix = True
        self.mus = _CachedDB(folders, rate)
        self.sample_rate = float(rate)


def peak_rss_mb():
    """(this process's peak RSS, the largest peak of its finished children) in MB."""
    main = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return main / 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run(cfg):
    """Warm-up + timed steps of the reference's training loop; returns the JSON record."""
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    stats = np.load(cfg["stats"])
    dataset = CachedMUSDBDataset(cfg["track_cache"], cfg["sample_rate"], cfg["target"], cfg["seq_dur"],
                                 cfg["samples_per_track"], cfg["seed"])
    # the script passes num_workers only with CUDA; here the count is the driver's (equal for both)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"], shuffle=True,
                                         num_workers=cfg["nb_workers"])
    stft, _ = transforms.make_filterbanks(n_fft=cfg["n_fft"], n_hop=cfg["n_hop"], sample_rate=cfg["sample_rate"])
    encoder = torch.nn.Sequential(stft, transforms.ComplexNorm(mono=cfg["nb_channels"] == 1))
    unmix = model.OpenUnmix(input_mean=stats["mean"], input_scale=stats["std"], nb_bins=cfg["n_fft"] // 2 + 1,
                            nb_channels=cfg["nb_channels"], hidden_size=cfg["hidden_size"],
                            nb_layers=cfg["nb_layers"], max_bin=cfg["max_bin"])
    optimizer = torch.optim.Adam(unmix.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    unmix.train()
    steps = []
    it = iter(loader)
    for _ in range(cfg["warmup"] + cfg["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        x, y = next(it)
        t1 = time.perf_counter()
        optimizer.zero_grad()
        # the script computes Y after Y_hat; the encoder has no trainable parameters, so the order
        # does not change the step, and this one lets the STFT be timed on its own
        X, Y = encoder(x), encoder(y)
        t2 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(unmix(X), Y)
        loss.backward()
        optimizer.step()
        value = loss.item()
        t3, c3 = time.perf_counter(), time.process_time()
        steps.append({"data_s": t1 - t0, "stft_s": t2 - t1, "step_s": t3 - t2, "wall_s": t3 - t0,
                      "cpu_s": c3 - c0, "loss": value})
    del it  # joins the loader's workers, so their peak RSS is counted below
    main_mb, worker_mb = peak_rss_mb()
    return {"side": "reference", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "nb_parameters": int(sum(p.numel() for p in unmix.parameters() if p.requires_grad)),
            "batch_shape": list(X.shape), "warmup": steps[:cfg["warmup"]], "timed": steps[cfg["warmup"]:],
            "peak_rss_main_mb": main_mb, "peak_rss_worker_mb": worker_mb}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit(__doc__)
    print(json.dumps(run(json.loads(Path(argv[0]).read_text()))), flush=True)


if __name__ == "__main__":
    main()
