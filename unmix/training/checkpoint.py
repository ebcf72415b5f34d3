"""One target's training files in a model folder, and the progress saved with them.

    separator.json          targets, sample_rate, n_fft, n_hop, architectures (merged with other targets)
    <target>.h5             best weights (lowest validation loss)
    <target>.json           `Checkpoint.to_json` (epoch counter, curves, scheduler and early-stopping
                            state) and the run's summary (options, model config, signal parameters)
    <target>.chkpnt.h5      weights after the last finished epoch (batch-norm running statistics included)
    <target>.solver.h5      Adam state of the same moment (nnabla ``Solver.save_states``)
    <target>_loss.png       training / validation curves

    .<target>.lock          held (``flock``) by the process training the target, removed when it ends

`save_checkpoint` writes them and `load_history` / `Checkpoint.load_json` read them back, so a
resumed run continues where the files say. SIGINT and SIGTERM are held back while they are written
(`signals_held`), so the files of a checkpoint always belong to one epoch. `lock_training` keeps
a second run from training the same target into the same folder at the same time.
"""
import contextlib
import fcntl
import json
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from unmix.errors import UnmixError
from unmix.io.files import atomic_path
from unmix.models import architectures
from unmix.models.model_folder import folder_models, training_lock_file, write_json, write_separator_json
from unmix.training.schedules import EarlyStopping, ReduceLROnPlateau

# The per-epoch curves of ``<target>.json``, in the order an epoch records them.
CURVES = ("train_loss_history", "valid_loss_history", "lr_history", "train_time_history", "valid_time_history")


@dataclass
class Checkpoint:
    """The progress of one target's training: what a resumed run restores besides weights and solver.

    Attributes:
        scheduler, stopper: the learning-rate schedule and the early stopping, stepped once an epoch.
        epoch: epochs finished (0: none yet).
        best_epoch: the epoch of the lowest validation loss (0: none yet).
        curves: `CURVES` name -> one float per finished epoch.
    """

    scheduler: ReduceLROnPlateau
    stopper: EarlyStopping
    epoch: int = 0
    best_epoch: int = 0
    curves: Dict[str, List[float]] = field(default_factory=lambda: {k: [] for k in CURVES})

    def record(self, epoch, is_best, train_loss, valid_loss, lr, train_time, valid_time):
        """Count one finished epoch (its schedules already stepped)."""
        if is_best:
            self.best_epoch = epoch
        for key, value in zip(CURVES, (train_loss, valid_loss, lr, train_time, valid_time)):
            self.curves[key].append(float(value))
        self.epoch = epoch

    def to_json(self):
        """The progress keys of ``<target>.json`` (plain JSON values)."""
        return {
            "epochs_trained": self.epoch,
            "best_epoch": self.best_epoch,
            "best_loss": self.stopper.best,
            "num_bad_epochs": self.stopper.num_bad_epochs,
            **self.curves,
            "total_time": float(sum(self.curves["train_time_history"]) + sum(self.curves["valid_time_history"])),
            "scheduler": self.scheduler.state_dict(),
            "early_stopping": self.stopper.state_dict(),
        }

    def load_json(self, history):
        """Restore the progress from a ``<target>.json`` (see `load_history`)."""
        self.scheduler.load_state_dict(history["scheduler"])
        self.stopper.load_state_dict(history["early_stopping"])
        self.epoch, self.best_epoch = int(history["epochs_trained"]), int(history["best_epoch"])
        for key in self.curves:
            self.curves[key] = list(history.get(key, []))


# -- reading --------------------------------------------------------------------------------------
def load_history(folder, target):
    """The parsed ``<folder>/<target>.json`` of a training, checked to hold a config and an epoch count."""
    path = Path(folder) / f"{target}.json"
    if not path.is_file():
        raise UnmixError(f"no checkpoint of '{target}' in {folder} (no {path.name})")
    try:
        history = json.loads(path.read_text())
        history["config"], history["epochs_trained"]
    except (ValueError, KeyError) as exc:
        raise UnmixError(f"{path} is not a training history written by unmix train: {exc}") from None
    return history


def checkpoint_file(folder, target, kind):
    """``<folder>/<target>.<kind>.h5`` (kind: chkpnt or solver), which must exist."""
    path = Path(folder) / f"{target}.{kind}.h5"
    if not path.is_file():
        raise UnmixError(f"checkpoint folder {folder} lacks {path.name}")
    return path


def holds_training(folder, target):
    """True when `folder` holds files of a training or a model of `target`."""
    return any((Path(folder) / f"{target}{end}").exists() for end in (".chkpnt.h5", ".h5", ".json"))


