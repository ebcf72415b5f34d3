"""Write tests/fixtures/wiener_reference.npz: openunmix.filtering.wiener outputs.

Run in the reference venv (Python 3.11, torch 2.13 CPU, openunmix 1.3), from the repo root:
    PYTHONPATH=tools/stubs /work/envs/torch311/bin/python tools/make_wiener_fixtures.py

Random magnitudes and a random complex mixture (small, to keep the file
under 500 kB), for a grid of iterations / softmask / residual, mono and
stereo, targets with one channel broadcast over a stereo mix, and the
Separator's windowed loop with a window shorter than the signal.
Keys: "<input>/targets" (nb_frames, nb_bins, C, nb_sources) float32,
"<input>/mix" (nb_frames, nb_bins, nb_channels) complex64, and one output per
case "<input>/niter{n}_softmask{s}_residual{r}[_win{w}]"
(nb_frames, nb_bins, nb_channels, nb_sources[+1]) complex64.
"""
import itertools

import numpy as np
import torch
from openunmix.filtering import wiener

# (name, nb_frames, nb_bins, nb_channels of mix, of targets, nb_sources, mix scale)
INPUTS = [
    ("stereo", 24, 17, 2, 2, 3, 30.0),  # max |mix| > scale_factor: the EM rescales
    ("mono", 24, 17, 1, 1, 3, 0.5),  # max |mix| < scale_factor: no rescaling
    ("broadcast", 24, 17, 2, 1, 2, 30.0),  # mono magnitudes, stereo mixture
]

# (input, niter, softmask, residual, wiener_win_len or None)
CASES = (
    [("stereo", n, s, r, None) for n, s, r in itertools.product((0, 1, 2), (False, True), (False, True))]
    + [("mono", 0, False, False, None), ("mono", 1, False, False, None),
       ("mono", 1, True, True, None), ("mono", 2, False, True, None)]
    + [("broadcast", 1, False, False, None), ("broadcast", 0, True, False, None)]
    + [("stereo", 1, False, False, 10), ("stereo", 2, True, True, 9)]
)


def make_input(rng, nb_frames, nb_bins, nb_channels, target_channels, nb_sources, scale):
    """Random magnitudes with a heavy-ish tail and a random complex mixture."""
    targets = (scale * rng.exponential(size=(nb_frames, nb_bins, target_channels, nb_sources)) ** 2).astype(np.float32)
    shape = (nb_frames, nb_bins, nb_channels)
    mix = (scale * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))).astype(np.complex64)
    return targets, mix


def reference_windowed(targets, mix, niter, softmask, residual, wiener_win_len):
    """openunmix.model.Separator.forward's loop over frames for one sample."""
    nb_frames = targets.shape[0]
    nb_sources = targets.shape[-1] + int(residual)
    spectrograms = torch.from_numpy(targets)
    mix_stft = torch.view_as_real(torch.from_numpy(mix))
    targets_stft = torch.zeros(mix_stft.shape + (nb_sources,), dtype=torch.float32)
    pos = 0
    win = wiener_win_len if wiener_win_len else nb_frames
    while pos < nb_frames:
        cur_frame = torch.arange(pos, min(nb_frames, pos + win))
        pos = int(cur_frame[-1]) + 1
        targets_stft[cur_frame] = wiener(
            spectrograms[cur_frame], mix_stft[cur_frame], niter, softmask=softmask, residual=residual
        )
    # (nb_frames, nb_bins, nb_channels, 2, nb_sources) -> complex (..., nb_sources)
    return torch.view_as_complex(targets_stft.movedim(-1, -2).contiguous()).numpy()


def main(path="tests/fixtures/wiener_reference.npz"):
    rng = np.random.default_rng(2024)
    out = {}
    for name, *params in INPUTS:
        out[f"{name}/targets"], out[f"{name}/mix"] = make_input(rng, *params)
    for name, niter, softmask, residual, win in CASES:
        key = f"{name}/niter{niter}_softmask{int(softmask)}_residual{int(residual)}"
        key += f"_win{win}" if win else ""
        out[key] = reference_windowed(out[f"{name}/targets"], out[f"{name}/mix"], niter, softmask, residual, win)
        assert np.all(np.isfinite(out[key])), key
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({len(out)} arrays)")


if __name__ == "__main__":
    main()
