"""unmix.training.checkpoint: the progress survives its JSON, one target's files go without the others', signals wait,
one run per target and folder."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import make_model_folder

from unmix.errors import UnmixError
from unmix.training.checkpoint import (CURVES, Checkpoint, holds_training, lock_training, lock_trainings, remove_target,
                                      signals_held)
from unmix.models.model_folder import check_replaceable, read_h5_params, read_separator_json, target_config
from unmix.training.schedules import EarlyStopping, ReduceLROnPlateau

LOSSES = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75]


def new_state():
    return Checkpoint(ReduceLROnPlateau(1e-3, factor=0.3, patience=1, cooldown=1), EarlyStopping(patience=3))


def run_epochs(state, losses, first_epoch=1):
    """Step the schedules on `losses` as `unmix.training.train.run_epoch` does; returns the (lr, stop) decisions."""
    decisions = []
    for epoch, loss in enumerate(losses, start=first_epoch):
        lr = state.scheduler.lr
        state.scheduler.step(loss)
        stop = state.stopper.step(loss)
        state.record(epoch, loss == state.stopper.best, 2 * loss, loss, lr, 0.5, 0.25)
        decisions.append((state.scheduler.lr, stop))
    return decisions


def test_progress_survives_its_json():
    full = new_state()
    expected = run_epochs(full, LOSSES)
    half = new_state()
    run_epochs(half, LOSSES[:3])
    saved = json.loads(json.dumps({"target": "vocals", **half.to_json()}))  # strict JSON on disk
    assert saved["epochs_trained"] == 3 and saved["best_epoch"] == 2 and saved["best_loss"] == 0.8
    assert saved["valid_loss_history"] == LOSSES[:3] and saved["lr_history"] == [1e-3] * 3
    assert saved["total_time"] == pytest.approx(3 * 0.75)
    resumed = new_state()
    resumed.load_json(saved)
    assert (resumed.epoch, resumed.best_epoch) == (3, 2)
    assert run_epochs(resumed, LOSSES[3:], first_epoch=4) == expected[3:]
    assert resumed.to_json() == full.to_json()
    assert list(resumed.curves) == list(CURVES)


def test_remove_target_leaves_the_other_targets(tmp_path):
    folder = make_model_folder(tmp_path / "model", targets=["vocals", "drums", "bass"])
    for name in ("vocals.json", "vocals.chkpnt.h5", "vocals.solver.h5", "vocals_loss.png", "drums.json"):
        (folder / name).write_text("old run")
    drums = read_h5_params(folder / "drums.h5")
    assert holds_training(folder, "vocals")
    remove_target(folder, "vocals")
    assert not holds_training(folder, "vocals")
    assert sorted(p.name for p in folder.iterdir()) == ["bass.h5", "drums.h5", "drums.json", "separator.json"]
    meta = read_separator_json(folder)
    assert meta["targets"] == ["drums", "bass"] and set(meta["models"]) == {"drums", "bass"}
    assert meta["sample_rate"] == 44100 and meta["n_fft"] == 4096 and meta["n_hop"] == 1024
    assert (folder / "drums.json").read_text() == "old run"
    after = read_h5_params(folder / "drums.h5")
    assert all((after[k] == v).all() for k, v in drums.items())
    assert target_config(folder, "bass").hidden_size == 8
    remove_target(folder, "drums")
    remove_target(folder, "bass")  # the last target takes separator.json along
    assert sorted(p.name for p in folder.iterdir()) == []
    remove_target(folder, "other")  # nothing of it: nothing to do


def test_sigint_is_held_while_writing():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("wrote everything")
    assert done == ["wrote everything"]


def test_no_open_unmix_target_is_added_to_an_xumx_folder(tmp_path):
    from conftest import make_xumx_folder
    from unmix.models.model_folder import add_target
    from unmix.errors import UnmixError
    from unmix.models.model_folder import ModelConfig, read_separator_json

    folder = make_xumx_folder(tmp_path / "x")
    before = (folder / "separator.json").read_text()
    with pytest.raises(UnmixError, match="holds an xumx model"):
        add_target(folder, "piano", ModelConfig(nb_bins=2049, hidden_size=8), 44100.0, 4096, 1024)
    assert (folder / "separator.json").read_text() == before and read_separator_json(folder)["architecture"] == "xumx"


def busy(folder, name, pid):
    return f"^{re.escape(f'{folder} is being trained for {name!r} by another process (pid {pid}); wait for it or choose another --output')}$"


def test_one_training_of_a_target_per_folder_at_a_time(tmp_path):
    folder = tmp_path / "new" / "model"
    lock = lock_training(folder, "vocals")  # makes the folder
    assert (folder / ".vocals.lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(UnmixError, match=busy(folder, "vocals", os.getpid())):
        lock_training(folder, "vocals")
    with lock_training(folder, "bass"):  # another target: its own lock
        assert not holds_training(folder, "vocals")  # a lock is no training
    lock.release()
    lock.release()
    assert list(folder.iterdir()) == []  # a finished run leaves no lock file
    with lock_trainings(folder, ["xumx", "bass", "drums", "vocals", "other"]):  # X-UMX writes its sources' files
        with pytest.raises(UnmixError, match=busy(folder, "vocals", os.getpid())):
            lock_training(folder, "vocals")
    assert list(folder.iterdir()) == []


def test_the_lock_of_a_killed_run_is_free_and_ignored_by_force(tmp_path):
    folder = make_model_folder(tmp_path / "model", targets=["vocals"])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.write(f'{os.getpid()}\\n'); f.flush()\n"
         "print('locked', flush=True); time.sleep(60)", str(folder / ".vocals.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(UnmixError, match=busy(folder, "vocals", holder.pid)):
            lock_training(folder, "vocals")
        with pytest.raises(UnmixError, match="is being trained for 'vocals' by another process; wait"):
            check_replaceable(folder, ["vocals"])  # export/convert --force must not replace it meanwhile
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert (folder / ".vocals.lock").exists()  # left behind, but the kernel dropped the lock
    check_replaceable(folder, ["vocals"])  # not a foreign file
    (folder / ".notes.txt").write_text("mine")
    with pytest.raises(UnmixError, match="holds .notes.txt"):
        check_replaceable(folder, ["vocals"])
    with lock_training(folder, "vocals"):  # taken over
        assert (folder / ".vocals.lock").read_text() == f"{os.getpid()}\n"
    assert not (folder / ".vocals.lock").exists()


def test_a_run_that_locks_the_file_its_holder_just_removed_locks_a_new_one(tmp_path, monkeypatch):
    from unmix.training import checkpoint

    first = lock_training(tmp_path, "vocals")
    old = os.stat(tmp_path / ".vocals.lock").st_ino
    real_flock, calls = checkpoint.fcntl.flock, []

    def flock(file, how):  # the holder finishes between our open and our flock
        calls.append(os.fstat(file.fileno()).st_ino)
        if len(calls) == 1:
            first.release()
        return real_flock(file, how)

    monkeypatch.setattr(checkpoint.fcntl, "flock", flock)
    with lock_training(tmp_path, "vocals"):
        assert len(calls) == 2 and calls[0] == old
        assert os.stat(tmp_path / ".vocals.lock").st_ino == calls[1]
    assert list(tmp_path.iterdir()) == []
