"""Real-time separation: feed blocks of audio, get the stems back with a fixed delay.

    sep = unmix.load_separator("path/to/causal-model", niter=0)
    st = sep.streamer(block_size=256)
    for block in blocks:                      # (nb_channels, n) float, any n
        stems = st.feed(block)                # target -> (nb_channels, m): what is ready
    stems = st.flush()                        # the rest
    st.latency                                # samples between an input sample and its output

Everything `feed` and `flush` return, concatenated, is ``st.latency`` samples longer than the
input: the first ``latency`` samples are silence and ``out[:, latency:]`` lines up with the input
sample for sample, to its last sample. `feed` never returns more samples in all than it was
given, so with blocks of ``block_size`` it returns ``block_size`` samples per call (what an audio
callback needs); ``latency`` is the smallest delay for which that holds.

Two ways to stream:

- `Streamer`, sample-exact, for causal (unidirectional) models: a `StreamingSTFT`, one step
  graph per target (`unmix.models.onnx_step`) carrying each LSTM layer's ``(h, c)``, the Wiener
  filter (frame-local with ``niter 0``; `unmix.dsp.causal_wiener` for ``niter >= 1``) and a
  `StreamingOverlapAdd`. With ``niter 0`` its stems equal `Separator.separate` of the whole input.
  The delay is about one window: ``n_fft - n_hop`` samples for blocks of ``n_hop``
  (``n_fft - 1`` for blocks of any size).
- `BlockOnlineStreamer`, for any model (bidirectional ones included): chunks of ``chunk``
  seconds, each separated offline (the whole `Separator` pipeline, its Wiener filter included)
  with ``past`` seconds of context before it and ``lookahead`` seconds after it, and
  cross-faded over ``min(lookahead, chunk)``. The delay is about ``chunk + lookahead``.

Both run at the model's sample rate (resample before: `unmix stream` does it for files) and
take the model's channel count or mono (duplicated; its stems are averaged back to mono). Their
state (buffers of about one window or one segment, the LSTM states, the Wiener sums) does not
grow with the stream.
"""
import math
import time

import numpy as np

from unmix.dsp import transforms
from unmix.dsp.causal_wiener import CausalWiener
from unmix.dsp.streaming_stft import StreamingOverlapAdd, StreamingSTFT
from unmix.errors import UnmixError
from unmix.models import architectures
from unmix.separation.separator import _fit_channels_back


def make_streamer(separator, block_size=None, chunk=None, lookahead=None, past=None, nb_channels=None,
                  step_models=None):
    """The streamer of `Separator.streamer` (see there)."""
    if chunk is None:
        if lookahead is not None or past is not None:
            raise UnmixError("lookahead and past are the context of block-online streaming: give chunk (--chunk) too")
        if step_models is None:
            step_models = load_step_models(separator)
        return Streamer(separator, step_models, block_size=block_size, nb_channels=nb_channels)
    return BlockOnlineStreamer(separator, chunk, lookahead=lookahead, past=past, block_size=block_size,
                               nb_channels=nb_channels)


def load_step_models(separator):
    """target -> `StepModel` for each network of `separator`: read from the ``.step.onnx`` files
    of a folder that `unmix export --streaming` wrote, or built from its ``.h5`` parameters.

    Raises:
        UnmixError: a bidirectional model (it needs block-online streaming, named `--chunk`), an
        X-UMX model, or a separator not loaded from a model folder.
    """
    from pathlib import Path

    from unmix.models.onnx_step import StepModel, step_file

    if not all(architectures.of_network(m).steps_frame_by_frame for m in separator.models.values()):
        raise UnmixError("an X-UMX model streams block-online only: give --chunk SECONDS")
    bidirectional = [t for t, m in separator.models.items() if not m.config.unidirectional]
    if bidirectional:
        raise UnmixError(f"the {', '.join(bidirectional)} model is bidirectional (it looks at future frames), so it "
                         "cannot stream sample by sample: stream it block-online with --chunk SECONDS (chunk=)")
    folder = getattr(separator, "model_folder", None)
    models = {}
    for target, model in separator.models.items():
        if folder is not None and (Path(folder) / step_file(target)).is_file():
            step = StepModel(Path(folder) / step_file(target))
        elif folder is not None and (Path(folder) / f"{target}.h5").is_file():
            from unmix.models.model_folder import load_params

            step = StepModel(load_params(folder, target))
        elif hasattr(model, "get_params"):  # an NNabla network
            step = StepModel((model.config, {k: v.d for k, v in model.get_params().items()}))
        else:
            raise UnmixError(f"no step graph for {target}: stream a model folder with .h5 parameters, or one "
                             "written by `unmix export --streaming`")
        if step.config != model.config:
            raise UnmixError(f"the step graph of {target} is not the model that separator.json describes")
        models[target] = step
    return models


