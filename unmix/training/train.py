"""Training of one Open-Unmix target: the recipe of open-unmix-pytorch 1.3 ``scripts/train.py`` in NNabla.

    setup:  datasets (unmix.training.datasets) -> input statistics of a new model (unmix.training.statistics)
            -> model, Adam solver, schedules (unmix.training.schedules), progress restored from a
            checkpoint (unmix.training.checkpoint) -> loaders (unmix.training.loader): audio -> STFT (center=False)
    fit:    per epoch: train (one fixed-shape NNabla graph: model.build_loss, MSE on magnitudes
            -> Adam, L2 weight decay added to the gradient as torch's Adam(weight_decay=...))
            -> validate on full tracks (running batch-norm statistics, windowed so memory stays
            bounded) -> ReduceLROnPlateau -> EarlyStopping -> checkpoint + best weights + history
            + plot.

On the CPU the graph is built from the coarse functions of `unmix.models.fast_ops` (numpy GEMMs, numba LSTM
recurrences) and the solver is `unmix.training.solver.Adam`, torch's update to the last bit of ``eps``
with the LSTM's two biases stepped as torch steps them: the same loss, gradients and weights as
open-unmix-pytorch after the same steps (tests/test_train_parity.py). On a GPU (``--context
cudnn``) the graph is the stock NNabla one and the solver NNabla's Adam, which adds ``eps``
after the bias correction of the second moment and moves the LSTM bias as one parameter.

`train(options)` runs both; `setup` and `fit` below read top to bottom in that order. The output
folder is a model folder (`unmix separate --model DIR`); `unmix.training.checkpoint` lists its files.

``--checkpoint DIR`` resumes from the last finished epoch: same epoch counter, learning rate,
scheduler, early stopping and random streams (data samples are seeded by (seed, epoch, index) in
`unmix.training.datasets`, dropout by re-seeding NNabla per epoch), so an interrupted and resumed run gives
the curve of an uninterrupted one. ``epochs`` is the total number of epochs of the training (the
reference adds ``--epochs`` more on resume). A checkpoint is written before the first epoch, so
Ctrl-C at any moment leaves one; the epoch it interrupts is discarded. SIGINT is held back while
the files of a checkpoint are written, so they always belong to one epoch. ``--epochs 0`` writes
that first checkpoint and the initial weights as the target's model (a model folder that
separates, untrained). ``--force`` replaces the files of an earlier training of the target in the
output folder (those of other targets stay) when the new run writes its first checkpoint.

Differences from the reference, on purpose: incomplete last batches are dropped (one graph
shape; samples are reshuffled every epoch); the learning-rate schedule and the early stopping are
the reference's (`unmix.training.schedules`).

Multi-GPU (needs ``nnabla-ext-cuda``): ``mpirun -n 4 unmix train --context cudnn ...``. With more
than one MPI process, `train` uses ``nnabla.communicators.MultiProcessDataParallelCommunicator``
as NNabla's examples do: process ``rank`` runs on GPU ``local_rank``; rank 0 computes the input
statistics and its initial weights are broadcast; each process trains on its own shard of every
epoch's samples with ``batch_size / nb_processes`` samples per step; gradients (and the loss) are
averaged with ``all_reduce`` before every update; dropout is seeded per rank; validation tracks are
sharded and their losses summed over processes, so every process takes the same scheduler and
stopping decisions; only rank 0 writes files and shows progress.
"""
import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from unmix import __version__
from unmix.dsp import transforms
from unmix.training.checkpoint import (Checkpoint, checkpoint_file, copy_best, holds_training, load_history, remove_target,
                              save_checkpoint, signals_held)
from unmix.training.datasets import (MagnitudeDataset, SourcesDataset, Subset, XumxDataset, load_datasets, model_magnitude,
                                     xumx_arrays)
from unmix.errors import UnmixError
from unmix.io.files import atomic_path
from unmix.training.loader import DataLoader
from unmix.models.model_folder import XUMX, XUMX_SOURCES
from unmix.training.schedules import EarlyStopping, ReduceLROnPlateau
from unmix.training.statistics import compute_statistics

VALID_WINDOW = 512  # frames per validation window (bounds memory on long tracks)
LSTM_BIAS = "lstm/lstm/bias"  # the LSTM biases that the CPU's Adam steps as torch's two (`unmix.training.solver`)


