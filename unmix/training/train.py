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
output folder (those of other targets stay) when the new run writes its first checkpoint. A run
holds a lock on its target in the output folder (``.<target>.lock``, `checkpoint.lock_trainings`)
from setup to its end: a second run of the same target into the same folder is refused at once.

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
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from unmix import __version__
from unmix.errors import UnmixError
from unmix.models.model_folder import ModelConfig, read_separator_json
from unmix.models.model_folder import architecture as architecture_name
from unmix.training import recipes
from unmix.training.checkpoint import (Checkpoint, checkpoint_file, copy_best, holds_training, load_history,
                                       lock_trainings, remove_target, save_checkpoint, signals_held)
from unmix.training.datasets import load_datasets
from unmix.training.loader import DataLoader
from unmix.training.options import TrainOptions, TrainResult
from unmix.signals import sigterm_as_ctrl_c
from unmix.training.processes import Processes, all_sum, mixed_seed, setup_context
from unmix.training.schedules import EarlyStopping, ReduceLROnPlateau
from unmix.training.statistics import compute_statistics
from unmix.training.trainer import NonFiniteLoss, Trainer
from unmix.training.views import Subset
from unmix.training.validation import blas_threads
from unmix.weights import registry

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
    recipes.get(options.architecture).check_options(options)
    return fit(setup(options, setup_context(options.context)))


@dataclass
class Run:
    """What the epochs of one training work with; made by `setup`, driven by `fit`."""

    options: TrainOptions
    recipe: object  # the architecture's, `unmix.training.recipes`
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
    lock: contextlib.ExitStack  # the output's training locks (`checkpoint.lock_trainings`); `fit` releases them


