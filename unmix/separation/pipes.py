"""`unmix stream` from files and pipes: the streamer driven block by block, a live remix of the
stems, stems recorded as they come, and the latency / compute-time summary.

- A file: its stems written as `unmix separate` writes them (`unmix.separation.stems`), the
  samples computed by the streamer (`StreamedSeparator`): for a causal model with niter 0 they
  are the same stems.
- A pipe: raw PCM in (``--format`` f32le, s16le or s32le, ``--rate``, ``--channels``), the remix
  ``sum_j gain_j * stem_j`` out in the same format, block by block, aligned with the input (the
  first ``latency`` output samples, silence, are not written: the output is as long as the input).
  A pipe that ends in the middle of a frame loses that partial frame; one that closes on the
  reading side ends the stream quietly.
"""
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from unmix.errors import UnmixError
from unmix.io import audio as audio_io
from unmix.io.files import atomic_folder

# raw PCM formats: numpy dtype and full scale
RAW_FORMATS = {"f32le": ("<f4", 1.0), "s16le": ("<i2", 32768.0), "s32le": ("<i4", 2.0 ** 31)}


def parse_mix(text, targets):
    """``"vocals=0,drums=1.2"`` -> target -> gain for every target (the ones not named: 1).

    Raises:
        UnmixError: an unknown target or a gain that is not a finite number.
    """
    gains = {t: 1.0 for t in targets}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if name not in gains:
            raise UnmixError(f"--mix: no target '{name}' (the stems are {', '.join(targets)})")
        try:
            gain = float(value) if sep else float("nan")
        except ValueError:
            gain = float("nan")
        if not np.isfinite(gain):
            raise UnmixError(f"--mix: '{item}' is not TARGET=GAIN (e.g. vocals=0,drums=1.2)")
        gains[name] = gain
    return gains


def remix(stems, gains):
    """``sum_j gain_j * stem_j``: ``(nb_channels, n)`` float32 (stems: target -> ``(nb_channels, n)``)."""
    out = None
    for target, value in stems.items():
        gain = np.float32(gains.get(target, 1.0))
        if gain:
            out = value * gain if out is None else out + value * gain
    if out is None:  # every gain 0
        out = np.zeros_like(next(iter(stems.values())))
    return out


class StreamedSeparator:
    """What `unmix.separation.stems.separate_file` needs of a separator (``targets``,
    ``stream(audio, rate, downmix, progress)``), computed by a streamer fed block by block.

    Args:
        separator: the `Separator`; streamer_options: keyword arguments of `Separator.streamer`
            (block_size is the block fed at a time).
    """

    def __init__(self, separator, **streamer_options):
        self.separator = separator
        self.targets = separator.targets
        self.options = streamer_options
        self.block = int(streamer_options.get("block_size") or separator.sample_rate)
        self.last = None  # the streamer of the last stream, for its statistics

    def stream(self, audio, rate, downmix=False, progress=False):
        """Yields target -> ``(nb_channels, n)`` at `rate`, adding up to the input's length."""
        from unmix.separation.separator import _fit_channels_back, _Resampler

        nb_channels_in, length = np.asarray(audio).shape
        mix = self.separator._prepare(audio, rate, downmix)  # the model's channels and rate
        self.last = st = self.separator.streamer(**self.options)
        st.warm_up()
        back = _Resampler(self.separator.sample_rate, rate, len(self.targets) * mix.shape[0], length)
        skip = st.latency

        def trimmed(out):
            nonlocal skip
            chunk = np.stack([out[t] for t in self.targets])  # (J, C, n)
            drop, skip = min(skip, chunk.shape[-1]), skip - min(skip, chunk.shape[-1])
            chunk = back(chunk[..., drop:].reshape(-1, chunk.shape[-1] - drop))
            return dict(zip(self.targets, _fit_channels_back(chunk.reshape(len(self.targets), mix.shape[0], -1),
                                                             nb_channels_in)))

        for pos in range(0, mix.shape[1], self.block):
            out = trimmed(st.feed(mix[:, pos:pos + self.block]))
            if out[self.targets[0]].shape[-1]:
                yield out
        yield trimmed(st.flush())
        tail = back.flush().reshape(len(self.targets), mix.shape[0], -1)
        if tail.shape[-1]:
            yield dict(zip(self.targets, _fit_channels_back(tail, nb_channels_in)))


