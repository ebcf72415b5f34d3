"""Training throughput: unmix's training step against open-unmix-pytorch's, same machine, same data.

    .venv/bin/python benchmarks/compare_training.py [--hidden-sizes 512 128] [--rounds 2]
        [--warmup 2] [--steps 5] [--batch-size 16] [--seq-dur 6] [--threads 2] [--nb-workers 1]
        [--root ../shared/data/musdb-synth-mini] [--json results.json]

With ``--architecture xumx`` both sides train X-UMX instead (see "X-UMX" below).

Both sides train one target (vocals) of the reference recipe's model (2049 bins, max_bin from
16 kHz, stereo, 3 BLSTM layers) on the ``train`` split of a MUSDB18-HQ-layout folder (the same
tracks: the valid split is held out by the same rule), batches of `batch_size` random-mix
excerpts of `seq_dur` seconds with gain and channel-swap augmentations:

    unmix      `unmix.training.trainer.Trainer(fast=True).train_step`, the CPU training of `unmix train` (the
               coarse functions of `unmix.models.fast_ops`, torch's Adam of `unmix.training.solver`), fed by
               `unmix.training.loader.DataLoader` (`nb_workers` worker processes decode the FLAC chunks and
               compute the magnitudes, frames first) over `unmix.training.views.MagnitudeDataset` of
               `unmix.training.datasets.load_datasets("musdb", is_wav=True)`
    reference  `benchmarks/reference_train_worker.py` in the torch venv: the loop of the reference's
               scripts/train.py (encoder STFT in the step, Adam with weight decay, MSE), a torch
               DataLoader with `nb_workers` workers over the reference's MUSDBDataset.__getitem__

Every run is a fresh process: `warmup` steps (graph building, worker start-up) then `steps`
timed steps. Runs alternate between the two sides, `rounds` times each, the order flipped every
round; figures are medians over all timed steps. Each process gets `threads` threads
(``torch.set_num_threads``; OMP/OpenBLAS/MKL variables for both; NNabla's CPU backend uses one).
A sample is one excerpt, so samples/s = batch_size / (seconds per step including the wait for
data). Input statistics are computed once (unmix's `compute_statistics`) and given to both.
Peak RSS: the training process (VmHWM) and the largest data worker (children's max RSS).

X-UMX (``--architecture xumx``, default hidden size 512 only): the four sources jointly, with the
multi-domain loss (L_f + 10 L_t over the 14 combinations), batches of the same excerpts.

    unmix      `Trainer(fast=True).train_step` on `unmix.models.nnabla_graph.CrossNet` (its loss is
               the one function `unmix.models.fast_ops.XumxLoss`), fed by `DataLoader` over
               `unmix.training.datasets.XumxDataset` (the workers read the chunks and do the STFTs)
    reference  `benchmarks/reference_xumx_train_worker.py`: asteroid 0.7's ``BrokenXUMX`` (STFT and
               ISTFT inside the model) with the recipe's ``MultiDomainLoss`` (``--recipe`` its
               train.py, else the transcription the fixtures check), ``asteroid.data.MUSDB18Dataset``
               reading the same FLAC tracks, a torch DataLoader with `nb_workers` workers

and both report ``loss_s``, the loss's share of the step (unmix: `XumxLoss`'s forward and
backward; the reference: its ISTFT and ``MultiDomainLoss``, forward and backward).

The reference worker reads decoded copies of the tracks (musdb cannot read FLAC folders), so its
data time is a lower bound; `--musdb-batches` also times the reference's real audio path (musdb ->
stempeg, one ffprobe and one ffmpeg per chunk, no workers as in its CPU recipe) on WAV copies.
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "musdb-synth-mini"
DEFAULT_TORCH_PYTHON = REPO.parent / "envs" / "torch311" / "bin" / "python"
N_FFT, N_HOP, BANDWIDTH = 4096, 1024, 16000.0


# -- the unmix side (run in a fresh process: `compare_training.py --unmix-worker CONFIG`) ---------
def unmix_worker(cfg):
    """Warm-up + timed steps of unmix's training loop; returns the JSON record."""
    if cfg.get("architecture") == "xumx":
        return unmix_xumx_worker(cfg)
    import nnabla as nn

    from unmix.training import datasets
    from unmix.training.loader import DataLoader
    from unmix.training.views import MagnitudeDataset
    from unmix.models.nnabla_graph import ModelConfig, OpenUnmix
    from unmix.training.trainer import Trainer

    train_ds, _ = datasets.load_datasets("musdb", cfg["root"], cfg["target"], seq_duration=cfg["seq_dur"],
                                         samples_per_track=cfg["samples_per_track"], seed=cfg["seed"],
                                         is_wav=True, nb_channels=cfg["nb_channels"])
    config = ModelConfig(nb_bins=cfg["n_fft"] // 2 + 1, nb_channels=cfg["nb_channels"],
                         hidden_size=cfg["hidden_size"], nb_layers=cfg["nb_layers"], max_bin=cfg["max_bin"])
    model = OpenUnmix(config, seed=cfg["seed"])
    stats, params, m = np.load(cfg["stats"]), model.get_params(), config.model_bins
    params["input_mean"] = (-stats["mean"][:m]).astype(np.float32)  # as unmix.training.train._new_model
    params["input_scale"] = (1.0 / stats["std"][:m]).astype(np.float32)
    model.set_params(params)
    trainer = Trainer(model, cfg["lr"], cfg["weight_decay"], fast=True)  # as `unmix train` on the CPU
    loader = DataLoader(MagnitudeDataset(train_ds, cfg["n_fft"], cfg["n_hop"], cfg["nb_channels"], trainer.frames_first),
                        cfg["batch_size"], shuffle=True, nb_workers=cfg["nb_workers"], seed=cfg["seed"],
                        drop_last=True)
    steps, build_s = [], 0.0
    it = iter(loader)
    for k in range(cfg["warmup"] + cfg["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        x, y = next(it)
        t1 = time.perf_counter()
        if k == 0:  # as unmix.training.train.train_epoch: build once, then seed the dropout
            trainer.build(x.shape)
            nn.seed(cfg["seed"])
            build_s = time.perf_counter() - t1
            t1 = time.perf_counter()
        value = trainer.train_step(x, y)
        t2, c2 = time.perf_counter(), time.process_time()
        wall = t2 - t0 - (build_s if k == 0 else 0.0)  # graph building is reported on its own
        steps.append({"data_s": t1 - t0, "stft_s": 0.0, "step_s": t2 - t1, "wall_s": wall, "cpu_s": c2 - c0,
                      "loss": value})
    it.close()  # stops and joins the loader's workers, so their peak RSS is counted below
    main_mb, worker_mb = _peak_rss_mb()
    return {"side": "unmix", "nnabla": nn.__version__, "nb_parameters": model.nb_parameters(),
            "batch_shape": list(x.shape), "build_s": build_s, "warmup": steps[:cfg["warmup"]],
            "timed": steps[cfg["warmup"]:], "peak_rss_main_mb": main_mb, "peak_rss_worker_mb": worker_mb}


def unmix_xumx_worker(cfg):
    """`unmix_worker` for X-UMX: `CrossNet`, `XumxDataset`; ``loss_s`` times `XumxLoss`."""
    import nnabla as nn

    from unmix.models import fast_ops
    from unmix.models.nnabla_graph import CrossNet, ModelConfig
    from unmix.training import datasets
    from unmix.training.loader import DataLoader
    from unmix.training.trainer import Trainer

    loss_time = [0.0]
    for method in ("forward_impl", "backward_impl"):
        original = getattr(fast_ops.XumxLoss, method)

        def timed(self, *a, _original=original):
            start = time.perf_counter()
            try:
                return _original(self, *a)
            finally:
                loss_time[0] += time.perf_counter() - start

        setattr(fast_ops.XumxLoss, method, timed)
    train_ds, _ = datasets.load_datasets("musdb", cfg["root"], seq_duration=cfg["seq_dur"],
                                         samples_per_track=cfg["samples_per_track"], seed=cfg["seed"], is_wav=True)
    config = ModelConfig(nb_bins=cfg["n_fft"] // 2 + 1, nb_channels=2, hidden_size=cfg["hidden_size"],
                         nb_layers=cfg["nb_layers"], max_bin=cfg["max_bin"])
    model = CrossNet(config, seed=cfg["seed"])
    stats, m = np.load(cfg["stats"]), config.model_bins
    for net in model.nets.values():  # as unmix.training.train._new_model
        params = net.get_params()
        params["input_mean"] = (-stats["mean"][:m]).astype(np.float32)
        params["input_scale"] = (1.0 / stats["std"][:m]).astype(np.float32)
        net.set_params(params)
    trainer = Trainer(model, cfg["lr"], cfg["weight_decay"], fast=True,
                      loss_options={"n_hop": cfg["n_hop"], "mcoef": 10.0})
    loader = DataLoader(datasets.XumxDataset(train_ds, cfg["n_fft"], cfg["n_hop"]), cfg["batch_size"], shuffle=True,
                        nb_workers=cfg["nb_workers"], seed=cfg["seed"], drop_last=True)
    steps, build_s = [], 0.0
    it = iter(loader)
    for k in range(cfg["warmup"] + cfg["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        batch = next(it)
        t1 = time.perf_counter()
        if k == 0:  # as unmix.training.train.train_epoch: build once, then seed the dropout
            trainer.build(*(a.shape for a in batch))
            nn.seed(cfg["seed"])
            build_s = time.perf_counter() - t1
            t1 = time.perf_counter()
        loss_time[0] = 0.0
        value = trainer.train_step(*batch)
        t2, c2 = time.perf_counter(), time.process_time()
        wall = t2 - t0 - (build_s if k == 0 else 0.0)
        steps.append({"data_s": t1 - t0, "stft_s": 0.0, "step_s": t2 - t1, "loss_s": loss_time[0], "wall_s": wall,
                      "cpu_s": c2 - c0, "loss": value})
    it.close()
    main_mb, worker_mb = _peak_rss_mb()
    return {"side": "unmix", "nnabla": nn.__version__, "nb_parameters": model.nb_parameters(),
            "batch_shape": list(batch[0].shape), "build_s": build_s, "warmup": steps[:cfg["warmup"]],
            "timed": steps[cfg["warmup"]:], "peak_rss_main_mb": main_mb, "peak_rss_worker_mb": worker_mb}


def _peak_rss_mb():
    import resource

    main = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return main / 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# -- the driver -----------------------------------------------------------------------------------
def prepare(root, target, seq_dur, nb_channels, folder):
    """Statistics and the decoded track cache of the reference; returns (train track names, rate)."""
    from unmix.io.musdb import MUSDB_SOURCES
    from unmix.training import datasets
    from unmix.training.chunks import read_chunk
    from unmix.training.statistics import compute_statistics

    train_ds, _ = datasets.load_datasets("musdb", root, target, seq_duration=seq_dur, samples_per_track=1,
                                         is_wav=True, nb_channels=nb_channels)
    mean, std = compute_statistics(train_ds, N_FFT, N_HOP)
    np.savez(folder / "stats.npz", mean=mean, std=std)
    names = []
    for i, (name, refs, _) in enumerate(train_ds.tracks):
        track_dir = folder / "tracks" / f"{i:03d}"
        track_dir.mkdir(parents=True)
        for source in MUSDB_SOURCES:
            np.save(track_dir / f"{source}.npy", read_chunk(refs[source], nb_channels=nb_channels).T)
        names.append(name)
    return names, float(train_ds.sample_rate)


def write_wav_copy(root, target, nb_channels, folder):
    """The training tracks as MUSDB18-HQ WAV folders (16-bit, as MUSDB18-HQ): what musdb reads."""
    import soundfile as sf

    from unmix.training import datasets
    from unmix.training.chunks import read_chunk

    train_ds, _ = datasets.load_datasets("musdb", root, target, seq_duration=None, samples_per_track=1,
                                         is_wav=True, nb_channels=nb_channels)
    for name, refs, _ in train_ds.tracks:
        track_dir = folder / "train" / name
        track_dir.mkdir(parents=True)
        for part, ref in refs.items():
            sf.write(track_dir / f"{part}.wav", read_chunk(ref).T, int(ref.rate), subtype="PCM_16")
    return folder


def time_musdb_batches(wav_root, batch_size, seq_dur, nb_batches, seed):
    """Seconds per batch of the reference's own audio path: ``MUSDBDataset.__getitem__``'s reads
    (random track per source, random start, ``track.sources[source].audio``: musdb -> stempeg ->
    one ffmpeg process per chunk), in one process as the reference's CPU recipe (no workers).
    Augmentations and torch tensors left out (they cost milliseconds)."""
    import random

    import musdb

    mus = musdb.DB(root=str(wav_root), is_wav=True, subsets="train", split=None)
    rng = random.Random(seed)
    times = []
    for _ in range(nb_batches):
        start = time.perf_counter()
        for _ in range(batch_size):
            for source in mus.setup["sources"]:
                track = rng.choice(mus.tracks)
                track.chunk_duration = seq_dur
                track.chunk_start = rng.uniform(0, track.duration - seq_dur)
                track.sources[source].audio
        times.append(time.perf_counter() - start)
    return times


def thread_env(threads, extra=None):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.update(extra or {})
    return env


def run_side(side, cfg, folder, torch_python):
    """One fresh worker process; returns its JSON record."""
    path = folder / f"config_{side}.json"
    path.write_text(json.dumps(cfg))
    if side == "unmix":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--unmix-worker", str(path)]
        env = thread_env(cfg["threads"])
    else:
        stubs = str(REPO / "tools" / "fixtures" / "stubs")  # openunmix imports torchaudio at import time
        worker = "reference_xumx_train_worker.py" if cfg.get("architecture") == "xumx" else "reference_train_worker.py"
        cmd = [str(torch_python), str(HERE / worker), str(path)]
        env = thread_env(cfg["threads"], {"PYTHONPATH": stubs})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(records, batch_size):
    """Medians over the timed steps of all rounds of one side and setting."""
    steps = [s for r in records for s in r["timed"]]

    def med(key):
        return statistics.median(s[key] for s in steps)

    wall = med("wall_s")
    loss = {"loss_s": med("loss_s")} if all("loss_s" in s for s in steps) else {}
    return {**loss, "nb_steps": len(steps), "wall_s": wall, "data_s": med("data_s"), "stft_s": med("stft_s"),
            "step_s": med("step_s"), "cpu_s": med("cpu_s"), "steps_per_s": 1.0 / wall,
            "samples_per_s": batch_size / wall, "round_medians_s": [statistics.median(s["wall_s"] for s in r["timed"])
                                                                   for r in records],
            "peak_rss_main_mb": max(r["peak_rss_main_mb"] for r in records),
            "peak_rss_worker_mb": max(r["peak_rss_worker_mb"] for r in records),
            "nb_parameters": records[0]["nb_parameters"]}


def machine_info():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def markdown(results):
    """The README table: one row per side and hidden size, then the ratio (and, for X-UMX, the
    loss's time and share of the step)."""
    with_loss = all("loss_s" in s for sides in results.values() for s in sides.values())
    loss_head, loss_rule = (" loss in step (s, %) |", "---|") if with_loss else ("", "")
    lines = ["| hidden | side | s/step | data wait (s) | STFT in step (s) | model step (s) |" + loss_head +
             " CPU s/step | steps/s | samples/s | peak RSS main / worker (MB) | s/step ÷ reference's |",
             "|---|---|---|---|---|---|" + loss_rule + "---|---|---|---|---|"]
    for hidden, sides in results.items():
        ref = sides["reference"]["wall_s"]
        for side in ("unmix", "reference"):
            s = sides[side]
            ratio = f"{s['wall_s'] / ref:.2f}" if side == "unmix" else "1"
            loss = f" {s['loss_s']:.2f} ({100 * s['loss_s'] / s['wall_s']:.0f}%) |" if with_loss else ""
            lines.append(f"| {hidden} | {side} | {s['wall_s']:.2f} | {s['data_s']:.3f} | {s['stft_s']:.3f} | "
                         f"{s['step_s']:.2f} |{loss} {s['cpu_s']:.2f} | {s['steps_per_s']:.3f} | "
                         f"{s['samples_per_s']:.2f} | {s['peak_rss_main_mb']:.0f} / {s['peak_rss_worker_mb']:.0f} | "
                         f"{ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unmix-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--target", default="vocals")
    parser.add_argument("--architecture", choices=["umx", "xumx"], default="umx")
    parser.add_argument("--recipe", help="xumx: asteroid's egs/musdb18/X-UMX/train.py, whose MultiDomainLoss the "
                        "reference then runs (default: the transcription of tools/make_xumx_training_fixtures.py)")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=None, help="default: 512 128 (xumx: 512)")
    parser.add_argument("--nb-layers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-dur", type=float, default=6.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nb-workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--torch-python", default=os.environ.get("UNMIX_TORCH_PYTHON", str(DEFAULT_TORCH_PYTHON)))
    parser.add_argument("--musdb-batches", type=int, default=3,
                        help="batches to time through musdb/stempeg, the reference's own audio path (0: skip)")
    parser.add_argument("--json", help="also write the records and summaries here")
    args = parser.parse_args(argv)
    if args.unmix_worker:
        print(json.dumps(unmix_worker(json.loads(Path(args.unmix_worker).read_text()))), flush=True)
        return
    from unmix.training.train import bandwidth_to_max_bin

    if args.hidden_sizes is None:
        args.hidden_sizes = [512] if args.architecture == "xumx" else [512, 128]

    info = {**machine_info(), "load_before": os.getloadavg(), "command": " ".join(sys.argv)}
    print(f"# {info['nproc']} x {info['cpu']}, load {info['load_before'][0]:.2f}, {info['date_utc']}", flush=True)
    records, results = {}, {}
    with tempfile.TemporaryDirectory(prefix="unmix_train_bench_") as tmp:
        tmp = Path(tmp)
        names, rate = prepare(args.root, args.target, args.seq_dur, 2, tmp)
        max_bin = bandwidth_to_max_bin(rate, N_FFT, BANDWIDTH)
        # one epoch must hold every step of a run (unmix starts its workers per epoch)
        per_track = math.ceil((args.warmup + args.steps) * args.batch_size / len(names))
        for hidden in args.hidden_sizes:
            cfg = {"root": args.root, "target": args.target, "seq_dur": args.seq_dur, "batch_size": args.batch_size,
                   "samples_per_track": per_track, "nb_channels": 2, "n_fft": N_FFT, "n_hop": N_HOP,
                   "max_bin": max_bin, "hidden_size": hidden, "nb_layers": args.nb_layers, "lr": 1e-3,
                   "weight_decay": 1e-5, "warmup": args.warmup, "steps": args.steps, "threads": args.threads,
                   "nb_workers": args.nb_workers, "stats": str(tmp / "stats.npz"), "sample_rate": rate,
                   "track_cache": [str(p) for p in sorted((tmp / "tracks").iterdir())],
                   "architecture": args.architecture, "recipe": args.recipe, "train_tracks": names}
            runs = {"unmix": [], "reference": []}
            for r in range(args.rounds):
                order = ("unmix", "reference") if r % 2 == 0 else ("reference", "unmix")
                for side in order:
                    record = run_side(side, {**cfg, "seed": args.seed + r}, tmp, args.torch_python)
                    runs[side].append(record)
                    wall = statistics.median(s["wall_s"] for s in record["timed"])
                    print(f"hidden {hidden} round {r + 1} {side}: {wall:.2f} s/step "
                          f"(load {os.getloadavg()[0]:.2f})", flush=True)
            records[hidden] = runs
            results[hidden] = {side: summarize(recs, args.batch_size) for side, recs in runs.items()}
        musdb_times = []
        if args.musdb_batches > 0 and args.architecture == "umx":
            wav_root = write_wav_copy(args.root, args.target, 2, tmp / "wav")
            musdb_times = time_musdb_batches(wav_root, args.batch_size, args.seq_dur, args.musdb_batches, args.seed)
    info["load_after"] = os.getloadavg()
    info["train_tracks"] = len(names)
    table = markdown(results)
    print(table)
    if musdb_times:
        print(f"reference's own audio path (musdb/stempeg, one process): {statistics.median(musdb_times):.2f} s "
              f"per batch of {args.batch_size} (median of {len(musdb_times)})")
    print(f"# load average before {info['load_before'][0]:.2f} / after {info['load_after'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "args": vars(args), "results": results,
                                               "musdb_batch_s": musdb_times, "records": records}, indent=1))


if __name__ == "__main__":
    main()
