"""How the signal kernels (Wiener filter, overlap-add) are compiled and run on threads."""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

_POOLS = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools_in_child():
    """A forked child has none of its parent's threads: its pools start afresh (a copied pool
    would queue work for threads that do not exist there, and wait for ever)."""
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


_AT_FORK = []  # the fork hook, once registered (importing this module changes no process state)


def _forget_pools_at_fork():
    """Register `_forget_pools_in_child` with the process, once: before the first pool is made."""
    if not _AT_FORK:
        os.register_at_fork(after_in_child=_forget_pools_in_child)
        _AT_FORK.append(True)


def kernel(function=None, **options):
    """``numba.njit(nogil=True, cache=True, **options)``: compiled once and kept on disk beside the
    module (or in numba's per-user cache folder); nogil, so that worker threads run it side by side.
    Where no cache folder is writable, numba refuses cache=True at import: compile per process.
    Usable bare (``@kernel``) or with numba options (``@kernel(error_model="numpy")``)."""
    if function is None:
        return lambda f: kernel(f, **options)
    try:
        return numba.njit(nogil=True, cache=True, **options)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, **options)(function)


def run(function, items, workers):
    """``function(item)`` for every item, on up to `workers` threads; re-raises their errors.

    The items must be independent (blocks of frames, rows of signals): then the result does
    not depend on `workers`. The pools are made once per size and shared by every caller."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        for item in items:
            function(item)
        return
    _forget_pools_at_fork()
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="unmix-kernel")
    for future in [pool.submit(function, item) for item in items]:
        future.result()