class StemRecorder:
    """Stems written as they come, as float32 wav files ``<folder>/<target>.wav``; the folder
    appears complete when `close` is called (or not at all after an error).

    Args:
        folder: the track folder (refused if it exists, unless `force`).
    """

    def __init__(self, folder, targets, rate, nb_channels, force=False):
        self.folder = Path(folder)
        if self.folder.exists() and not force:
            raise UnmixError(f"{self.folder} exists; use --force to replace it")
        self._folder = atomic_folder(self.folder)
        tmp = self._folder.__enter__()
        self.writers = {t: audio_io.StreamWriter(tmp / f"{t}.wav", rate, nb_channels, subtype="FLOAT")
                        for t in targets}

    def write(self, stems):
        for target, value in stems.items():
            if value.shape[-1]:
                self.writers[target].write(value)

    def close(self, error=None):
        """Finish the files and put the folder in place (`error`: drop them instead)."""
        for writer in self.writers.values():
            with contextlib.suppress(UnmixError):
                writer.close()
        if error is None:
            self._folder.__exit__(None, None, None)
        else:
            self._folder.__exit__(type(error), error, None)


def summary(streamer, extra=""):
    """One line: the latency and the compute time per block against the block's duration."""
    stats, rate = streamer.stats, streamer.sample_rate
    latency = f"latency {streamer.latency} samples ({1000 * streamer.latency / rate:.1f} ms)"
    if not stats.blocks:
        return f"stream: {latency}; no blocks"
    block = stats.audio / stats.blocks
    p99 = stats.percentile(99)
    return (f"stream: {latency}; {stats.blocks} blocks of {1000 * block:.1f} ms: compute p50 "
            f"{1000 * stats.percentile(50):.2f} ms, p99 {1000 * p99:.2f} ms ({100 * p99 / block:.0f}% of a block), "
            f"max {1000 * stats.max:.2f} ms; {stats.late} blocks slower than real time; real-time factor "
            f"{stats.total / max(stats.audio, 1e-12):.3f}" + (f"; {extra}" if extra else ""))


def read_blocks(stream, nb_channels, fmt, block):
    """Yields ``(nb_channels, n)`` float32 blocks of raw interleaved PCM read from a binary stream
    until its end (a partial last frame is dropped)."""
    dtype, scale = RAW_FORMATS[fmt]
    frame = np.dtype(dtype).itemsize * nb_channels
    want = block * frame
    pending = b""
    while True:
        data = stream.read(want - len(pending)) if hasattr(stream, "read") else b""
        if not data:
            break
        pending += data
        if len(pending) < want:
            continue
        yield _decode(pending, dtype, scale, nb_channels)
        pending = b""
    usable = len(pending) // frame * frame
    if usable:
        yield _decode(pending[:usable], dtype, scale, nb_channels)
    if len(pending) > usable:
        print(f"warning: the input ended inside a frame: {len(pending) - usable} bytes dropped", file=sys.stderr)


def _decode(data, dtype, scale, nb_channels):
    samples = np.frombuffer(data, dtype=dtype).reshape(-1, nb_channels).T
    return (samples.astype(np.float32) / np.float32(scale)) if scale != 1.0 else samples.astype(np.float32)


def encode(audio, fmt):
    """``(nb_channels, n)`` float32 -> interleaved raw PCM bytes (integers clipped at full scale)."""
    dtype, scale = RAW_FORMATS[fmt]
    frames = audio.T
    if scale != 1.0:
        frames = np.clip(np.round(frames * scale), -scale, scale - 1)
    return np.ascontiguousarray(frames).astype(dtype).tobytes()


