"""Kernel compilation and the thread runner."""
import threading

import numba
import pytest

from unmix.dsp import jit


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    # numba refuses cache=True at import where no cache folder is writable: compile per process
    calls = []

    def njit(**options):
        calls.append(options)
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return lambda function: function

    monkeypatch.setattr(numba, "njit", njit)
    assert jit.kernel(abs) is abs
    assert calls == [{"nogil": True, "cache": True}, {"nogil": True}]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_run_calls_every_item_once_and_uses_the_workers(workers):
    seen, names = [], set()

    def record(item):
        seen.append(item)
        names.add(threading.current_thread().name)

    jit.run(record, range(7), workers)
    assert sorted(seen) == list(range(7))
    if workers == 1:
        assert names == {threading.current_thread().name}
    else:
        assert all(name.startswith("unmix-kernel") for name in names)


def test_run_reraises_a_worker_error():
    def fail_on_three(item):
        if item == 3:
            raise ValueError("item 3")

    with pytest.raises(ValueError, match="item 3"):
        jit.run(fail_on_three, range(6), 2)


def test_a_forked_child_gets_fresh_pools():
    import multiprocessing

    jit.run(lambda item: None, range(4), 2)  # the parent now has a pool with live threads
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:  # in the child the copied pool's threads do not exist
        # (with the copied pool the child waits for ever: a timeout fails the test instead)
        assert pool.apply_async(_sum_on_threads, (2,)).get(timeout=30) == sum(range(6))


def _sum_on_threads(workers):
    total = []
    jit.run(total.append, range(6), workers)
    return sum(total)
