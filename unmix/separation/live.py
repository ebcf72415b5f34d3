"""`unmix stream` on audio devices through PortAudio (the `sounddevice` package).

The streamer runs in the audio callback, one block per call: a block of the device's period in,
the remix of the stems out (``--mix vocals=0``: a karaoke while the song plays). The source is an
input device (``--input-device``) or a file played from memory; the remix goes to an output
device; the stems can be recorded at the same time (``--outdir``), written by a thread of their
own so that no file I/O happens in the callback.

Missed deadlines are counted twice: blocks whose compute took longer than their duration (the
streamer's statistics), and the underruns / overflows that PortAudio reports in the callback's
status flags (JACK's xruns among them). Neither stops the stream. A missing audio server or device
is a one-line error. PortAudio talks to ALSA, PulseAudio or JACK; JACK's dummy backend
(``jackd -d dummy``) is a real server without a sound card, which the tests use.
"""
import queue
import sys
from pathlib import Path
import threading
import time

import numpy as np

from unmix.errors import UnmixError
from unmix.separation import pipes


def _sounddevice():
    """The sounddevice module, or a one-line error when it or PortAudio is missing."""
    try:
        import sounddevice
    except ImportError:
        raise UnmixError("live audio needs the sounddevice package: pip install sounddevice") from None
    except OSError as exc:  # sounddevice raises OSError when libportaudio is not found
        raise UnmixError(f"live audio needs PortAudio ({exc}): install it, e.g. apt-get install libportaudio2") \
            from None
    return sounddevice


def list_devices():
    """The audio devices PortAudio sees, one a line (sounddevice's listing)."""
    sd = _sounddevice()
    devices = sd.query_devices()
    return str(devices) if len(devices) else "no audio devices (is an audio server running?)"


def _device(sd, text, kind):
    """A device index for `text` (an index, a name or part of one, 'default'), checked for `kind`
    ('input' or 'output') channels."""
    try:
        if text in (None, "default"):
            index = sd.default.device[0 if kind == "input" else 1]
            if index is None or index < 0:
                index = sd.query_devices(kind=kind)["index"]
        else:
            index = int(text) if str(text).isdigit() else sd.query_devices(text, kind)["index"]
        info = sd.query_devices(index)
    except (ValueError, sd.PortAudioError) as exc:
        message = " ".join(str(exc).split())
        raise UnmixError(f"no {kind} audio device {text or 'default'!r} ({message}); is an audio server running? "
                         "`unmix stream --list-devices` lists them") from None
    if info[f"max_{kind}_channels"] < 1:
        raise UnmixError(f"audio device {info['name']!r} has no {kind} channels")
    return index, info


class FileSource:
    """A file read ahead on a thread of its own, in blocks at the model's rate, so that the audio
    callback never waits for the disk and a long file (an hour's set) is never held whole.

    libsndfile formats (wav, flac, ogg, ...) are read piece by piece (resampled with soxr's
    stream when the rates differ); other formats (mp3, m4a: ffmpeg) are decoded whole first.

    Args:
        path: the file; rate: the model's rate; block: samples per block.
        ahead: seconds of blocks kept ready.
    """

    def __init__(self, path, rate, block, ahead=4.0):
        import soundfile as sf
        import soxr

        from unmix.io import audio as audio_io

        self.block, self.late = int(block), 0
        self.error = None
        path = Path(path)
        info = audio_io.info(path)
        if info.nb_channels > 2:
            raise UnmixError(f"{path} has {info.nb_channels} channels: downmix it to stereo first (ffmpeg -ac 2)")
        self.nb_channels = info.nb_channels
        self.queue = queue.Queue(maxsize=max(2, int(ahead * rate / self.block)))
        if audio_io._uses_sndfile(path):
            handle = sf.SoundFile(str(path))
            resampler = None if handle.samplerate == rate else soxr.ResampleStream(
                handle.samplerate, rate, self.nb_channels, dtype="float32", quality="HQ")
            pieces = self._pieces(handle, resampler)
        else:
            audio, _ = audio_io.load(path, rate=rate)
            pieces = iter([audio])
        self.thread = threading.Thread(target=self._read, args=(pieces,), name="unmix-file-reader", daemon=True)
        self.thread.start()

    def _pieces(self, handle, resampler):
        with handle:
            for piece in handle.blocks(blocksize=1 << 15, dtype="float32", always_2d=True):
                yield piece.T if resampler is None else resampler.resample_chunk(piece).T
            if resampler is not None:
                yield resampler.resample_chunk(np.zeros((0, self.nb_channels), np.float32), last=True).T

    def _read(self, pieces):
        carry = np.zeros((self.nb_channels, 0), np.float32)
        try:
            for piece in pieces:
                carry = np.concatenate([carry, np.ascontiguousarray(piece, np.float32)], axis=1)
                while carry.shape[1] >= self.block:
                    self.queue.put(carry[:, :self.block].copy())
                    carry = carry[:, self.block:]
            if carry.shape[1]:
                self.queue.put(carry)
        except Exception as exc:  # reported by the main thread
            self.error = exc
        self.queue.put(None)

    def read(self):
        """The next block ``(nb_channels, n)``, zeros if the reader is late (counted), or None at the end."""
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            self.late += 1
            return np.zeros((self.nb_channels, self.block), np.float32)


