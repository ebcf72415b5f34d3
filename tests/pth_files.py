"""Checkpoint files written byte by byte, for the tests of the `.pth` reader and of crafted files."""
import io
import pickle
import struct

from unmix.weights import pth


def legacy_pth(path, obj_pickle, keys=(), storages=()):
    """A legacy checkpoint: magic, protocol, sys_info, the object, the keys, the storages."""
    buf = io.BytesIO()
    for header in (pth.LEGACY_MAGIC_NUMBER, pth.LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    buf.write(obj_pickle)
    pickle.dump(list(keys), buf, protocol=2)
    for numel, data in storages:
        buf.write(struct.pack("<q", numel) + data)
    path.write_bytes(buf.getvalue())
    return path
