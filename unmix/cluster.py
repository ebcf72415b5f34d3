"""Tracks fanned out over a Dask distributed cluster (`--scheduler ADDRESS`).

A lab starts a scheduler and workers where its machines are (``dask-scheduler`` and
``dask-worker tcp://host:8786``, or dask-jobqueue's ``SLURMCluster`` on Slurm) with unmix
installed on every worker and the data, models and output folders at the same paths on every
machine (a shared filesystem). `unmix evaluate` / `unmix separate` then submit one task per
track to that scheduler instead of starting local processes; each worker process loads the
separator (or oracle) once and keeps it for the next tracks (`worker_cached`). Results come
back as each track ends, in the same one-line form as a local run.
"""
import contextlib
import logging
import threading

from unmix.errors import UnmixError

CONNECT_TIMEOUT = "20s"
_CACHE = {}
_CACHE_LOCK = threading.Lock()


def connect(address):
    """A ``distributed.Client`` of the scheduler at `address` (``tcp://host:8786``).

    Raises:
        UnmixError: dask.distributed missing, or no scheduler answering at `address`.
    """
    try:
        import distributed
    except ImportError:
        raise UnmixError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UnmixError(f"cannot reach the dask scheduler at {address}: {' '.join(str(exc).split())}") from None


def map_unordered(address, function, items, *args):
    """Run ``function(item, *args)`` for every item on the cluster at `address`.

    Yields:
        ``(item, result, error)`` as each task ends: `error` is None, or one line when the
        task itself raised (a bug, a worker that died: the other tasks go on), or when the
        scheduler went away before the task ended.
    """
    with _quiet_client_logs():
        client = connect(address)
        try:
            import distributed

            futures = {client.submit(function, item, *args, pure=False): item for item in items}
            for future in distributed.as_completed(futures, loop=client.loop):
                item = futures[future]
                try:
                    yield item, future.result(), None
                except Exception as exc:  # KilledWorker, a bug in the task: one line for this item
                    yield item, None, _task_error(exc, address)
        finally:
            client.close()


def _task_error(exc, address):
    """One line for a task that did not return."""
    if "scheduler-connection-lost" in str(exc) or type(exc).__name__ == "CancelledError":
        return f"the dask scheduler at {address} went away before this task finished: run it again"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


class _DropClientLogs(logging.Filter):
    """Drops what the dask client logs (a lost scheduler makes it print reconnection tracebacks):
    each task's outcome is reported by `map_unordered` in one line instead."""

    def filter(self, record):
        return not record.name.startswith(("distributed", "tornado"))


@contextlib.contextmanager
def _quiet_client_logs():
    """While the client lives, the handlers that dask's and the root logger have drop its records."""
    handlers = {h for name in ("distributed", "tornado", "") for h in logging.getLogger(name).handlers}
    if logging.lastResort is not None:  # what prints a record when no logger has a handler
        handlers.add(logging.lastResort)
    dropper = _DropClientLogs()
    for handler in handlers:
        handler.addFilter(dropper)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(dropper)


def worker_cached(key, make):
    """``make()`` once per worker process for each `key` (a loaded separator, say), kept for
    the next tasks that process runs; threads of one worker share it."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]
