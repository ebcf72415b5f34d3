"""Separator: STFT -> target networks -> multichannel Wiener filter -> ISTFT, in bounded memory.

A track is processed in windows of `wiener_win_len` frames, the windows the reference
Separator uses for its Wiener filter. Only the LSTM needs the whole sequence, and it only
sees ``(nb_frames, hidden_size)`` features, so the pipeline runs in three passes:

1. per window: STFT of the window -> magnitude -> each network's encoder (frame-wise);
2. per network: the LSTM (with the skip connection and fc2) over the whole feature sequence
   (small: hidden_size floats per frame);
3. per window: STFT again -> decoders -> Wiener filter -> overlap-add, yielding the
   output samples that are finished (`Separator.stream`).

An Open-Unmix model is one network per target. An X-UMX model (`unmix.models.nnabla_graph.CrossNet`) is one
network for all its sources: pass 1 runs its encoders and bridge 1, pass 2 its LSTMs and
bridge 2 (2 * hidden_size floats per frame), pass 3 the decoder of each selected target.

The result equals running the reference on the whole track (the same windows, the same
arithmetic), but besides the input only per-window buffers and the LSTM features are held:
not the ``nb_frames x nb_bins x nb_targets`` spectrograms that make the reference need tens
of GB for a 10-minute song. `unmix separate` writes the stems as they stream (a 10-minute
stereo song peaks at 1.7 GB of RSS with umxhq-sized models, see benchmarks/README.md); `separate` collects them.
"""
import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soxr
from tqdm import tqdm

from unmix.dsp import filtering, transforms
from unmix.io import audio as audio_io
from unmix.errors import UnmixError, require_nnabla
from unmix.io.paths import safe_name
from unmix.models import architectures
from unmix.models.model_folder import read_separator_json
from unmix.weights import registry