# -- one run at a time -----------------------------------------------------------------------------
class TrainingLock:
    """The exclusive lock of one training name in an output folder (see `lock_training`)."""

    def __init__(self, path, file):
        self.path, self._file = Path(path), file

    def release(self):
        """Remove the lock file, then drop the lock (removed while held, so that a run waiting on
        the old file notices, see `lock_training`). Idempotent."""
        if self._file is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_training(folder, name):
    """Take the exclusive lock of training `name` in `folder` (created if missing) for this run.

    ``flock`` on ``<folder>/.<name>.lock``, non-blocking: a second run into the same folder and
    target is refused at once with the pid of the first. The kernel drops the lock when the
    process dies, so a crash leaves no stale lock (at most the empty file, which the next run
    takes over and `model_folder.check_replaceable` ignores). `TrainingLock.release` removes the
    file; a run that locked the file as it was removed sees that it is gone and locks a new one.

    Returns:
        `TrainingLock`.
    """
    folder = Path(folder)
    path = training_lock_file(folder, name)
    file = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            file = open(path, "a+")  # created if missing, never truncated before the lock is ours
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                pid = file.read().strip() or "unknown"
                file.close()
                raise UnmixError(f"{folder} is being trained for '{name}' by another process (pid {pid}); "
                                 "wait for it or choose another --output") from None
            try:
                current = os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            file.close()  # its holder removed it while releasing: lock the file now at `path`
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
    except OSError as exc:
        if file is not None:
            file.close()
        raise UnmixError(f"cannot lock {path}: {exc.strerror or exc}") from None
    return TrainingLock(path, file)


def lock_trainings(folder, names):
    """`lock_training` of every name (an X-UMX run writes the files of its sources too), as one
    `contextlib.ExitStack` whose ``close()`` releases them all."""
    with contextlib.ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(lock_training(folder, name))
        return stack.pop_all()


# -- writing --------------------------------------------------------------------------------------
def save_checkpoint(folder, target, model, trainer, state, summary, is_best):
    """Write the checkpoint of `state.epoch`: weights, solver state and ``<target>.json`` (`state`
    and the run's constant `summary`); when `is_best`, also the model weights and separator.json;
    then the loss plot."""
    import nnabla as nn

    folder = Path(folder)
    with signals_held():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"{target}.chkpnt.h5") as tmp:
            nn.save_parameters(str(tmp), params=model.parameters, extension=".h5")
        trainer.save_solver(folder / f"{target}.solver.h5")
        if is_best:
            _save_model(folder, target, model, summary["sample_rate"], summary["n_fft"], summary["n_hop"])
        write_json(folder / f"{target}.json", {"target": target, **state.to_json(), **summary})
    if state.epoch:
        plot_losses(folder / f"{target}_loss.png", state.curves["train_loss_history"],
                    state.curves["valid_loss_history"], state.best_epoch, title=target,
                    ylabel=architectures.of_network(model).loss_label)


def _save_model(folder, target, model, sample_rate, n_fft, n_hop):
    """The model weights and the folder's separator.json, as the model's architecture saves them."""
    arch = architectures.of_network(model)
    arch.write_weights(folder, target, model)
    arch.write_description(folder, target, model, sample_rate, n_fft, n_hop)


def copy_best(source, folder, target, model, sample_rate, n_fft, n_hop):
    """Bring the best weights of `target` (X-UMX: of every source) from the `source` folder along
    (a resume into another folder)."""
    arch = architectures.of_network(model)
    names = arch.weight_names(target, model)
    if not all((Path(source) / f"{name}.h5").is_file() for name in names):
        return
    with signals_held():
        for name in names:
            with atomic_path(Path(folder) / f"{name}.h5") as tmp:
                shutil.copyfile(Path(source) / f"{name}.h5", tmp)
    arch.write_description(folder, target, model, sample_rate, n_fft, n_hop)


def remove_target(folder, target):
    """Remove every file of `target` from a model folder (a ``--force`` run starting over): first
    its entry in separator.json (removed with the last target), so that `separate` never meets a
    half-removed model, then its weights, checkpoint, solver state, history and plot."""
    folder = Path(folder)
    with signals_held():
        meta, configs, extra = folder_models(folder)
        configs.pop(target, None)
        if configs:
            write_separator_json(folder, configs, meta["sample_rate"], meta.get("n_fft", 4096),
                                 meta.get("n_hop", 1024), **extra)
        elif meta is not None:
            (folder / "separator.json").unlink()
        for end in (".h5", "_loss.png", ".solver.h5", ".chkpnt.h5", ".json"):
            (folder / f"{target}{end}").unlink(missing_ok=True)


def plot_losses(path, train_losses, valid_losses, best_epoch=None, title=None, ylabel="MSE on magnitudes"):
    """Write the training and validation curves (log scale) as a PNG (matplotlib's Agg canvas,
    without pyplot, so the caller's matplotlib backend is left alone)."""
    epochs = np.arange(1, len(train_losses) + 1)
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(epochs, train_losses, marker=".", label="train")
    ax.plot(epochs, valid_losses, marker=".", label="valid")
    if best_epoch:
        ax.axvline(best_epoch, color="gray", linestyle=":", label=f"best (epoch {best_epoch})")
    if all(v > 0 for v in list(train_losses) + list(valid_losses)):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


@contextlib.contextmanager
def signals_held():
    """Hold back Ctrl-C (and SIGTERM) while a checkpoint's files are written (or a training step
    runs); raise it as KeyboardInterrupt right after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {s: signal.signal(s, lambda *_: caught.append(True)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if caught:
        raise KeyboardInterrupt
