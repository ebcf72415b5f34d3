"""The asteroid X-UMX side of `compare_training.py --architecture xumx`; runs in the torch venv.

    PYTHONPATH=tools/fixtures/stubs $TORCH_VENV/bin/python benchmarks/reference_xumx_train_worker.py CONFIG.json

One fresh process: a few warm-up steps then the timed steps of asteroid's X-UMX recipe
(``egs/musdb18/X-UMX/train.py``: ``System.common_step`` then Adam), one JSON line on stdout.

What runs is asteroid 0.7's own code: ``BrokenXUMX`` (STFT, the network, masks x mixture magnitude,
ISTFT with the mixture's phase; ``return_time_signals=True``; LSTM dropout 0.4 as the recipe),
``asteroid.data.MUSDB18Dataset`` with the recipe's settings (random track per source, random
segments, gain 0.25-1.25 and channel swap per source) reading the same FLAC tracks as unmix
(``suffix=".flac"``, the driver's training tracks), a ``torch.utils.data.DataLoader`` with the
driver's worker count, ``Adam(lr, weight_decay)``, and the recipe's ``MultiDomainLoss`` (L_f +
10 L_t over the 14 combinations): read from the recipe's train.py when the config names it
(``recipe``), else the transcription of tools/fixtures/make_xumx_training_fixtures.py, which the fixtures
check against it. asteroid's STFT modules are patched to torch 2's complex API (the same
transforms; see that script).

Per step the timers split: ``data_s`` (waiting for the batch), ``stft_s`` (0: the transforms are
inside the model, as in the recipe), ``step_s`` (forward, loss, backward, Adam step, ``loss.item()``)
and, inside it, ``loss_s`` (the loss's forward and backward: the model's ISTFT and the recipe's
``MultiDomainLoss``, measured by running the backward in two parts).
"""
import json
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools" / "fixtures"))
import make_xumx_training_fixtures as recipe  # noqa: E402  (patches asteroid's STFT modules on import)
import asteroid  # noqa: E402
from asteroid.models.x_umx import BrokenXUMX  # noqa: E402


def _musdb18_dataset_class():
    """``asteroid.data.musdb18_dataset.MUSDB18Dataset``, loaded from its file: the package
    ``asteroid.data`` imports every dataset module (librosa, pandas, ...), this one needs none."""
    import importlib.util

    path = Path(asteroid.__file__).parent / "data" / "musdb18_dataset.py"
    spec = importlib.util.spec_from_file_location("asteroid_musdb18_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MUSDB18Dataset


MUSDB18Dataset = _musdb18_dataset_class()

SOURCES = ["bass", "drums", "vocals", "other"]  # the recipe's conf.yml order


def _augment(audio):
    """The recipe's source augmentations: gain in [0.25, 1.25], then a random channel swap."""
    audio = audio * (0.25 + torch.rand(1) * 1.0)
    if audio.shape[0] == 2 and torch.FloatTensor(1).uniform_() < 0.5:
        return torch.flip(audio, [0])
    return audio


def peak_rss_mb():
    """(this process's peak RSS, the largest peak of its finished children) in MB."""
    main = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return main / 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run(cfg):
    """Warm-up + timed steps of the recipe's training loop; returns the JSON record."""
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    stats = np.load(cfg["stats"])
    dataset = MUSDB18Dataset(cfg["root"], sources=SOURCES, targets=SOURCES, suffix=".flac", split="train",
                             subset=cfg["train_tracks"], segment=cfg["seq_dur"], samples_per_track=cfg["samples_per_track"],
                             random_segments=True, random_track_mix=True, source_augmentations=_augment,
                             sample_rate=int(cfg["sample_rate"]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"], shuffle=True,
                                         num_workers=cfg["nb_workers"])
    model = BrokenXUMX(SOURCES, window_length=cfg["n_fft"], in_chan=cfg["n_fft"], n_hop=cfg["n_hop"],
                       hidden_size=cfg["hidden_size"], nb_channels=2, sample_rate=cfg["sample_rate"],
                       nb_layers=cfg["nb_layers"], input_mean=stats["mean"], input_scale=stats["std"],
                       max_bin=cfg["max_bin"], bidirectional=True, spec_power=1, return_time_signals=True)
    loss_fn = (recipe.recipe_loss(cfg["recipe"], cfg["n_fft"], cfg["n_hop"]) if cfg.get("recipe")
               else recipe.TranscribedLoss(cfg["n_fft"], cfg["n_hop"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    model.train()
    steps = []
    it = iter(loader)
    for _ in range(cfg["warmup"] + cfg["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        x, y = next(it)
        t1 = time.perf_counter()
        optimizer.zero_grad()
        # the model's masked magnitudes, then (timed as the loss) its ISTFT and the recipe's loss
        mixture, ang = model.encoder(x)
        spec_hat = model.apply_masks(mixture, model.forward_masker(mixture.clone()))
        spec_leaf = spec_hat.detach().requires_grad_()
        t2 = time.perf_counter()
        time_hat = model.decoder(spec_leaf.permute(0, 2, 3, 4, 1), ang)
        loss = loss_fn([spec_leaf, time_hat], y)
        loss.backward()
        t3 = time.perf_counter()
        spec_hat.backward(spec_leaf.grad)  # the network's backward: the same gradients as one pass
        optimizer.step()
        value = loss.item()
        t4, c4 = time.perf_counter(), time.process_time()
        steps.append({"data_s": t1 - t0, "stft_s": 0.0, "step_s": t4 - t1, "loss_s": t3 - t2, "wall_s": t4 - t0,
                      "cpu_s": c4 - c0, "loss": value})
    del it  # joins the loader's workers, so their peak RSS is counted below
    main_mb, worker_mb = peak_rss_mb()
    return {"side": "reference", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "loss_from": cfg.get("recipe") or "transcription",
            "nb_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            "batch_shape": list(x.shape), "warmup": steps[:cfg["warmup"]], "timed": steps[cfg["warmup"]:],
            "peak_rss_main_mb": main_mb, "peak_rss_worker_mb": worker_mb}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit(__doc__)
    print(json.dumps(run(json.loads(Path(argv[0]).read_text()))), flush=True)


if __name__ == "__main__":
    main()