def _fixed_mmap_threshold(threshold=64 * 2**20, arenas=2, trim=512 * 2**20):
    """Fix glibc's mmap threshold, use at most `arenas` malloc arenas, and trim the heap only
    when `trim` bytes are free at its top.

    glibc raises its mmap threshold each time a large block is freed, after which more and
    more of the window-sized arrays of a long separation are carved from heaps that it never
    gives back (measured: +500 MB RSS for a 3-minute song); a fixed threshold turns that off.
    At 128 kB (every large array a fresh mmap) the kernel faulted in ~200 MB of new pages per
    window: a third of the CPU time went to the system (sys 0.97 s for 3.5 s user, 1-minute
    song). At 64 MB every window-sized array comes from the heap and is reused from window to
    window, which holds about one window's working set (peak +130 MB for 1 minute, +220 MB
    for 5; wall time -16% and -25%); two arenas instead of eight per core keep the worker
    threads' freed blocks in few heaps. With glibc's default trim threshold (128 kB) a window's
    40 MB arrays freed at the top of the heap went back to the kernel and were faulted in again
    by the next window: 512 MB keeps them (1-minute song: sys 1.3 -> 0.7 s for the process,
    load + separation 3.45 -> 3.1 s, the same peak).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-1, trim)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_MALLOC_TUNED = []


def _tune_malloc_once():
    """`_fixed_mmap_threshold`, once per process, when the first separator is made or used:
    process-wide state is changed by a separation, never by an import."""
    if not _MALLOC_TUNED:
        _MALLOC_TUNED.append(True)
        _fixed_mmap_threshold()

# ONNX Runtime's LSTM over a whole track holds about 8 floats per hidden unit and frame while
# it runs (input projections of both directions, layer outputs: measured 16 kB per frame for
# hidden 512). Recurrences run side by side only while their working sets fit in this budget:
# up to ~6 minutes for two umxhq targets, so that no track up to 10 minutes peaks above what
# a 10-minute track needs one target at a time (~1.3 GB).
_LSTM_FLOATS_PER_HIDDEN = 8
_SIDE_BY_SIDE_BYTES = 512 * 2**20


class Separator:
    """Separates mixtures with one network per target.

    Args:
        models: target name -> model with ``config``, ``encode``, ``recur``, ``decode``
            (an `unmix.models.nnabla_graph.OpenUnmix` or an ONNX Runtime equivalent); a network of several
            sources (``sources``, ``decode(features, mag, source)``: `unmix.models.nnabla_graph.CrossNet`
            or `unmix.models.onnx_graph.OnnxCrossNet`) is given once per target it estimates.
        sample_rate, n_fft, n_hop: the signal parameters the models were trained with.
        niter: EM iterations of the Wiener filter (0: target magnitudes with the mixture phase).
        softmask: initial estimates by ratio masks instead of magnitudes with mixture phase.
        residual: name of an extra target "mixture minus the others" (None: no residual).
        wiener_win_len: frames per window (None or 0: the whole track at once, like the reference).
        nb_threads: threads for the FFTs and the Wiener filter (None: all CPU cores); the
            estimates do not depend on it.
    """

    def __init__(self, models, sample_rate=44100.0, n_fft=4096, n_hop=1024, niter=1, softmask=False,
                 residual=None, wiener_win_len=300, nb_threads=None):
        if not models:
            raise UnmixError("no target models to separate with")
        channels = {m.config.nb_channels for m in models.values()}
        if len(channels) != 1:
            raise UnmixError("all target models must have the same number of channels")
        check_options(list(models), niter, residual, wiener_win_len)
        self.models = dict(models)
        # each network once (an X-UMX network estimates several targets), in target order
        self.networks = list({id(m): m for m in self.models.values()}.values())
        self.sample_rate = float(sample_rate)
        self.n_fft, self.n_hop = int(n_fft), int(n_hop)
        self.nb_channels = channels.pop()
        self.niter, self.softmask, self.wiener_win_len = int(niter), bool(softmask), wiener_win_len
        self.residual = residual or None
        self.nb_threads = int(nb_threads or os.cpu_count() or 1)

    @property
    def targets(self):
        """Names of the estimates, in output order (the residual last)."""
        return list(self.models) + ([self.residual] if self.residual else [])

    # -- public entry points -------------------------------------------------------------
    def separate(self, audio, rate, downmix=False, progress=False):
        """Separate audio at any sample rate and channel count the model can take.

        Args:
            audio: mono ``(nb_timesteps,)``, ``(nb_channels, nb_timesteps)`` or
                ``(nb_samples, nb_channels, nb_timesteps)``; soundfile's ``(nb_timesteps,
                nb_channels)`` must be transposed (``audio.T``). Floats of any precision, or
                integers, read as PCM and scaled from their full range (int16 / 32768, uint8
                (x - 128) / 128, ...).
            rate: its sample rate; it is resampled to the model's and the estimates back.
            downmix: average more than two channels down instead of refusing them.
            progress: True for a progress bar, or a callable ``progress(done, total)`` called
                after each step (windows and networks).

        Returns:
            target -> estimate with the input's layout and exactly its length, in the input's
            float dtype (float32 for integer input; the computation is float32).
        """
        audio, dtype = _float_audio(audio)
        batch = audio.reshape((-1,) + audio.shape[-2:]) if audio.ndim > 1 else audio[None, None]
        out = None
        for i, sample in enumerate(batch):
            pos = 0
            for chunk in self.stream(sample, rate, downmix=downmix, progress=progress):
                if out is None:  # allocated once the output channel count is known
                    out = {t: np.zeros((len(batch), c.shape[0], batch.shape[-1]), np.float32)
                           for t, c in chunk.items()}
                for target, value in chunk.items():
                    out[target][i, :, pos:pos + value.shape[-1]] = value
                pos += value.shape[-1]
        layout = {3: lambda v: v, 2: lambda v: v[0], 1: lambda v: v[0, 0]}[audio.ndim]  # back to the input's
        return {t: layout(v).astype(dtype, copy=False) for t, v in out.items()}

    def __call__(self, audio, progress=False):
        """Separate ``(nb_samples, nb_channels, nb_timesteps)`` float32 at the model's rate.

        Returns:
            target -> ``(nb_samples, nb_channels, nb_timesteps)`` float32.
        """
        self._check_audio(audio)
        return self.separate(audio, self.sample_rate, progress=progress)

    def stream(self, audio, rate, downmix=False, progress=False):
        """Separate one ``(nb_channels, nb_timesteps)`` input, yielding the estimates in order.

        Yields:
            dicts target -> ``(nb_channels, n)`` float32 at `rate`, with the input's channel count
            (mono in, mono out); the chunks add up to exactly nb_timesteps samples. What a
            caller does not keep is not held: this is how long tracks stay in bounded memory.
        """
        _tune_malloc_once()
        audio = np.asarray(audio)
        nb_channels_in, length = audio.shape
        mix = self._prepare(audio, rate, downmix)
        self._check_audio(mix[None])
        back = _Resampler(self.sample_rate, rate, len(self.targets) * mix.shape[0], length)
        for chunk in self._separate_one(mix, progress):  # (nb_targets, nb_channels, n)
            if not chunk.shape[-1]:
                continue
            chunk = back(chunk.reshape(-1, chunk.shape[-1])).reshape(len(self.targets), mix.shape[0], -1)
            if chunk.shape[-1]:
                yield dict(zip(self.targets, _fit_channels_back(chunk, nb_channels_in)))
        tail = back.flush().reshape(len(self.targets), mix.shape[0], -1)
        if tail.shape[-1]:
            yield dict(zip(self.targets, _fit_channels_back(tail, nb_channels_in)))

    def streamer(self, block_size=None, chunk=None, lookahead=None, past=None, nb_channels=None):
        """A real-time streamer (`unmix.separation.streamer`): ``feed(block)`` -> the stems that are
        ready, ``flush()``, ``latency``, ``reset()``; blocks at the model's sample rate.

        Args:
            block_size: samples per block that will be fed (None: any sizes), for the latency.
            chunk: None: sample-exact streaming, for causal (unidirectional) models; seconds:
                block-online streaming in chunks (any model), with `lookahead` and `past` seconds
                of context (defaults: min(0.5, chunk) and lookahead).
            nb_channels: channels of the blocks (default: the model's; 1: mono).
        """
        from unmix.separation.streamer import make_streamer

        return make_streamer(self, block_size=block_size, chunk=chunk, lookahead=lookahead, past=past,
                             nb_channels=nb_channels)

    # -- the three passes ------------------------------------------------------------------
    def _separate_one(self, audio, progress):
        """``(nb_channels, nb_timesteps)`` at the model's rate -> yields finished output samples
        ``(nb_targets, nb_channels, n)`` window by window."""
        length = audio.shape[-1]
        nb_frames = transforms.nb_frames_for(length, self.n_fft, self.n_hop)
        windows = self._windows(nb_frames)
        bar = _progress_bar(progress, 2 * len(windows) + len(self.models))

        models = list(self.models.values())
        with self._side_by_side() as each:  # each(function, items): the per-target calls of a window
            encoded = [[] for _ in self.networks]
            for start, stop in windows:
                mag = self._magnitude(audio, start, stop)
                for i, value in enumerate(each(lambda m: m.encode(mag), self.networks)):
                    encoded[i].append(value)
                bar.update()
            features = {}  # id of a network -> its features over the whole track
            for network, value in zip(self.networks, self._recurrences(encoded, nb_frames)):
                features[id(network)] = value
                bar.update(sum(m is network for m in models))

            # pass 3 keeps the FFT's frames-first layout (C, T, F) from the STFT through the Wiener
            # filter to the inverse FFT: only the networks' magnitudes are transposed
            ola = transforms.OverlapAdd((len(self.targets), audio.shape[0]), nb_frames, length, self.n_fft,
                                        self.n_hop, workers=self.nb_threads)
            buffers = _Buffers()  # the window-sized arrays, reused from window to window
            for start, stop in windows:
                spec = self._stft(audio, start, stop)  # (C, T, F)
                mag = self._model_magnitude(spec)  # (1, C', F, T)
                targets = buffers("targets", (len(models), mag.shape[1], stop - start, mag.shape[2]), np.float32)

                def decode(j, target):
                    model = self.models[target]
                    window = features[id(model)][start:stop]
                    out = model.decode(window, mag, target)
                    targets[j] = out[0].swapaxes(-1, -2)

                list(each(decode, range(len(models)), self.models))  # (J, C', T, F)
                est = buffers("estimates", (len(self.targets),) + spec.shape, np.complex64)
                filtering.wiener_planar(targets, spec, self.niter, softmask=self.softmask, residual=bool(self.residual),
                                        workers=self.nb_threads, out=est)  # (J, C, T, F)
                yield ola.add(est.swapaxes(-1, -2), start)
                bar.update()
        bar.close()

    @contextlib.contextmanager
    def _side_by_side(self, limit=None, items=None):
        """Yields a `map` that runs per-target calls on up to nb_threads (and `limit`, and the
        number of `items`: default the targets) threads when every model takes concurrent calls
        (ONNX Runtime sessions), else the builtin map.

        One thread per target call, the targets side by side: measured here, 4 umxhq
        decoders on 300 frames take 55 ms one after the other on one thread, 88 ms with
        2-thread sessions (each session's pool spins after its run and takes the core the
        next target's session needs) and 28 ms side by side.
        """
        count = len(self.models if items is None else items)
        workers = min(self.nb_threads, count, limit or count)
        if workers < 2 or not all(getattr(m, "concurrent_calls", False) for m in self.models.values()):
            yield map
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="unmix-target") as pool:
            yield pool.map

    def _recurrences(self, encoded, nb_frames):
        """Pass 2: yields each network's LSTM features in `networks` order, consuming `encoded`
        (a list of per-window encodings per network).

        Side by side like the other passes (4 umxhq LSTMs over 1 minute: 1.54 s one after the
        other, 0.79 s two at a time), as long as the working sets of the recurrences that run
        together stay within `_SIDE_BY_SIDE_BYTES`.
        """
        def recur(i):
            windows, encoded[i] = encoded[i], None
            network, features = self.networks[i], np.concatenate(windows, axis=0)
            # a network of several sources runs their LSTMs side by side itself, within the budget
            return network.recur(features, workers=affordable)

        hidden = max(m.config.hidden_size for m in self.networks)
        affordable = _SIDE_BY_SIDE_BYTES // max(1, _LSTM_FLOATS_PER_HIDDEN * 4 * hidden * nb_frames)
        with self._side_by_side(limit=max(1, affordable), items=self.networks) as each:
            yield from each(recur, range(len(self.networks)))

    def _windows(self, nb_frames):
        win = int(self.wiener_win_len) if self.wiener_win_len else nb_frames
        return [(s, min(nb_frames, s + win)) for s in range(0, nb_frames, win)]

    def _stft(self, audio, start, stop):
        """Frames ``start .. stop`` of the mixture: ``(nb_channels, nb_frames, nb_bins)`` complex64."""
        return transforms.stft_frames(audio, start, stop - start, self.n_fft, self.n_hop, frames_first=True,
                                      workers=self.nb_threads)

    def _magnitude(self, audio, start, stop):
        return self._model_magnitude(self._stft(audio, start, stop))

    def _model_magnitude(self, spec):
        """``(nb_channels, nb_frames, nb_bins)`` complex -> ``(1, model channels, nb_bins, nb_frames)``."""
        mag = transforms.magnitude(spec[None], mono=self.nb_channels == 1)
        return np.ascontiguousarray(mag.swapaxes(-1, -2))

    # -- input checks ------------------------------------------------------------------------
    def _prepare(self, audio, rate, downmix):
        """One ``(nb_channels, nb_timesteps)`` input -> the model's channels and rate."""
        audio = audio_io.fit_channels(np.asarray(audio, dtype=np.float32), self.nb_channels, downmix=downmix)
        return audio_io.resample(audio, rate, self.sample_rate)

    def _check_audio(self, audio):
        if audio.ndim != 3 or audio.shape[1] != self.nb_channels:
            raise UnmixError(f"expected audio (nb_samples, {self.nb_channels}, nb_timesteps), got {audio.shape}")
        min_len = self.n_fft // 2 + 1
        if audio.shape[-1] < min_len:
            raise UnmixError(f"audio of {audio.shape[-1]} samples is too short to separate "
                             f"(at least {min_len} samples at {self.sample_rate:g} Hz)")
        if not np.all(np.isfinite(audio)):
            raise UnmixError("audio contains NaN or infinite samples")


def _progress_bar(progress, total):
    """A tqdm bar (`progress` True), none (False), or, for a callable, an object whose
    ``update(n)`` calls ``progress(done, total)``: how `unmix serve` follows a job (a callback
    that raises stops the separation)."""
    if not callable(progress):
        return tqdm(total=total, disable=not progress, unit="step", desc="separating", leave=False)
    return _CallbackBar(progress, total)


class _CallbackBar:
    def __init__(self, callback, total):
        self.callback, self.total, self.done = callback, total, 0

    def update(self, n=1):
        self.done += n
        self.callback(self.done, self.total)

    def close(self):
        pass


def _float_audio(audio):
    """The API's input as float32 in one of its three layouts, and the dtype to return.

    Args:
        audio: ``(nb_timesteps,)``, ``(nb_channels, nb_timesteps)`` or ``(nb_samples, nb_channels,
            nb_timesteps)``; float, or integer PCM (scaled from its full range, float32 out).

    Returns:
        ``(float32 array of the same shape, dtype of the estimates)``.
    """
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2, 3):
        raise UnmixError(f"audio must be (nb_timesteps,), (nb_channels, nb_timesteps) or (nb_samples, "
                         f"nb_channels, nb_timesteps), got shape {audio.shape}")
    if audio.ndim > 1 and audio.shape[-1] in (1, 2) and audio.shape[-2] > audio.shape[-1]:
        fix = "audio.T" if audio.ndim == 2 else "audio.transpose(0, 2, 1)"
        raise UnmixError(f"audio of shape {audio.shape} is probably (nb_timesteps, nb_channels), the layout "
                         f"soundfile reads: pass {fix}, since unmix takes (nb_channels, nb_timesteps)")
    if audio.dtype.kind == "f":
        return audio.astype(np.float32, copy=False), audio.dtype
    if audio.dtype.kind in "iu":  # PCM: full scale is 2 ** (bits - 1); unsigned PCM is offset by it
        info = np.iinfo(audio.dtype)
        half = (int(info.max) - int(info.min) + 1) // 2
        offset = np.float32(half if audio.dtype.kind == "u" else 0)
        return (audio.astype(np.float32) - offset) * np.float32(1.0 / half), np.dtype(np.float32)
    raise UnmixError(f"audio of dtype {audio.dtype} is not audio samples: give floats (full scale 1.0) "
                     "or integer PCM")


class _Buffers:
    """Arrays by name, allocated again only when the shape changes (the last window).

    Each window of a separation needs the same large arrays (the targets' magnitudes, 20 MB,
    and the Wiener estimates, 40 MB, for four umxhq targets); fresh ones are fresh pages that
    the kernel faults in on first write, which costs about as much as filling them."""

    def __init__(self):
        self.arrays = {}

    def __call__(self, name, shape, dtype):
        array = self.arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self.arrays[name] = np.empty(shape, dtype)
        return array


def _fit_channels_back(estimate, nb_channels):
    """``(nb_samples, model channels, nb_timesteps)`` back to the input's mono or stereo layout
    (a downmixed multichannel input keeps the model's channels)."""
    if nb_channels == estimate.shape[1] or nb_channels > 2:
        return estimate
    if nb_channels == 1:
        return estimate.mean(axis=1, keepdims=True)
    return np.repeat(estimate, nb_channels, axis=1)


class _Resampler:
    """Streams ``(nb_channels, n)`` chunks from the model's rate back to the input's, so that
    they add up to exactly `length` samples (soxr keeps its own state between chunks)."""

    def __init__(self, model_rate, rate, nb_channels, length):
        self.nb_channels, self.length, self.done = nb_channels, length, 0
        self.stream = None if model_rate == rate else soxr.ResampleStream(
            model_rate, rate, nb_channels, dtype="float32", quality="HQ")

    def __call__(self, chunk, last=False):
        if self.stream is not None:
            chunk = self.stream.resample_chunk(np.ascontiguousarray(chunk.T), last=last).T
        chunk = chunk[..., :self.length - self.done]
        self.done += chunk.shape[-1]
        return chunk

    def flush(self):
        """The resampler's last samples, zero-padded if the total falls short of `length`."""
        tail = np.zeros((self.nb_channels, 0), np.float32)
        if self.stream is not None:
            tail = self(tail, last=True)
        missing = max(self.length - self.done, 0)
        self.done += missing
        return np.concatenate([tail, np.zeros((self.nb_channels, missing), np.float32)], axis=-1)


def load_separator(model=None, targets=None, niter=1, softmask=False, residual=None, wiener_win_len=300,
                   backend="auto", nb_threads=None, device="cpu"):
    """A `Separator` for a registry name or a model folder.

    Args:
        model: registry name (see `unmix.weights.registry`) or model folder; None: the default model.
        targets: subset of the folder's targets (None: all).
        residual: name of a "mixture minus the targets" estimate; a single target with niter > 0
            gets one named 'accompaniment' when None (see `default_residual`).
        backend: 'onnx' (ONNX Runtime, fast on CPU), 'nnabla', or 'auto' (onnx when installed).
        nb_threads: CPU threads for the onnx backend, the FFTs and the Wiener filter (None: all cores).
        device: 'cpu', or 'gpu' to run the NNabla networks with cuDNN (needs nnabla-ext-cuda).
    """
    _tune_malloc_once()  # before the warm-up thread and ONNX Runtime's threads make their malloc arenas
    folder = registry.resolve_model(model)
    meta = read_separator_json(folder)
    targets = list(targets or meta["targets"])
    unknown = [t for t in targets if t not in meta["targets"]]
    if unknown:
        raise UnmixError(f"model {folder} has no target {', '.join(unknown)} (it has {', '.join(meta['targets'])})")
    residual = default_residual(targets, niter, residual)
    check_options(targets, niter, residual, wiener_win_len)
    backend = _pick_backend(backend, device)
    nb_threads = int(nb_threads or os.cpu_count() or 1)
    # numba loads its compiled kernels on first use (~0.2 s, once per process): done on a second
    # core while the models load, not in the first separation. Started only after the options
    # are checked: a thread still loading numba when an early error ends the process can abort it
    warm_up = threading.Thread(target=_warm_up_quietly, name="unmix-warm-up", daemon=True,
                               args=(int(meta.get("nb_channels", 2)), niter, softmask, residual))
    if not _WARM_UPS_AT_FORK:  # registered on first use: importing unmix changes no process state
        os.register_at_fork(before=_join_warm_ups)
        _WARM_UPS_AT_FORK.append(True)
    _WARM_UPS[:] = [t for t in _WARM_UPS if t.is_alive()] + [warm_up]
    warm_up.start()
    try:
        return _load_models(folder, meta, targets, niter, softmask, residual, wiener_win_len, backend, nb_threads,
                            device)
    except BaseException:
        warm_up.join()  # the error ends the process, maybe: not with numba half loaded
        raise


def _load_models(folder, meta, targets, niter, softmask, residual, wiener_win_len, backend, nb_threads, device):
    """The `Separator` of `load_separator`, once its options are checked."""
    if device == "gpu":
        from unmix.models.nnabla_graph import use_gpu

        use_gpu()
    models = architectures.of_folder(meta).networks(folder, meta, targets, backend, device == "gpu", nb_threads)
    separator = Separator(models, meta["sample_rate"], meta.get("n_fft", 4096), meta.get("n_hop", 1024), niter=niter,
                          softmask=softmask, residual=residual, wiener_win_len=wiener_win_len, nb_threads=nb_threads)
    separator.model_folder = folder  # where `streamer` finds the step graphs or the parameters
    return separator


AUTO_RESIDUAL = "accompaniment"


def check_options(targets, niter, residual, wiener_win_len):
    """Raise UnmixError unless the separation options fit `targets` (names of the estimates).

    The residual names a stem file: it must be a safe file name (`unmix.io.paths.safe_name`)
    and no target's.
    """
    if residual:
        safe_name(residual, "residual name")
    if residual and residual in targets:
        raise UnmixError(f"the residual name '{residual}' is already a target")
    if int(niter) < 0 or int(wiener_win_len or 0) < 0:
        raise UnmixError(f"niter and wiener_win_len must be >= 0, got {niter} and {wiener_win_len}")
    if niter > 0 and len(targets) + bool(residual) < 2:
        raise UnmixError("Wiener EM (niter > 0) needs two sources or more: "
                         "select more targets, add a residual, or use niter 0")


def default_residual(targets, niter, residual=None):
    """The residual a separator gets: `residual`, or 'accompaniment' (the mixture minus the
    target) when a single target would leave the Wiener EM (niter > 0) one source to share
    the mixture with nothing (a model trained with `unmix train --target vocals`)."""
    if residual or niter <= 0 or len(targets) != 1:
        return residual or None
    return AUTO_RESIDUAL


def warm_up_kernels(nb_channels=2, niter=1, softmask=False, residual=None):
    """Run the numba kernels of a separation once, on tiny inputs of the same types.

    In a new process this loads them from numba's cache (~0.2 s); the first time after an
    install it compiles them (~3 s for the default options), which `make` does right after
    installing so that no separation has to.
    """
    transforms.istft(np.ones((nb_channels, 5, 4), np.complex64), n_fft=8, n_hop=2, length=10)
    filtering.wiener_planar(np.ones((2, nb_channels, 4, 5), np.float32), np.ones((nb_channels, 4, 5), np.complex64),
                            min(niter, 2), softmask=softmask, residual=bool(residual))


_WARM_UPS = []  # warm-up threads that may still run
_WARM_UPS_AT_FORK = []  # the fork hook that joins them, once registered


def _join_warm_ups():
    """Before a fork (the process pools of `--jobs` and `evaluate --cores`): let the warm-up
    threads finish, so that no child starts with a copy of numba's compiler lock held."""
    while _WARM_UPS:
        _WARM_UPS.pop().join()


def _warm_up_quietly(*options):
    try:
        warm_up_kernels(*options)
    except Exception:  # only a head start: whatever fails here fails again, reported, in the separation
        pass


def _pick_backend(backend, device="cpu"):
    if backend not in ("auto", "onnx", "nnabla"):
        raise UnmixError(f"unknown backend '{backend}': use auto, onnx or nnabla")
    if device not in ("cpu", "gpu"):
        raise UnmixError(f"unknown device '{device}': use cpu or gpu")
    if device == "gpu":
        if backend == "onnx":
            raise UnmixError("--device gpu runs the NNabla networks: use --backend nnabla or auto")
        require_nnabla("--device gpu")
        return "nnabla"
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            backend = "nnabla"
        else:
            return "onnx"
    if backend == "nnabla":
        require_nnabla("--backend nnabla")
    return backend


def separate(audio, rate, model=None, targets=None, niter=1, softmask=False, residual=None, wiener_win_len=300,
             backend="auto", downmix=False, separator=None):
    """Separate a mixture into its targets.

    Args:
        audio: ``(nb_timesteps,)`` mono, ``(nb_channels, nb_timesteps)`` or ``(nb_samples, nb_channels,
            nb_timesteps)``; float (its dtype is kept) or integer PCM (see `Separator.separate`).
        rate: its sample rate (resampled to the model's and back).
        model: registry name or model folder (None: the default model); ignored if `separator` is given.
        separator: a `Separator` to reuse (models loaded once).

    Returns:
        target -> estimate, the input's layout and exactly its length.
    """
    if separator is None:
        separator = load_separator(model, targets, niter, softmask, residual, wiener_win_len, backend)
    return separator.separate(audio, rate, downmix=downmix)
