"""Adversarial cases (issue 22): crafted checkpoints and model folders, hostile names, --force
into foreign folders, a full disk, two runs into one folder.

Every case runs in a sandbox (the test's tmp_path) and checks the message, the exit code, and
that nothing in the sandbox changed outside the folder the command was told to write.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from conftest import RATE, make_model_folder, tone
from pth_files import legacy_pth
from unmix.cli import main
from unmix.errors import UnmixError
from unmix.io import audio as audio_io
from unmix.io import paths
from unmix.separation import stems
from unmix.weights import pth

FIXTURES = Path(__file__).parent / "fixtures"


# -- the sandbox ----------------------------------------------------------------------------
def snapshot(root, skip=()):
    """relative path -> (kind, size, content hash) of everything under `root` but `skip`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            path = here / name
            if path in skip:
                continue
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            data = path.read_bytes() if kind == "file" else b""
            out[str(path.relative_to(root))] = (kind, len(data), hash(data))
    return out


def run(capsys, *argv):
    """`unmix ARGV` -> (exit code, stderr); argparse's usage errors end as SystemExit(2)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, *words, exit_code=1):
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("separating", "\r"))]
    errors = [line for line in lines if "error:" in line]
    assert code == exit_code, err
    assert len(errors) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in errors[0], errors[0]


@pytest.fixture
def sandbox(tmp_path):
    """(root, a file that must survive) with a song and a tiny model in it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    sf.write(tmp_path / "song.wav", tone(0.5).T, RATE)
    make_model_folder(tmp_path / "model")
    return tmp_path


# -- crafted .pth files, written without torch ------------------------------------------------
class _FloatStorage:
    """Stands for torch.FloatStorage while a crafted checkpoint is pickled."""


def _rebuild_tensor_v2(*args):
    raise AssertionError("only pickled by name, never called")


# pickled by these names (found in sys.modules while `write_pth` runs)
_FloatStorage.__module__, _FloatStorage.__qualname__ = "torch", "FloatStorage"
_rebuild_tensor_v2.__module__ = "torch._utils"


