"""Training of one Open-Unmix target: the recipe of open-unmix-pytorch 1.3 ``scripts/train.py`` in NNabla.

    datasets (unmix.data) -> DataLoader workers: audio -> STFT (center=False) -> magnitudes
      -> one fixed-shape NNabla graph: model.build(training=True) -> MSE on magnitudes
      -> Adam (L2 weight decay added to the gradient, as torch's Adam(weight_decay=...))
    per epoch: validation on full tracks (running batch-norm statistics, windowed so memory stays
    bounded) -> ReduceLROnPlateau -> EarlyStopping -> checkpoint + best weights + history + plot.

The output folder is a model folder (`unmix separate --model DIR`):

    separator.json          targets, sample_rate, n_fft, n_hop, architectures (merged with other targets)
    <target>.h5             best weights (lowest validation loss)
    <target>.json           options, model config, per-epoch histories (loss, lr, time), best epoch,
                            scheduler and early-stopping state
    <target>.chkpnt.h5      weights after the last finished epoch (batch-norm running statistics included)
    <target>.solver.h5      Adam state of the same moment (nnabla ``Solver.save_states``)
    <target>_loss.png       training / validation curves

``--checkpoint DIR`` resumes from the last finished epoch: same epoch counter, learning rate,
scheduler, early stopping and random streams (data samples are seeded by (seed, epoch, index) in
`unmix.data`, dropout by re-seeding NNabla per epoch), so an interrupted and resumed run gives the
curve of an uninterrupted one. ``epochs`` is the total number of epochs of the training (the
reference adds ``--epochs`` more on resume). A checkpoint is written before the first epoch, so
Ctrl-C at any moment leaves one; the epoch it interrupts is discarded. SIGINT is held back while
the files of a checkpoint are written, so they always belong to one epoch.

Differences from the reference, on purpose: incomplete last batches are dropped (one graph
shape; samples are reshuffled every epoch); the learning-rate schedule and the early stopping are
the reference's (`ReduceLROnPlateau`, `EarlyStopping` below); NNabla's Adam adds ``eps`` after the
bias correction of the second moment (``eps * sqrt(1 - beta2^t)`` in torch's terms: negligible).

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
import json
import math
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from unmix import __version__
from unmix import transforms
from unmix.errors import UnmixError, atomic_path

STATS_STD_FLOOR = 1e-4  # std >= 1e-4 * max(std), as the reference's get_statistics
VALID_WINDOW = 512  # frames per validation window (bounds memory on long tracks)


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
    patience: int = 140
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
    dataset_options: dict = field(default_factory=dict)  # extra keywords of data.load_datasets
    context: str = "cpu"
    valid_backend: str = "auto"  # auto: onnx on cpu, nnabla otherwise
    quiet: bool = False


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


# -- signal parameters and statistics -------------------------------------------------------------
def bandwidth_to_max_bin(rate, n_fft, bandwidth):
    """Number of STFT bins whose centre frequency is <= `bandwidth` Hz (the reference's helper)."""
    freqs = np.linspace(0, float(rate) / 2, n_fft // 2 + 1, endpoint=True)
    return int(np.max(np.where(freqs <= bandwidth)[0]) + 1)


def model_magnitude(audio, n_fft, n_hop, nb_channels):
    """Training-time magnitude (center=False, as the reference's encoder).

    Args:
        audio: float32 ``(nb_audio_channels, nb_timesteps)``.
        nb_channels: the model's; 1 averages the channel magnitudes (the reference's ComplexNorm(mono)),
            2 repeats a mono signal (more channels keep the first two).

    Returns:
        float32 ``(nb_channels, nb_bins, nb_frames)``.
    """
    if nb_channels != 1:
        from unmix.data import fit_channels

        audio = fit_channels(audio, nb_channels)
    spec = transforms.stft(audio[None], n_fft, n_hop, center=False)
    return transforms.magnitude(spec, mono=nb_channels == 1)[0]


class MagnitudeDataset:
    """A dataset view yielding magnitudes, so DataLoader workers do the STFT.

    ``get(index, epoch)`` -> ``(X, Y)`` float32 ``(nb_channels, nb_bins, nb_frames)`` from the
    audio pair of ``dataset.get(index, epoch)``. Picklable (for 'spawn' workers).
    """

    def __init__(self, dataset, n_fft, n_hop, nb_channels):
        self.dataset, self.n_fft, self.n_hop, self.nb_channels = dataset, n_fft, n_hop, nb_channels

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def get(self, index, epoch=0):
        x, y = self.dataset.get(index, epoch)
        return (model_magnitude(x, self.n_fft, self.n_hop, self.nb_channels),
                model_magnitude(y, self.n_fft, self.n_hop, self.nb_channels))


class _StatisticsView(MagnitudeDataset):
    """``get`` -> the mono mixture magnitude of one track, float32 ``(nb_frames, nb_bins)``, twice
    (the loader hands x and y of one shape over; the float64 moments are taken in the parent)."""

    def __init__(self, dataset, n_fft, n_hop):
        super().__init__(dataset, n_fft, n_hop, nb_channels=1)  # 1: the channels' mean magnitude

    def get(self, index, epoch=0):
        x, _ = self.dataset.get(index, epoch)
        mag = np.ascontiguousarray(model_magnitude(x, self.n_fft, self.n_hop, self.nb_channels)[0].T)
        return mag, mag


class _Subset:
    """Samples `indices` of a dataset (a rank's shard)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def get(self, index, epoch=0):
        return self.dataset.get(int(self.indices[index]), epoch)


def compute_statistics(dataset, n_fft=4096, n_hop=1024, nb_workers=0, progress=False):
    """Per-bin mean and std of the mono mixture magnitude, as the reference's `get_statistics`.

    Each training track is read once, whole, without augmentation (``dataset.for_statistics()``
    where the dataset has it), transformed with center=False, averaged over channels, and its frames
    pooled: population mean and std per bin (sklearn's StandardScaler: a constant bin gets std 1),
    then ``std = max(std, 1e-4 * max(std))``.

    Returns:
        ``(mean, std)``, float64 ``(nb_bins,)`` each.
    """
    from unmix.data import DataLoader

    view = dataset.for_statistics() if hasattr(dataset, "for_statistics") else dataset
    loader = DataLoader(_StatisticsView(view, n_fft, n_hop), batch_size=1, shuffle=False,
                        nb_workers=nb_workers, drop_last=False)
    count, mean, m2 = 0.0, 0.0, 0.0
    for mag, _ in tqdm(loader, total=len(loader), disable=not progress, desc="statistics", leave=False):
        frames = mag[0].astype(np.float64)  # float64 accumulation, as sklearn's partial_fit
        n_b, mean_b = frames.shape[0], frames.mean(axis=0)
        m2_b = ((frames - mean_b) ** 2).sum(axis=0)
        # Chan et al.'s merge of (count, mean, sum of squared deviations): stable in one pass
        delta = mean_b - mean
        total = count + n_b
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total
    if count == 0:
        raise UnmixError("no training audio to compute the input statistics from")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(m2))):
        raise UnmixError("the training mixtures hold NaN or infinite samples (input statistics are not finite)")
    return mean, scaler_std(m2 / count, mean, count)


def scaler_std(var, mean, count):
    """std from the pooled variance: sklearn's zero-variance rule, then the reference's floor."""
    eps = np.finfo(np.float64).eps
    constant = var <= count * eps * var + (count * mean * eps) ** 2  # sklearn _is_constant_feature
    std = np.where(constant, 1.0, np.sqrt(var))
    return np.maximum(std, STATS_STD_FLOOR * np.max(std))


# -- the reference's schedules --------------------------------------------------------------------
class ReduceLROnPlateau:
    """torch.optim.lr_scheduler.ReduceLROnPlateau (mode min, relative threshold) on one learning rate."""

    def __init__(self, lr, factor=0.1, patience=10, threshold=1e-4, cooldown=0, min_lr=0.0, eps=1e-8):
        if factor >= 1.0:
            raise UnmixError("the learning-rate decay factor must be < 1")
        self.lr, self.factor, self.patience, self.threshold = float(lr), factor, patience, threshold
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def step(self, metric):
        """Record one epoch's validation loss; returns the learning rate for the next epoch."""
        current = float(metric)
        self.last_epoch += 1
        if current < self.best * (1.0 - self.threshold):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.lr

    def state_dict(self):
        state = dict(vars(self))
        state["best"] = None if math.isinf(self.best) else self.best  # strict JSON has no inf
        return state

    def load_state_dict(self, state):
        for key, value in state.items():
            setattr(self, key, value)
        if self.best is None:
            self.best = math.inf


class EarlyStopping:
    """The reference's EarlyStopping (utils.py): stop after `patience` epochs without improvement."""

    def __init__(self, patience=10, min_delta=0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best = None
        self.num_bad_epochs = 0

    def is_better(self, a, best):
        return True if self.patience == 0 else a < best - self.min_delta

    def step(self, metric):
        """Record one epoch's validation loss; True when training should stop."""
        if self.best is None:
            self.best = metric
            return False
        if np.isnan(metric):
            return True
        if self.is_better(metric, self.best):
            self.num_bad_epochs, self.best = 0, metric
        else:
            self.num_bad_epochs += 1
        return self.num_bad_epochs >= self.patience

    def state_dict(self):
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs}

    def load_state_dict(self, state):
        """Restore the progress only, as the reference's train.py does on resume: a run resumed
        with a new --patience (or min_delta) uses the new value."""
        self.best, self.num_bad_epochs = state["best"], state["num_bad_epochs"]


# -- steps ----------------------------------------------------------------------------------------
class NonFiniteLoss(UnmixError):
    """The loss or its gradients became NaN or infinite: the update was not applied."""


class Trainer:
    """One model, its Adam solver and its training graph (built once per batch shape).

    Args:
        model: `unmix.model.OpenUnmix`.
        comm: a NNabla data-parallel communicator, or None for one process.
        fast: the CPU's training: the coarse functions of `unmix.ops` and torch's Adam (`unmix.solver`);
            a GPU keeps the stock NNabla graph).
        dropout: LSTM dropout between layers; None: the reference's (`unmix.model.LSTM_DROPOUT`).
        lstm_bias_hh: with `fast`, torch's ``b_hh`` half of the LSTM bias ``(nb_layers, D, 4, H)``
            when known (a converted reference checkpoint); None: half the bias. See `unmix.solver`.
    """

    def __init__(self, model, lr=1e-3, weight_decay=1e-5, comm=None, fast=False, dropout=None, lstm_bias_hh=None):
        import nnabla.solvers as S

        self.model, self.weight_decay, self.comm = model, float(weight_decay), comm
        self.fast, self.dropout = fast, dropout
        self.params = model.trainable_parameters()
        self.running_stats = {k: v for k, v in model.parameters.items() if k not in self.params}
        if fast:  # torch's Adam to the last bit of eps (see unmix.solver); beta1 0.9, beta2 0.999, eps 1e-8
            from unmix.solver import Adam

            self.solver = Adam(alpha=lr)
            self.solver.set_parameters(self.params, twins={"lstm/lstm/bias": lstm_bias_hh})  # b_ih + b_hh
        else:
            self.solver = S.Adam(alpha=lr)
            self.solver.set_parameters(self.params)
        self._graph = None

    @property
    def lr(self):
        return self.solver.learning_rate()

    def set_lr(self, lr):
        self.solver.set_learning_rate(float(lr))

    def build(self, shape):
        """The training graph for batches of `shape` (built once per shape)."""
        return self._graph_for(shape)

    def _graph_for(self, shape):
        import nnabla as nn

        from unmix.model import LSTM_DROPOUT

        if self._graph is None or self._graph[0].shape != tuple(shape):
            x, y = nn.Variable(shape), nn.Variable(shape)
            dropout = LSTM_DROPOUT if self.dropout is None else self.dropout
            with nn.auto_forward(False):
                loss = self.model.build_loss(x, y, fast=self.fast, dropout=dropout)
            self._graph = (x, y, loss)
        return self._graph

    def train_step(self, x, y):
        """One Adam step on a batch; x, y float32 ``(nb_samples, nb_channels, nb_bins, nb_frames)``.

        Returns the batch's MSE (averaged over processes). Raises `NonFiniteLoss` before updating
        anything when the loss or a gradient is not finite.
        """
        xv, yv, loss = self._graph_for(x.shape)
        xv.d, yv.d = x, y
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
        if self.fast and "hh" not in states["lstm/lstm/bias"].pstate:
            self.solver.split_twin("lstm/lstm/bias")  # a state of NNabla's Adam: equal halves


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


# -- the run --------------------------------------------------------------------------------------
class _Run:
    """State of one training run; `train` drives it."""

    def __init__(self, options: TrainOptions, comm=None):
        self.o = options
        self.comm = comm
        self.rank = self.comm.rank if self.comm else 0
        self.size = self.comm.size if self.comm else 1
        self.writer = self.rank == 0
        self.progress = self.writer and not options.quiet
        self.output = Path(options.output).expanduser()

    def say(self, message):
        if self.progress:
            tqdm.write(message)

    # setup ---------------------------------------------------------------------------------------
    def setup(self):
        from unmix import data

        o = self.o
        nb_channels = o.nb_channels if o.nb_channels != 1 else None  # mono: the magnitudes are averaged
        self.train_ds, self.valid_ds = data.load_datasets(
            o.dataset, o.root, o.target, seq_duration=o.seq_dur, samples_per_track=o.samples_per_track,
            source_augmentations=o.source_augmentations, seed=o.seed, is_wav=o.is_wav,
            valid_tracks=o.valid_tracks, nb_channels=nb_channels, **o.dataset_options)
        self.target = self.train_ds.target
        self.sample_rate = float(self.train_ds.sample_rate)
        self._check_clobber()
        self.history = self._load_history() if o.checkpoint else None
        self.model, self.n_fft, self.n_hop, self.origin = self._make_model()
        self.nb_channels = self.model.config.nb_channels
        self.trainer = Trainer(self.model, o.lr, o.weight_decay, self.comm, fast=o.context == "cpu")
        self.scheduler = ReduceLROnPlateau(o.lr, factor=o.lr_decay_gamma, patience=o.lr_decay_patience,
                                           cooldown=10)
        self.stopper = EarlyStopping(patience=o.patience)
        self.epoch = 0
        self.best_epoch = 0
        self.curves = {k: [] for k in ("train_loss_history", "valid_loss_history", "lr_history",
                                       "train_time_history", "valid_time_history")}
        if self.history is not None:
            self._restore()
        elif self.comm is not None:
            # identical starting weights everywhere: rank 0's (it has the statistics)
            self.comm.bcast([v.data for v in self.model.parameters.values()], src=0, inplace=True)
        self._make_loaders()

    def _load_history(self):
        path = Path(self.o.checkpoint).expanduser() / f"{self.target}.json"
        if not path.is_file():
            raise UnmixError(f"no checkpoint of '{self.target}' in {self.o.checkpoint} (no {path.name})")
        try:
            history = json.loads(path.read_text())
            history["config"], history["epochs_trained"]
        except (ValueError, KeyError) as exc:
            raise UnmixError(f"{path} is not a training history written by unmix train: {exc}") from None
        return history

    def _make_model(self):
        from unmix.model import ModelConfig, OpenUnmix, load_target, read_h5_params

        o = self.o
        if self.history is not None:
            h = self.history
            path = Path(o.checkpoint).expanduser() / f"{self.target}.chkpnt.h5"
            if not path.is_file():
                raise UnmixError(f"checkpoint folder {o.checkpoint} lacks {path.name}")
            model = OpenUnmix(ModelConfig.from_dict(h["config"]), read_h5_params(path))
            self._check_rate(h["sample_rate"], o.checkpoint)
            self._check_folder(int(h["n_fft"]), int(h["n_hop"]), model.config.nb_channels)
            return model, int(h["n_fft"]), int(h["n_hop"]), h.get("fine_tuned_from")
        if o.model:
            from unmix import pretrained
            from unmix.model import read_separator_json

            folder = pretrained.resolve_model(o.model)
            meta = read_separator_json(folder)
            self._check_rate(meta["sample_rate"], folder)
            n_fft, n_hop = int(meta.get("n_fft", 4096)), int(meta.get("n_hop", 1024))
            if (o.nfft or n_fft) != n_fft or (o.nhop or n_hop) != n_hop:
                raise UnmixError(f"model {o.model} uses n_fft {n_fft} / n_hop {n_hop}, not {o.nfft} / {o.nhop}")
            model = load_target(folder, self.target)
            self._check_folder(n_fft, n_hop, model.config.nb_channels)
            self.say(f"fine-tuning {self.target} from {folder}")
            return model, n_fft, n_hop, str(folder)
        n_fft, n_hop = o.nfft or 4096, o.nhop or 1024
        nb_bins = n_fft // 2 + 1
        max_bin = bandwidth_to_max_bin(self.sample_rate, n_fft, o.bandwidth)
        config = ModelConfig(nb_bins=nb_bins, nb_channels=o.nb_channels, hidden_size=o.hidden_size,
                             nb_layers=o.nb_layers, max_bin=None if max_bin >= nb_bins else max_bin,
                             unidirectional=o.unidirectional)
        self._check_folder(n_fft, n_hop, config.nb_channels)
        model = OpenUnmix(config, seed=o.seed)
        if self.writer:
            mean, std = compute_statistics(self.train_ds, n_fft, n_hop, o.nb_workers, self.progress)
            params = model.get_params()
            m = config.model_bins
            params["input_mean"] = (-mean[:m]).astype(np.float32)
            params["input_scale"] = (1.0 / std[:m]).astype(np.float32)
            model.set_params(params)
        return model, n_fft, n_hop, None

    def _check_rate(self, rate, where):
        if float(rate) != self.sample_rate:
            raise UnmixError(f"{where} was trained at {float(rate):g} Hz, the dataset is at {self.sample_rate:g} Hz")

    def _resuming_in_place(self):
        o = self.o
        return bool(o.checkpoint) and Path(o.checkpoint).expanduser().resolve() == self.output.resolve()

    def _check_clobber(self):
        """Refuse to overwrite another training of this target (before any work)."""
        if (self.output / f"{self.target}.chkpnt.h5").exists() and not (self._resuming_in_place() or self.o.force):
            raise UnmixError(f"{self.output} already holds a training of '{self.target}': resume it with "
                             f"--checkpoint {self.output}, or pass --force to start over")

    def _check_folder(self, n_fft, n_hop, nb_channels):
        """The output's separator.json, if any, must describe the same signal and channels."""
        from unmix.model import read_separator_json

        if not (self.output / "separator.json").is_file():
            return
        meta = read_separator_json(self.output)
        mine = {"sample_rate": self.sample_rate, "n_fft": n_fft, "n_hop": n_hop, "nb_channels": nb_channels}
        theirs = {k: meta.get(k) for k in mine}
        if any(theirs[k] is not None and float(theirs[k]) != float(v) for k, v in mine.items()):
            raise UnmixError(f"{self.output} holds models with {theirs}; this training uses {mine}")

    def _restore(self):
        h = self.history
        folder = Path(self.o.checkpoint).expanduser()
        solver_path = folder / f"{self.target}.solver.h5"
        if not solver_path.is_file():
            raise UnmixError(f"checkpoint folder {folder} lacks {solver_path.name}")
        self.trainer.load_solver(solver_path)
        self.scheduler.load_state_dict(h["scheduler"])
        self.stopper.load_state_dict(h["early_stopping"])
        self.trainer.set_lr(self.scheduler.lr)
        self.epoch, self.best_epoch = int(h["epochs_trained"]), int(h["best_epoch"])
        for key in self.curves:
            self.curves[key] = list(h.get(key, []))
        self.say(f"resuming {self.target} after epoch {self.epoch} (lr {self.scheduler.lr:g})")

    def _make_loaders(self):
        from unmix.data import DataLoader

        o = self.o
        if o.batch_size % self.size:
            raise UnmixError(f"--batch-size {o.batch_size} is not divisible by the {self.size} processes")
        batch = o.batch_size // self.size
        train = MagnitudeDataset(self.train_ds, self.n_fft, self.n_hop, self.nb_channels)
        n = len(train) - len(train) % self.size
        if self.size > 1:
            train = _Subset(train, np.arange(self.rank, n, self.size))
        if len(train) < batch:
            raise UnmixError(f"the training set has {len(train)} samples per process, fewer than a batch of "
                             f"{batch}: lower --batch-size or raise --samples-per-track")
        if self.train_ds.seq_len is None and batch > 1:
            raise UnmixError("full-track training (--seq-dur <= 0) needs --batch-size 1")
        self.train_loader = DataLoader(train, batch, shuffle=True, nb_workers=o.nb_workers, seed=o.seed,
                                       drop_last=True)
        valid = self.valid_ds
        if self.size > 1:
            valid = _Subset(valid, np.arange(self.rank, len(valid), self.size))
        self.valid_loader = DataLoader(valid, 1, shuffle=False, nb_workers=o.nb_workers, drop_last=False)

    # epochs -------------------------------------------------------------------------------------
    def run(self):
        """Train until `epochs`, early stopping or Ctrl-C; returns a TrainResult."""
        moved = self.history is not None and not self._resuming_in_place()
        if self.history is None or moved:
            self.save(is_best=False)  # a resumable state from the very start (statistics included)
        if moved:
            self._carry_best()
        stopped = "completed"
        try:
            with _sigterm_as_ctrl_c():
                for epoch in range(self.epoch + 1, self.o.epochs + 1):
                    if self.run_epoch(epoch):
                        stopped = "early_stopping"
                        self.say(f"early stopping after epoch {epoch}: no improvement in {self.o.patience} epochs")
                        break
        except KeyboardInterrupt:
            stopped = "interrupted"
            self.say(f"interrupted: {self.output} holds the checkpoint of epoch {self.epoch}; "
                     f"resume with --checkpoint {self.output}")
        return TrainResult(self.output, self.target, self.epoch, self.best_epoch, self.stopper.best,
                           list(self.curves["train_loss_history"]), list(self.curves["valid_loss_history"]),
                           stopped)

    def run_epoch(self, epoch):
        """Train and validate one epoch, step the schedules, save; True when early stopping says stop."""
        lr = self.scheduler.lr  # the rate this epoch runs with (the solver holds it as float32)
        start = time.time()
        train_loss = self.train_epoch(epoch)
        middle = time.time()
        valid_loss = self.validate()
        end = time.time()
        if not math.isfinite(valid_loss):
            raise UnmixError(f"validation loss is {valid_loss} after epoch {epoch}: stopped without saving "
                             f"(the checkpoint of epoch {self.epoch} in {self.output} is intact)")
        self.trainer.set_lr(self.scheduler.step(valid_loss))
        stop = self.stopper.step(valid_loss)
        is_best = valid_loss == self.stopper.best
        with _sigint_held():  # the epoch counter and the files on disk move together
            if is_best:
                self.best_epoch = epoch
            for key, value in zip(self.curves, (train_loss, valid_loss, lr, middle - start, end - middle)):
                self.curves[key].append(float(value))
            self.epoch = epoch
            self.save(is_best)
        self.say(f"epoch {epoch}: train {train_loss:.5g}, valid {valid_loss:.5g}, lr {lr:g}"
                 f"{' (best)' if is_best else ''}, {end - start:.1f} s")
        return stop

    def train_epoch(self, epoch):
        """Mean batch loss of one pass over the training loader."""
        import nnabla as nn

        self.train_loader.set_epoch(epoch)
        losses = []
        bar = tqdm(self.train_loader, total=len(self.train_loader), disable=not self.progress,
                   desc=f"epoch {epoch}", leave=False, unit="batch")
        for x, y in bar:
            if not losses:
                self.trainer.build(x.shape)  # building draws random numbers: before the seeding
                nn.seed(_mixed_seed(self.o.seed, epoch, self.rank))  # dropout: reproducible and resumable
            try:
                losses.append(self.trainer.train_step(x, y))
            except NonFiniteLoss as exc:
                raise UnmixError(f"{exc} at epoch {epoch}, batch {len(losses) + 1}: stopped without saving these "
                                 f"weights (the checkpoint of epoch {self.epoch} in {self.output} is intact); "
                                 "check the data or lower --lr") from None
            bar.set_postfix(loss=f"{np.mean(losses):.4g}")
        bar.close()
        return float(np.mean(losses))

    def validate(self):
        """Mean loss over the validation tracks (all processes)."""
        backend = self.o.valid_backend
        if backend == "auto":
            backend = "onnx" if self.o.context == "cpu" else "nnabla"
        model = self.model
        if backend == "onnx":
            from unmix.onnx_backend import OnnxModel

            model = OnnxModel(self.model)  # a snapshot of the current weights, 8x faster on CPU
        elif backend != "nnabla":
            raise UnmixError(f"unknown validation backend {backend!r}: use auto, onnx or nnabla")
        total, count = validation_sums(model, self.valid_loader, self.n_fft, self.n_hop, self.nb_channels,
                                       self.progress)
        if self.comm is not None:
            total, count = _all_sum(self.comm, [total, count])
        if count == 0:
            raise UnmixError("the validation set is empty")
        return total / count

    # files --------------------------------------------------------------------------------------
    def save(self, is_best):
        """Checkpoint (weights, solver, history) and, when best, the model weights and separator.json."""
        if not self.writer:
            return
        from unmix.model import save_target

        with _sigint_held():
            self.output.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.output / f"{self.target}.chkpnt.h5") as tmp:
                import nnabla as nn

                nn.save_parameters(str(tmp), params=self.model.parameters, extension=".h5")
            self.trainer.save_solver(self.output / f"{self.target}.solver.h5")
            if is_best:
                save_target(self.output, self.target, self.model)
                self._write_separator_json()
            from unmix.model import write_json

            write_json(self.output / f"{self.target}.json", self.summary())
        if self.epoch:
            self._plot()

    def summary(self):
        """The ``<target>.json`` content."""
        o = self.o
        return {
            "target": self.target,
            "epochs_trained": self.epoch,
            "best_epoch": self.best_epoch,
            "best_loss": self.stopper.best,
            "num_bad_epochs": self.stopper.num_bad_epochs,
            **self.curves,
            "total_time": float(sum(self.curves["train_time_history"]) + sum(self.curves["valid_time_history"])),
            "config": self.model.config.to_dict(),
            "nb_parameters": self.model.nb_parameters(),
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "n_hop": self.n_hop,
            "fine_tuned_from": self.origin,
            "scheduler": self.scheduler.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "args": {**asdict(o), "nfft": self.n_fft, "nhop": self.n_hop, "target": self.target,
                     "source_augmentations": _plain(o.source_augmentations),
                     "valid_tracks": _plain(o.valid_tracks)},
            "nb_processes": self.size,
            "unmix_version": __version__,
        }

    def _carry_best(self):
        """Resuming into another folder: bring the best weights so far along."""
        src = Path(self.o.checkpoint).expanduser() / f"{self.target}.h5"
        if self.writer and src.is_file():
            with _sigint_held(), atomic_path(self.output / src.name) as tmp:
                shutil.copyfile(src, tmp)
            self._write_separator_json()

    def _write_separator_json(self):
        """separator.json with this target added to the targets already in the folder."""
        from unmix.model import ModelConfig, read_separator_json, write_separator_json

        configs, extra = {}, {}
        path = self.output / "separator.json"
        if path.is_file():
            meta = read_separator_json(self.output)
            configs = {t: ModelConfig.from_dict(meta["models"][t]) for t in meta["targets"]
                       if (self.output / f"{t}.h5").is_file()}
            extra = {k: v for k, v in meta.items()
                     if k not in ("targets", "models", "sample_rate", "n_fft", "n_hop", "nb_channels")}
        configs[self.target] = self.model.config
        write_separator_json(self.output, configs, self.sample_rate, self.n_fft, self.n_hop, **extra)

    def _plot(self):
        plot_losses(self.output / f"{self.target}_loss.png", self.curves["train_loss_history"],
                    self.curves["valid_loss_history"], self.best_epoch, title=self.target)


def plot_losses(path, train_losses, valid_losses, best_epoch=None, title=None):
    """Write the training and validation curves (log scale) as a PNG (matplotlib's Agg canvas,
    without pyplot, so the caller's matplotlib backend is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

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
    ax.set_ylabel("MSE on magnitudes")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


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
    run = _Run(options, _setup_context(options.context))
    run.setup()
    return run.run()


# -- helpers --------------------------------------------------------------------------------------
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
        from nnabla.ext_utils import get_extension_context

        ctx = get_extension_context(context)
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
def _sigint_held():
    """Hold back Ctrl-C (and SIGTERM) while a checkpoint's files are written; raise it right after."""
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
