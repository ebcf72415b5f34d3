"""Make the fixtures that check the converter and the .pth reader against PyTorch itself.

Run in the reference venv (torch + openunmix; torchaudio is stubbed), from the repo root:

    PYTHONPATH=tools/stubs /work/envs/torch311/bin/python tools/make_parity_fixtures.py

Writes into tests/fixtures/:

- ``parity_<case>.npz`` for each case in CASES: an open-unmix-pytorch ``OpenUnmix``
  with random weights everywhere (also batch-norm running statistics and the input /
  output scaling, so no part is an identity), in eval mode, run on a random
  non-negative magnitude. Keys: ``sd/<torch name>`` (the state dict), ``config``
  (JSON of the constructor arguments), ``input`` and ``output``
  ``(nb_samples, nb_channels, nb_bins, nb_frames)``.
- ``parity_stereo_bi.pth``: the state dict of the ``stereo_bi`` case saved by
  ``torch.save``, to convert end to end through ``unmix convert``.
- ``parity_separator.pth``: the state dict of an open-unmix ``Separator`` (16 kHz,
  n_fft 512, n_hop 128) holding the ``one_layer`` model as targets 'bass' and 'drums'.
- ``parity_pth_zip.pth`` / ``parity_pth_legacy.pth``: a few tensors of several dtypes
  (with a transposed view, an offset slice and a Parameter) saved in torch's zip and
  legacy formats; ``parity_pth_chkpnt.pth`` wraps them as open-unmix's train.py writes
  ``<target>.chkpnt`` (with optimizer and scheduler state); ``parity_pth_expected.npz``
  holds the arrays they must give.
"""
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from openunmix.model import OpenUnmix, Separator

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

# case -> (constructor arguments, nb_samples, nb_frames)
CASES = {
    "stereo_bi": (dict(nb_bins=2049, max_bin=1487, hidden_size=16, nb_layers=3, nb_channels=2), 2, 16),
    "mono": (dict(nb_bins=2049, max_bin=1487, hidden_size=16, nb_layers=3, nb_channels=1), 1, 20),
    "unidir": (dict(nb_bins=513, max_bin=400, hidden_size=16, nb_layers=2, nb_channels=2, unidirectional=True), 2, 20),
    "one_layer": (dict(nb_bins=257, hidden_size=12, nb_layers=1, nb_channels=2), 1, 24),
}


def randomize(model, gen):
    """Random values for every parameter and buffer that torch leaves at 0 or 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("fc", "lstm")):
                continue  # torch's own random init
            if name == "input_mean":  # torch keeps -mean
                p.copy_(-torch.rand(p.shape, generator=gen))
            elif name == "output_mean":  # around 0.5 so that the final relu clips some bins
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + 0.5)
            elif name.endswith(".bias"):  # batch-norm beta
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            else:  # input_scale, output_scale, batch-norm gamma
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
        randomize_buffers(model, gen)


def randomize_buffers(model, gen):
    """Random batch-norm running statistics (torch starts them at 0 and 1); under no_grad."""
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):
                b.fill_(123)


def make_case(name, kwargs, nb_samples, nb_frames, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    model = OpenUnmix(**kwargs)
    randomize(model, gen)
    model.eval()
    mag = torch.randn(nb_samples, kwargs["nb_channels"], kwargs["nb_bins"], nb_frames, generator=gen).abs() * 2
    with torch.no_grad():
        out = model(mag)
    sd = model.state_dict()
    if name == "stereo_bi":
        torch.save(sd, OUT / "parity_stereo_bi.pth")
    if name == "one_layer":
        separator = Separator({"bass": model, "drums": model}, sample_rate=16000, n_fft=512, n_hop=128)
        torch.save(separator.state_dict(), OUT / "parity_separator.pth")
    arrays = {f"sd/{k}": v.numpy() for k, v in sd.items()}
    np.savez_compressed(
        OUT / f"parity_{name}.npz",
        config=np.array(json.dumps(kwargs)),
        input=mag.numpy(),
        output=out.numpy(),
        **arrays,
    )
    print(f"parity_{name}: max|out| {out.abs().max():.3f}, zeros {(out == 0).float().mean():.2f}")


def pth_tensors():
    """Tensors of several dtypes and layouts, and the arrays they must load as."""
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(5, 6, generator=gen)
    tensors = OrderedDict(
        [
            ("weight", base),
            ("transposed", base.t()),  # non-contiguous: strides (1, 6)
            ("offset_view", base[2:, 1:4]),  # storage offset 13, strides (6, 1)
            ("float64", torch.randn(3, generator=gen, dtype=torch.float64)),
            ("float16", torch.randn(2, 2, generator=gen).half()),
            ("int64_scalar", torch.tensor(42)),
            ("bool", torch.tensor([True, False, True])),
            ("parameter", torch.nn.Parameter(torch.randn(4, generator=gen))),
        ]
    )
    expected = {k: v.detach().numpy().copy() for k, v in tensors.items()}
    return tensors, expected


def make_pth_fixtures():
    tensors, expected = pth_tensors()
    torch.save(tensors, OUT / "parity_pth_zip.pth")
    torch.save(tensors, OUT / "parity_pth_legacy.pth", _use_new_zipfile_serialization=False)
    # a train.py-style checkpoint: the weights wrapped with optimizer and scheduler state
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.001)
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.3, patience=80)
    chkpnt = {
        "epoch": 3,
        "state_dict": tensors,
        "best_loss": 0.5,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    torch.save(chkpnt, OUT / "parity_pth_chkpnt.pth")
    np.savez_compressed(OUT / "parity_pth_expected.npz", **expected)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, (kwargs, nb_samples, nb_frames)) in enumerate(CASES.items()):
        make_case(name, kwargs, nb_samples, nb_frames, seed)
    make_pth_fixtures()
    total = sum(p.stat().st_size for p in OUT.glob("parity_*"))
    print(f"parity fixtures: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
