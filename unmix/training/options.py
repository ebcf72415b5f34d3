"""The options of a training run and what it returns."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from unmix.training import recipes


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
        return recipes.get(self.architecture).default_patience


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

