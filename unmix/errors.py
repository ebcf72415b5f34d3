"""Errors a user can cause, and atomic file writing.

`UnmixError` carries a one-line message that the CLI prints as ``error: ...``
before exiting non-zero; anything else is a bug and keeps its traceback.
"""
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path


class UnmixError(Exception):
    """A problem with the user's input, files or environment (one-line message)."""


NNABLA_PYTHONS = ((3, 8), (3, 9), (3, 10))  # NNabla 1.39, its last release, has wheels for these only


def require_nnabla(feature):
    """Raise a one-line UnmixError saying how to get NNabla when it cannot be imported.

    Separating, converting, exporting and evaluating need no NNabla; `feature` (training, the
    NNabla backend, the GPU) does, and NNabla exists for Python 3.8-3.10 only.
    """
    try:
        import nnabla  # noqa: F401
    except ImportError as exc:
        version = "%d.%d" % sys.version_info[:2]
        if sys.version_info[:2] in NNABLA_PYTHONS:
            raise UnmixError(f"{feature} needs NNabla, which does not import here ({exc}): "
                             "install it with `pip install 'unmix[train]'`") from None
        raise UnmixError(f"{feature} needs NNabla, which runs on Python 3.8-3.10 only (this is Python {version}): "
                         "in a Python 3.10 environment (e.g. `pyenv install 3.10`), `pip install 'unmix[train]'`"
                         ) from None


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    On any exception the temporary file is removed, so a crash or a full disk
    never leaves a half-written file and never clobbers an earlier result.
    `suffix` defaults to the suffix of `path` (writers such as soundfile pick
    the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(parent, name):
    """A hidden temporary folder ``.<name>.XXXX.part`` in `parent`, with the usual permissions."""
    tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    return Path(tmp)


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary folder next to `path` that replaces `path` on success.

    An existing `path` is swapped out and removed only once the new folder is in place (and
    put back if the swap fails); on any exception the temporary folder is removed, so a
    folder appears complete or not at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, path.name)
    old = None
    try:
        yield tmp
        if path.exists():
            old = tmp.with_suffix(".old")
            os.rename(path, old)
        os.rename(tmp, path)
    except BaseException:
        if old is not None and old.exists() and not path.exists():
            os.rename(old, path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
