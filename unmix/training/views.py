"""Views of the datasets for training: what the loader's workers compute from a sample.

`MagnitudeDataset` turns each audio pair into the magnitudes the model reads (the STFT in the
workers, not in the training step); `SourcesDataset` and `XumxDataset` give X-UMX every source
of a `unmix.training.datasets.MUSDBDataset` sample; `Subset` is one process's shard in
data-parallel training. Each has ``len``, ``set_epoch`` and ``get(index, epoch)`` as the
datasets do, and pickles (for 'spawn' workers).
"""
import numpy as np

from unmix.dsp import transforms
from unmix.errors import UnmixError
from unmix.training.chunks import fit_channels_dropping_extra


def model_magnitude(audio, n_fft, n_hop, nb_channels, frames_first=False):
    """Training-time magnitude (center=False, as the reference's encoder).

    Args:
        audio: float32 ``(nb_audio_channels, nb_timesteps)``.
        nb_channels: the model's; 1 averages the channel magnitudes (the reference's ComplexNorm(mono)),
            2 repeats a mono signal (more channels keep the first two).
        frames_first: return ``(nb_channels, nb_frames, nb_bins)`` (what the CPU trainer reads).

    Returns:
        float32 ``(nb_channels, nb_bins, nb_frames)``.
    """
    if nb_channels != 1:
        audio = fit_channels_dropping_extra(audio, nb_channels)
    spec = transforms.stft(audio[None], n_fft, n_hop, center=False, frames_first=frames_first)
    return transforms.magnitude(spec, mono=nb_channels == 1)[0]


class MagnitudeDataset:
    """A dataset view yielding magnitudes, so DataLoader workers do the STFT.

    ``get(index, epoch)`` -> ``(X, Y)`` float32 ``(nb_channels, nb_bins, nb_frames)`` from the
    audio pair of ``dataset.get(index, epoch)``, or ``(nb_channels, nb_frames, nb_bins)`` with
    `frames_first` (the CPU trainer's layout, `unmix.training.trainer.Trainer.frames_first`). Picklable (for
    'spawn' workers).
    """

    def __init__(self, dataset, n_fft, n_hop, nb_channels, frames_first=False):
        self.dataset, self.n_fft, self.n_hop, self.nb_channels = dataset, n_fft, n_hop, nb_channels
        self.frames_first = frames_first

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def get(self, index, epoch=0):
        x, y = self.dataset.get(index, epoch)
        return tuple(model_magnitude(a, self.n_fft, self.n_hop, self.nb_channels, self.frames_first) for a in (x, y))


class SourcesDataset:
    """A view of a `MUSDBDataset` yielding every source: ``get(index, epoch)`` -> ``(x, stems)``
    float32 ``(nb_channels, nb_timesteps)`` and ``(S, nb_channels, nb_timesteps)`` in the order of
    `sources` (X-UMX's validation tracks). Picklable."""

    def __init__(self, dataset, sources=("bass", "drums", "vocals", "other")):
        if not hasattr(dataset, "get_sources"):
            raise UnmixError(f"X-UMX trains on every MUSDB source: use --dataset musdb, not {type(dataset).__name__}")
        self.dataset, self.sources = dataset, tuple(sources)

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def get(self, index, epoch=0):
        return self.dataset.get_sources(index, epoch, self.sources)


def xumx_arrays(x, stems, n_fft, n_hop, nb_channels=2):
    """What X-UMX's training graph reads for one excerpt (`unmix.models.nnabla_graph.CrossNet.build_loss`),
    from the STFTs with center=True (as asteroid's and Sony's graphs):

    Args:
        x: float32 ``(nb_audio_channels, L)`` mixture; stems: ``(S, nb_audio_channels, L)``.
        nb_channels: the model's. 2 repeats a mono signal; 1 is the channel mean: the magnitudes
            are averaged over the channels (as open-unmix's and asteroid's mono models see the
            mixture), the phase and the time signals are those of the downmix.

    Returns:
        float32 ``(mix, real, imag, target_mag, target_time)``: the mixture's magnitude ``(C, T,
        bins)`` (frames first) and its complex spectrogram, the magnitude with the mixture's
        phase (stereo: the STFT itself), the sources' magnitudes ``(S, C, T, bins)`` and signals
        ``(S, C, (T - 1) * n_hop)`` (the length of the ISTFT).
    """
    if nb_channels != 1 and x.shape[0] != nb_channels:
        x, stems = fit_channels_dropping_extra(x, nb_channels), np.stack([fit_channels_dropping_extra(s, nb_channels) for s in stems])
    spec = transforms.stft(x, n_fft, n_hop, center=True, frames_first=True)
    targets = transforms.magnitude(transforms.stft(stems, n_fft, n_hop, center=True, frames_first=True))
    length = (spec.shape[-2] - 1) * n_hop
    if nb_channels != 1:
        return (np.abs(spec).astype(np.float32), spec.real.copy(), spec.imag.copy(), targets.astype(np.float32),
                np.ascontiguousarray(stems[..., :length]))
    mag = np.abs(spec).mean(axis=0, keepdims=True, dtype=np.float32)
    downmix = spec.mean(axis=0, keepdims=True)  # the STFT of the channel mean (the STFT is linear)
    size = np.abs(downmix)
    complex_mix = mag * np.divide(downmix, size, out=np.ones_like(downmix), where=size > 0)
    return (mag, complex_mix.real.astype(np.float32), complex_mix.imag.astype(np.float32),
            targets.mean(axis=1, keepdims=True, dtype=np.float32),
            np.ascontiguousarray(stems[..., :length].mean(axis=1, keepdims=True, dtype=np.float32)))


class XumxDataset(SourcesDataset):
    """A view of a `MUSDBDataset` yielding what X-UMX's training graph reads, so DataLoader
    workers do the STFTs: ``get(index, epoch)`` -> the five float32 arrays of `xumx_arrays`
    for the model's `nb_channels`.
    """

    def __init__(self, dataset, n_fft, n_hop, sources=("bass", "drums", "vocals", "other"), nb_channels=2):
        super().__init__(dataset, sources)
        self.n_fft, self.n_hop, self.nb_channels = n_fft, n_hop, nb_channels

    def get(self, index, epoch=0):
        x, stems = super().get(index, epoch)
        return xumx_arrays(x, stems, self.n_fft, self.n_hop, self.nb_channels)


class Subset:
    """Samples `indices` of a dataset (a process's shard in data-parallel training)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def get(self, index, epoch=0):
        return self.dataset.get(int(self.indices[index]), epoch)
