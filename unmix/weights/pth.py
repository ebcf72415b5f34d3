"""Read PyTorch ``.pth`` checkpoints without torch, and without running their code.

A ``.pth`` file is a pickle; a plain ``pickle.load`` of a downloaded file runs whatever
the file asks for. Here the unpickler knows only the handful of names a state dict
needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``,
``torch._utils._rebuild_parameter``, the ``torch.*Storage`` types) and builds numpy
arrays from them; any other name is refused before anything is imported.

Both of torch's on-disk formats are read:

- zip (torch >= 1.6): ``<prefix>/data.pkl`` holds the object, each storage is the raw
  entry ``<prefix>/data/<key>``, ``<prefix>/byteorder`` tells the byte order;
- legacy (``_use_new_zipfile_serialization=False``, and files from older torch): a
  sequence of pickles -- magic number, protocol version, sys_info, the object, the
  sorted storage keys -- then per storage an int64 element count and its raw bytes.

Tensors are views (offset, size, stride) into storages; they are materialised as
contiguous arrays only after every storage is known, since the legacy format stores
the data after the object.

A crafted file must not make the reader allocate more than the file honestly holds: every
read is bounded by the bytes the file (or the zip entry) really has left, storages must be
stored uncompressed as torch writes them (so a small archive cannot inflate to gigabytes),
and a tensor may not hold more elements than its storage, nor repeat one (a zero stride).
"""
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from unmix.errors import UnmixError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage type -> numpy dtype of one element (byte order applied when read)
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("f4"),
    "DoubleStorage": np.dtype("f8"),
    "HalfStorage": np.dtype("f2"),
    "BFloat16Storage": np.dtype("u2"),  # no numpy bfloat16: widened to float32 when read
    "LongStorage": np.dtype("i8"),
    "IntStorage": np.dtype("i4"),
    "ShortStorage": np.dtype("i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# keys under which training scripts wrap the weights (open-unmix's train.py: 'state_dict')
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


class _Sealed:
    """Refuses pickle's BUILD opcode, which would otherwise let a file rewrite a tensor's
    size or stride after it was checked (and so read past its storage)."""

    def __setstate__(self, state):
        raise UnmixError("malformed checkpoint: it tries to modify a tensor or storage after building it")


class _StorageType(_Sealed):
    """Stands for ``torch.<name>`` (e.g. FloatStorage) inside the pickle."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _StorageRef(_Sealed):
    """A storage named in the pickle: `numel` elements of `dtype` starting at element `offset` of `key`."""

    def __init__(self, key, storage_type, numel, offset=0):
        self.key, self.storage_type, self.numel, self.offset = key, storage_type, numel, offset


class _LazyTensor(_Sealed):
    """A tensor view (offset, size, stride in elements) into a storage that may not be read yet."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Stand-in for torch._utils._rebuild_tensor(_v2); requires_grad, hooks, metadata are dropped."""
    if not isinstance(storage, _StorageRef):
        raise UnmixError("malformed checkpoint: a tensor is built from something other than a storage")
    ints = [storage_offset, *size, *stride]
    if not all(isinstance(v, int) and v >= 0 for v in ints) or len(size) != len(stride):
        raise UnmixError(f"malformed checkpoint: bad tensor layout {storage_offset}, {size}, {stride}")
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
    """Stand-in for torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
    return data


ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    # torch.__version__, a str subclass, in the 'infos' of an asteroid package: read as the str
    ("torch.torch_version", "TorchVersion"): str,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """An unpickler that resolves only the names in ALLOWED and torch's storage ids."""

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnmixError(
                f"refusing to load {self.path}: it asks to import {module}.{name}, which a state dict never needs"
            ) from None

    def persistent_load(self, pid):
        """torch's id of a storage: ('storage', type, key, location, numel[, view_metadata])."""
        ok = isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
        if not ok or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int):
            raise UnmixError(f"malformed checkpoint {self.path}: unexpected persistent id")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        offset, view = 0, pid[5] if len(pid) == 6 else None
        if view is not None:  # very old torch: a view (view_key, offset, size) of storage `key`
            _, offset, numel = view
        if not all(isinstance(v, int) and v >= 0 for v in (offset, numel)):
            raise UnmixError(f"malformed checkpoint {self.path}: bad storage size")
        return _StorageRef(key, storage_type, numel, offset)