class BlockStats:
    """Compute time per block against the block's duration, in constant memory (a histogram of
    log-spaced bins, 1 us to 100 s, 1% wide: percentiles within 1%)."""

    _LO, _STEP, _NB = 1e-6, math.log(1.01), 1900

    def __init__(self):
        self.counts = np.zeros(self._NB, np.int64)
        self.blocks, self.late, self.max, self.total, self.audio = 0, 0, 0.0, 0.0, 0.0

    def add(self, seconds, budget):
        """Record a block that took `seconds` to compute and lasts `budget` seconds of audio."""
        index = int(math.log(max(seconds, self._LO) / self._LO) / self._STEP)
        self.counts[min(index, self._NB - 1)] += 1
        self.blocks += 1
        self.late += seconds > budget
        self.max = max(self.max, seconds)
        self.total += seconds
        self.audio += budget

    def percentile(self, q):
        """The q-th percentile of the block times (seconds; the upper edge of its bin)."""
        if not self.blocks:
            return 0.0
        index = int(np.searchsorted(np.cumsum(self.counts), q / 100.0 * self.blocks))
        return min(self._LO * math.exp((index + 1) * self._STEP), self.max)


class _StreamBase:
    """What both streamers share: checking blocks, channels, and the output's fixed delay.

    A subclass computes the separated signal: `_process(block)` gets ``(model channels, n)``
    float32 and returns the signal samples ``(nb_targets, model channels, m)`` that are final;
    `_finish()` returns the rest, so that the signal has the input's length in all; `_reset()`
    clears its state. `_final(received)` says how many signal samples are final after
    `received` input samples (for the latency).
    """

    def __init__(self, separator, block_size, nb_channels):
        self.separator = separator
        self.targets = list(separator.targets)
        self.sample_rate = separator.sample_rate
        self.model_channels = separator.nb_channels
        self.nb_channels = int(nb_channels or self.model_channels)
        if self.nb_channels > 2 and self.nb_channels != self.model_channels:
            raise UnmixError(f"the model takes {self.model_channels} channels: give mono or "
                             f"{self.model_channels}-channel blocks, not {self.nb_channels}")
        if block_size is not None and int(block_size) < 1:
            raise UnmixError(f"block_size must be >= 1 sample, got {block_size}")
        self.block_size = None if block_size is None else int(block_size)
        self.stats = BlockStats()
        self._latency = None

    @property
    def latency(self):
        """Samples between an input sample and the same sample in the output."""
        if self._latency is None:
            self._latency = self._min_latency()
        return self._latency

    def reset(self):
        """Start a new stream (state, buffers and counts cleared; the statistics are kept)."""
        self.received = 0  # input samples
        self.emitted = 0  # output samples, the `latency` leading zeros included
        self.signal = np.zeros((len(self.targets), self.model_channels, 0), np.float32)  # final, not yet emitted
        self.flushed = False
        self._reset()

    def warm_up(self):
        """Run silence through once and start afresh (statistics cleared): the first calls load
        the kernels and size ONNX Runtime's buffers, which must not happen in a live callback."""
        step, _ = self._period()
        block = np.zeros((self.nb_channels, self.block_size or self.separator.n_hop), np.float32)
        for _ in range(-(-(2 * step) // block.shape[1]) + 1):
            self.feed(block)
        self.reset()
        self.stats = BlockStats()

    def feed(self, block):
        """Separate the next block.

        Args:
            block: ``(nb_channels, n)`` float samples (full scale 1.0), n >= 0.

        Returns:
            target -> ``(nb_channels, m)`` float32: the output samples that are ready.
        """
        block = self._check(block)
        began = time.perf_counter()
        self.received += block.shape[1]
        self._push(self._process(self._to_model(block)))
        out = self._pop(min(self.received, self.signal_done + self.latency))
        if block.shape[1]:
            self.stats.add(time.perf_counter() - began, block.shape[1] / self.sample_rate)
        return out

    def flush(self):
        """End the stream: the remaining output (the signal's last samples, after the end's
        padding). Then `feed` refuses blocks until `reset`.

        Returns:
            target -> ``(nb_channels, m)`` float32.
        """
        if self.flushed:
            raise UnmixError("the stream was already flushed: call reset() to start a new one")
        self.flushed = True
        if self.received:
            self._push(self._finish())
        return self._pop(self.received + self.latency)

    # -- internals --------------------------------------------------------------------------
    @property
    def signal_done(self):
        return self.emitted - min(self.emitted, self.latency) + self.signal.shape[-1]

    def _push(self, samples):
        if samples.shape[-1]:
            self.signal = np.concatenate([self.signal, samples], axis=-1) if self.signal.shape[-1] else samples

    def _pop(self, total):
        """Output samples up to output position `total`: leading zeros, then the signal."""
        n = max(0, total - self.emitted)
        zeros = max(0, min(self.latency, self.emitted + n) - self.emitted)
        taken, self.signal = self.signal[..., :n - zeros], self.signal[..., n - zeros:]
        if zeros:
            taken = np.concatenate([np.zeros(taken.shape[:-1] + (zeros,), np.float32), taken], axis=-1)
        self.emitted += n
        if self.nb_channels != self.model_channels:  # back to the blocks' channels (mono in, mono out)
            taken = _fit_channels_back(taken, self.nb_channels)
        return dict(zip(self.targets, taken))

    def _check(self, block):
        if self.flushed:
            raise UnmixError("feed after flush: call reset() to start a new stream")
        block = np.asarray(block)
        if block.dtype.kind != "f":
            raise UnmixError(f"blocks must be float samples (full scale 1.0), got {block.dtype}")
        if block.ndim != 2 or block.shape[0] != self.nb_channels:
            raise UnmixError(f"expected a block (nb_channels={self.nb_channels}, n), got shape {block.shape}")
        block = block.astype(np.float32, copy=False)
        if not np.all(np.isfinite(block)):
            raise UnmixError("the block contains NaN or infinite samples")
        return block

    def _to_model(self, block):
        if self.nb_channels == self.model_channels:
            return block
        return np.repeat(block.mean(axis=0, keepdims=True), self.model_channels, axis=0)

    def _min_latency(self):
        """The smallest delay at which `feed` returns as many samples as it gets: the largest
        gap between input received and signal final, after any whole number of blocks (after
        any number of samples when `block_size` is None)."""
        step, warmup = self._period()
        if self.block_size is None:
            received = np.arange(1, warmup + step + 1)
        else:
            period = self.block_size * step // math.gcd(self.block_size, step)
            received = np.arange(self.block_size, warmup + period + self.block_size + 1, self.block_size)
        return int(np.max(received - self._final(received)))


class Streamer(_StreamBase):
    """Sample-exact streaming with causal models (see the module docstring).

    Args:
        separator: the `Separator` (its targets, residual, STFT and Wiener options).
        step_models: target -> `unmix.models.onnx_step.StepModel` (`load_step_models`).
        block_size: the size of the blocks that will be fed (None: any), for the latency.
        nb_channels: channels of the blocks (default: the model's; 1 for a stereo model: mono).
    """

    def __init__(self, separator, step_models, block_size=None, nb_channels=None):
        super().__init__(separator, block_size, nb_channels)
        self.models = dict(step_models)
        self.n_fft, self.n_hop = separator.n_fft, separator.n_hop
        nb_bins = self.n_fft // 2 + 1
        self.stft = StreamingSTFT(self.model_channels, self.n_fft, self.n_hop)
        self.ola = StreamingOverlapAdd((len(self.targets), self.model_channels), self.n_fft, self.n_hop)
        self.wiener = CausalWiener(self.model_channels, nb_bins, separator.niter, separator.softmask,
                                   bool(separator.residual), separator.wiener_win_len)
        self.reset()

    def _reset(self):
        self.stft.reset()
        self.ola.reset()
        self.wiener.reset()
        for model in self.models.values():
            model.reset()

    def _process(self, block):
        return self._separate(self.stft.push(block))

    def _finish(self):
        if self.received <= self.n_fft // 2:  # too short for the reflect padding: nothing to separate
            missing = self.received - self.signal_done
            return np.zeros((len(self.targets), self.model_channels, missing), np.float32)
        return np.concatenate([self._separate(self.stft.finish()), self.ola.finish(self.received)], axis=-1)

    def _separate(self, spec):
        """Mixture frames ``(nb_channels, nb_frames, nb_bins)`` -> final samples ``(J, C, n)``."""
        if not spec.shape[1]:
            return np.zeros((len(self.targets), self.model_channels, 0), np.float32)
        mag = np.ascontiguousarray(transforms.magnitude(spec[None]).swapaxes(-1, -2))  # (1, C, F, T)
        targets = np.stack([self.models[t](mag)[0].swapaxes(-1, -2) for t in self.models])  # (J, C, T, F)
        return self.ola.add(self.wiener(targets, spec))

    def _period(self):
        return self.n_hop, 2 * self.n_fft

    def _final(self, received):
        frames = np.where(received > self.n_fft // 2, (received - self.n_fft // 2) // self.n_hop + 1, 0)
        return np.maximum(frames * self.n_hop - self.n_fft // 2, 0)


class BlockOnlineStreamer(_StreamBase):
    """Block-online streaming for any model (see the module docstring).

    Args:
        separator: the `Separator` that separates each segment.
        chunk: seconds of output per segment.
        lookahead: seconds of future context after each chunk (default: 0.5 s, at most `chunk`);
            the cross-fade between chunks lasts ``min(lookahead, chunk)``.
        past: seconds of context before each chunk (default: `lookahead`).
        block_size, nb_channels: as `Streamer`.
    """

    def __init__(self, separator, chunk, lookahead=None, past=None, block_size=None, nb_channels=None):
        super().__init__(separator, block_size, nb_channels)
        rate = self.sample_rate
        for name, value in (("chunk", chunk), ("lookahead", lookahead), ("past", past)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise UnmixError(f"{name} must be finite seconds >= 0, got {value}")
        self.chunk = int(round(chunk * rate))
        if self.chunk < 1:
            raise UnmixError(f"chunk must be at least one sample, got {chunk} s")
        self.lookahead = int(round((min(0.5, chunk) if lookahead is None else lookahead) * rate))
        self.past = self.lookahead if past is None else int(round(past * rate))
        self.fade = min(self.lookahead, self.chunk)
        ramp = np.sin(0.5 * np.pi * (np.arange(self.fade) + 0.5) / max(self.fade, 1)) ** 2
        self.fade_in = ramp.astype(np.float32)
        self.reset()

    def _reset(self):
        self.buffer = np.zeros((self.model_channels, 0), np.float32)  # input from `start` on
        self.start = 0
        self.next_chunk = 0
        self.tail = None  # the previous segment's estimate of the next chunk's first `fade` samples

    def _process(self, block):
        self.buffer = np.concatenate([self.buffer, block], axis=1)
        done = []
        while self.received >= (self.next_chunk + 1) * self.chunk + self.lookahead:
            done.append(self._chunk((self.next_chunk + 1) * self.chunk))
        return self._joined(done)

    def _finish(self):
        done = []
        while self.next_chunk * self.chunk < self.received:
            done.append(self._chunk(min((self.next_chunk + 1) * self.chunk, self.received)))
        return self._joined(done)

    def _joined(self, parts):
        if not parts:
            return np.zeros((len(self.targets), self.model_channels, 0), np.float32)
        return np.concatenate(parts, axis=-1)

    def _chunk(self, stop):
        """Separate the segment around chunk `next_chunk`; returns its output up to `stop`."""
        begin = self.next_chunk * self.chunk
        lo, hi = max(0, begin - self.past), min(self.received, stop + self.lookahead)
        estimate = self._separate(self.buffer[:, lo - self.start:hi - self.start])  # (J, C, hi - lo)
        out = estimate[..., begin - lo:stop - lo].copy()
        if self.tail is not None:
            n = min(self.tail.shape[-1], out.shape[-1])
            fade_in = self.fade_in[:n]
            out[..., :n] = self.tail[..., :n] * (1 - fade_in) + out[..., :n] * fade_in
        self.tail = estimate[..., stop - lo:stop - lo + self.fade].copy()
        self.next_chunk += 1
        keep = max(0, self.next_chunk * self.chunk - self.past)
        if keep > self.start:
            self.buffer = self.buffer[:, keep - self.start:].copy()
            self.start = keep
        return out

    def _separate(self, audio):
        """The `Separator`'s offline pipeline on one segment ``(C, n)`` -> ``(J, C, n)``."""
        length = audio.shape[-1]
        shortest = self.separator.n_fft // 2 + 1
        if length < shortest:  # the last piece of a stream: zero-padded to what the STFT needs
            audio = np.pad(audio, ((0, 0), (0, shortest - length)))
        parts = list(self.separator._separate_one(np.ascontiguousarray(audio), progress=False))
        return np.concatenate(parts, axis=-1)[..., :length]

    def _period(self):
        return self.chunk, self.chunk + self.lookahead + self.past

    def _final(self, received):
        return np.maximum((received - self.lookahead) // self.chunk, 0) * self.chunk