# -- options ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run needs; defaults are the reference recipe (open-unmix 1.3)."""

    root: Optional[str] = None
    output: str = "open-unmix"
    dataset: str = "musdb"
    target: str = "vocals"
    is_wav: bool = False
    checkpoint: Optional[str] = None
    model: Optional[str] = None
    force: bool = False
    epochs: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    patience: Optional[int] = None  # None: 140 (umx), 1000 (xumx: Sony's, no early stop within 1000 epochs)
    lr_decay_patience: int = 80
    lr_decay_gamma: float = 0.3
    weight_decay: float = 1e-5
    seed: int = 42
    seq_dur: float = 6.0
    samples_per_track: Optional[int] = None  # None: 64 for musdb, 1 for the other datasets
    hidden_size: int = 512
    nb_layers: int = 3
    unidirectional: bool = False
    nb_channels: int = 2
    bandwidth: float = 16000.0
    nfft: Optional[int] = None  # None: 4096, or the fine-tuned model's
    nhop: Optional[int] = None  # None: 1024, or the fine-tuned model's
    nb_workers: int = 0
    source_augmentations: Optional[Sequence[str]] = None  # None: the dataset's default
    valid_tracks: Optional[Sequence[str]] = None
    dataset_options: dict = field(default_factory=dict)  # extra keywords of datasets.load_datasets
    context: str = "cpu"
    valid_backend: str = "auto"  # auto: onnx on cpu, nnabla otherwise
    quiet: bool = False
    architecture: str = "umx"  # or "xumx": X-UMX on the four MUSDB sources (see `unmix.models.losses`)
    mcoef: float = 10.0  # X-UMX: the weight of the time-domain loss
    valid_dur: float = 10.0  # X-UMX: seconds per validation chunk (Sony's --valid_dur)

    @property
    def early_stopping_patience(self):
        if self.patience is not None:
            return self.patience
        return XUMX_PATIENCE if self.architecture == XUMX else UMX_PATIENCE


UMX_PATIENCE, XUMX_PATIENCE = 140, 1000


@dataclass
class TrainResult:
    """What `train` did: where, how far, how well."""

    output: Path
    target: str
    epochs_trained: int
    best_epoch: int
    best_loss: Optional[float]
    train_losses: list
    valid_losses: list
    stopped: str  # "completed", "early_stopping" or "interrupted"
    sources: tuple = ()  # X-UMX: the sources of the network (the target is then "xumx")

    @property
    def has_model(self):
        """True when `output` holds this target's model weights (`unmix separate --model` uses them)."""
        return all((Path(self.output) / f"{t}.h5").is_file() for t in (self.sources or [self.target]))


# -- the run ------------------------------------------------------------------------------------
def train(options: TrainOptions):
    """Train one target as the reference recipe does; see the module docstring for the files.

    Returns:
        TrainResult. Ctrl-C returns ``stopped == "interrupted"`` with the last finished epoch's
        checkpoint on disk; a NaN loss raises UnmixError without writing the NaN weights.
    """
    if options.epochs < 0:
        raise UnmixError(f"--epochs must be >= 0, got {options.epochs}")
    if options.checkpoint and options.model:
        raise UnmixError("give either --checkpoint (resume) or --model (fine-tune), not both")
    if options.architecture == XUMX:
        _check_xumx_options(options)
    elif options.architecture != "umx":
        raise UnmixError(f"unknown architecture {options.architecture!r}: use umx or xumx")
    return fit(setup(options, _setup_context(options.context)))


def _check_xumx_options(options):
    """What X-UMX training supports, as one-line errors before any work."""
    o = options
    if o.dataset != "musdb":
        raise UnmixError(f"X-UMX trains on the four MUSDB sources: use --dataset musdb, not {o.dataset}")
    if o.nb_channels not in (1, 2):
        raise UnmixError(f"X-UMX trains mono or stereo models: --nb-channels 1 or 2, not {o.nb_channels}")
    if o.seq_dur is None or o.seq_dur <= 0:
        raise UnmixError("X-UMX trains on chunks: give --seq-dur > 0")


@dataclass(frozen=True)
class Processes:
    """This process among the data-parallel ones (`comm` None: the only one, rank 0 of 1)."""

    comm: object = None
    quiet: bool = False

    @property
    def rank(self):
        return self.comm.rank if self.comm else 0

    @property
    def size(self):
        return self.comm.size if self.comm else 1

    @property
    def writer(self):
        """Only rank 0 writes files."""
        return self.rank == 0

    @property
    def progress(self):
        return self.writer and not self.quiet

    def say(self, message):
        if self.progress:
            tqdm.write(message)


@dataclass
class Run:
    """What the epochs of one training work with; made by `setup`, driven by `fit`."""

    options: TrainOptions
    procs: Processes
    output: Path  # the model folder written
    resume_from: Optional[Path]  # the --checkpoint folder
    in_place: bool  # resuming the training saved in the output folder itself
    target: str  # the file names of the training: the target, or "xumx"
    sample_rate: float
    n_fft: int
    n_hop: int
    origin: Optional[str]  # the folder of a fine-tuned model
    model: object  # unmix.models.nnabla_graph.OpenUnmix
    trainer: "Trainer"
    state: Checkpoint
    train_loader: DataLoader
    valid_loader: DataLoader