class _Bounded:
    """A binary file that refuses reads beyond the `left` bytes it really holds, so that a length
    that a pickle declares (BINBYTES8, say) cannot make the reader allocate it first."""

    def __init__(self, file, left, path):
        self._file, self._left, self._path = file, left, path

    def _take(self, n):
        if n is None or n < 0:
            n = self._left
        if n > self._left:
            raise UnmixError(f"cannot read {self._path}: it declares {n} bytes where {self._left} are left "
                             "(truncated or crafted)")
        return n

    def read(self, n=-1):
        data = self._file.read(self._take(n))
        self._left -= len(data)
        return data

    def readinto(self, buffer):
        with memoryview(buffer) as view:
            n = self._file.readinto(view[: self._take(len(view))])
        self._left -= n
        return n

    def readline(self, limit=-1):
        line = self._file.readline(self._left if limit is None or limit < 0 else min(limit, self._left))
        self._left -= len(line)
        return line


def _unpickle(file, path):
    try:
        return _Unpickler(file, path).load()
    except UnmixError:
        raise
    except Exception as exc:  # truncated or corrupt pickle: pickle raises many types
        raise UnmixError(f"cannot read {path}: corrupt checkpoint ({type(exc).__name__}: {exc})") from None


def load(path):
    """Load a ``.pth`` file as plain Python objects with numpy arrays for tensors.

    Returns whatever was saved (usually an OrderedDict name -> np.ndarray); tensors
    come back as contiguous arrays of their torch dtype (bfloat16 widened to float32).
    """
    path = Path(path)
    if not path.is_file():
        raise UnmixError(f"{path} does not exist")
    try:
        obj, storages = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
        return _materialize(obj, storages, path)
    except RecursionError:  # a pickle can build a container that holds itself
        raise UnmixError(f"malformed checkpoint {path}: self-referencing or too deeply nested") from None
    except MemoryError:
        raise UnmixError(f"cannot read {path}: it needs more memory than this machine has") from None


def load_state_dict(path):
    """name -> np.ndarray from a ``.pth`` state dict, or a checkpoint that wraps one.

    open-unmix's training writes ``<target>.pth`` (the state dict) and
    ``<target>.chkpnt`` ({'state_dict': ..., 'optimizer': ..., 'epoch': ...}).
    """
    return state_dict_from(load(path), path)


def state_dict_from(obj, path):
    """The state dict in an object that `load` returned (itself, or what a checkpoint wraps)."""
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise UnmixError(f"{path} holds no state dict (expected a mapping of names to tensors)")
    return {str(k): v for k, v in obj.items()}


# -- the two container formats ----------------------------------------------------------
def _load_zip(path):
    """The object, and key -> raw bytes of each storage, of a zip-format checkpoint."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise UnmixError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            byteorder = "little"  # files from before torch wrote the record are little-endian
            if prefix + "byteorder" in names:
                byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            with archive.open(pkl[0]) as f:
                obj = _unpickle(_Bounded(f, archive.getinfo(pkl[0]).file_size, path), path)
            raw = {}
            for key, ref in _storage_refs(obj).items():
                name = f"{prefix}data/{key}"
                if name not in names:
                    raise UnmixError(f"malformed checkpoint {path}: storage {key} is missing")
                raw[key] = _read_storage(archive, archive.getinfo(name), ref, path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UnmixError(f"cannot read {path}: {exc}") from None
    if byteorder not in ("little", "big"):
        raise UnmixError(f"malformed checkpoint {path}: unknown byte order {byteorder!r}")
    return obj, _Storages(raw, "<" if byteorder == "little" else ">")


def _read_storage(archive, info, ref, path):
    """The bytes of storage `ref` from its zip entry `info`: at most what the storage needs, and
    only from an entry stored uncompressed, as torch writes them, whose size the archive holds."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise UnmixError(f"malformed checkpoint {path}: storage {ref.key} is compressed, which torch never "
                         "writes (refused: a small archive could inflate to gigabytes)")
    if info.file_size != info.compress_size or info.compress_size > os.path.getsize(path):
        raise UnmixError(f"malformed checkpoint {path}: storage {ref.key} declares {info.file_size} bytes, "
                         "more than the archive holds")
    needed = (ref.offset + ref.numel) * ref.storage_type.dtype.itemsize
    with archive.open(info) as f:
        return f.read(min(needed, info.file_size))


