"""unmix.training.checkpoint: the progress survives its JSON, one target's files go without the others', signals wait."""
import json
import os
import signal

import pytest
from conftest import make_model_folder

from unmix.training.checkpoint import CURVES, Checkpoint, holds_training, remove_target, signals_held
from unmix.models.model_folder import read_h5_params, read_separator_json, target_config
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
