"""Make the fixtures that prove unmix trains the same X-UMX as asteroid's X-UMX recipe.

Run in the reference venv (torch 2.13 CPU; openunmix 1.3 and asteroid 0.7 installed with
--no-deps, plus asteroid's import-time needs, as for tools/make_xumx_fixtures.py), from the repo
root:

    PYTHONPATH=tools/stubs /work/envs/torch311/bin/python tools/make_xumx_training_fixtures.py \
        [--recipe path/to/asteroid/egs/musdb18/X-UMX/train.py]

What runs is asteroid 0.7's network, ``BrokenXUMX`` (its ``forward``: STFT -> ``forward_masker``
-> masks x mixture magnitude -> ISTFT with the mixture's phase, ``return_time_signals=True``),
and the loss of asteroid's recipe, ``egs/musdb18/X-UMX/train.py`` ``MultiDomainLoss`` with the
recipe's settings (``loss_combine_sources`` and ``loss_use_multidomain`` yes, ``mix_coef`` 10):
``L_f + 10 L_t`` over the 14 source combinations. Two things are patched, both to the torch 2 API
only: asteroid's ``_STFT`` and ``_ISTFT`` call ``torch.stft(return_complex=False)`` and
``torch.istft`` on real tensors, which torch 2 refuses (the reason asteroid 0.7 will not build
``XUMX``); the patched versions compute the same transforms through complex tensors.

The recipe's training script is not part of the asteroid wheel. With ``--recipe`` its loss
functions (``freq_domain_loss``, ``time_domain_loss``, ``weighted_sdr``, ``MultiDomainLoss``) are
read from that file (by name, nothing else of it runs) and used, and the transcription below is
checked against them; without it the transcription (`transcribed_loss`, written from the
recipe's code and Sony's x-umx/loss.py, which computes the same formulas) makes the fixture.
The committed fixture was made with ``--recipe`` (the script prints which one it used).

Writes ``tests/fixtures/training_xumx.npz``: 4 sources, stereo, n_fft 256 / n_hop 64 (129 bins,
max_bin 100), hidden size 12, 2 bidirectional layers; every weight, scaler and batch-norm
statistic random (as tools/make_xumx_fixtures.py); training mode with the LSTM dropout set to 0
(the only random part of a step); one batch of random stems; three steps of
``Adam(lr=1e-3, weight_decay=1e-5)`` on it (the recipe's ``make_optimizer("adam")``). Keys:

- ``args``: JSON of the network's constructor arguments;
- ``mixture`` ``(N, C, L)`` (the sum of the stems, the network's input) and ``targets``
  ``(N, S, C, L)`` (the recipe's ``targets``);
- ``loss`` (the three losses, before each step), ``loss_f``, ``loss_t`` (the first step's parts);
- ``spec_hat`` ``(S, T, N, C, bins)`` and ``time_hat`` ``(S, N, C, (T - 1) * n_hop)``: the first
  step's estimates (masked magnitudes, their ISTFT);
- ``sd0/<name>``, ``grad/<name>`` (first step), ``sd3/<name>`` (after three steps; weights and
  running statistics), in asteroid's names; ``grad64/``, ``sd3_64/``: the same run in float64,
  stored rounded to float32 (the yardstick for float32 rounding).

asteroid's recipe (like Sony's) trains stereo models only: its losses slice the channels of
source i as ``2 i : 2 i + 2``, and with ``nb_channels 1`` its ``_Spectrogram(mono=True)`` would
average the magnitudes of all sources' channels together. So there is no mono fixture.
"""
import argparse
import ast
import copy
import itertools
import json
import sys
from operator import itemgetter
from pathlib import Path

import numpy as np
import torch
from asteroid.losses import singlesrc_mse
from asteroid.models import x_umx
from asteroid.models.x_umx import BrokenXUMX, _Spectrogram, _STFT
from torch import nn
from torch.nn.modules.loss import _Loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_xumx_fixtures import randomize  # noqa: E402  (the inference fixtures' randomisation)

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
SOURCES = ["bass", "drums", "vocals", "other"]
N_FFT, N_HOP, RATE = 256, 64, 44100
ARGS = dict(sources=SOURCES, window_length=N_FFT, in_chan=N_FFT, n_hop=N_HOP, hidden_size=12, nb_channels=2,
            sample_rate=RATE, nb_layers=2, max_bin=100, bidirectional=True, spec_power=1, return_time_signals=True)
LR, WEIGHT_DECAY, STEPS = 1e-3, 1e-5, 3
NB_SAMPLES, NB_TIMESTEPS = 2, 1000