def _load_legacy(path):
    """The object and storages of a legacy (pre-zip) checkpoint: pickles, then raw storages."""
    with open(path, "rb") as raw_file:
        head = raw_file.read(262)
        raw_file.seek(0)
        f = _Bounded(raw_file, os.path.getsize(path), path)
        if head[257:262] == b"ustar":
            raise UnmixError(f"{path} uses the tar checkpoint format of torch < 0.4, which is not supported")
        if _unpickle(f, path) != LEGACY_MAGIC_NUMBER:
            raise UnmixError(f"{path} is not a PyTorch checkpoint")
        protocol = _unpickle(f, path)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise UnmixError(f"{path}: unsupported legacy checkpoint protocol {protocol}")
        sys_info = _unpickle(f, path)
        order = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
        obj = _unpickle(f, path)
        keys = _unpickle(f, path)
        refs = _storage_refs(obj)
        if not isinstance(keys, list) or set(map(str, keys)) != set(refs):
            raise UnmixError(f"malformed checkpoint {path}: its storage list does not match its tensors")
        raw = {}
        for key in map(str, keys):
            itemsize = refs[key].storage_type.dtype.itemsize
            count = f.read(8) if f._left >= 8 else b""
            numel = struct.unpack(order + "q", count)[0] if len(count) == 8 else -1
            if numel < 0 or numel * itemsize > f._left:  # checked before reading: no allocation of a lie
                raise UnmixError(f"cannot read {path}: file is truncated")
            data = f.read(numel * itemsize)
            raw[key] = data
    return obj, _Storages(raw, order)


class _Storages:
    """The raw bytes of each storage (key -> bytes) and their byte order."""

    def __init__(self, raw, order):
        self._raw, self._order = raw, order

    def get(self, ref, path):
        """The elements of `ref` as a 1-D array (in the file's byte order)."""
        dtype = ref.storage_type.dtype.newbyteorder(self._order)
        data = self._raw[ref.key]
        if len(data) % dtype.itemsize:
            raise UnmixError(f"malformed checkpoint {path}: storage {ref.key} has a partial element")
        elements = np.frombuffer(data, dtype=dtype)
        if ref.offset + ref.numel > elements.size:
            raise UnmixError(
                f"malformed checkpoint {path}: storage {ref.key} has {elements.size} elements, "
                f"{ref.offset + ref.numel} expected"
            )
        return elements[ref.offset: ref.offset + ref.numel]


def _walk(obj, visit):
    """Apply `visit` to every leaf of nested dicts, lists and tuples, keeping the containers."""
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _walk(v, visit)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_walk(v, visit) for v in obj)
    return visit(obj)


def _storage_refs(obj):
    """key -> _StorageRef of every tensor's storage in `obj` (for the legacy element sizes)."""
    refs = {}

    def visit(leaf):
        if isinstance(leaf, _LazyTensor):
            refs.setdefault(leaf.storage.key, leaf.storage)
        return leaf

    _walk(obj, visit)
    return refs


def _materialize(obj, storages, path):
    """Replace every _LazyTensor in `obj` with a contiguous numpy array."""

    def visit(leaf):
        if isinstance(leaf, _LazyTensor):
            return _tensor(leaf, storages.get(leaf.storage, path), path)
        if isinstance(leaf, (_StorageRef, _StorageType)):
            raise UnmixError(f"{path} holds a bare storage, which a state dict never does")
        return leaf

    return _walk(obj, visit)


def _tensor(t, elements, path):
    """Copy the strided view `t` of the 1-D `elements` into a new C-contiguous native array."""
    native = elements.dtype.newbyteorder("=")
    count = 1
    for n in t.size:
        count *= n
    if count > max(elements.size, 1):  # a view larger than its storage repeats elements: refused before allocating
        raise UnmixError(f"malformed checkpoint {path}: a tensor of {count} elements views a storage of "
                         f"{elements.size}")
    if count == 0:
        out = np.zeros(t.size, dtype=native)
    else:
        if any(s == 0 and n > 1 for n, s in zip(t.size, t.stride)):
            raise UnmixError(f"malformed checkpoint {path}: a tensor has a zero stride (it repeats its elements)")
        last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
        if last >= elements.size:  # as_strided does not check bounds: reading past would read foreign memory
            raise UnmixError(f"malformed checkpoint {path}: a tensor reaches past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            elements[t.offset:],
            shape=t.size,
            strides=[s * elements.itemsize for s in t.stride],
            writeable=False,
        )
        out = np.array(view, dtype=native, order="C")
    if t.storage.storage_type.name == "BFloat16Storage":
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out
