"""Names that become paths, and moves that never replace.

A name read from a file (a checkpoint's target names, separator.json, an input's file name, a
`--residual`, a rendered `--filename` template) is data, not a path: `safe_name` lets through
only what can be one file name, and `inside` proves that a path built from such names lies in
the folder the user chose once every link is resolved. `move_no_replace` renames a finished
file or folder onto its name only if nothing has that name at that very moment, so two runs
writing into one folder can never both say "wrote" while one silently replaced the other.
"""
import ctypes
import errno
import os
from pathlib import Path

from unmix.errors import UnmixError

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems alike
_SEPARATORS = {sep for sep in (os.sep, os.altsep, "/") if sep}
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def safe_name(name, what):
    """`name` if it can be one file name, else a one-line UnmixError naming `what` it is.

    Refused: anything but a non-empty str, ``.`` and ``..``, a path separator, NUL or other
    control characters (they would break the one-line messages), more than `NAME_MAX` bytes.

    Args:
        what: what the name is, for the message ("target 'x' from model.pth", "residual").
    """
    if not isinstance(name, str):
        raise UnmixError(f"{what} {name!r} is not a name (a string)")
    why = None
    if not name.strip():
        why = "it is empty"
    elif name in (".", ".."):
        why = "it names a folder, not a file"
    elif any(sep in name for sep in _SEPARATORS):
        why = "it holds a path separator"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        why = "it holds control characters"
    elif len(os.fsencode(name)) > NAME_MAX:
        why = f"it is longer than {NAME_MAX} bytes"
    if why:
        raise UnmixError(f"{what} {_short(name)} cannot be a file name: {why}")
    return name


def _short(name, limit=80):
    """`name` quoted for a message, cut when long (repr escapes control characters)."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + "..."


def inside(folder, path):
    """`path` if it lies inside `folder`, with every link of both resolved; else UnmixError.

    The part of `path` below `folder` may hold no ``..`` and no name over `NAME_MAX` bytes, so
    that an output fails here, before any work, rather than when it is renamed into place.

    Returns:
        `path` as a Path.
    """
    folder, path = Path(folder), Path(path)
    try:
        parts = path.relative_to(folder).parts
    except ValueError:  # not even spelled as a path below `folder`
        parts = ("..",)
    if ".." not in parts:
        for part in parts:
            if len(os.fsencode(part)) > NAME_MAX:
                raise UnmixError(f"{path}: the name {_short(part)} is longer than {NAME_MAX} bytes")
    root, real = os.path.realpath(folder), os.path.realpath(path)
    if ".." in parts or real == root or os.path.commonpath([root, real]) != root:
        raise UnmixError(f"{path} would be written outside {folder}; refusing")
    return path


def move_no_replace(src, dst):
    """Rename the file or folder `src` to `dst`, unless `dst` exists at that moment.

    Linux's ``renameat2(RENAME_NOREPLACE)`` checks and renames in one step; elsewhere a file is
    hard-linked to its name (which fails if the name exists) and its old name unlinked, and a
    folder is renamed after a last check (a folder made in between and still empty would be
    replaced: it held nothing).

    Raises:
        FileExistsError: `dst` exists (its ``filename`` is `dst`).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if _renameat2(src, dst):
        return
    if not os.path.isdir(src):
        try:
            os.link(src, dst)
        except FileExistsError:
            raise
        except OSError as exc:  # a file system without hard links: check, then rename
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
        else:
            os.unlink(src)
            return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)


def _renameat2(src, dst):
    """True when renameat2(RENAME_NOREPLACE) moved `src` to `dst`; False when this system or
    file system cannot do it (the caller falls back); FileExistsError when `dst` exists."""
    call = _renameat2_call()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), dst)
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False  # no such call, or a file system that does not support the flag
    raise OSError(code, os.strerror(code), src, None, dst)


_RENAMEAT2 = []


def _renameat2_call():
    """libc's renameat2 (glibc >= 2.28), looked up once; None where there is none."""
    if not _RENAMEAT2:
        call = None
        try:
            call = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
        except OSError:
            pass
        if call is not None:
            call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            call.restype = ctypes.c_int
        _RENAMEAT2.append(call)
    return _RENAMEAT2[0]
