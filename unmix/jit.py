"""The numba compilation used by the signal kernels (Wiener filter, overlap-add)."""
import numba


def kernel(function):
    """``numba.njit(nogil=True, cache=True)``: compiled once and kept on disk beside the module
    (or in numba's per-user cache folder); nogil, so that worker threads run it side by side.
    Where no cache folder is writable, numba refuses cache=True at import: compile per process."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)
