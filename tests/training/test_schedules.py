"""unmix.training.schedules against the learning rates of torch's ReduceLROnPlateau and the stops of the
reference's EarlyStopping, their JSON state and resume."""
import json

import numpy as np

from unmix.training.schedules import EarlyStopping, ReduceLROnPlateau


# -- the reference's numbers -----------------------------------------------------------------------
# metric sequence and the learning rates / stop flags torch 2.13 and openunmix 1.3 give for it
METRICS = [1.0, 0.9, 0.9, 0.95, 0.9, 0.89995, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.7, 0.75, 0.75, 0.75, 0.75]
TORCH_LRS = [1e-3] * 4 + [3e-4] * 5 + [9e-5] * 6 + [2.7e-5] * 2  # ReduceLROnPlateau(0.3, patience 2, cooldown 1)
REFERENCE_STOPS = [False, False, False, False, True, False, False, False, False, True, True, True, False, False,
                   False, True, True]  # EarlyStopping(patience=3)


def test_reduce_lr_on_plateau_matches_torch():
    scheduler = ReduceLROnPlateau(1e-3, factor=0.3, patience=2, cooldown=1)
    np.testing.assert_allclose([scheduler.step(m) for m in METRICS], TORCH_LRS, rtol=1e-12)
    # the state survives JSON (resume), infinity included
    fresh = ReduceLROnPlateau(1e-3, factor=0.3, patience=2, cooldown=1)
    restored = ReduceLROnPlateau(1.0)
    restored.load_state_dict(json.loads(json.dumps(fresh.state_dict())))
    assert restored.best == float("inf") and restored.lr == 1e-3
    half = ReduceLROnPlateau(1e-3, factor=0.3, patience=2, cooldown=1)
    for m in METRICS[:7]:
        half.step(m)
    restored.load_state_dict(json.loads(json.dumps(half.state_dict())))
    np.testing.assert_allclose([restored.step(m) for m in METRICS[7:]], TORCH_LRS[7:], rtol=1e-12)


def test_early_stopping_matches_reference():
    stopper = EarlyStopping(patience=3)
    assert [stopper.step(m) for m in METRICS] == REFERENCE_STOPS
    zero = EarlyStopping(patience=0)  # the reference stops at the second epoch
    assert [zero.step(m) for m in METRICS[:4]] == [False, True, True, True]
    assert EarlyStopping(patience=3).step(1.0) is False
    nan = EarlyStopping(patience=3)
    nan.step(1.0)
    assert nan.step(float("nan")) is True


def test_resumed_early_stopping_keeps_progress_but_takes_the_new_patience():
    stopped = EarlyStopping(patience=3)
    for loss in [1.0, 1.1, 1.2, 1.3]:
        stopped.step(loss)
    assert stopped.num_bad_epochs == 3
    resumed = EarlyStopping(patience=200)  # the user resumes with a larger --patience
    resumed.load_state_dict(json.loads(json.dumps(stopped.state_dict())))
    assert (resumed.best, resumed.num_bad_epochs, resumed.patience) == (1.0, 3, 200)
    assert resumed.step(1.4) is False and resumed.num_bad_epochs == 4