class LiveSession:
    """The audio callback's state: the streamer, the source, the remix and the counters.

    Args:
        streamer: a streamer with ``block_size`` = the device's period.
        source: a `FileSource` to play, or None to take the input device's audio.
        gains: target -> gain of the remix; out_channels: the output device's channels (0: none).
        recorder: a `pipes.StemRecorder` for the stems, or None.
    """

    def __init__(self, streamer, source, gains, out_channels, recorder=None):
        self.streamer, self.source, self.gains, self.out_channels = streamer, source, gains, out_channels
        self.ended = False  # the source has no more samples
        self.tail = np.zeros((streamer.nb_channels, 0), np.float32)  # the flushed remix still to play
        self.xruns, self.callbacks = 0, 0
        self.done = threading.Event()
        self.error = None
        self.recorder = recorder
        self.queue = queue.Queue(maxsize=4096) if recorder is not None else None
        self.dropped = 0
        self.writer = threading.Thread(target=self._write, name="unmix-recorder", daemon=True) \
            if recorder is not None else None
        if self.writer is not None:
            self.writer.start()

    def callback(self, indata, outdata, frames, time_info, status):
        """PortAudio's callback (duplex, input-only or output-only: the missing side is None)."""
        self.callbacks += 1
        if status:  # output underflow, input overflow, ...: a missed deadline, counted, never fatal
            self.xruns += 1
        try:
            remixed = self._next(indata, frames)
        except Exception as exc:  # kept for the main thread: raising here would only stop PortAudio
            self.error = exc
            self.done.set()
            raise self._stop()
        if outdata is not None:
            out = remixed.T
            if out.shape[1] != outdata.shape[1]:
                out = np.repeat(out.mean(axis=1, keepdims=True), outdata.shape[1], axis=1)
            outdata[:out.shape[0]] = out
            outdata[out.shape[0]:] = 0
        if self.done.is_set():
            raise self._stop()

    def _next(self, indata, frames):
        """The next `frames` output samples ``(nb_channels, <= frames)`` of the remix."""
        if self.ended:  # the file is over: play what the flush gave
            out, self.tail = self.tail[:, :frames], self.tail[:, frames:]
            if not self.tail.shape[1]:
                self.done.set()
            return out
        block = np.ascontiguousarray(indata.T[:self.streamer.nb_channels], np.float32) if self.source is None \
            else self.source.read()
        if block is None:
            if self.source.error is not None:
                raise self.source.error
            self.ended = True
            stems = self.streamer.flush()
            self._record(stems)
            self.tail = pipes.remix(stems, self.gains)
            return self._next(indata, frames)
        stems = self.streamer.feed(block)
        self._record(stems)
        return pipes.remix(stems, self.gains)

    def finish(self):
        """After the stream stopped: flush a capture's streamer, wait for the recorder."""
        if self.source is None and not self.streamer.flushed:
            self._record(self.streamer.flush())
        if self.writer is not None:
            self.queue.put(None)
            self.writer.join()

    def _record(self, stems):
        if self.queue is None:
            return
        try:
            self.queue.put_nowait(stems)
        except queue.Full:  # the disk cannot keep up: the recording loses blocks, the playback goes on
            self.dropped += 1

    def _write(self):
        aligned = pipes._AlignedOutput(self.streamer.latency, None, "f32le", self.gains, self.recorder)
        while True:
            stems = self.queue.get()
            if stems is None:
                return
            if self.error is None:
                try:
                    aligned(stems)
                except Exception as exc:
                    self.error = exc
                    self.done.set()

    @staticmethod
    def _stop():
        return _sounddevice().CallbackStop()


