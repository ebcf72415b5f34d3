"""The multiprocess batch loader: ``DataLoader(dataset, batch_size, nb_workers=...)``.

Iterating a `DataLoader` gives one epoch of batches ``(x, y)``, float32
``(batch, ...)`` stacked from ``dataset.get(index, epoch)`` (any object with
``get``, ``__len__`` and ``set_epoch``: the datasets of `unmix.training.datasets`, or the
magnitude view `unmix.training.views.MagnitudeDataset`). The sample order is seeded
with ``(seed, epoch)``, so batches do not depend on the number of workers.

With ``nb_workers > 0`` worker processes (started per epoch) load batches ahead
and hand them over through shared memory (``/dev/shm``): one copy instead of a
pickle through a pipe. Workers stop when the epoch ends or is abandoned, exit by
themselves when the parent dies, and leave no shared block behind.
"""
import math
import multiprocessing
import os
import queue
import signal
import traceback
import uuid
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from unmix.errors import UnmixError


def load_batch(dataset, indices: Sequence[int], epoch: int) -> Tuple[np.ndarray, ...]:
    """Stack samples `indices` of `epoch`: each array of a sample (x, y, or the several arrays of an
    X-UMX sample) as float32 ``(batch, *its shape)``."""
    samples = [dataset.get(int(i), epoch) for i in indices]
    for k in range(len(samples[0])):
        shapes = {s[k].shape for s in samples}
        if len(shapes) > 1:
            raise UnmixError(f"samples of one batch differ in shape {sorted(shapes)}; "
                             "use batch_size=1 for full tracks")
    return tuple(np.stack([s[k] for s in samples]) for k in range(len(samples[0])))


def _to_shared(batch, name):
    """Copy the arrays of `batch` into a new shared memory block `name`; return (name, their shapes).

    A 16 x 6 s stereo batch is 12 MB of audio (68 MB as the magnitudes x and y of
    `MagnitudeDataset`): through a pipe it costs the parent hundreds of ms on a busy
    machine, through shared memory one copy.
    """
    size = max(1, sum(a.nbytes for a in batch))
    shm = shared_memory.SharedMemory(name=name, create=True, size=size)
    try:
        # reserve the pages now: a /dev/shm too small for the block (Docker's default is 64 MB)
        # is then a clear error here, instead of a SIGBUS that kills the worker mid-copy
        os.posix_fallocate(shm._fd, 0, size)
    except OSError as exc:
        shm.close()
        shm.unlink()
        raise UnmixError(f"/dev/shm has no room for a batch of {size / 2**20:.0f} MB ({exc.strerror}): "
                         f"{_SHM_HINT}") from None
    offset = 0
    for array in batch:
        view = np.ndarray(array.shape, np.float32, shm.buf, offset=offset)
        view[...] = array
        offset += array.nbytes
        del view  # release the buffer before close
    # the parent attaches, copies and unlinks; the worker's tracker must not unlink it too
    resource_tracker.unregister(shm._name, "shared_memory")
    shm.close()
    return name, tuple(a.shape for a in batch)


def _from_shared(meta) -> Tuple[np.ndarray, ...]:
    name, shapes = meta
    shm = shared_memory.SharedMemory(name=name)
    arrays, offset = [], 0
    try:
        for shape in shapes:
            arrays.append(np.ndarray(shape, np.float32, shm.buf, offset=offset).copy())
            offset += arrays[-1].nbytes
    finally:
        shm.close()
        shm.unlink()
    return tuple(arrays)


def _unlink_shared(name: str) -> None:
    try:
        shm = shared_memory.SharedMemory(name=name)
        shm.close()
        shm.unlink()
    except FileNotFoundError:  # already gone (another process removed it)
        pass


def _unlink_blocks(prefix: str) -> None:
    """Remove every shared block whose name starts with `prefix` (Linux lists them in /dev/shm)."""
    shm_dir = Path("/dev/shm")
    if shm_dir.is_dir():
        for block in shm_dir.glob(prefix + "*"):
            _unlink_shared(block.name)


_SHM_HINT = "give the container more shared memory (docker --shm-size) or use --nb-workers 0"


