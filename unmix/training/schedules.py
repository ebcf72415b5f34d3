"""The reference's schedules, driven by the validation loss once per epoch.

    ReduceLROnPlateau   torch.optim.lr_scheduler.ReduceLROnPlateau (mode min, relative threshold)
    EarlyStopping       open-unmix-pytorch 1.3 ``openunmix/utils.py`` EarlyStopping

Each has ``state_dict`` / ``load_state_dict`` with plain JSON values, which `unmix.training.checkpoint`
keeps in ``<target>.json`` so that a resumed training takes the same decisions.
"""
import math

import numpy as np

from unmix.errors import UnmixError


class ReduceLROnPlateau:
    """torch.optim.lr_scheduler.ReduceLROnPlateau (mode min, relative threshold) on one learning rate."""

    def __init__(self, lr, factor=0.1, patience=10, threshold=1e-4, cooldown=0, min_lr=0.0, eps=1e-8):
        if factor >= 1.0:
            raise UnmixError("the learning-rate decay factor must be < 1")
        self.lr, self.factor, self.patience, self.threshold = float(lr), factor, patience, threshold
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def step(self, metric):
        """Record one epoch's validation loss; returns the learning rate for the next epoch."""
        current = float(metric)
        self.last_epoch += 1
        if current < self.best * (1.0 - self.threshold):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.lr

    def state_dict(self):
        state = dict(vars(self))
        state["best"] = None if math.isinf(self.best) else self.best  # strict JSON has no inf
        return state

    def load_state_dict(self, state):
        for key, value in state.items():
            setattr(self, key, value)
        if self.best is None:
            self.best = math.inf


class EarlyStopping:
    """The reference's EarlyStopping (utils.py): stop after `patience` epochs without improvement."""

    def __init__(self, patience=10, min_delta=0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best = None
        self.num_bad_epochs = 0

    def is_better(self, a, best):
        return True if self.patience == 0 else a < best - self.min_delta

    def step(self, metric):
        """Record one epoch's validation loss; True when training should stop."""
        if self.best is None:
            self.best = metric
            return False
        if np.isnan(metric):
            return True
        if self.is_better(metric, self.best):
            self.num_bad_epochs, self.best = 0, metric
        else:
            self.num_bad_epochs += 1
        return self.num_bad_epochs >= self.patience

    def state_dict(self):
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs}

    def load_state_dict(self, state):
        """Restore the progress only, as the reference's train.py does on resume: a run resumed
        with a new --patience (or min_delta) uses the new value."""
        self.best, self.num_bad_epochs = state["best"], state["num_bad_epochs"]
