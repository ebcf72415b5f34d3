"""Make the fixtures that prove unmix trains the same model as open-unmix-pytorch 1.3.

Run in the reference venv (torch + openunmix; torchaudio is stubbed), from the repo root:

    PYTHONPATH=tools/stubs /work/envs/torch311/bin/python tools/make_training_fixtures.py

Writes ``tests/fixtures/training_<case>.npz`` for each case in CASES: an open-unmix
``OpenUnmix`` with random weights, scalers and batch-norm statistics (as the inference
fixtures), in training mode with the LSTM dropout set to 0 (the only random part of a step),
and one batch of random magnitudes. The loop is the reference's ``scripts/train.py`` step:
``Adam(lr=1e-3, weight_decay=1e-5)``, ``mse_loss(unmix(x), y)``, ``backward``, ``step``,
three times on the same batch. Keys:

- ``config``: JSON of the constructor arguments;
- ``x``, ``y``: ``(nb_samples, nb_channels, nb_bins, nb_frames)`` mixture and target magnitudes;
- ``sd0/<name>``: the state dict before the first step;
- ``loss``: the three losses (before each step);
- ``grad/<name>``: the gradient of every parameter at the first step;
- ``sd3/<name>``: the state dict after three steps (weights and running statistics);
- ``grad64/<name>``, ``sd3_64/<name>``: the same run in float64, the yardstick that tells the
  float32 rounding of either implementation from a difference of math (stored rounded to float32).
"""
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from openunmix.model import OpenUnmix

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_parity_fixtures import randomize  # noqa: E402  (same randomisation as the inference fixtures)

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
LR, WEIGHT_DECAY, STEPS = 1e-3, 1e-5, 3

# case -> (constructor arguments, nb_samples, nb_frames)
CASES = {
    "stereo": (dict(nb_bins=257, max_bin=200, hidden_size=32, nb_layers=3, nb_channels=2), 3, 24),
    "wide": (dict(nb_bins=2049, max_bin=1487, hidden_size=8, nb_layers=3, nb_channels=2), 2, 8),
    "unidir": (dict(nb_bins=129, hidden_size=12, nb_layers=2, nb_channels=1, unidirectional=True), 3, 20),
}


def state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def run(model, x, y):
    """Three steps of the reference's loop: losses, first gradients, final state."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    losses, grads = [], None
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        if grads is None:
            grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
        losses.append(loss.item())
        optimizer.step()
    return np.array(losses), grads, state(model)


def make_case(name, kwargs, nb_samples, nb_frames, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    model = OpenUnmix(**kwargs)
    randomize(model, gen)
    model.lstm.dropout = 0.0  # the comparison needs no random numbers
    model.train()
    shape = (nb_samples, kwargs["nb_channels"], kwargs["nb_bins"], nb_frames)
    x = torch.randn(*shape, generator=gen).abs() * 2
    y = x * torch.rand(*shape, generator=gen)  # a target below the mixture, as real stems are
    sd0 = state(model)
    model64 = copy.deepcopy(model).double()
    losses, grads, sd3 = run(model, x, y)
    _, grads64, sd3_64 = run(model64, x.double(), y.double())
    arrays = {}
    for prefix, values in (("sd0", sd0), ("grad", grads), ("sd3", sd3), ("grad64", grads64), ("sd3_64", sd3_64)):
        arrays.update({f"{prefix}/{k}": v.astype(np.float32) if v.dtype == np.float64 else v
                       for k, v in values.items()})
    np.savez_compressed(OUT / f"training_{name}.npz", config=np.array(json.dumps(kwargs)), x=x.numpy(),
                        y=y.numpy(), loss=losses, **arrays)
    print(f"training_{name}: losses {losses}")


def main():
    torch.set_num_threads(1)  # deterministic sums
    for seed, (name, (kwargs, nb_samples, nb_frames)) in enumerate(CASES.items()):
        make_case(name, kwargs, nb_samples, nb_frames, seed=100 + seed)


if __name__ == "__main__":
    main()