def write_pth(path, state_dict, monkeypatch):
    """torch.save's zip layout of {name: float32 array} (storages stored, as torch does),
    written without torch: its two globals are stand-ins registered under torch's names."""
    import io
    import pickle

    utils, torch = types.ModuleType("torch._utils"), types.ModuleType("torch")
    utils._rebuild_tensor_v2, torch.FloatStorage, torch._utils = _rebuild_tensor_v2, _FloatStorage, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    storages = []

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "unmix-test-storage":
                return ("storage", _FloatStorage, str(obj[1]), "cpu", storages[obj[1]].size)
            return None

        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray):
                array = np.require(obj, "<f4", "C")  # keeps 0-d arrays 0-d
                storages.append(array.ravel())
                stride = tuple(s // 4 for s in array.strides)
                return _rebuild_tensor_v2, (("unmix-test-storage", len(storages) - 1), 0, obj.shape, stride, False,
                                            OrderedDict())
            return NotImplemented

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(OrderedDict(state_dict))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, data in enumerate(storages):
            z.writestr(f"archive/data/{key}", data.tobytes())
    return path


def test_pth_target_names_that_are_paths_are_refused(sandbox, capsys, monkeypatch):
    # a whole open-unmix Separator's state dict names its targets: here an absolute path
    sd = pth.load_state_dict(FIXTURES / "parity_separator.pth")
    evil = str(sandbox / "victim")
    crafted = {k.replace("target_models.bass.", f"target_models.{evil}."): v for k, v in sd.items()}
    src = write_pth(sandbox / "crafted.pth", crafted, monkeypatch)
    before = snapshot(sandbox)
    code, err = run(capsys, "convert", src, sandbox / "out")
    assert_one_line_error(code, err, repr(evil), "cannot be a file name")
    assert snapshot(sandbox) == before


def test_h5_with_a_hostile_group_name_is_refused(sandbox, capsys):
    with h5py.File(sandbox / "sony.h5", "w") as f:
        f["../fc1/affine/W"] = np.zeros((4, 2), np.float32)
        f["../input_mean"] = np.zeros(2, np.float32)
    before = snapshot(sandbox)
    code, err = run(capsys, "convert", sandbox / "sony.h5", sandbox / "out")
    assert_one_line_error(code, err, "'..'", "cannot be a file name")
    assert snapshot(sandbox) == before


def crafted_model(folder, **changes):
    """The sandbox's tiny model, copied with separator.json edited (key -> value; None drops)."""
    shutil.copytree(folder.parent / "model", folder)
    meta = json.loads((folder / "separator.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    if "targets" in changes:
        config = next(iter(meta["models"].values()))
        meta["models"] = {t: config for t in changes["targets"]}
    for config in meta["models"].values():  # config=dict(...): every target's config edited
        config.update(changes.get("config", {}))
    meta.pop("config", None)
    (folder / "separator.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("command", ["separate", "export"])
@pytest.mark.parametrize("targets", [["../../victim"], ["vocals", "/tmp/unmix-safety-victim"], ["a\nb"], [""]])
def test_separator_json_targets_that_are_paths_are_refused(sandbox, capsys, command, targets):
    model = crafted_model(sandbox / "crafted", targets=targets)
    before = snapshot(sandbox)
    argv = [sandbox / "song.wav", "--model", model, "--outdir", sandbox / "out"] if command == "separate" \
        else [model, sandbox / "out"]
    code, err = run(capsys, command, *argv)
    assert_one_line_error(code, err, "separator.json", "cannot be a file name")
    assert snapshot(sandbox) == before and not Path("/tmp/unmix-safety-victim.wav").exists()


@pytest.mark.parametrize("changes, message", [
    (dict(n_fft=-4096), "n_fft must be an integer from 16"),
    (dict(n_hop=0), "n_hop must be an integer from 1 to 2048"),
    (dict(n_hop=10**9), "n_hop must be an integer from 1 to 2048"),
    (dict(sample_rate="44100"), "sample_rate must be a number"),
    (dict(sample_rate=1), "sample_rate must be a number from 1000"),
    (dict(sample_rate=float("nan")), "sample_rate must be a number"),
    (dict(nb_channels=3), "nb_channels must be an integer from 1 to 2"),
    (dict(targets="vocals"), "'targets' must be a list"),
    (dict(config={"hidden_size": -8}), "hidden_size must be an integer"),
    (dict(config={"nb_layers": 10**6}), "nb_layers must be an integer from 1 to 16"),
    (dict(architecture="../x"), "unknown architecture"),
])
def test_absurd_separator_json_values_are_one_line_errors(sandbox, capsys, changes, message):
    model = crafted_model(sandbox / "crafted", **changes)
    before = snapshot(sandbox)
    code, err = run(capsys, "separate", sandbox / "song.wav", "--model", model, "--outdir", sandbox / "out")
    assert_one_line_error(code, err, message)
    assert snapshot(sandbox) == before


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_hdf5_internals_are_one_line_errors(sandbox, capsys, damage):
    model = crafted_model(sandbox / "crafted")
    path = model / "vocals.h5"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    else:  # the object headers and heaps near the start: h5py raised KeyError / RuntimeError here
        for pos in range(600, 1400, 97):
            data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
    before = snapshot(sandbox)
    code, err = run(capsys, "export", model, sandbox / "out")
    assert_one_line_error(code, err, "vocals.h5")
    assert snapshot(sandbox) == before


def test_h5_dataset_larger_than_its_file_is_refused(sandbox):
    path = sandbox / "big.h5"
    with h5py.File(path, "w") as f:  # chunked and never written: 40 GB declared in a few kB
        f.create_dataset("input_mean", shape=(10**10,), dtype="f4", chunks=(1024,))
    from unmix.models.model_folder import read_h5_params

    with pytest.raises(UnmixError, match="declares 40000000000 bytes, more than the file holds"):
        read_h5_params(path)


# -- .pth allocation bounds ---------------------------------------------------------------------
def _tensor_pickle(numel, size, stride):
    ints = lambda values: b"(" + b"".join(b"I%d\n" % v for v in values) + b"t"  # noqa: E731
    return (b"ccollections\nOrderedDict\n)R(Vw\nctorch._utils\n_rebuild_tensor_v2\n("
            b"(Vstorage\nctorch\nFloatStorage\nV0\nVcpu\nI%d\ntQI0\n" % numel
            + ints(size) + ints(stride) + b"I00\nccollections\nOrderedDict\n)RtRu.")


def _zip(path, data_pkl, storages, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("archive/data.pkl", data_pkl)
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
    return path


@pytest.mark.parametrize("size, stride, message", [
    ((10**6, 10**6), (0, 0), "a tensor of 1000000000000 elements views a storage of 4"),
    ((4, 10**9), (1, 0), "views a storage of 4"),
    ((2, 2), (0, 1), "zero stride"),
])
def test_pth_views_larger_than_their_storage_are_refused(tmp_path, size, stride, message):
    path = _zip(tmp_path / "x.pth", _tensor_pickle(4, size, stride), {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(UnmixError, match=message):
        pth.load(path)


def test_pth_zip_bomb_is_refused_before_inflating(tmp_path):
    # 64 MB of zeros deflate to 64 kB: torch never compresses, so a compressed storage is refused
    numel = 16 * 2**20
    path = _zip(tmp_path / "bomb.pth", _tensor_pickle(numel, (numel,), (1,)), {"0": bytes(4 * numel)},
                compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    with pytest.raises(UnmixError, match="compressed, which torch never writes"):
        pth.load(path)


def test_pth_sizes_declared_beyond_the_file_are_refused(tmp_path):
    # legacy: a storage that declares 2^40 elements after the pickles; zip: an entry that says it is
    # larger than the archive
    path = legacy_pth(tmp_path / "legacy.pth", _tensor_pickle(2**40, (2,), (1,)), keys=["0"],
                       storages=[(2**40, b"\0" * 8)])
    with pytest.raises(UnmixError, match="truncated"):
        pth.load(path)
    path = _zip(tmp_path / "zip.pth", _tensor_pickle(4, (4,), (1,)), {"0": np.zeros(4, "<f4").tobytes()})
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"archive/data/0")  # central directory record: sizes 4 and 8 bytes before the name's header end
    header = data.rfind(b"PK\x01\x02", 0, entry)
    struct.pack_into("<I", data, header + 24, 2**31)  # uncompressed size
    path.write_bytes(bytes(data))
    with pytest.raises(UnmixError, match="malformed checkpoint|cannot read"):
        pth.load(path)


# -- names from the inputs and the options --------------------------------------------------------
def test_input_names_stay_inside_outdir(sandbox, capsys):
    (sandbox / "in").mkdir()
    dots = sandbox / "in" / "...wav"  # its stem is '..'
    shutil.copy(sandbox / "song.wav", dots)
    out = sandbox / "out"
    before = snapshot(sandbox, skip={out})
    code, err = run(capsys, "separate", dots, "--model", sandbox / "model", "--outdir", out, "--niter", "0")
    assert_one_line_error(code, err, "'..'", "cannot be a file name")
    # <folder>/../mixture.wav is named after the folder the path really is in
    shutil.copy(sandbox / "song.wav", sandbox / "in" / "mixture.wav")
    (sandbox / "in" / "sub").mkdir()
    code, _ = run(capsys, "separate", sandbox / "in" / "sub" / ".." / "mixture.wav", "--model", sandbox / "model",
                  "--outdir", out, "--niter", "0")
    assert code == 0 and sorted(p.name for p in (out / "in").iterdir())[0] == "bass.wav"
    for name in ("in/mixture.wav", "in/sub"):
        before[name] = snapshot(sandbox)[name]
    assert snapshot(sandbox, skip={out}) == before


@pytest.mark.parametrize("option, value", [
    ("--residual", "../victim"), ("--residual", str(Path("/tmp") / "unmix-safety-victim")), ("--residual", ".."),
    ("--filename", "{track.__class__}/{target}.{ext}"), ("--filename", "{target}/../../{track}.{ext}"),
    ("--filename", "{track[0]}/{target}.{ext}"),
])
def test_names_in_options_are_usage_errors(sandbox, capsys, option, value):
    before = snapshot(sandbox)
    code, err = run(capsys, "separate", sandbox / "song.wav", "--model", sandbox / "model", "--outdir",
                    sandbox / "out", "--targets", "vocals", option, value)
    assert code == 2 and "Traceback" not in err and option in err
    assert snapshot(sandbox) == before


def test_a_residual_name_is_checked_by_the_api_too(sandbox):
    from unmix.separation.separator import load_separator

    with pytest.raises(UnmixError, match="residual name '../victim' cannot be a file name"):
        load_separator(sandbox / "model", targets=["vocals"], residual="../victim")
    assert not [t for t in threading.enumerate() if t.name == "unmix-warm-up"], "no warm-up after an early error"


def test_a_link_out_of_outdir_is_not_followed(sandbox, capsys):
    out = sandbox / "out"
    out.mkdir()
    (sandbox / "elsewhere").mkdir()
    (out / "song").symlink_to(sandbox / "elsewhere")
    before = snapshot(sandbox)
    code, err = run(capsys, "separate", sandbox / "song.wav", "--model", sandbox / "model", "--outdir", out,
                    "--force")
    assert_one_line_error(code, err, "outside")
    assert snapshot(sandbox) == before


def test_long_names_fail_before_the_work_or_not_at_all(sandbox, capsys):
    name = "n" * 240  # fits: only the hidden staging name ".<name>.XXXX.part" would not
    shutil.copy(sandbox / "song.wav", sandbox / f"{name}.wav")
    code, _ = run(capsys, "separate", sandbox / f"{name}.wav", "--model", sandbox / "model", "--outdir",
                  sandbox / "out", "--niter", "0")
    assert code == 0 and (sandbox / "out" / name / "vocals.wav").is_file()
    code, err = run(capsys, "separate", sandbox / f"{name}.wav", "--model", sandbox / "model", "--outdir",
                    sandbox / "flat", "--filename", "{track}_{target}_stem.{ext}", "--niter", "0")
    assert_one_line_error(code, err, "longer than 255 bytes")
    assert not (sandbox / "flat").exists() or not any((sandbox / "flat").iterdir())


def test_wav_header_with_a_tiny_sample_rate(sandbox, capsys):
    sf.write(sandbox / "slow.wav", np.full((20000, 2), 0.1, np.float32), 1)
    before = snapshot(sandbox, skip={sandbox / "out"})
    code, err = run(capsys, "separate", sandbox / "slow.wav", "--model", sandbox / "model", "--outdir",
                    sandbox / "out")
    assert_one_line_error(code, err, "header says 1 Hz")
    assert snapshot(sandbox, skip={sandbox / "out"}) == before


# -- --force ------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["export", "convert"])
def test_force_never_deletes_what_unmix_did_not_write(sandbox, capsys, command):
    out = sandbox / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "separator.json").write_text("{}")
    src = sandbox / "model" if command == "export" else FIXTURES / "parity_stereo_bi.pth"
    before = snapshot(sandbox)
    code, err = run(capsys, command, src, out, "--force")
    assert_one_line_error(code, err, "thesis.tex", "unmix did not write")
    assert snapshot(sandbox) == before
    (out / "thesis.tex").unlink()  # a model folder unmix wrote is replaced
    assert run(capsys, command, src, out, "--force")[0] == 0 and (out / "separator.json").stat().st_size > 2


def test_force_onto_a_file_that_is_not_an_unmix_graph(sandbox, capsys):
    (sandbox / "notes.onnx").write_text("not a graph")
    before = snapshot(sandbox)
    code, err = run(capsys, "export", sandbox / "model", sandbox / "notes.onnx", "--targets", "vocals", "--force")
    assert_one_line_error(code, err, "not an ONNX graph that unmix wrote")
    assert snapshot(sandbox) == before


# -- existence checked at the moment of writing ---------------------------------------------------
def test_move_no_replace_keeps_what_is_there(tmp_path):
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("theirs")
    with pytest.raises(FileExistsError):
        paths.move_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "theirs" and (tmp_path / "a").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "e").mkdir()
    with pytest.raises(FileExistsError):
        paths.move_no_replace(tmp_path / "d", tmp_path / "e")
    paths.move_no_replace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "new" and not (tmp_path / "a").exists()


@pytest.mark.parametrize("template", ["{track}/{target}.{ext}", "{track}_{target}.{ext}"])
def test_a_run_that_writes_first_is_never_replaced(sandbox, capsys, monkeypatch, template):
    """Another run writes the same stems while this one separates: this one says so and keeps
    theirs, with no stem of its own left (exit 1)."""
    out = sandbox / "out"
    theirs = out / template.format(track="song", target="drums", ext="wav")
    real = stems._write_behind

    def other_run_finishes_first(chunks, write):
        real(chunks, write)
        theirs.parent.mkdir(parents=True, exist_ok=True)
        theirs.write_text("the other run's stem")

    monkeypatch.setattr(stems, "_write_behind", other_run_finishes_first)
    code, err = run(capsys, "separate", sandbox / "song.wav", "--model", sandbox / "model", "--outdir", out,
                    "--filename", template, "--niter", "0")
    assert_one_line_error(code, err, str(theirs), "exists")
    assert theirs.read_text() == "the other run's stem"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        [theirs.relative_to(out).as_posix()]


# -- a full disk ----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 300 kB tmpfs (root only), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("ext", [".mp3", ".wav", ".flac"])
def test_full_disk_never_says_wrote(sandbox, small_disk, capsys, ext):
    long_song = sandbox / "long.wav"
    sf.write(long_song, np.tile(tone(), 5).T, RATE)  # 5 s: its four stems do not fit in 300 kB
    code, err = run(capsys, "separate", long_song, "--model", sandbox / "model", "--outdir", small_disk / "out",
                    "--ext", ext, "--clip-mode", "clamp", "--niter", "0")
    assert_one_line_error(code, err, "could not write")
    assert "wrote" not in capsys.readouterr().out
    assert not [p for p in (small_disk / "out").rglob("*") if p.is_file()], "nothing half-written is left"


def test_a_truncated_mp3_is_caught(tmp_path):
    with audio_io.open_writer(tmp_path / "x.mp3", RATE, 2) as writer:
        writer.write(np.tile(tone(), 4))
    data = (tmp_path / "x.mp3").read_bytes()
    (tmp_path / "x.mp3").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnmixError, match=r"holds 2\.\d+ of 4\.00 s"):
        audio_io._check_mp3(tmp_path / "x.mp3", 4 * RATE, RATE)


# -- the environment --------------------------------------------------------------------------------
def test_model_cache_that_is_a_file(sandbox, capsys, monkeypatch):
    monkeypatch.setenv("UNMIX_CACHE", str(sandbox / "victim.txt"))
    before = snapshot(sandbox)
    code, err = run(capsys, "export", "umxhq", sandbox / "out")
    assert_one_line_error(code, err, "victim.txt", "is a file, not a folder")
    assert snapshot(sandbox) == before


def test_model_cache_on_a_read_only_file_system(tmp_path, capsys, monkeypatch):
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        monkeypatch.setenv("UNMIX_CACHE", str(mount / "cache"))
        code, err = run(capsys, "export", "umxhq", tmp_path / "out")
        assert_one_line_error(code, err, "cannot use the model cache", "Read-only file system")
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_scheduler_that_went_away_is_one_line():
    from unmix import cluster

    class FutureCancelledError(Exception):
        pass

    lost = FutureCancelledError("key cancelled for reason: scheduler-connection-lost.\nClient lost the connection")
    assert cluster._task_error(lost, "tcp://h:1") == \
        "the dask scheduler at tcp://h:1 went away before this task finished: run it again"
    assert cluster._task_error(ValueError("a\nb"), "tcp://h:1") == "ValueError: a b"