def setup(options: TrainOptions, comm=None):
    """Datasets, model, trainer, progress restored from --checkpoint, loaders; nothing written yet
    but the lock of the training in the output folder (`checkpoint.lock_trainings`, taken once the
    datasets name the target, held until `fit` ends; rank 0 only): a second run of the same target
    into the same folder is refused.

    Args:
        comm: the data-parallel communicator of `unmix.training.processes.setup_context`, or None for one process.

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
    recipe = recipes.get(o.architecture)
    target, rate = recipe.run_name(train_ds), float(train_ds.sample_rate)
    created = procs.writer and not output.exists()
    lock = lock_trainings(output, recipe.file_names(target)) if procs.writer else contextlib.ExitStack()
    try:
        in_place = resume_from is not None and resume_from.resolve() == output.resolve()
        for name in recipe.file_names(target):
            _check_clobber(output, name, in_place or o.force)
        history = load_history(resume_from, target) if resume_from else None
        if history is not None:
            if history.get("architecture", "umx") != o.architecture:
                raise UnmixError(f"{resume_from} holds a training of architecture "
                                 f"{history.get('architecture', 'umx')}, not {o.architecture}")
            model, n_fft, n_hop, origin = _resumed_model(recipe, history, resume_from, target, output, rate)
        elif o.model:
            model, n_fft, n_hop, origin = _fine_tuned_model(recipe, o, target, output, rate, procs)
        else:
            model, n_fft, n_hop, origin = _new_model(recipe, o, train_ds, output, rate, procs)
        loss_options = recipe.loss_options(o, n_hop)
        trainer = Trainer(model, o.lr, o.weight_decay, comm, fast=o.context == "cpu",
                          loss_options=loss_options)
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
        train_loader, valid_loader = _make_loaders(recipe, o, train_ds, valid_ds, n_fft, n_hop,
                                                   model.config.nb_channels, procs, trainer.frames_first)
    except BaseException:
        lock.close()
        if created:  # the folder the lock made, left empty
            with contextlib.suppress(OSError):
                output.rmdir()
        raise
    return Run(o, recipe, procs, output, resume_from, in_place, target, rate, n_fft, n_hop, origin, model, trainer, state,
               train_loader, valid_loader, lock)


def fit(run: Run):
    """Train until `epochs`, early stopping or Ctrl-C; returns a TrainResult. The run's lock is
    released at the end, whatever the end."""
    with run.lock:
        stopped = _epochs(run)
    state = run.state
    return TrainResult(run.output, run.target, state.epoch, state.best_epoch, state.stopper.best,
                       list(state.curves["train_loss_history"]), list(state.curves["valid_loss_history"]), stopped,
                       run.recipe.sources(run.model))


def _epochs(run: Run):
    """The first files, then the epochs; how they stopped."""
    _start_files(run)
    stopped = "completed"
    try:
        with sigterm_as_ctrl_c():
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
    return stopped


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
        for name in run.recipe.file_names(run.target):
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
            nn.seed(mixed_seed(run.options.seed, epoch, run.procs.rank))  # dropout: reproducible and resumable
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
    if backend == "onnx":
        # a snapshot of the current weights, 8x faster on CPU; as many threads as the training's
        # GEMMs (OPENBLAS_NUM_THREADS): runs side by side on few cores would else oversubscribe them
        model = run.recipe.onnx_snapshot(model, blas_threads())
    elif backend != "nnabla":
        raise UnmixError(f"unknown validation backend {backend!r}: use auto, onnx or nnabla")
    total, count = run.recipe.validation_sums(model, run)
    if run.procs.comm is not None:
        total, count = all_sum(run.procs.comm, [total, count])
    if count == 0:
        raise UnmixError("the validation set is empty")
    return total / count


def save(run: Run, is_best):
    """The checkpoint of `run.state.epoch` (rank 0 only); when best, the model weights too."""
    if run.procs.writer:
        save_checkpoint(run.output, run.target, run.model, run.trainer, run.state, _summary(run), is_best)


def _summary(run: Run):
    """The constant part of ``<target>.json``: the model, the signal, the options of the run."""
    o = run.options
    return {
        **run.recipe.summary(run.model),
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


def _resumed_model(recipe, history, folder, target, output, rate):
    """``(model, n_fft, n_hop, origin)`` from the checkpoint of `target` in `folder`."""
    path = checkpoint_file(folder, target, "chkpnt")
    model = recipe.resumed_network(ModelConfig.from_dict(history["config"]), history, path)
    _check_rate(history["sample_rate"], rate, folder)
    n_fft, n_hop = int(history["n_fft"]), int(history["n_hop"])
    _check_folder(output, rate, n_fft, n_hop, model.config.nb_channels)
    return model, n_fft, n_hop, history.get("fine_tuned_from")


def _fine_tuned_model(recipe, options, target, output, rate, procs):
    """``(model, n_fft, n_hop, origin)`` from the model folder or registry name `options.model`."""
    o = options
    folder = registry.resolve_model(o.model)
    meta = read_separator_json(folder)
    theirs = recipes.get(architecture_name(meta))
    if theirs is not recipe:
        raise UnmixError(f"{o.model} is an {theirs.title} model: fine-tune it with --architecture {theirs.name}")
    _check_rate(meta["sample_rate"], rate, folder)
    n_fft, n_hop = int(meta.get("n_fft", 4096)), int(meta.get("n_hop", 1024))
    if (o.nfft or n_fft) != n_fft or (o.nhop or n_hop) != n_hop:
        raise UnmixError(f"model {o.model} uses n_fft {n_fft} / n_hop {n_hop}, not {o.nfft} / {o.nhop}")
    model = recipe.fine_tuned_network(folder, target)
    _check_folder(output, rate, n_fft, n_hop, model.config.nb_channels)
    procs.say(f"fine-tuning {target} from {folder}")
    return model, n_fft, n_hop, str(folder)


def _new_model(recipe, options, train_ds, output, rate, procs):
    """``(model, n_fft, n_hop, None)``: a new model whose input scaling holds the training set's
    statistics (computed by rank 0 only; `setup` broadcasts its weights)."""
    o = options
    n_fft, n_hop = o.nfft or 4096, o.nhop or 1024
    nb_bins = n_fft // 2 + 1
    max_bin = bandwidth_to_max_bin(rate, n_fft, o.bandwidth)
    config = ModelConfig(nb_bins=nb_bins, nb_channels=o.nb_channels, hidden_size=o.hidden_size,
                         nb_layers=o.nb_layers, max_bin=None if max_bin >= nb_bins else max_bin,
                         unidirectional=o.unidirectional)
    _check_folder(output, rate, n_fft, n_hop, config.nb_channels)
    model, nets = recipe.new_network(config, o.seed)
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
    if not (output / "separator.json").is_file():
        return
    meta = read_separator_json(output)
    mine = {"sample_rate": sample_rate, "n_fft": n_fft, "n_hop": n_hop, "nb_channels": nb_channels}
    theirs = {k: meta.get(k) for k in mine}
    if any(theirs[k] is not None and float(theirs[k]) != float(v) for k, v in mine.items()):
        raise UnmixError(f"{output} holds models with {theirs}; this training uses {mine}")


def _make_loaders(recipe, options, train_ds, valid_ds, n_fft, n_hop, nb_channels, procs, frames_first=False):
    """``(train_loader, valid_loader)``: magnitude batches of this process's shard of the training
    samples (in the trainer's layout, see `Trainer.frames_first`), and its shard of the validation
    tracks as audio (one track per batch)."""
    o = options
    if o.batch_size % procs.size:
        raise UnmixError(f"--batch-size {o.batch_size} is not divisible by the {procs.size} processes")
    batch = o.batch_size // procs.size
    train = recipe.train_view(train_ds, n_fft, n_hop, nb_channels, frames_first)
    valid_ds = recipe.valid_view(valid_ds)
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


def _plain(value):
    return None if value is None else [value] if isinstance(value, str) else list(value)