def setup(options: TrainOptions, comm=None):
    """Datasets, model, trainer, progress restored from --checkpoint, loaders; nothing written yet.

    Args:
        comm: the data-parallel communicator of `_setup_context`, or None for one process.

    Returns:
        `Run`.
    """
    o, procs = options, Processes(comm, options.quiet)
    output = Path(o.output).expanduser()
    resume_from = Path(o.checkpoint).expanduser() if o.checkpoint else None
    nb_channels = o.nb_channels if o.nb_channels != 1 else None  # mono: the magnitudes are averaged
    train_ds, valid_ds = load_datasets(
        o.dataset, o.root, o.target, seq_duration=o.seq_dur, samples_per_track=o.samples_per_track,
        source_augmentations=o.source_augmentations, seed=o.seed, is_wav=o.is_wav,
        valid_tracks=o.valid_tracks, nb_channels=nb_channels, **o.dataset_options)
    xumx = o.architecture == XUMX
    target, rate = XUMX if xumx else train_ds.target, float(train_ds.sample_rate)
    in_place = resume_from is not None and resume_from.resolve() == output.resolve()
    for name in [target] + (list(XUMX_SOURCES) if xumx else []):
        _check_clobber(output, name, in_place or o.force)
    history = load_history(resume_from, target) if resume_from else None
    if history is not None:
        if history.get("architecture", "umx") != o.architecture:
            raise UnmixError(f"{resume_from} holds a training of architecture {history.get('architecture', 'umx')}, "
                             f"not {o.architecture}")
        model, n_fft, n_hop, origin = _resumed_model(history, resume_from, target, output, rate)
    elif o.model:
        model, n_fft, n_hop, origin = _fine_tuned_model(o, target, output, rate, procs)
    else:
        model, n_fft, n_hop, origin = _new_model(o, train_ds, output, rate, procs)
    loss_options = {"n_hop": n_hop, "mcoef": o.mcoef} if xumx else {}
    trainer = Trainer(model, o.lr, o.weight_decay, comm, fast=o.context == "cpu", loss_options=loss_options)
    state = Checkpoint(ReduceLROnPlateau(o.lr, factor=o.lr_decay_gamma, patience=o.lr_decay_patience, cooldown=10),
                       EarlyStopping(patience=o.early_stopping_patience))
    if history is not None:
        trainer.load_solver(checkpoint_file(resume_from, target, "solver"))
        state.load_json(history)
        trainer.set_lr(state.scheduler.lr)
        procs.say(f"resuming {target} after epoch {state.epoch} (lr {state.scheduler.lr:g})")
    elif comm is not None:
        # identical starting weights everywhere: rank 0's (it has the statistics)
        comm.bcast([v.data for v in model.parameters.values()], src=0, inplace=True)
    train_loader, valid_loader = _make_loaders(o, train_ds, valid_ds, n_fft, n_hop, model.config.nb_channels, procs,
                                               trainer.frames_first)
    return Run(o, procs, output, resume_from, in_place, target, rate, n_fft, n_hop, origin, model, trainer, state,
               train_loader, valid_loader)


def fit(run: Run):
    """Train until `epochs`, early stopping or Ctrl-C; returns a TrainResult."""
    _start_files(run)
    stopped = "completed"
    try:
        with _sigterm_as_ctrl_c():
            for epoch in range(run.state.epoch + 1, run.options.epochs + 1):
                if run_epoch(run, epoch):
                    stopped = "early_stopping"
                    run.procs.say(f"early stopping after epoch {epoch}: no improvement in "
                                  f"{run.options.early_stopping_patience} epochs")
                    break
    except KeyboardInterrupt:
        stopped = "interrupted"
        run.procs.say(f"interrupted: {run.output} holds the checkpoint of epoch {run.state.epoch}; "
                      f"resume with --checkpoint {run.output}")
    state = run.state
    return TrainResult(run.output, run.target, state.epoch, state.best_epoch, state.stopper.best,
                       list(state.curves["train_loss_history"]), list(state.curves["valid_loss_history"]), stopped,
                       tuple(getattr(run.model, "sources", ())))


def _start_files(run: Run):
    """The files a run starts from, so that Ctrl-C at any moment leaves a resumable checkpoint.

    Resuming in place: the folder has them. Otherwise the target's files of an earlier training
    go first (--force), then the first checkpoint is written (statistics included): with the
    initial weights as the model for ``--epochs 0``, with the best weights so far for a run
    resumed into another folder.
    """
    if run.in_place or not run.procs.writer:
        return
    with signals_held():  # the old files and the first checkpoint trade places as one step
        for name in [run.target] + list(getattr(run.model, "sources", ())):
            if holds_training(run.output, name):  # --force (setup refused it otherwise)
                remove_target(run.output, name)
        save(run, is_best=run.options.epochs == 0 and run.resume_from is None)
    if run.resume_from is not None:
        copy_best(run.resume_from, run.output, run.target, run.model, run.sample_rate, run.n_fft, run.n_hop)


def run_epoch(run: Run, epoch):
    """Train and validate one epoch, step the schedules, save; True when early stopping says stop."""
    state = run.state
    lr = state.scheduler.lr  # the rate this epoch runs with (the solver holds it as float32)
    start = time.time()
    train_loss = train_epoch(run, epoch)
    middle = time.time()
    valid_loss = validate(run)
    end = time.time()
    if not math.isfinite(valid_loss):
        raise UnmixError(f"validation loss is {valid_loss} after epoch {epoch}: stopped without saving "
                         f"(the checkpoint of epoch {state.epoch} in {run.output} is intact)")
    run.trainer.set_lr(state.scheduler.step(valid_loss))
    stop = state.stopper.step(valid_loss)
    is_best = valid_loss == state.stopper.best
    with signals_held():  # the epoch counter and the files on disk move together
        state.record(epoch, is_best, train_loss, valid_loss, lr, middle - start, end - middle)
        save(run, is_best)
    run.procs.say(f"epoch {epoch}: train {train_loss:.5g}, valid {valid_loss:.5g}, lr {lr:g}"
                  f"{' (best)' if is_best else ''}, {end - start:.1f} s")
    return stop


