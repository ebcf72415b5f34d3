"""The centred STFT and its inverse for a signal that arrives in blocks of any size.

`StreamingSTFT` yields the frames of `unmix.dsp.transforms.stft` (``center=True``, reflect
padding, periodic Hann window) as soon as their samples have arrived, and the frames at the end
(which reflect the signal's last samples) when the stream is finished. `StreamingOverlapAdd`
is `transforms.istft` in the same way: it takes frames in order and returns the output samples
that no later frame can change any more. Concatenated, their outputs equal the offline
transforms of the whole signal; each holds about one window of samples, whatever the length of
the stream (memory stays constant over an hour).

Positions: the padded signal of `stft` starts ``pad = n_fft // 2`` samples before the input.
Frame ``t`` covers padded samples ``t * n_hop .. t * n_hop + n_fft``, that is input samples
``t * n_hop - pad .. t * n_hop + pad``: it can be computed once ``t * n_hop + pad`` samples are in
(frame 0 needs ``pad + 1``: its reflection reaches sample ``pad``). After frame ``t`` is added,
output samples before ``(t + 1) * n_hop - pad`` are final (the next frame starts there).
"""
import numpy as np
import scipy.fft

from unmix.dsp.transforms import hann_window


class StreamingSTFT:
    """Frames of the centred STFT of a stream.

    Args:
        nb_channels: channels of the signal.
        n_fft, n_hop: as `unmix.dsp.transforms.stft`.
    """

    def __init__(self, nb_channels, n_fft, n_hop):
        self.nb_channels, self.n_fft, self.n_hop, self.pad = int(nb_channels), int(n_fft), int(n_hop), int(n_fft) // 2
        self.window = hann_window(self.n_fft)
        self.reset()

    def reset(self):
        """Start a new stream."""
        self.buffer = np.zeros((self.nb_channels, 0), np.float32)  # input samples from `start` on
        self.start = 0  # input position of buffer[:, 0]
        self.length = 0  # input samples received
        self.next_frame = 0  # index of the next frame to compute

    def ready_frames(self, length=None):
        """Frames computable (without the end's reflection) once `length` samples are in."""
        length = self.length if length is None else length
        if length <= self.pad:
            return 0
        return (length - self.pad) // self.n_hop + 1

    def push(self, block):
        """Append ``(nb_channels, n)`` float32 samples.

        Returns:
            the new frames ``(nb_channels, nb_frames, nb_bins)`` complex64 (nb_frames may be 0).
        """
        self.buffer = np.concatenate([self.buffer, block], axis=1) if self.buffer.shape[1] else block.copy()
        self.length += block.shape[1]
        return self._frames(self.ready_frames())

    def finish(self):
        """The last frames, which reflect the end of the signal; the stream needs more than
        ``n_fft // 2`` samples (as `stft`).

        Returns:
            ``(nb_channels, nb_frames, nb_bins)`` complex64: the frames up to
            `transforms.nb_frames_for` of the stream's length.
        """
        if self.length <= self.pad:
            raise ValueError(f"a stream of {self.length} samples is too short for reflect padding of {self.pad}")
        return self._frames(self.length // self.n_hop + 1)

    def _frames(self, stop):
        """Frames ``next_frame .. stop`` from the buffer; drops the samples no later frame needs."""
        first, nb = self.next_frame, stop - self.next_frame
        if nb <= 0:
            return np.zeros((self.nb_channels, 0, self.n_fft // 2 + 1), np.complex64)
        lo, hi = first * self.n_hop - self.pad, (stop - 1) * self.n_hop + self.n_fft - self.pad
        if lo >= 0 and hi <= self.length:  # inside the signal (every frame but the ends'): a view
            segment = self.buffer[:, lo - self.start:hi - self.start]
        else:  # input positions reflected at both ends, as np.pad(mode="reflect")
            pos = np.abs(np.arange(lo, hi))
            pos = np.where(pos >= self.length, 2 * (self.length - 1) - pos, pos)
            segment = np.take(self.buffer, pos - self.start, axis=1)  # contiguous per channel, as stft_frames
        if nb == 1:
            frames = segment[:, None, :]
        else:
            frames = np.lib.stride_tricks.sliding_window_view(segment, self.n_fft, axis=-1)[:, ::self.n_hop]
        spec = scipy.fft.rfft(frames * self.window, axis=-1)
        self.next_frame = stop
        # the next frame reaches back to next_frame * n_hop - pad; one more sample for the end's
        # reflection when the stream ends exactly there (see the module docstring)
        keep = max(0, self.next_frame * self.n_hop - self.pad - 1)
        if keep > self.start:
            self.buffer = self.buffer[:, keep - self.start:].copy()
            self.start = keep
        return spec


class StreamingOverlapAdd:
    """The inverse STFT of frames that arrive in order, normalised as `transforms.istft`.

    Args:
        shape: leading shape of the output, e.g. ``(nb_targets, nb_channels)``.
        n_fft, n_hop: as the STFT.
    """

    def __init__(self, shape, n_fft, n_hop):
        self.shape, self.n_fft, self.n_hop, self.pad = tuple(shape), int(n_fft), int(n_hop), int(n_fft) // 2
        self.window = hann_window(self.n_fft)
        self.square = self.window * self.window
        # the envelope where every frame covering a sample is there: periodic in n_hop, summed in
        # frame order like `istft`'s (the same float32 values)
        self.steady = np.zeros(self.n_hop, np.float32)
        for m in reversed(range(-(-self.n_fft // self.n_hop))):
            part = self.square[m * self.n_hop:(m + 1) * self.n_hop]
            self.steady[:part.shape[0]] += part
        self.reset()

    def reset(self):
        """Start a new stream."""
        self.pending = np.zeros((*self.shape, self.n_fft), np.float32)  # padded samples from `offset` on
        self.offset = 0  # padded position of pending[..., 0]
        self.nb_frames = 0  # frames added

    def add(self, spec):
        """Add the next frames ``(*shape, nb_frames, nb_bins)`` (frames first).

        Returns:
            the output samples ``(*shape, n)`` float32 that are now final (the centre padding
            removed: output sample 0 is input sample 0).
        """
        nb = spec.shape[-2]
        if not nb:
            return np.zeros((*self.shape, 0), np.float32)
        frames = scipy.fft.irfft(spec, n=self.n_fft, axis=-1) * self.window  # (*shape, nb, n_fft)
        end = (self.nb_frames + nb - 1) * self.n_hop + self.n_fft - self.offset
        if end > self.pending.shape[-1]:
            grow = np.zeros((*self.shape, end - self.pending.shape[-1]), np.float32)
            self.pending = np.concatenate([self.pending, grow], axis=-1)
        for i in range(nb):  # in frame order: the sums of `istft`'s overlap-add
            lo = (self.nb_frames + i) * self.n_hop - self.offset
            self.pending[..., lo:lo + self.n_fft] += frames[..., i, :]
        self.nb_frames += nb
        return self._emit(self.nb_frames * self.n_hop)

    def finish(self, length):
        """Every remaining sample, up to output sample `length` (the input's length).

        Returns:
            ``(*shape, n)`` float32, zero-padded if the frames end before `length`.
        """
        full = (self.nb_frames - 1) * self.n_hop + self.n_fft
        out = self._emit(min(full, self.pad + length))
        missing = length - (self.offset - self.pad)
        if missing > 0:  # as istft: zeros past the last frame
            out = np.concatenate([out, np.zeros((*self.shape, missing), np.float32)], axis=-1)
        return out

    def _emit(self, final):
        """Padded samples ``offset .. final``, normalised, without the centre padding."""
        if final <= self.offset:
            return np.zeros((*self.shape, 0), np.float32)
        n = final - self.offset
        done = self.pending[..., :n] / self._envelope(self.offset, final)
        self.pending = self.pending[..., n:].copy()
        if self.pending.shape[-1] < self.n_fft:  # keep one frame of room: no growing in `add`
            grow = np.zeros((*self.shape, self.n_fft - self.pending.shape[-1]), np.float32)
            self.pending = np.concatenate([self.pending, grow], axis=-1)
        skip = max(0, self.pad - self.offset)  # the start's padding is not output
        self.offset = final
        return done[..., skip:]

    def _envelope(self, a, b):
        """Sum of the squared windows of the frames added, over padded samples ``a .. b``
        (positions no frame covers get 1: `istft` leaves them undivided)."""
        if a >= self.n_fft - self.n_hop and b <= self.nb_frames * self.n_hop and self.n_fft % self.n_hop == 0:
            start = a % self.n_hop
            return np.tile(self.steady, -(-(start + b - a) // self.n_hop))[start:start + b - a]
        env = np.zeros(b - a, np.float32)
        first = max(0, (a - self.n_fft) // self.n_hop)
        for t in range(first, min(self.nb_frames, (b - 1) // self.n_hop + 1)):
            lo, hi = max(a, t * self.n_hop), min(b, t * self.n_hop + self.n_fft)
            if lo < hi:
                env[lo - a:hi - a] += self.square[lo - t * self.n_hop:hi - t * self.n_hop]
        env[env <= 1e-11] = 1
        return env