def run_live(options, streaming, source=None, input_device=None, output_device=None, mix=None, outdir=None,
             name=None, duration=None, stats=False, force=False, fmt="f32le", rate=None, channels=2):
    """`unmix stream` with devices: play a file (or capture `input_device`) through the streamer,
    the remix to `output_device`, the stems recorded into ``<outdir>/<name>/``. Returns the exit code."""
    from unmix.separation.stems import track_name

    sd = _sounddevice()
    if source == "-":
        raise UnmixError("to play a pipe, give its file instead (a pipe on stdin plays with `| aplay` or `| "
                         "pw-play`: unmix stream - ... | ...)")
    if output_device is None and outdir is None:
        raise UnmixError("capturing needs --output-device (to play the remix) or --outdir (to record the stems)")
    separator = pipes.load_stream_separator(options)
    rate = separator.sample_rate
    ins = _device(sd, input_device, "input") if input_device is not None else None
    outs = _device(sd, output_device, "output") if output_device is not None else None
    block = streaming.get("block") or separator.n_hop
    if source is not None:
        audio = FileSource(source, rate, block)
        nb_channels = audio.nb_channels
    else:
        audio, nb_channels = None, min(2, ins[1]["max_input_channels"])
    streamer = pipes.make_stream(separator, streaming, nb_channels=nb_channels)
    gains = pipes.parse_mix(mix, separator.targets)
    out_channels = min(2, outs[1]["max_output_channels"]) if outs else 0
    recorder = pipes.StemRecorder(_record_folder(outdir, name, source, track_name), separator.targets, rate,
                                  nb_channels, force) if outdir else None
    session = LiveSession(streamer, audio, gains, out_channels, recorder)
    reporter = pipes.Reporter(streamer, stats)
    try:
        _play(sd, session, ins, outs, rate, block, nb_channels, out_channels, duration, reporter)
    except BaseException as exc:
        session.error = session.error or exc
    session.finish()
    error = session.error
    if recorder is not None:
        recorder.close(error if error is not None and not isinstance(error, KeyboardInterrupt) else None)
    if error is not None and not isinstance(error, KeyboardInterrupt):
        raise error
    reporter.end(f"{session.xruns} callbacks flagged an underrun/overflow by the audio server"
                 + (f"; {audio.late} blocks of silence (the file reader was late)" if audio is not None and audio.late
                    else "")
                 + (f"; {session.dropped} blocks not recorded (disk too slow)" if session.dropped else ""))
    if recorder is not None:
        print(f"wrote {recorder.folder}", file=sys.stderr)
    return 130 if isinstance(error, KeyboardInterrupt) else 0


def _record_folder(outdir, name, source, track_name):
    from pathlib import Path

    return Path(outdir) / (name or (track_name(source) if source else "live"))


def _play(sd, session, ins, outs, rate, block, nb_channels, out_channels, duration, reporter):
    """Open the PortAudio stream and wait until the file is played, `duration` passed or Ctrl-C."""
    kwargs = dict(samplerate=rate, blocksize=block, dtype="float32")
    try:
        if ins and outs:
            stream = sd.Stream(device=(ins[0], outs[0]), channels=(nb_channels, out_channels),
                               callback=session.callback, **kwargs)
        elif outs:
            stream = sd.OutputStream(device=outs[0], channels=out_channels,
                                     callback=lambda o, f, t, s: session.callback(None, o, f, t, s), **kwargs)
        else:
            stream = sd.InputStream(device=ins[0], channels=nb_channels,
                                    callback=lambda i, f, t, s: session.callback(i, None, f, t, s), **kwargs)
    except sd.PortAudioError as exc:
        raise UnmixError(f"cannot open the audio stream at {rate:g} Hz, {block} frames per block: "
                         + " ".join(str(exc).split())) from None
    began = time.monotonic()
    with stream:
        while not session.done.wait(0.1):
            reporter()
            if duration is not None and time.monotonic() - began >= duration:
                break
            if not stream.active:
                break