def train_epoch(run: Run, epoch):
    """Mean batch loss of one pass over the training loader."""
    import nnabla as nn

    loader = run.train_loader
    loader.set_epoch(epoch)
    losses = []
    bar = tqdm(loader, total=len(loader), disable=not run.procs.progress, desc=f"epoch {epoch}", leave=False,
               unit="batch")
    for batch in bar:
        if not losses:
            run.trainer.build(*(a.shape for a in batch))  # building draws random numbers: before the seeding
            nn.seed(_mixed_seed(run.options.seed, epoch, run.procs.rank))  # dropout: reproducible and resumable
        try:
            losses.append(run.trainer.train_step(*batch))
        except NonFiniteLoss as exc:
            raise UnmixError(f"{exc} at epoch {epoch}, batch {len(losses) + 1}: stopped without saving these "
                             f"weights (the checkpoint of epoch {run.state.epoch} in {run.output} is intact); "
                             "check the data or lower --lr") from None
        bar.set_postfix(loss=f"{np.mean(losses):.4g}")
    bar.close()
    return float(np.mean(losses))


def validate(run: Run):
    """Mean loss over the validation tracks (all processes)."""
    o = run.options
    backend = o.valid_backend
    if backend == "auto":
        backend = "onnx" if o.context == "cpu" else "nnabla"
    model = run.model
    xumx = o.architecture == XUMX
    if backend == "onnx":
        from unmix.models.onnx_graph import OnnxCrossNet, OnnxModel

        # a snapshot of the current weights, 8x faster on CPU; as many threads as the training's
        # GEMMs (OPENBLAS_NUM_THREADS): runs side by side on few cores would else oversubscribe them
        threads = _blas_threads()
        model = (OnnxCrossNet((model.config, model.get_params(), model.sources), nb_threads=threads) if xumx
                 else OnnxModel(model, nb_threads=threads))
    elif backend != "nnabla":
        raise UnmixError(f"unknown validation backend {backend!r}: use auto, onnx or nnabla")
    if xumx:
        total, count = xumx_validation_sums(model, run.valid_loader, run.n_fft, run.n_hop,
                                            int(round(o.valid_dur * run.sample_rate)), o.mcoef, run.procs.progress)
    else:
        total, count = validation_sums(model, run.valid_loader, run.n_fft, run.n_hop, run.model.config.nb_channels,
                                       run.procs.progress)
    if run.procs.comm is not None:
        total, count = _all_sum(run.procs.comm, [total, count])
    if count == 0:
        raise UnmixError("the validation set is empty")
    return total / count


def _blas_threads():
    """The thread count of the BLAS that numpy uses (None if threadpoolctl finds none)."""
    from threadpoolctl import threadpool_info

    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return min(counts) if counts else None


def save(run: Run, is_best):
    """The checkpoint of `run.state.epoch` (rank 0 only); when best, the model weights too."""
    if run.procs.writer:
        save_checkpoint(run.output, run.target, run.model, run.trainer, run.state, _summary(run), is_best)


def _summary(run: Run):
    """The constant part of ``<target>.json``: the model, the signal, the options of the run."""
    o = run.options
    extra = {"architecture": XUMX, "sources": list(run.model.sources)} if o.architecture == XUMX else {}
    return {
        **extra,
        "config": run.model.config.to_dict(),
        "nb_parameters": run.model.nb_parameters(),
        "sample_rate": run.sample_rate,
        "n_fft": run.n_fft,
        "n_hop": run.n_hop,
        "fine_tuned_from": run.origin,
        "args": {**asdict(o), "nfft": run.n_fft, "nhop": run.n_hop, "target": run.target,
                 "source_augmentations": _plain(o.source_augmentations), "valid_tracks": _plain(o.valid_tracks)},
        "nb_processes": run.procs.size,
        "unmix_version": __version__,
    }