def _worker_loop(dataset, tasks, results, stop, prefix, parent):
    """Worker process: (batch number, indices, epoch) -> (batch number, shared block, error).

    Exits by itself when its `parent` process is gone (killed, out of memory): it then removes
    the shared blocks it made, which no one else would (they would hold RAM until a reboot)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    while True:
        if os.getppid() != parent:
            results.cancel_join_thread()  # no one reads the results any more
            _unlink_blocks(prefix)
            return
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            continue
        if task is None:
            return
        if stop.is_set():
            continue  # the parent stopped early: drop the queued tasks, wait for the sentinel
        k, indices, epoch = task
        try:
            meta = _to_shared(load_batch(dataset, indices, epoch), f"{prefix}{k}")
            results.put((k, meta, None))
        except Exception as e:
            results.put((k, None, (isinstance(e, UnmixError), f"{type(e).__name__}: {e}",
                                   traceback.format_exc())))


class DataLoader:
    """Batches of a dataset: iterate for ``(x, y)`` float32 ``(batch, nb_channels, nb_timesteps)``.

    Each iteration is one epoch: the order is a permutation seeded with
    ``(seed, epoch)`` when `shuffle`, and samples come from ``dataset.get(i, epoch)``,
    so batches are identical for any `nb_workers`. The epoch counter advances
    after each iteration; `set_epoch` sets it (e.g. when resuming).
    With ``nb_workers > 0`` batches are loaded by worker processes (started per
    epoch, 'fork' or 'spawn'), at most ``nb_workers * prefetch`` batches ahead,
    and handed over through shared memory.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = True,
                 nb_workers: int = 0, seed: int = 42, drop_last: bool = True,
                 prefetch: int = 2, start_method: Optional[str] = None):
        if batch_size < 1:
            raise UnmixError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.nb_workers = max(0, int(nb_workers))
        self.seed = int(seed)
        self.prefetch = max(1, int(prefetch))
        self.start_method = start_method
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The next iteration uses `epoch` (then epoch + 1, ...)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def batch_indices(self, epoch: int) -> List[np.ndarray]:
        """The sample indices of each batch of `epoch`."""
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return [order[k * self.batch_size:(k + 1) * self.batch_size] for k in range(len(self))]

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        self.dataset.set_epoch(epoch)
        batches = self.batch_indices(epoch)
        if self.nb_workers == 0:
            return (load_batch(self.dataset, b, epoch) for b in batches)
        return self._iter_workers(batches, epoch)

    def _iter_workers(self, batches, epoch):
        ctx = multiprocessing.get_context(self.start_method)
        resource_tracker.ensure_running()  # one tracker, inherited by the workers
        prefix = f"unmix_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        tasks, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        workers = [ctx.Process(target=_worker_loop, args=(self.dataset, tasks, results, stop, prefix, os.getpid()),
                               daemon=True)
                   for _ in range(min(self.nb_workers, max(1, len(batches))))]
        for w in workers:
            w.start()
        try:
            sent, ready = 0, {}
            for k in range(len(batches)):
                # keep a bounded number of batches in flight: memory stays bounded
                while sent < len(batches) and sent < k + self.nb_workers * self.prefetch:
                    tasks.put((sent, batches[sent], epoch))
                    sent += 1
                while k not in ready:
                    got, meta, error = self._receive(results, workers)
                    if error is not None:
                        is_user, message, trace = error
                        if is_user:
                            raise UnmixError(message)
                        raise RuntimeError(f"data worker failed: {message}\n{trace}")
                    ready[got] = _from_shared(meta)
                yield ready.pop(k)
        finally:
            self._stop(workers, tasks, results, stop, prefix)

    @staticmethod
    def _receive(results, workers):
        while True:
            try:
                return results.get(timeout=1.0)
            except queue.Empty:
                dead = [w.exitcode for w in workers if not w.is_alive()]
                if dead and dead[0] == -signal.SIGBUS:  # a shared block beyond what /dev/shm holds
                    raise UnmixError(f"a data worker died of SIGBUS, /dev/shm is probably full: {_SHM_HINT}")
                if dead:
                    raise RuntimeError(f"a data worker died (exit code {dead[0]})") from None

    @staticmethod
    def _stop(workers, tasks, results, stop, prefix):
        """Stop the workers (they finish the batch at hand) and free unclaimed blocks."""
        stop.set()
        for _ in workers:
            tasks.put(None)
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.terminate()
                w.join()
        tasks.cancel_join_thread()
        while True:  # batches loaded but never taken
            try:
                _, meta, _ = results.get(timeout=0.05)
            except queue.Empty:
                break
            if meta is not None:
                _unlink_shared(meta[0])
        _unlink_blocks(prefix)  # a worker killed mid-copy leaves a named block