def run_pipe(streamer, instream, outstream, fmt, gains, record=None):
    """Stream raw PCM from `instream` to the remix on `outstream` (binary file objects).

    Args:
        streamer: a streamer at the pipe's rate and channels.
        gains: target -> gain of the remix.
        record: a `StemRecorder` for the stems (aligned with the input), or None.

    Returns:
        ``(input samples, output samples written, True if the reader went away)``.
    """
    block = streamer.block_size or int(streamer.sample_rate // 10)
    return run_blocks(streamer, read_blocks(instream, streamer.nb_channels, fmt, block), outstream, fmt, gains,
                      record)


def run_blocks(streamer, blocks, outstream, fmt, gains, record=None, report=None):
    """Feed `blocks` (``(nb_channels, n)`` float32) to `streamer`, writing the remix to `outstream`
    (or None) and the stems to `record`; `report()` is called after every block.

    Returns:
        ``(input samples, output samples written, True if the reader went away)``.
    """
    out = _AlignedOutput(streamer.latency, outstream, fmt, gains, record)
    received = 0
    for data in blocks:
        received += data.shape[1]
        if not out(streamer.feed(data)):
            return received, out.written, True
        if report is not None:
            report()
    out(streamer.flush())
    return received, out.written, False


def _run_recorded(streamer, blocks, outstream, fmt, gains, record, report):
    """`run_blocks`, then close `record` (if any): complete, or discarded with the error that
    stopped the stream."""
    try:
        result = run_blocks(streamer, blocks, outstream, fmt, gains, record, report)
    except BaseException as exc:
        if record is not None:
            record.close(exc)
        raise
    if record is not None:
        record.close()
    return result


class Reporter:
    """Prints `summary` every `every` seconds of audio (`--stats`) and once at the end."""

    def __init__(self, streamer, periodic, every=5.0):
        self.streamer, self.periodic, self.every, self.next = streamer, periodic, every, every

    def __call__(self):
        if self.periodic and self.streamer.stats.audio >= self.next:
            self.next += self.every
            print(summary(self.streamer), file=sys.stderr, flush=True)

    def end(self, extra=""):
        print(summary(self.streamer, extra), file=sys.stderr, flush=True)


class _AlignedOutput:
    """Takes the streamer's outputs, drops the first `latency` samples (the delay's silence),
    writes the remix and records the stems; calls return False once the reader went away."""

    def __init__(self, latency, outstream, fmt, gains, record):
        self.skip, self.outstream, self.fmt, self.gains, self.record = latency, outstream, fmt, gains, record
        self.written = 0

    def __call__(self, stems):
        n = next(iter(stems.values())).shape[-1]
        drop = min(self.skip, n)
        self.skip -= drop
        if n - drop <= 0:
            return True
        stems = {t: v[:, drop:] for t, v in stems.items()}
        if self.record is not None:
            self.record.write(stems)
        self.written += n - drop
        if self.outstream is None:
            return True
        try:
            self.outstream.write(encode(remix(stems, self.gains), self.fmt))
            self.outstream.flush()
        except BrokenPipeError:
            # nothing reads the output any more (`| head -c`): stop; the descriptor now points to
            # /dev/null so that Python's own flush at exit does not fail again
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.outstream.fileno())
            return False
        return True


# -- the `unmix stream` command for files and pipes -----------------------------------------------
# the model `unmix stream` takes when none is given, once the registry knows it (a causal model
# that ships with unmix); until then, the default model of `separate`
STREAM_DEFAULT_MODEL = "bundled-rt"


def load_stream_separator(options):
    """The `Separator` of `unmix stream` (`options`: keyword arguments of `load_separator`)."""
    from unmix.separation.separator import load_separator
    from unmix.weights.registry import resolve_model

    model = options.get("model")
    if model is None:
        try:
            model = resolve_model(STREAM_DEFAULT_MODEL)
        except UnmixError:  # not (yet) in this version's registry
            model = None
    return load_separator(**dict(options, model=resolve_model(model)))


def make_stream(separator, streaming, nb_channels=None, default_block=None):
    """`Separator.streamer` from the CLI's ``block``, ``chunk``, ``lookahead``, ``past``."""
    block = streaming.get("block") or default_block or separator.n_hop
    streamer = separator.streamer(block_size=block, chunk=streaming.get("chunk"),
                                  lookahead=streaming.get("lookahead"), past=streaming.get("past"),
                                  nb_channels=nb_channels)
    streamer.warm_up()
    return streamer


