"""Validation losses over whole tracks, in windows of frames so that memory stays bounded.

Open-Unmix: the MSE of the target's magnitude (`track_loss`); X-UMX: the multi-domain loss of
Sony's validation, over chunks of a track (`xumx_chunk_loss`). The networks may be NNabla ones or
ONNX Runtime snapshots of their current weights (faster on the CPU).
"""
import numpy as np
from threadpoolctl import threadpool_info
from tqdm import tqdm

from unmix.dsp import transforms
from unmix.errors import UnmixError
from unmix.models.losses import multi_domain_loss
from unmix.training.views import model_magnitude, xumx_arrays

VALID_WINDOW = 512  # frames per validation window (bounds memory on long tracks)


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
    training graph (`unmix.training.views.xumx_arrays`, mono models included).

    Args:
        model: anything called like `unmix.models.nnabla_graph.CrossNet` (CrossNet, OnnxCrossNet).
        x: float32 ``(nb_channels, nb_timesteps)`` mixture; stems: ``(S, nb_channels, nb_timesteps)``
            in the model's source order.
    """
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




def blas_threads():
    """The thread count of the BLAS that numpy uses (None if threadpoolctl finds none)."""
    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return min(counts) if counts else None
