"""unmix.weights.pth: torch's zip and legacy checkpoints read without torch, and never run.

The .pth fixtures were written by torch itself (tools/fixtures/make_parity_fixtures.py); the
malicious and malformed files are crafted here with plain pickle and raw opcodes.
"""
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from unmix.weights import pth
from unmix.errors import UnmixError
from conftest import FIXTURES
from pth_files import legacy_pth



@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "parity_pth_expected.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", ["parity_pth_zip.pth", "parity_pth_legacy.pth"])
def test_reads_torch_formats_exactly(name, expected):
    loaded = pth.load(FIXTURES / name)
    assert list(loaded) == list(expected)  # order of the state dict kept
    for key, want in expected.items():
        got = loaded[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert np.array_equal(got, want), key
        assert got.flags["C_CONTIGUOUS"] and got.flags["OWNDATA"], key
    # the views were saved as views of one storage: strides and offsets were honoured
    assert np.array_equal(loaded["transposed"], loaded["weight"].T)
    assert np.array_equal(loaded["offset_view"], loaded["weight"][2:, 1:4])


def test_unwraps_training_checkpoint(expected):
    raw = pth.load(FIXTURES / "parity_pth_chkpnt.pth")
    assert raw["epoch"] == 3 and raw["best_loss"] == 0.5
    assert raw["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert raw["optimizer"]["state"][0]["exp_avg"].shape == (2, 3)
    sd = pth.load_state_dict(FIXTURES / "parity_pth_chkpnt.pth")
    assert list(sd) == list(expected)
    assert np.array_equal(sd["offset_view"], expected["offset_view"])


# -- crafted files --------------------------------------------------------------------------
def _zip_pth(path, data_pkl, storages=None, byteorder=None):
    """A zip-format checkpoint laid out as torch writes it."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        if byteorder:
            z.writestr("archive/byteorder", byteorder)
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)
    return path


def _tensor_pickle(numel, offset, size, stride, storage="FloatStorage"):
    """Raw opcodes for OrderedDict(w=<tensor on storage '0'>), as torch pickles a state dict."""
    ints = lambda values: b"(" + b"".join(b"I%d\n" % v for v in values) + b"t"  # noqa: E731
    return (b"ccollections\nOrderedDict\n)R("
            b"Vw\nctorch._utils\n_rebuild_tensor_v2\n("
            b"(Vstorage\nctorch\n" + storage.encode() + b"\nV0\nVcpu\nI%d\ntQ" % numel
            + b"I%d\n" % offset + ints(size) + ints(stride) + b"I00\n)tRu.")


def test_crafted_tensor_pickle_in_both_formats(tmp_path):
    data = np.arange(10, dtype="<f4").tobytes()
    want = np.arange(10, dtype=np.float32)[1:].reshape(3, 3)[:, :2]
    zipped = _zip_pth(tmp_path / "z.pth", _tensor_pickle(10, 1, (3, 2), (3, 1)), {"0": data})
    legacy = legacy_pth(tmp_path / "l.pth", _tensor_pickle(10, 1, (3, 2), (3, 1)), ["0"], [(10, data)])
    for path in (zipped, legacy):
        assert np.array_equal(pth.load_state_dict(path)["w"], want)


def test_big_endian_zip(tmp_path):
    data = np.array([1.5, -2.0, 3.25], dtype=">f8").tobytes()
    path = _zip_pth(tmp_path / "be.pth", _tensor_pickle(3, 0, (3,), (1,), "DoubleStorage"), {"0": data}, "big")
    got = pth.load(path)["w"]
    assert got.dtype == np.float64 and got.dtype.isnative
    assert np.array_equal(got, [1.5, -2.0, 3.25])


@pytest.mark.parametrize("numel, offset, size, stride", [
    (4, 0, (2, 3), (3, 1)),   # reaches element 5 of 4: would read foreign memory
    (10, 9, (2,), (1,)),      # offset past the end
    (10, 0, (2,), (-1,)),     # negative stride
])
def test_tensor_outside_its_storage_is_refused(tmp_path, numel, offset, size, stride):
    data = np.zeros(numel, dtype="<f4").tobytes()
    path = _zip_pth(tmp_path / "bad.pth", _tensor_pickle(numel, offset, size, stride), {"0": data})
    with pytest.raises(UnmixError, match="malformed checkpoint"):
        pth.load(path)


def test_tensor_cannot_be_rewritten_after_its_checks(tmp_path):
    # BUILD on the built tensor would set a size that its storage cannot hold
    data = _tensor_pickle(4, 0, (2,), (1,))[:-2] + b"(Vsize\n(I1000000\ntdbu."
    path = _zip_pth(tmp_path / "build.pth", data, {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(UnmixError, match="tries to modify a tensor"):
        pth.load(path)


def test_storage_shorter_than_declared_is_refused(tmp_path):
    path = _zip_pth(tmp_path / "short.pth", _tensor_pickle(10, 0, (10,), (1,)), {"0": b"\0" * 16})
    with pytest.raises(UnmixError, match="has 4 elements, 10 expected"):
        pth.load(path)


class _RunsCode:
    """Unpickling this with plain pickle would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _payloads(marker):
    """Pickles that would run code: via __reduce__, and via raw GLOBAL / STACK_GLOBAL opcodes."""
    return {
        "reduce": pickle.dumps({"w": _RunsCode(marker)}, protocol=2),
        "global": b"cbuiltins\nexec\n(Vopen(%r, 'w').close()\ntR." % str(marker).encode(),
        "stack_global": pickle.dumps(_RunsCode(marker), protocol=4),
        "dotted": b"ccollections\nOrderedDict.__init__\n.",  # an allowed module, a name outside the list
    }


@pytest.mark.parametrize("payload", ["reduce", "global", "stack_global", "dotted"])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_code_in_pickle_is_refused_and_not_run(tmp_path, fmt, payload):
    marker = tmp_path / "ran"
    data = _payloads(marker)[payload]
    path = tmp_path / "evil.pth"
    _zip_pth(path, data) if fmt == "zip" else legacy_pth(path, data)
    with pytest.raises(UnmixError, match=r"refusing to load .*evil\.pth: it asks to import \S+, "
                                         r"which a state dict never needs"):
        pth.load(path)
    assert not marker.exists()


def test_code_in_legacy_header_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(UnmixError, match="asks to import posix.system|asks to import os.system"):
        pth.load(path)
    assert not marker.exists()


def test_whole_module_pickle_is_refused(tmp_path):
    # torch.save(model) pickles the module's class: the reader names it instead of importing it
    data = b"\x80\x02copenunmix.model\nOpenUnmix\n)\x81."
    with pytest.raises(UnmixError, match="asks to import openunmix.model.OpenUnmix"):
        pth.load(_zip_pth(tmp_path / "m.pth", data))


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("just some text\n")
    with pytest.raises(UnmixError, match="notes.pth"):
        pth.load(path)
    with pytest.raises(UnmixError, match="does not exist"):
        pth.load(tmp_path / "absent.pth")


def test_truncated_legacy_file(tmp_path):
    data = (FIXTURES / "parity_pth_legacy.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:-10])
    with pytest.raises(UnmixError, match="truncated"):
        pth.load(path)


def test_no_state_dict_inside(tmp_path):
    path = _zip_pth(tmp_path / "list.pth", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(UnmixError, match="holds no state dict"):
        pth.load_state_dict(path)
