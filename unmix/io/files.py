"""Writing files so that a crash, a signal or a full disk never leaves half a result.

`atomic_path` and `atomic_folder` write beside the destination and rename onto it on success;
`make_temp_dir` makes the hidden staging folders that such writes use. The staging names are
cut short (`STAGING_LABEL`), so a name that fits the file system never fails on its staging name.
"""
import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from unmix.io.paths import move_no_replace

STAGING_LABEL = 40  # characters of a name kept in the hidden staging names (NAME_MAX is 255 bytes)


@contextlib.contextmanager
def atomic_path(path, suffix=None, replace=True):
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    On any exception the temporary file is removed, so a crash or a full disk
    never leaves a half-written file and never clobbers an earlier result.
    `suffix` defaults to the suffix of `path` (writers such as soundfile pick
    the format from it). With `replace` False an existing `path` is kept and
    FileExistsError raised, checked at the rename itself (`move_no_replace`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{_label(path.stem)}.", suffix=f".part{suffix[:STAGING_LABEL]}",
                               dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results get the usual permissions
    try:
        yield Path(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            move_no_replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _label(name):
    """The start of `name` for a staging name: a name near the 255-byte limit must not fail
    on ``.<name>.XXXX.part`` when it would fit itself."""
    return name[:STAGING_LABEL]


def make_temp_dir(parent, name):
    """A hidden temporary folder ``.<name>.XXXX.part`` in `parent` (`name` cut short), with the
    usual permissions."""
    tmp = tempfile.mkdtemp(prefix=f".{_label(name)}.", suffix=".part", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    return Path(tmp)


@contextlib.contextmanager
def atomic_folder(path, replace=None):
    """Yield a temporary folder next to `path` that becomes `path` on success.

    Whether `path` exists is decided at the rename: if it does, `replace` is None (the default)
    raises FileExistsError and keeps it; else ``replace(path)`` is called, which raises unless
    the folder may go (say, it holds only files unmix writes), and the folder is swapped out
    and removed only once the new one is in place (put back if the swap fails). On any
    exception the temporary folder is removed, so a folder appears complete or not at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, path.name)
    old = None
    try:
        yield tmp
        if os.path.lexists(path):
            if replace is None:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
            replace(path)
            old = tmp.with_suffix(".old")
            os.rename(path, old)
            os.rename(tmp, path)
        else:
            move_no_replace(tmp, path)
    except BaseException:
        if old is not None and old.exists() and not path.exists():
            os.rename(old, path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
