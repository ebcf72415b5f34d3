"""unmix.training.loader: batches, epochs, worker processes, shared memory and its cleanup."""
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from ramps import SEQ, SEQ_LEN, make_musdb, make_trackfolder, ramp, write

import unmix.training.loader
from unmix.training import datasets
from unmix.errors import UnmixError
from unmix.training.loader import DataLoader


def test_loader_batches_and_epochs(tmp_path):
    root = make_musdb(tmp_path, ["A", "B", "C"])
    ds = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=3)
    loader = DataLoader(ds, batch_size=4)
    assert len(loader) == 2
    assert len(DataLoader(ds, 4, drop_last=False)) == 3
    first = list(loader)
    assert [b[0].shape for b in first] == [(4, 2, SEQ_LEN)] * 2
    order = loader.batch_indices(0)[0]
    np.testing.assert_array_equal(first[0][1][2], ds.get(order[2], 0)[1])
    second = list(loader)  # the next epoch
    assert not np.array_equal(first[0][0], second[0][0])
    loader.set_epoch(0)
    np.testing.assert_array_equal(list(loader)[1][0], first[1][0])
    unshuffled = DataLoader(ds, 3, shuffle=False, drop_last=False)
    np.testing.assert_array_equal(unshuffled.batch_indices(5)[2], [6, 7, 8])


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_loading_matches_single_process(tmp_path, start_method):
    root = make_musdb(tmp_path, ["A", "B", "C"])
    ds = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=4,
                           source_augmentations=["gain", "channelswap"], random_track_mix=True)
    serial = DataLoader(ds, 2, nb_workers=0, seed=5)
    parallel = DataLoader(ds, 2, nb_workers=2, seed=5, prefetch=1, start_method=start_method)
    serial.set_epoch(3)
    parallel.set_epoch(3)
    batches = list(parallel)
    assert len(batches) == len(serial) == 6
    for (x0, y0), (x1, y1) in zip(serial, batches):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)
    assert multiprocessing.active_children() == []


def test_worker_errors_and_early_stop(tmp_path):
    root = make_musdb(tmp_path, ["A", "B"])
    ds = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=4)
    loader = DataLoader(ds, 2, nb_workers=2)
    for _ in loader:
        break  # workers still loading must be stopped
    assert multiprocessing.active_children() == []
    assert list(Path("/dev/shm").glob(f"unmix_{os.getpid()}_*")) == []  # no batch left behind
    (root / "train" / "A" / "bass.wav").write_bytes(b"gone")
    with pytest.raises(UnmixError, match="cannot read audio file"):
        list(DataLoader(ds, 8, nb_workers=2))
    assert multiprocessing.active_children() == []


class DyingDataset(datasets.UnmixDataset):
    """Two samples; the worker loading the second one dies."""

    def __len__(self):
        return 2

    def _get(self, index, rng):
        if index == 1:
            os._exit(3)
        return np.zeros((1, 4)), np.zeros((1, 4))


def test_dead_worker_is_reported():
    loader = DataLoader(DyingDataset(), 1, shuffle=False, nb_workers=1, start_method="fork")
    with pytest.raises(RuntimeError, match="data worker died"):
        list(loader)
    assert multiprocessing.active_children() == []


def test_full_tracks_of_different_length_need_batch_size_one(tmp_path):
    root = make_trackfolder(tmp_path, "valid", 2, ["vocals.wav", "bass.wav"])
    write(tmp_path / "valid" / "01" / "vocals.wav", ramp(1, 0, frames=6000))
    write(tmp_path / "valid" / "01" / "bass.wav", ramp(1, 1, frames=6000))
    make_trackfolder(root, "train", 1, ["vocals.wav", "bass.wav"])
    ds = datasets.FixedSourcesTrackFolderDataset(root, split="valid", interferer_files=["bass.wav"])
    assert [b[0].shape for b in DataLoader(ds, 1, shuffle=False)] == [(1, 2, 8000), (1, 2, 6000)]
    with pytest.raises(UnmixError, match="use batch_size=1"):
        list(DataLoader(ds, 2))


class ZerosDataset(datasets.UnmixDataset):
    """Eight samples of zeros, slow enough that batches queue up behind the first."""

    def __len__(self):
        return 8

    def _get(self, index, rng):
        return np.zeros((2, 50000), np.float32), np.zeros((2, 50000), np.float32)


ORPHAN_PARENT = """
import multiprocessing, os, signal, sys
sys.path[:0] = [{here!r}, {tests!r}]  # this test's folder, and tests/ for the helpers it imports
from test_loader import ZerosDataset
from unmix.training.loader import DataLoader
loader = DataLoader(ZerosDataset(), 1, shuffle=False, nb_workers=1, prefetch=3, start_method="fork")
batches = iter(loader)  # held: a dropped iterator stops its workers
next(batches)
print(os.getpid(), *[p.pid for p in multiprocessing.active_children()], flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # like the out-of-memory killer: no cleanup runs here
"""


def test_workers_of_a_killed_parent_exit_and_remove_their_blocks():
    import subprocess
    import sys
    import time

    child = subprocess.run([sys.executable, "-c", ORPHAN_PARENT.format(here=str(Path(__file__).parent),
                                                                           tests=str(Path(__file__).parents[1]))],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -9, child.stderr
    parent, *workers = [int(p) for p in child.stdout.split()]
    assert len(workers) == 1
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{p}").exists() for p in workers)  # the orphan exited by itself
    # and removed the batches it had loaded ahead for the dead parent
    assert list(Path("/dev/shm").glob(f"unmix_{parent}_*")) == []


def test_a_full_dev_shm_is_a_clear_error(monkeypatch):
    import errno

    def no_room(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(unmix.training.loader.os, "posix_fallocate", no_room)
    name = f"unmix_test_{os.getpid()}_full"
    with pytest.raises(UnmixError, match=r"/dev/shm has no room for a batch of 2 MB .*--shm-size"):
        unmix.training.loader._to_shared((np.zeros(2**18, np.float32), np.zeros(2**18, np.float32)), name)
    assert not Path("/dev/shm", name).exists()  # the block made for it is removed again