def run_pipe_command(options, streaming, output, fmt, rate, channels, mix=None, outdir=None, name=None,
                     stats=False, force=False):
    """`unmix stream -`: raw PCM on stdin -> the remix as raw PCM on `output` ('-': stdout, a
    path, or None: none) and the stems recorded into ``<outdir>/<name>/``. Returns the exit code."""
    if rate is None:
        raise UnmixError("raw PCM input needs --rate (and --channels, --format)")
    separator = load_stream_separator(options)
    _check_rate(rate, separator)
    streamer = make_stream(separator, streaming, nb_channels=channels)
    gains = parse_mix(mix, separator.targets)
    with _raw_output(output) as outstream:
        record = StemRecorder(Path(outdir) / (name or "stream"), separator.targets, rate, channels, force) \
            if outdir else None
        reporter = Reporter(streamer, stats)
        received, written, gone = _run_recorded(streamer, read_blocks(sys.stdin.buffer, channels, fmt,
                                                                      streamer.block_size), outstream, fmt, gains,
                                                record, reporter)
    reporter.end(f"{received} samples in, {written} out" + (" (the reader closed the output)" if gone else ""))
    if record is not None:
        print(f"wrote {record.folder}", file=sys.stderr)
    return 0


def run_file_command(options, streaming, path, outdir=None, output=None, fmt="f32le", mix=None, ext=".wav",
                     bits=None, stats=False, force=False):
    """`unmix stream FILE`: its stems into `outdir` as `unmix separate` writes them, and/or the
    remix as raw PCM to `output`. Returns the exit code."""
    from unmix.separation import stems

    separator = load_stream_separator(options)
    gains = parse_mix(mix, separator.targets)
    if output is None:
        streamed = StreamedSeparator(separator, **_file_streaming(separator, streaming))
        outputs, warnings = stems.separate_file(path, streamed, outdir, fmt=stems.StemFormat(ext=ext, bits=bits),
                                                force=force)
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr)
        print(f"wrote {stems._where(outputs)}")
        Reporter(streamed.last, False).end()
        return 0
    audio, _ = audio_io.load(path, rate=separator.sample_rate)
    audio = audio_io.fit_channels(audio, separator.nb_channels) if audio.shape[0] > 2 else audio
    streamer = make_stream(separator, streaming, nb_channels=audio.shape[0], default_block=separator.n_hop)
    block = streamer.block_size
    with _raw_output(output) as outstream:
        record = StemRecorder(Path(outdir) / stems.track_name(path), separator.targets, separator.sample_rate,
                              audio.shape[0], force) if outdir else None
        reporter = Reporter(streamer, stats)
        blocks = (audio[:, i:i + block] for i in range(0, audio.shape[1], block))
        received, written, gone = _run_recorded(streamer, blocks, outstream, fmt, gains, record, reporter)
    reporter.end(f"{written} samples at {separator.sample_rate:g} Hz written as {fmt}"
                 + (" (the reader closed the output)" if gone else ""))
    return 0


def _file_streaming(separator, streaming):
    """Streamer options for a file: blocks of 1 s unless --block (the stems do not depend on it)."""
    return dict(block_size=streaming.get("block") or int(separator.sample_rate), chunk=streaming.get("chunk"),
                lookahead=streaming.get("lookahead"), past=streaming.get("past"))


def _check_rate(rate, separator):
    if float(rate) != separator.sample_rate:
        raise UnmixError(f"the input is at {rate} Hz but the model runs at {separator.sample_rate:g} Hz: resample "
                         f"it first (ffmpeg ... -ar {separator.sample_rate:g}); the streamer does not resample")


@contextlib.contextmanager
def _raw_output(output):
    """The binary stream for `output`: '-' stdout (refused on a terminal), a file path, or None."""
    if output is None:
        yield None
    elif output == "-":
        if sys.stdout.isatty():
            raise UnmixError("refusing to write raw audio to a terminal: redirect it (> out.f32) or use -o FILE")
        yield sys.stdout.buffer
    else:
        try:
            handle = open(output, "wb")
        except OSError as exc:
            raise UnmixError(f"cannot write {output}: {exc.strerror}") from None
        with handle:
            yield handle
