"""Input statistics of a new model: per-bin mean and std of the training mixtures' magnitudes.

The reference's ``get_statistics`` (open-unmix-pytorch 1.3 ``scripts/train.py``) fits sklearn's
StandardScaler to the mono magnitudes of every training track; the model starts with
``input_mean = -mean`` and ``input_scale = 1 / std``. Here the same numbers come from one pass
with a stable merge of per-track moments, the tracks read by `unmix.training.loader.DataLoader` workers.
"""
import numpy as np
from tqdm import tqdm

from unmix.training.views import MagnitudeDataset, model_magnitude
from unmix.errors import UnmixError
from unmix.training.loader import DataLoader

STATS_STD_FLOOR = 1e-4  # std >= 1e-4 * max(std), as the reference's get_statistics


class _StatisticsView(MagnitudeDataset):
    """``get`` -> the mono mixture magnitude of one track, float32 ``(nb_frames, nb_bins)``, twice
    (the loader hands x and y of one shape over; the float64 moments are taken in the parent)."""

    def __init__(self, dataset, n_fft, n_hop):
        super().__init__(dataset, n_fft, n_hop, nb_channels=1)  # 1: the channels' mean magnitude

    def get(self, index, epoch=0):
        x, _ = self.dataset.get(index, epoch)
        mag = np.ascontiguousarray(model_magnitude(x, self.n_fft, self.n_hop, self.nb_channels)[0].T)
        return mag, mag


def compute_statistics(dataset, n_fft=4096, n_hop=1024, nb_workers=0, progress=False):
    """Per-bin mean and std of the mono mixture magnitude, as the reference's `get_statistics`.

    Each training track is read once, whole, without augmentation (``dataset.for_statistics()``
    where the dataset has it), transformed with center=False, averaged over channels, and its frames
    pooled: population mean and std per bin (sklearn's StandardScaler: a constant bin gets std 1),
    then ``std = max(std, 1e-4 * max(std))``.

    Returns:
        ``(mean, std)``, float64 ``(nb_bins,)`` each.
    """
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
