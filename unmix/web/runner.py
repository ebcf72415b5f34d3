"""The workers: a bounded pool of threads that separate the queued jobs, oldest first.

`jobs` threads, each holding at most one loaded separator (memory grows with `jobs`, not with
the queue). The heavy work (ONNX Runtime, numba kernels, FFTs, codecs) releases the GIL, so
the HTTP server stays responsive while songs are separated. Progress comes from the
separator's callback (one step per window and network) and is written to the store, which
wakes the server-sent events. A job is cancelled through that same callback: it raises, the
stems writer removes its staging folder, and the job is either forgotten (deleted) or queued
again (the app is stopping).
"""
import os
import sys
import threading
import time
import traceback

import numpy as np

from unmix.errors import UnmixError
from unmix.io import audio as audio_io
from unmix.separation import stems as stems_io
from unmix.separation.demo import plot_spectrograms
from unmix.separation.separator import load_separator
from unmix.web import catalog
from unmix.web.store import clear_outputs

SPECTROGRAM = "spectrograms.png"
STEMS_TEMPLATE = "stems/{target}.{ext}"
# a progress write when a step moves the bar by 1% or more (steps are windows of ~7 s of audio
# and networks: tens per song), else at most this often
_WRITE_EVERY_S = 0.2


class Cancelled(Exception):
    """Raised inside a job's progress callback to stop it."""


class Runner:
    """`jobs` worker threads separating the queued jobs of `store`."""

    def __init__(self, store, jobs=1, nb_threads=None):
        self.store = store
        self.jobs = int(jobs)
        # the cores are shared by the workers: each separator gets its part
        self.nb_threads = nb_threads or max(1, (os.cpu_count() or 1) // self.jobs)
        self._work = threading.Condition()
        self._stopping = False
        self._running = {}  # job id -> threading.Event that cancels it
        self._threads = []
        self._local = threading.local()

    def start(self):
        for i in range(self.jobs):
            thread = threading.Thread(target=self._loop, name=f"unmix-job-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self):
        """A job was queued."""
        with self._work:
            self._work.notify()

    def cancel(self, job_id, timeout=60.0):
        """Stop job `job_id` if it is running, and wait until its worker has let go of its files."""
        with self._work:
            event = self._running.get(job_id)
            if event is None:
                return
            event.set()
            self._work.wait_for(lambda: job_id not in self._running, timeout=timeout)

    def stop(self, timeout=60.0):
        """Cancel the running jobs (they are queued again) and end the workers."""
        with self._work:
            self._stopping = True
            for event in self._running.values():
                event.set()
            self._work.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    # -- one worker ---------------------------------------------------------------------------
    def _loop(self):
        while True:
            with self._work:
                job = None
                while not self._stopping and (job := self.store.claim_next()) is None:
                    self._work.wait()
                if self._stopping:
                    if job is not None:
                        self.store.update(job["id"], state="queued", stage="", progress=0.0, started=None)
                    return
                cancel = self._running[job["id"]] = threading.Event()
            try:
                self._run(job, cancel)
            finally:
                with self._work:
                    del self._running[job["id"]]
                    self._work.notify_all()

    def _run(self, job, cancel):
        """Separate one job and record how it ended."""
        job_id = job["id"]
        try:
            stems, notes = self._separate(job, cancel)
        except Cancelled:
            if self._stopping:  # not deleted: it runs again at the next start
                self.store.update(job_id, state="queued", stage="", progress=0.0, started=None)
            return
        except Exception as exc:  # one job's failure must not end the worker
            line = _error_line(exc)
            if line is None:
                traceback.print_exc(file=sys.stderr)
                line = f"internal error: {type(exc).__name__}: {exc}"
            line = line.replace(str(self.store.job_dir(job_id)) + os.sep, "")  # our paths are no news to users
            self.store.update(job_id, state="failed", stage="", error=line, finished=time.time())
            return
        self.store.update(job_id, state="done", stage="", progress=1.0, stems=stems, notes=notes,
                          finished=time.time())

    def _separate(self, job, cancel):
        """The work: stems into ``<job folder>/stems/`` (the picture is drawn when asked for:
        `draw_spectrograms`).

        Returns:
            ``(stems, notes)``: target -> file name in the job folder, and warning lines.
        """
        folder = self.store.job_dir(job["id"])
        options = job["options"]
        clear_outputs(folder)  # a job queued again after a stop starts clean
        step = _Progress(self.store, job["id"], cancel)
        step("loading model", 0.0)
        separator = self._separator(catalog.separator_options(options))
        step("separating", 0.0)
        outputs, warnings = stems_io.separate_file(
            folder / job["input"], separator, folder, filename=STEMS_TEMPLATE, fmt=catalog.stem_format(options),
            force=True, progress=lambda done, total: step("separating", done / total))
        notes = [line.replace(str(path), target) for line in warnings for target, path in outputs.items()
                 if line.startswith(str(path))]
        return {t: p.relative_to(folder).as_posix() for t, p in outputs.items()}, notes

    def _separator(self, options):
        """This worker's separator for `options`, loaded again only when they change."""
        key = repr(sorted(options.items()))
        if getattr(self._local, "key", None) != key:
            self._local.key = self._local.separator = None  # the old one goes before the new one loads
            self._local.separator = load_separator(**options, nb_threads=self.nb_threads)
            self._local.key = key
        return self._local.separator


class _Progress:
    """A job's progress reporter: writes stage and fraction (throttled) and raises `Cancelled`
    once the job is cancelled."""

    def __init__(self, store, job_id, cancel):
        self.store, self.job_id, self.cancel = store, job_id, cancel
        self.stage, self.fraction, self.written = None, 0.0, 0.0

    def __call__(self, stage, fraction):
        if self.cancel.is_set():
            raise Cancelled()
        now = time.monotonic()
        if stage != self.stage or fraction - self.fraction >= 0.01 or now - self.written >= _WRITE_EVERY_S:
            self.stage, self.fraction, self.written = stage, fraction, now
            self.store.update(self.job_id, stage=stage, progress=round(fraction, 4))


_DRAWING = threading.Lock()


def draw_spectrograms(folder, job):
    """``<folder>/spectrograms.png`` of a finished job, drawn on the first request (matplotlib
    takes a second or two: the stems are ready to play before it). One picture at a time,
    each from mono copies of the mixture and the stems: memory stays bounded.

    Returns:
        the PNG's path.
    """
    png = folder / SPECTROGRAM
    with _DRAWING:
        if not png.exists():
            def mono(name):
                audio, rate = audio_io.load(folder / name)
                return audio.mean(axis=0, keepdims=True, dtype=np.float32), rate

            mixture, rate = mono(job["input"])
            plot_spectrograms(mixture, {t: mono(name)[0] for t, name in job["stems"].items()}, rate, png)
    return png


def _error_line(exc):
    """The one-line message of an error a user can cause (a song that does not decode, a model
    that cannot be downloaded, a full disk); None for a bug."""
    if isinstance(exc, UnmixError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, audio_io._SF_ERROR):
        return " ".join(str(exc).split())
    return None