# -- asteroid's transforms, on the torch 2 API (the same math) ---------------------------------
def _stft_forward(self, x):
    """asteroid's ``_STFT.forward``: ``(N, C, L)`` -> ``(N, C, bins, T, 2)`` (real, imaginary)."""
    nb_samples, nb_channels, _ = x.size()
    spec = torch.stft(x.reshape(nb_samples * nb_channels, -1), n_fft=self.n_fft, hop_length=self.n_hop,
                      window=self.window, center=self.center, normalized=False, onesided=True, pad_mode="reflect",
                      return_complex=True)
    return torch.view_as_real(spec).contiguous().view(nb_samples, nb_channels, self.n_fft // 2 + 1, -1, 2)


def _istft_forward(self, spec, ang):
    """asteroid's ``_ISTFT.forward``: magnitudes ``(S, N, C, bins, T)`` with the phase ``ang``."""
    sources, bsize, channels, fbins, frames = spec.shape
    x = torch.complex(spec * torch.cos(ang), spec * torch.sin(ang)).reshape(sources * bsize * channels, fbins, frames)
    wav = torch.istft(x, n_fft=self.n_fft, hop_length=self.hop_length, window=self.window, center=self.center)
    return wav.view(sources, bsize, channels, wav.shape[-1])


x_umx._STFT.forward = _stft_forward
x_umx._ISTFT.forward = _istft_forward


# -- the recipe's loss: read from its file, or transcribed ------------------------------------
RECIPE_NAMES = ("freq_domain_loss", "time_domain_loss", "weighted_sdr", "MultiDomainLoss")


def recipe_loss(path, n_fft=N_FFT, n_hop=N_HOP):
    """``MultiDomainLoss`` of asteroid's ``egs/musdb18/X-UMX/train.py`` at `path`, with the recipe's
    settings for this STFT: only the four definitions of `RECIPE_NAMES` are taken from the file
    (its other imports are not needed)."""
    tree = ast.parse(Path(path).read_text())
    keep = [node for node in tree.body if getattr(node, "name", None) in RECIPE_NAMES]
    missing = set(RECIPE_NAMES) - {node.name for node in keep}
    if missing:
        raise SystemExit(f"{path} lacks {sorted(missing)}: not asteroid's X-UMX train.py")
    namespace = {"torch": torch, "itertools": itertools, "itemgetter": itemgetter, "singlesrc_mse": singlesrc_mse,
                 "_STFT": _STFT, "_Spectrogram": _Spectrogram, "_Loss": _Loss, "nn": nn, "print": lambda *a: None}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["MultiDomainLoss"](window_length=n_fft, in_chan=n_fft, n_hop=n_hop, spec_power=1, nb_channels=2,
                                        loss_combine_sources=True, loss_use_multidomain=True, mix_coef=10.0)


def combinations(nb_sources):
    """Singles, pairs, triples: the 14 combinations of 4 sources, in the recipes' order."""
    return [c for size in range(1, nb_sources) for c in itertools.combinations(range(nb_sources), size)]


def weighted_sdr(est, ref, mix, eps=1e-10):
    """Mean over rows ``(R, L)`` of ``-a cos(est, ref) - (1 - a) cos(mix - est, mix - ref)``,
    ``a = |ref|^2 / (|ref|^2 + |mix - ref|^2 + eps)``, ``cos(u, v) = <u, v> / (sqrt(eps + |u|^2)
    sqrt(eps + |v|^2) + eps)``."""
    def dot(u, v):
        return (u * v).sum(1, keepdim=True)

    noise, noise_hat = mix - ref, mix - est
    alpha = dot(ref, ref) / (dot(ref, ref) + dot(noise, noise) + eps)
    cos_target = dot(est, ref) / (torch.sqrt(eps + dot(est, est)) * torch.sqrt(eps + dot(ref, ref)) + eps)
    cos_noise = dot(noise, noise_hat) / (torch.sqrt(eps + dot(noise_hat, noise_hat))
                                         * torch.sqrt(eps + dot(noise, noise)) + eps)
    return torch.mean(-alpha * cos_target - (1.0 - alpha) * cos_noise)


class TranscribedLoss(nn.Module):
    """The recipe's ``MultiDomainLoss(...)(est_targets, targets)`` written out:
    ``est_targets`` = (spec_hat ``(S, T, N, C, bins)``, time_hat ``(S, N, C, L')``), ``targets``
    ``(N, S, C, L)``. The target magnitudes are asteroid's STFT of the targets (center=True,
    reflect padding); the time signals are cut to L'; the mixture is the sum of the targets."""

    def __init__(self, n_fft=N_FFT, n_hop=N_HOP, mix_coef=10.0):
        super().__init__()
        self.transform = nn.Sequential(_STFT(window_length=n_fft, n_fft=n_fft, n_hop=n_hop),
                                       _Spectrogram(spec_power=1, mono=False))
        self.coef = mix_coef

    def parts(self, est_targets, targets):
        spec_hat, time_hat = est_targets
        n_batch, n_src, n_channel, _ = targets.shape
        length = time_hat.shape[-1]
        mag = self.transform(targets.reshape(n_batch, n_src * n_channel, -1))[0]  # (T, N, S*C, bins)
        refs = [mag[..., n_channel * s:n_channel * (s + 1), :] for s in range(n_src)]
        combos = combinations(n_src)
        loss_f = sum(torch.mean((sum(spec_hat[s] for s in c) - sum(refs[s] for s in c)) ** 2) for c in combos)
        loss_f = loss_f / len(combos)
        y = targets[..., :length]
        mix = y.sum(1).reshape(-1, length)
        est = torch.cat([sum(time_hat[s] for s in c).reshape(-1, length) for c in combos])
        ref = torch.cat([sum(y[:, s] for s in c).reshape(-1, length) for c in combos])
        loss_t = 1.0 + weighted_sdr(est, ref, mix.repeat(len(combos), 1))
        return loss_f, loss_t

    def forward(self, est_targets, targets):
        loss_f, loss_t = self.parts(est_targets, targets)
        return self.coef * loss_t + loss_f


# -- the fixture ---------------------------------------------------------------------------------
def stems(gen):
    """``(N, S, C, L)`` random stems of different colours and levels (float32)."""
    noise = torch.randn(NB_SAMPLES, len(SOURCES), 2, NB_TIMESTEPS, generator=gen)
    out = []
    for s in range(len(SOURCES)):
        x = noise[:, s]
        for _ in range(s):  # each source a little darker than the previous one
            x = 0.6 * x + 0.4 * torch.roll(x, 1, dims=-1)
        out.append(x * (0.05 + 0.05 * s))
    return torch.stack(out, dim=1).contiguous()


def state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def run(model, loss_fn, mixture, targets):
    """Three steps of the recipe's loop (``System.common_step`` + Adam): losses, the first step's
    gradients and estimates, the final state."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    losses, first = [], None
    for _ in range(STEPS):
        optimizer.zero_grad()
        est_targets = model(mixture)
        loss = loss_fn(est_targets, targets)
        loss.backward()
        if first is None:
            grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters() if p.requires_grad}
            first = grads, [e.detach().numpy().copy() for e in est_targets]
        losses.append(loss.item())
        optimizer.step()
    return np.array(losses), first[0], first[1], state(model)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", help="asteroid's egs/musdb18/X-UMX/train.py (else: the transcription)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # deterministic sums
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(7)
    model = BrokenXUMX(**ARGS)
    randomize(model, gen)
    for lstm in model.layer_lstm.values():
        lstm.dropout = 0.0  # the comparison needs no random numbers
    model.train()
    targets = stems(gen)
    mixture = targets.sum(1)

    sd0 = state(model)
    transcribed = TranscribedLoss()
    loss_fn = recipe_loss(args.recipe) if args.recipe else transcribed
    if args.recipe:  # the transcription against the recipe's own code, on the same estimates
        with torch.no_grad():
            est = copy.deepcopy(model)(mixture)  # a copy: training mode moves the running statistics
        got, want = transcribed(est, targets).item(), loss_fn(est, targets).item()
        print(f"recipe {want!r}, transcription {got!r}, relative difference {abs(got - want) / abs(want):.1e}")
        assert abs(got - want) <= 1e-6 * abs(want)

    model64 = copy.deepcopy(model).double()
    losses, grads, (spec_hat, time_hat), sd3 = run(model, loss_fn, mixture, targets)
    loss_fn64 = copy.deepcopy(loss_fn).double()
    _, grads64, _, sd3_64 = run(model64, loss_fn64, mixture.double(), targets.double())
    with torch.no_grad():
        loss_f, loss_t = transcribed.parts([torch.from_numpy(spec_hat), torch.from_numpy(time_hat)], targets)

    arrays = {}
    for prefix, values in (("sd0", sd0), ("grad", grads), ("sd3", sd3), ("grad64", grads64), ("sd3_64", sd3_64)):
        arrays.update({f"{prefix}/{k}": v.astype(np.float32) if v.dtype == np.float64 else v
                       for k, v in values.items()})
    json_args = {k: v for k, v in ARGS.items() if k != "return_time_signals"}
    np.savez_compressed(OUT / "training_xumx.npz", args=np.array(json.dumps(json_args)), mixture=mixture.numpy(),
                        targets=targets.numpy(), loss=losses, loss_f=loss_f.item(), loss_t=loss_t.item(),
                        spec_hat=spec_hat, time_hat=time_hat, **arrays)
    print(f"loss from {'the recipe (' + args.recipe + ')' if args.recipe else 'the transcription'}: {losses}; "
          f"L_f {loss_f.item():.6g}, L_t {loss_t.item():.6g}; "
          f"{(OUT / 'training_xumx.npz').stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
