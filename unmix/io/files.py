"""Writing files so that a crash, a signal or a full disk never leaves half a result.

`atomic_path` and `atomic_folder` write beside the destination and rename onto it on success;
`make_temp_dir` makes the hidden staging folders that such writes use.
"""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path


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
