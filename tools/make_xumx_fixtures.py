"""Make the fixtures that check X-UMX (conversion, network, separation) against asteroid 0.7.

Run in the reference venv (torch 2.13 CPU; openunmix 1.3 and asteroid 0.7 installed with
--no-deps, plus asteroid's import-time needs: soundfile, packaging, requests, huggingface_hub,
...; torchaudio is stubbed), from the repo root:

    PYTHONPATH=tools/stubs /work/envs/torch311/bin/python tools/make_xumx_fixtures.py

asteroid 0.7 refuses to build its ``XUMX`` under torch 2 (its STFT code), but the network,
``BrokenXUMX.forward_masker``, runs. Writes into tests/fixtures/:

- ``xumx_asteroid.pth``: an asteroid X-UMX package as ``torch.save(model.serialize())`` writes
  it ({'model_name', 'state_dict', 'model_args', 'infos'}; written here without
  ``serialize``, which imports pytorch_lightning): 4 sources, stereo, 2049 bins, max_bin 1487,
  hidden size 8, 3 bidirectional layers, every weight, scale and batch-norm statistic random.
- ``xumx_reference.npz``:
  ``audio`` ``(1, 2, nb_timesteps)`` a short mixture at 44.1 kHz;
  ``mag`` ``(nb_frames, 1, 2, 2049)`` its magnitude (open-unmix's STFT, n_fft 4096, n_hop 1024);
  ``masks`` ``(4, nb_frames, 1, 2, 2049)`` ``forward_masker(mag)`` in eval mode;
  ``estimates`` ``(4, 1, 2, nb_timesteps)`` the niter-0 separation: masks x magnitude with the
  mixture's phase (what open-unmix's Wiener filter gives for 0 iterations), open-unmix's ISTFT;
  ``sources`` the source names.
"""
import sys
from pathlib import Path

import numpy as np
import torch
from asteroid.models.x_umx import BrokenXUMX
from openunmix import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_parity_fixtures import randomize_buffers  # noqa: E402  (as the open-unmix fixtures)

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
SOURCES = ["bass", "drums", "vocals", "other"]
N_FFT, N_HOP, RATE = 4096, 1024, 44100
ARGS = dict(sources=SOURCES, window_length=N_FFT, in_chan=N_FFT, n_hop=N_HOP, hidden_size=8, nb_channels=2,
            sample_rate=RATE, nb_layers=3, max_bin=1487, bidirectional=True, spec_power=1)


def randomize(model, gen):
    """Random values for every parameter and buffer that torch leaves at 0 or 1 (the Linear and
    LSTM weights keep torch's random init)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.startswith("mean_scale.input_mean"):  # asteroid, like open-unmix, keeps -mean
                p.copy_(-torch.rand(p.shape, generator=gen))
            elif name.startswith("mean_scale.input_scale"):  # magnitudes reach ~100: keep tanh from saturating
                p.copy_(0.01 + 0.03 * torch.rand(p.shape, generator=gen))
            elif name.startswith("mean_scale.output_mean"):  # around 0.5, so that the final relu clips some bins
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + 0.5)
            elif name.startswith("mean_scale.output_scale"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif ".enc.1." in name or ".dec.1." in name or ".dec.4." in name:  # batch norms
                if leaf == "bias":
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
                else:
                    p.copy_(0.5 + torch.rand(p.shape, generator=gen))
        randomize_buffers(model, gen)


def mixture(nb_timesteps):
    """A short stereo mixture: tones, a chirp and noise ``(1, 2, nb_timesteps)``."""
    rng = np.random.default_rng(5)
    t = np.arange(nb_timesteps) / RATE
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (55, 220, 440, 1320, 5000))
    chirp = np.sin(2 * np.pi * (300 + 4000 * t) * t)
    audio = np.stack([tones + chirp, 0.7 * tones - 0.5 * chirp]) * 0.1 + 0.03 * rng.standard_normal((2, nb_timesteps))
    return audio.astype(np.float32)[None]


def main(nb_timesteps=11025):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = BrokenXUMX(**ARGS)
    randomize(model, gen)
    model.eval()

    audio = torch.from_numpy(mixture(nb_timesteps))
    stft, istft = transforms.make_filterbanks(n_fft=N_FFT, n_hop=N_HOP, center=True, sample_rate=RATE)
    spec = stft(audio)  # (1, 2, 2049, nb_frames, 2)
    mag = transforms.ComplexNorm()(spec).permute(3, 0, 1, 2).contiguous()  # (nb_frames, 1, 2, 2049)
    with torch.no_grad():
        masks = model.forward_masker(mag.clone())  # (4, nb_frames, 1, 2, 2049)
        est_mag = (masks * mag).permute(0, 2, 3, 4, 1)  # (4, 1, 2, 2049, nb_frames)
        phase = torch.atan2(spec[..., 1], spec[..., 0])
        est = torch.stack([est_mag * torch.cos(phase), est_mag * torch.sin(phase)], dim=-1)
        estimates = torch.stack([istft(e, length=nb_timesteps) for e in est])

    package = {
        "model_name": "XUMX",
        "state_dict": model.state_dict(),
        "model_args": model.get_model_args(),
        "infos": {"software_versions": {"torch_version": torch.__version__, "asteroid_version": "0.7.0"}},
    }
    torch.save(package, OUT / "xumx_asteroid.pth")
    np.savez_compressed(OUT / "xumx_reference.npz", audio=audio.numpy(), mag=mag.numpy(), masks=masks.numpy(),
                        estimates=estimates.numpy(), sources=np.array(SOURCES))
    print(f"masks: max {masks.max():.3f}, zeros {(masks == 0).float().mean():.2f}; "
          f"estimates: max {estimates.abs().max():.3f}")
    for name in ("xumx_asteroid.pth", "xumx_reference.npz"):
        print(f"{name}: {(OUT / name).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