# -- setup: the model, the checks, the loaders ----------------------------------------------------
def bandwidth_to_max_bin(rate, n_fft, bandwidth):
    """Number of STFT bins whose centre frequency is <= `bandwidth` Hz (the reference's helper)."""
    freqs = np.linspace(0, float(rate) / 2, n_fft // 2 + 1, endpoint=True)
    return int(np.max(np.where(freqs <= bandwidth)[0]) + 1)


def _resumed_model(history, folder, target, output, rate):
    """``(model, n_fft, n_hop, origin)`` from the checkpoint of `target` in `folder`."""
    from unmix.models.nnabla_graph import ModelConfig, OpenUnmix, read_h5_params

    path = checkpoint_file(folder, target, "chkpnt")
    config = ModelConfig.from_dict(history["config"])
    if history.get("architecture") == XUMX:
        from unmix.models.nnabla_graph import CrossNet

        model = CrossNet(config, sources=history["sources"])
        try:
            model.set_flat_params(read_h5_params(path))
        except UnmixError as exc:
            raise UnmixError(f"{path}: {exc}") from None
    else:
        model = OpenUnmix(config, read_h5_params(path))
    _check_rate(history["sample_rate"], rate, folder)
    n_fft, n_hop = int(history["n_fft"]), int(history["n_hop"])
    _check_folder(output, rate, n_fft, n_hop, model.config.nb_channels)
    return model, n_fft, n_hop, history.get("fine_tuned_from")


def _fine_tuned_model(options, target, output, rate, procs):
    """``(model, n_fft, n_hop, origin)`` from the model folder or registry name `options.model`."""
    from unmix.weights import registry
    from unmix.models.nnabla_graph import load_crossnet, load_target, read_separator_json

    o = options
    folder = registry.resolve_model(o.model)
    meta = read_separator_json(folder)
    architecture = meta.get("architecture", "umx")
    if architecture != o.architecture:
        raise UnmixError(f"{o.model} is an {'X-UMX' if architecture == XUMX else 'Open-Unmix'} model: fine-tune it "
                         f"with --architecture {architecture}")
    _check_rate(meta["sample_rate"], rate, folder)
    n_fft, n_hop = int(meta.get("n_fft", 4096)), int(meta.get("n_hop", 1024))
    if (o.nfft or n_fft) != n_fft or (o.nhop or n_hop) != n_hop:
        raise UnmixError(f"model {o.model} uses n_fft {n_fft} / n_hop {n_hop}, not {o.nfft} / {o.nhop}")
    model = load_crossnet(folder) if architecture == XUMX else load_target(folder, target)
    _check_folder(output, rate, n_fft, n_hop, model.config.nb_channels)
    procs.say(f"fine-tuning {target} from {folder}")
    return model, n_fft, n_hop, str(folder)


def _new_model(options, train_ds, output, rate, procs):
    """``(model, n_fft, n_hop, None)``: a new model whose input scaling holds the training set's
    statistics (computed by rank 0 only; `setup` broadcasts its weights)."""
    from unmix.models.nnabla_graph import ModelConfig, OpenUnmix

    o = options
    n_fft, n_hop = o.nfft or 4096, o.nhop or 1024
    nb_bins = n_fft // 2 + 1
    max_bin = bandwidth_to_max_bin(rate, n_fft, o.bandwidth)
    config = ModelConfig(nb_bins=nb_bins, nb_channels=o.nb_channels, hidden_size=o.hidden_size,
                         nb_layers=o.nb_layers, max_bin=None if max_bin >= nb_bins else max_bin,
                         unidirectional=o.unidirectional)
    _check_folder(output, rate, n_fft, n_hop, config.nb_channels)
    if o.architecture == XUMX:
        from unmix.models.nnabla_graph import CrossNet

        model = CrossNet(config, seed=o.seed)
        nets = list(model.nets.values())  # every branch starts from the mixture's statistics, as Sony's
    else:
        model = OpenUnmix(config, seed=o.seed)
        nets = [model]
    if procs.writer:
        mean, std = compute_statistics(train_ds, n_fft, n_hop, o.nb_workers, procs.progress)
        m = config.model_bins
        for net in nets:
            params = net.get_params()
            params["input_mean"] = (-mean[:m]).astype(np.float32)
            params["input_scale"] = (1.0 / std[:m]).astype(np.float32)
            net.set_params(params)
    return model, n_fft, n_hop, None


def _check_rate(rate, sample_rate, where):
    if float(rate) != sample_rate:
        raise UnmixError(f"{where} was trained at {float(rate):g} Hz, the dataset is at {sample_rate:g} Hz")


def _check_clobber(output, target, allowed):
    """Refuse to overwrite another training or model of `target` (before any work) unless `allowed`
    (resuming in place, or --force)."""
    if allowed or not holds_training(output, target):
        return
    if (output / f"{target}.chkpnt.h5").exists():
        raise UnmixError(f"{output} already holds a training of '{target}': resume it with "
                         f"--checkpoint {output}, or pass --force to start over")
    raise UnmixError(f"{output} already holds a model of '{target}': pass --force to replace it")


def _check_folder(output, sample_rate, n_fft, n_hop, nb_channels):
    """The output's separator.json, if any, must describe the same signal and channels."""
    from unmix.models.nnabla_graph import read_separator_json

    if not (output / "separator.json").is_file():
        return
    meta = read_separator_json(output)
    mine = {"sample_rate": sample_rate, "n_fft": n_fft, "n_hop": n_hop, "nb_channels": nb_channels}
    theirs = {k: meta.get(k) for k in mine}
    if any(theirs[k] is not None and float(theirs[k]) != float(v) for k, v in mine.items()):
        raise UnmixError(f"{output} holds models with {theirs}; this training uses {mine}")


def _make_loaders(options, train_ds, valid_ds, n_fft, n_hop, nb_channels, procs, frames_first=False):
    """``(train_loader, valid_loader)``: magnitude batches of this process's shard of the training
    samples (in the trainer's layout, see `Trainer.frames_first`), and its shard of the validation
    tracks as audio (one track per batch)."""
    o = options
    if o.batch_size % procs.size:
        raise UnmixError(f"--batch-size {o.batch_size} is not divisible by the {procs.size} processes")
    batch = o.batch_size // procs.size
    if o.architecture == XUMX:
        train = XumxDataset(train_ds, n_fft, n_hop, nb_channels=nb_channels)
        valid_ds = SourcesDataset(valid_ds)
    else:
        train = MagnitudeDataset(train_ds, n_fft, n_hop, nb_channels, frames_first)
    n = len(train) - len(train) % procs.size
    if procs.size > 1:
        train = Subset(train, np.arange(procs.rank, n, procs.size))
    if len(train) < batch:
        raise UnmixError(f"the training set has {len(train)} samples per process, fewer than a batch of "
                         f"{batch}: lower --batch-size or raise --samples-per-track")
    if train_ds.seq_len is None and batch > 1:
        raise UnmixError("full-track training (--seq-dur <= 0) needs --batch-size 1")
    train_loader = DataLoader(train, batch, shuffle=True, nb_workers=o.nb_workers, seed=o.seed, drop_last=True)
    valid = valid_ds
    if procs.size > 1:
        valid = Subset(valid, np.arange(procs.rank, len(valid), procs.size))
    valid_loader = DataLoader(valid, 1, shuffle=False, nb_workers=o.nb_workers, drop_last=False)
    return train_loader, valid_loader


# -- steps ----------------------------------------------------------------------------------------
class NonFiniteLoss(UnmixError):
    """The loss or its gradients became NaN or infinite: the update was not applied."""


class Trainer:
    """One model, its Adam solver and its training graph (built once per batch shape).

    Args:
        model: `unmix.models.nnabla_graph.OpenUnmix`.
        comm: a NNabla data-parallel communicator, or None for one process.
        fast: the CPU's training: the coarse functions of `unmix.models.fast_ops` and torch's Adam (`unmix.training.solver`);
            a GPU keeps the stock NNabla graph).
        dropout: LSTM dropout between layers; None: the reference's (`unmix.models.nnabla_graph.LSTM_DROPOUT`).
        lstm_bias_hh: with `fast`, torch's ``b_hh`` half of the LSTM bias ``(nb_layers, D, 4, H)``
            when known (a converted reference checkpoint), or a dict parameter name -> that half
            (X-UMX: ``<source>/lstm/lstm/bias``); None: half the bias. See `unmix.training.solver`.
        loss_options: extra keywords of ``model.build_loss`` (X-UMX: ``n_hop``, ``mcoef``).

    An Open-Unmix model trains on batches ``(x, y)``; an X-UMX one (`unmix.models.nnabla_graph.CrossNet`) on the
    five arrays of `unmix.training.datasets.XumxDataset`.
    """

    def __init__(self, model, lr=1e-3, weight_decay=1e-5, comm=None, fast=False, dropout=None, lstm_bias_hh=None,
                 loss_options=None):
        import nnabla.solvers as S

        self.model, self.weight_decay, self.comm = model, float(weight_decay), comm
        self.fast, self.dropout, self.loss_options = fast, dropout, dict(loss_options or {})
        self.params = model.trainable_parameters()
        self.running_stats = {k: v for k, v in model.parameters.items() if k not in self.params}
        if fast:  # torch's Adam to the last bit of eps (see unmix.training.solver); beta1 0.9, beta2 0.999, eps 1e-8
            from unmix.training.solver import Adam

            self.solver = Adam(alpha=lr)
            # b_ih + b_hh: each LSTM bias (every X-UMX branch has one)
            self.solver.set_parameters(self.params, twins={n: _twin(lstm_bias_hh, n) for n in self.params
                                                           if n.endswith(LSTM_BIAS)})
        else:
            self.solver = S.Adam(alpha=lr)
            self.solver.set_parameters(self.params)
        self._graph = None

    @property
    def frames_first(self):
        """The layout of the batches `train_step` takes: frames first for the fast CPU graph (see `unmix.models.fast_ops`)."""
        return self.fast

    @property
    def lr(self):
        return self.solver.learning_rate()

    def set_lr(self, lr):
        self.solver.set_learning_rate(float(lr))

    def build(self, *shapes):
        """The training graph for batches of these shapes (built once per shapes; one shape: x and y's)."""
        return self._graph_for(shapes * 2 if len(shapes) == 1 else shapes)

    def _graph_for(self, shapes):
        import nnabla as nn

        from unmix.models.nnabla_graph import LSTM_DROPOUT

        shapes = tuple(tuple(shape) for shape in shapes)
        if self._graph is None or tuple(v.shape for v in self._graph[0]) != shapes:
            inputs = [nn.Variable(shape) for shape in shapes]
            dropout = LSTM_DROPOUT if self.dropout is None else self.dropout
            with nn.auto_forward(False):
                loss = self.model.build_loss(*inputs, fast=self.fast, dropout=dropout, **self.loss_options)
            self._graph = (inputs, loss)
        return self._graph

    def train_step(self, *batch):
        """One Adam step on a batch: x, y float32 ``(nb_samples, nb_channels, nb_bins, nb_frames)``,
        or ``(nb_samples, nb_channels, nb_frames, nb_bins)`` when `frames_first` (the fast CPU graph);
        X-UMX: the five arrays of `unmix.training.datasets.XumxDataset`, batched.

        Returns the batch's MSE (averaged over processes). Raises `NonFiniteLoss` before updating
        anything when the loss or a gradient is not finite. Ctrl-C (or SIGTERM) during the step
        raises KeyboardInterrupt when the step is done: NNabla would turn it into a SystemError had
        it arrived inside one of the Python functions of the CPU graph (`unmix.models.fast_ops`).
        """
        with signals_held():
            return self._step(batch)

    def _step(self, batch):
        inputs, loss = self._graph_for([a.shape for a in batch])
        for variable, array in zip(inputs, batch):
            variable.d = array
        # the forward pass updates the batch-norm running statistics: keep them to undo a NaN batch
        running = {k: v.d.copy() for k, v in self.running_stats.items()}
        loss.forward(clear_no_need_grad=True)
        if self.comm is not None:
            self.comm.all_reduce([loss.data], division=True, inplace=False)
        value = float(loss.d)
        if not math.isfinite(value):
            self._restore_running(running)
            raise NonFiniteLoss(f"training loss is {value}")
        self.solver.zero_grad()
        loss.backward(clear_buffer=True)
        if self.comm is not None:
            self.comm.all_reduce([p.grad for p in self.params.values()], division=True, inplace=False)
        if self.solver.check_inf_or_nan_grad():
            self._restore_running(running)
            raise NonFiniteLoss("a gradient is NaN or infinite")
        if self.weight_decay:
            self.solver.weight_decay(self.weight_decay)  # L2 on the gradient: torch Adam's weight_decay
        self.solver.update()
        return value

    def _restore_running(self, running):
        for k, value in running.items():
            self.running_stats[k].d = value

    def save_solver(self, path):
        with atomic_path(path) as tmp:
            self.solver.save_states(str(tmp))

    def load_solver(self, path):
        """Read a file of `save_solver` (``Solver.save_states`` layout: ``<param>/<state>``, ``<param>/t``).

        Read by exact name with h5py: NNabla 1.39's ``load_states`` mixes up parameters whose name
        is a prefix of another's (``lstm/lstm/weight`` got the moments of ``lstm/lstm/weight_l0``).
        """
        import h5py

        states = self.solver.get_states()
        try:
            with h5py.File(path, "r") as f:
                for name, state in states.items():
                    if f"{name}/hh" not in f and "hh" in state.pstate:
                        state.pstate = {k: v for k, v in state.pstate.items() if not k.endswith("hh")}
                    for key, var in state.pstate.items():
                        value = f[f"{name}/{key}"][()]
                        if value.shape != var.shape:
                            raise ValueError(f"{name}/{key} has shape {value.shape}, expected {var.shape}")
                        var.d = value
                    state.t = int(f[f"{name}/t"][()])
        except (OSError, KeyError, ValueError) as exc:
            raise UnmixError(f"cannot read the solver state {path}: {exc}") from None
        self.solver.set_states(states)
        for name in states:
            if self.fast and name.endswith(LSTM_BIAS) and "hh" not in states[name].pstate:
                self.solver.split_twin(name)  # a state of NNabla's Adam: equal halves


def _twin(lstm_bias_hh, name):
    """The known ``b_hh`` half of the LSTM bias `name` (see `Trainer`), or None."""
    if isinstance(lstm_bias_hh, dict):
        return lstm_bias_hh.get(name)
    return lstm_bias_hh if name == LSTM_BIAS else None


# -- validation ---------------------------------------------------------------------------------
def track_loss(model, x, y, n_fft, n_hop, nb_channels, window=VALID_WINDOW):
    """MSE between ``model(|X|)`` and ``|Y|`` over a whole track, in windows of frames.

    The network runs in its three stages (`encode` and `decode` frame-wise per window, `recur` over
    the whole sequence of features), so the result equals one pass over the full track while only a
    window of spectrogram frames is in memory.

    Args:
        model: anything with ``encode``, ``recur``, ``decode`` (OpenUnmix, OnnxModel).
        x, y: float32 ``(nb_audio_channels, nb_timesteps)`` mixture and target.

    Returns:
        float, the mean squared error over ``nb_channels x nb_bins x nb_frames``.
    """
    nb_frames = transforms.nb_frames_for(x.shape[-1], n_fft, n_hop, center=False)
    if nb_frames < 1:
        raise UnmixError(f"a validation track of {x.shape[-1]} samples is shorter than one STFT frame ({n_fft})")

    def mag(audio, start, stop):
        chunk = audio[:, start * n_hop:(stop - 1) * n_hop + n_fft]
        return model_magnitude(chunk, n_fft, n_hop, nb_channels)[None]

    windows = [(s, min(s + window, nb_frames)) for s in range(0, nb_frames, window)]
    features = model.recur(np.concatenate([model.encode(mag(x, s, e)) for s, e in windows], axis=0))
    total = 0.0
    for s, e in windows:
        estimate = model.decode(features[s:e], mag(x, s, e))
        total += float(np.sum((estimate.astype(np.float64) - mag(y, s, e)) ** 2))
    return total / (nb_channels * (n_fft // 2 + 1) * nb_frames)


def validation_sums(model, loader, n_fft, n_hop, nb_channels, progress=False):
    """(sum of per-track losses, number of tracks) over the audio batches ``(1, C, T)`` of `loader`."""
    total, count = 0.0, 0
    for x, y in tqdm(loader, total=len(loader), disable=not progress, desc="validation", leave=False):
        total += track_loss(model, x[0], y[0], n_fft, n_hop, nb_channels)
        count += 1
    return total, count


def xumx_chunk_loss(model, x, stems, n_fft, n_hop, mcoef):
    """X-UMX's multi-domain loss (`unmix.models.losses`) of one piece of a track, the network in
    inference mode: the masks applied to the mixture's magnitude (STFT center=True), the time
    signals their ISTFT with the mixture's phase, as Sony's validation graph; the arrays of the
    training graph (`unmix.training.datasets.xumx_arrays`, mono models included).

    Args:
        model: anything called like `unmix.models.nnabla_graph.CrossNet` (CrossNet, OnnxCrossNet).
        x: float32 ``(nb_channels, nb_timesteps)`` mixture; stems: ``(S, nb_channels, nb_timesteps)``
            in the model's source order.
    """
    from unmix.models.losses import multi_domain_loss

    mix, real, imag, target_mag, target_time = xumx_arrays(x, stems, n_fft, n_hop, model.config.nb_channels)
    estimates = model(np.ascontiguousarray(np.swapaxes(mix, -1, -2))[None])
    est_mag = np.stack([np.swapaxes(estimates[s][0], -1, -2) for s in model.sources])  # (S, C, T, bins)
    phase = np.divide(real + 1j * imag, mix, out=np.ones(mix.shape, np.complex64), where=mix > 0)
    est_time = transforms.istft(np.swapaxes(est_mag * phase, -1, -2), n_fft, n_hop, center=True,
                                length=target_time.shape[-1])
    loss, _, _ = multi_domain_loss(est_mag[:, None], target_mag[:, None], est_time[:, None], target_time[:, None],
                                   mcoef)
    return loss


def xumx_validation_sums(model, loader, n_fft, n_hop, chunk, mcoef, progress=False):
    """(sum of per-track losses, number of tracks) over the batches ``(1, C, T)``, ``(1, S, C, T)``
    of `loader`. A track's loss is the mean over its pieces of `chunk` samples, Sony's validation:
    the tail shorter than a chunk is left out (a track shorter than one chunk is one piece)."""
    total, count = 0.0, 0
    for x, stems in tqdm(loader, total=len(loader), disable=not progress, desc="validation", leave=False):
        length = x.shape[-1]
        starts = range(0, length - chunk + 1, chunk) if length >= chunk else [0]
        pieces = [xumx_chunk_loss(model, x[0, :, a:a + chunk], stems[0, :, :, a:a + chunk], n_fft, n_hop, mcoef)
                  for a in starts]
        total += float(np.mean(pieces))
        count += 1
    return total, count


# -- processes and signals ----------------------------------------------------------------------
def _mixed_seed(*values):
    """A 31-bit seed from several integers (NNabla's nn.seed takes one int)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0] & 0x7FFFFFFF)


def _plain(value):
    return None if value is None else [value] if isinstance(value, str) else list(value)


def _setup_context(context):
    """Make `context` ('cpu', 'cuda', 'cudnn') NNabla's default; under mpirun with several
    processes, also start the data-parallel communicator and put each process on GPU
    ``local_rank`` (the recipe of NNabla's examples). Returns the communicator or None."""
    import os

    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMI_SIZE") or 1)
    if context == "cpu":
        if size > 1:
            raise UnmixError("data-parallel training under mpirun needs --context cudnn (nnabla-ext-cuda)")
        return None
    try:
        import nnabla as nn

        from unmix.models.nnabla_graph import extension_context

        ctx = extension_context(context)
        comm = None
        if size > 1:
            import nnabla.communicators as C

            comm = C.MultiProcessDataParallelCommunicator(ctx)
            comm.init()
            ctx.device_id = str(comm.local_rank)
        nn.set_default_context(ctx)
    except Exception as exc:
        raise UnmixError(f"cannot use the NNabla context '{context}' (is nnabla-ext-cuda installed?): {exc}") from None
    return comm


def _all_sum(comm, values):
    """Sum a few floats over all processes."""
    import nnabla as nn

    array = nn.NdArray.from_numpy_array(np.asarray(values, dtype=np.float64).astype(np.float32))
    comm.all_reduce([array], division=False, inplace=True)
    summed = array.data
    return float(summed[0]), int(round(float(summed[1])))


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """SIGTERM (a cluster's time limit, `kill`) stops the training as Ctrl-C does: the last
    checkpoint stays usable, and the data workers and their shared memory are cleaned up
    (Python's default would end the process on the spot and leave them behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
