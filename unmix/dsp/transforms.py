"""STFT / ISTFT / magnitude on numpy's FFT, matching open-unmix-pytorch.

The forward transform equals ``torch.stft(n_fft, hop_length=n_hop, window=hann_window(n_fft),
center=center, pad_mode='reflect', onesided=True)`` and the inverse equals
``torch.istft(..., center=center, length=length)``. NNabla's own F.stft/F.istft are
100x slower on the CPU (see design.md), and these are plain numpy in, numpy out.
"""
import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from unmix.dsp.jit import kernel, run


def hann_window(n_fft):
    """Periodic Hann window, like ``torch.hann_window(n_fft)``; float32 ``(n_fft,)``."""
    n = np.arange(n_fft, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


def nb_frames_for(nb_timesteps, n_fft=4096, n_hop=1024, center=True):
    """Number of STFT frames that `stft` yields for a signal of `nb_timesteps` samples."""
    if center:
        nb_timesteps += 2 * (n_fft // 2)
    return 1 + (nb_timesteps - n_fft) // n_hop


def stft(audio, n_fft=4096, n_hop=1024, center=True, frames_first=False, workers=1):
    """Short-time Fourier transform.

    Args:
        audio: float array ``(..., nb_timesteps)``, e.g. ``(nb_samples, nb_channels, nb_timesteps)``.
        center: pad ``n_fft // 2`` on both sides by reflection (separation); training uses False.
        frames_first: return ``(..., nb_frames, nb_bins)``, the layout the FFT produces (no
            transposing copy); the values are the same.
        workers: threads for the FFTs (scipy.fft); the result does not depend on it.

    Returns:
        complex64 array ``(..., nb_bins, nb_frames)`` with ``nb_bins = n_fft // 2 + 1``.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if center:
        pad = n_fft // 2
        if audio.shape[-1] <= pad:
            raise ValueError(f"signal of {audio.shape[-1]} samples is too short for reflect padding of {pad}")
        widths = [(0, 0)] * (audio.ndim - 1) + [(pad, pad)]
        audio = np.pad(audio, widths, mode="reflect")
    if audio.shape[-1] < n_fft:
        raise ValueError(f"signal of {audio.shape[-1]} samples is shorter than one frame ({n_fft})")
    frames = sliding_window_view(audio, n_fft, axis=-1)[..., ::n_hop, :]  # (..., nb_frames, n_fft), a view
    spec = scipy.fft.rfft(frames * hann_window(n_fft), axis=-1, workers=workers)  # float32 in -> complex64 out
    return spec if frames_first else np.ascontiguousarray(np.swapaxes(spec, -1, -2))


def istft(spec, n_fft=4096, n_hop=1024, center=True, length=None):
    """Inverse STFT by windowed overlap-add, normalised by the summed squared window.

    Args:
        spec: complex array ``(..., nb_bins, nb_frames)``.
        length: number of samples to return; the signal is cut or zero-padded to exactly it.

    Returns:
        float32 array ``(..., length)`` (or the natural length when `length` is None).
    """
    window = hann_window(n_fft)
    nb_frames = spec.shape[-1]
    frames = scipy.fft.irfft(np.swapaxes(np.asarray(spec, dtype=np.complex64), -1, -2), n=n_fft, axis=-1)
    full_len = n_fft + n_hop * (nb_frames - 1)
    signal = _overlap_add(frames, window, n_hop, full_len)  # (..., nb_frames, n_fft) -> (..., full_len)
    envelope = _envelope(window, nb_frames, n_hop)

    start = n_fft // 2 if center else 0
    end = full_len - (n_fft // 2 if center else 0) if length is None else start + length
    signal = signal[..., start:end]
    envelope = envelope[start:end]
    # torch refuses an envelope that vanishes; we leave those samples untouched instead
    # (they only occur at the very edges when center=False).
    np.divide(signal, envelope, out=signal, where=envelope > 1e-11)
    if length is not None and signal.shape[-1] < length:
        widths = [(0, 0)] * (signal.ndim - 1) + [(0, length - signal.shape[-1])]
        signal = np.pad(signal, widths)
    return signal.astype(np.float32, copy=False)


def _overlap_add(frames, window, n_hop, full_len, workers=1):
    """Sum ``(..., nb_frames, n_fft)`` frames times `window`, placed every `n_hop` samples ->
    ``(..., full_len)`` float32 (frames placed past full_len are cut); the leading dimensions
    (signals) are shared by `workers` threads."""
    *lead, nb_frames, n_fft = frames.shape
    frames = np.ascontiguousarray(frames, np.float32).reshape(-1, nb_frames, n_fft)
    window = np.ascontiguousarray(window, np.float32)
    out = np.zeros((frames.shape[0], full_len), np.float32)
    parts = min(max(workers, 1), len(frames))
    edges = [len(frames) * i // parts for i in range(parts + 1)]  # rows of each part
    run(lambda i: _overlap_add_kernel(frames[edges[i]:edges[i + 1]], window, n_hop, out[edges[i]:edges[i + 1]]),
        range(parts), workers)
    return out.reshape(*lead, full_len)


def _envelope(window, nb_frames, n_hop):
    """Sum of the squared window over `nb_frames` frames every `n_hop` samples: ``(full_len,)``."""
    out = np.zeros(window.shape[-1] + n_hop * (nb_frames - 1), np.float32)
    _envelope_kernel(np.ascontiguousarray(window * window, np.float32), nb_frames, n_hop, out)
    return out


@kernel
def _overlap_add_kernel(frames, window, n_hop, out):
    """out[r, t * n_hop + k] += frames[r, t, k] * window[k], frames in order (one pass over the
    frames, instead of windowing them in place and adding hop-sized segments: 6x faster)."""
    nb_rows, nb_frames, n_fft = frames.shape
    for r in range(nb_rows):
        dest = out[r]
        for t in range(nb_frames):
            frame, start = frames[r, t], t * n_hop
            stop = min(n_fft, dest.shape[0] - start)
            for k in range(stop):
                dest[start + k] += frame[k] * window[k]


@kernel
def _envelope_kernel(square, nb_frames, n_hop, out):
    """out[t * n_hop + k] += square[k] for every frame t."""
    for t in range(nb_frames):
        start = t * n_hop
        for k in range(min(square.shape[0], out.shape[0] - start)):
            out[start + k] += square[k]


def magnitude(spec, mono=False):
    """Magnitude ``|spec|`` as float32; `mono` averages the channel axis 1 keeping it
    (``(nb_samples, nb_channels, nb_bins, nb_frames)`` -> ``(nb_samples, 1, nb_bins, nb_frames)``),
    as open-unmix's ComplexNorm does for a mono model."""
    mag = np.abs(spec).astype(np.float32, copy=False)
    if mono:
        mag = mag.mean(axis=1, keepdims=True)
    return mag


def stft_frames(audio, start, nb_frames, n_fft=4096, n_hop=1024, frames_first=False, workers=1):
    """Frames ``start .. start + nb_frames`` of the centred `stft` of `audio`, without padding
    or transforming the whole signal (long tracks are processed window by window).

    Args:
        audio: float32 ``(..., nb_timesteps)``.
        frames_first, workers: as for `stft`.

    Returns:
        complex64 ``(..., nb_bins, nb_frames)``, equal to ``stft(audio)[..., start:start + nb_frames]``
        (``(..., nb_frames, nb_bins)`` with `frames_first`).
    """
    pad = n_fft // 2
    length = audio.shape[-1]
    if length <= pad:
        raise ValueError(f"signal of {length} samples is too short for reflect padding of {pad}")
    lo, hi = start * n_hop - pad, (start + nb_frames - 1) * n_hop + n_fft - pad  # in the original signal
    if 0 <= lo and hi <= length:  # no padding reached: a view
        segment = audio[..., lo:hi]
    else:  # indices into the reflect-padded signal, mapped back onto the original samples
        idx = np.abs(np.arange(lo, hi))
        idx = np.where(idx >= length, 2 * (length - 1) - idx, idx)
        # np.take keeps the samples contiguous (audio[..., idx] would put the channels innermost:
        # frames strided by the channel count, a 2.7x slower windowing and FFT)
        segment = np.take(audio, idx, axis=-1)
    return stft(segment, n_fft, n_hop, center=False, frames_first=frames_first, workers=workers)


class OverlapAdd:
    """Inverse STFT by windows of frames, emitting finished samples as it goes.

    Windows are added in order with ``add(spec, start)``; each call returns the output
    samples that no later frame can change any more, normalised and with the centre padding
    removed. Concatenated, the returned chunks equal ``istft(full_spec, length=length)``,
    while only about one window of frames and samples is held at a time.

    Args:
        shape: leading shape of the output, e.g. ``(nb_targets, nb_channels)``.
        nb_frames: total frames of the signal; length: samples to return in all.
        workers: threads for the inverse FFTs; the result does not depend on it.
    """

    def __init__(self, shape, nb_frames, length, n_fft=4096, n_hop=1024, workers=1):
        self.shape, self.n_fft, self.n_hop, self.workers = tuple(shape), n_fft, n_hop, workers
        self.nb_frames, self.length = nb_frames, length
        self.window = hann_window(n_fft)
        self.full_len = n_fft + n_hop * (nb_frames - 1)  # samples of the padded signal
        self.pending = np.zeros((*self.shape, 0), np.float32)  # padded samples from `offset` on
        self.offset = 0
        self.emitted = 0

    def add(self, spec, start):
        """Add frames ``start .. start + nb`` (spec ``(*shape, nb_bins, nb)``); returns the
        finished output samples ``(*shape, n)`` (n may be 0). A `spec` that is the swapped view
        of a frames-first array is transformed without a copy."""
        frames = scipy.fft.irfft(np.swapaxes(spec, -1, -2), n=self.n_fft, axis=-1, workers=self.workers)
        nb = spec.shape[-1]
        chunk = _overlap_add(frames, self.window, self.n_hop, self.n_fft + self.n_hop * (nb - 1), self.workers)
        begin = start * self.n_hop - self.offset
        end = begin + chunk.shape[-1]
        held = self.pending.shape[-1]
        if begin == 0 and end >= held:
            # the usual case: the new chunk becomes the buffer and the held samples are added
            # into it (no copy into a grown buffer). Same values: a + b == b + a, and 0 + c == c
            # since c, a sum started from +0, is never -0.
            chunk[..., :held] += self.pending
            self.pending = chunk
        else:
            if end > held:
                grow = np.zeros((*self.shape, end - held), np.float32)
                self.pending = np.concatenate([self.pending, grow], axis=-1)
            self.pending[..., begin:end] += chunk
        stop = start + nb
        final = self.full_len if stop >= self.nb_frames else stop * self.n_hop  # later frames start here
        return self._emit(final)

    def _emit(self, final):
        """Normalise and return padded samples ``offset .. final``, trimmed to the output span."""
        done = self.pending[..., :final - self.offset]
        self.pending = self.pending[..., final - self.offset:].copy()
        envelope = self._envelope(self.offset, final)
        valid = envelope > 1e-11
        if valid.all():  # inside the signal: a plain division (the masked one is slower)
            np.divide(done, envelope, out=done)
        else:
            np.divide(done, envelope, out=done, where=valid)
        pad = self.n_fft // 2
        lo = max(self.offset, pad) - self.offset
        hi = min(final, pad + self.length) - self.offset
        self.offset = final
        out = done[..., lo:max(lo, hi)]
        if final == self.full_len and self.emitted + out.shape[-1] < self.length:  # istft pads with zeros
            missing = self.length - self.emitted - out.shape[-1]
            out = np.concatenate([out, np.zeros((*self.shape, missing), np.float32)], axis=-1)
        self.emitted += out.shape[-1]
        return out

    def _envelope(self, a, b):
        """Sum of squared windows over padded samples ``a .. b``."""
        first = max(0, (a - self.n_fft) // self.n_hop)
        last = min(self.nb_frames, b // self.n_hop + 1)
        env = _envelope(self.window, last - first, self.n_hop)
        lo = a - first * self.n_hop
        return env[lo:lo + (b - a)]
