"""Write tests/fixtures/separator.npz: open-unmix-pytorch's Separator on random weights.

Three random target models (every weight, batch-norm statistic and scale random), a short
stereo mixture, and the reference estimates for niter 0/1, with and without residual,
softmask, in Wiener windows smaller than the track so the windowing is exercised.

Run in the reference venv (Python 3.11, torch 2.13 CPU, openunmix 1.3):
    PYTHONPATH=tools/stubs /work/envs/torch311/bin/python tools/make_separator_fixtures.py
"""
import numpy as np
import torch
from openunmix.model import OpenUnmix, Separator

TARGETS = ["vocals", "drums", "bass"]
N_FFT, N_HOP, RATE, WIN = 1024, 256, 44100.0, 10
CASES = {  # name: (niter, residual, softmask)
    "niter0": (0, False, False),
    "niter1": (1, False, False),
    "niter0_residual": (0, True, False),
    "niter1_residual": (1, True, False),
    "niter2_softmask": (2, False, True),
}


def random_model(seed):
    torch.manual_seed(seed)
    model = OpenUnmix(nb_bins=N_FFT // 2 + 1, nb_channels=2, hidden_size=8, nb_layers=2, max_bin=300)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        model.output_mean.add_(1.0)
        for bn in (model.bn1, model.bn2, model.bn3):
            bn.running_mean.copy_(torch.randn_like(bn.running_mean) * 0.5)
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
    return model.eval()


def mixture(nb_timesteps=8000):
    rng = np.random.default_rng(3)
    t = np.arange(nb_timesteps) / RATE
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220, 440, 1320, 5000))
    audio = np.stack([tones, 0.7 * tones]) * 0.2 + 0.05 * rng.standard_normal((2, nb_timesteps))
    return audio.astype(np.float32)[None]  # (nb_samples, nb_channels, nb_timesteps)


def main(path="tests/fixtures/separator.npz"):
    models = {t: random_model(i) for i, t in enumerate(TARGETS)}
    audio = mixture()
    out = {"audio": audio, "signal": np.array([N_FFT, N_HOP, RATE, WIN])}
    for target, model in models.items():
        for k, v in model.state_dict().items():
            out[f"sd/{target}/{k}"] = v.numpy()
    for case, (niter, residual, softmask) in CASES.items():
        sep = Separator(models, niter=niter, residual=residual, softmask=softmask, sample_rate=RATE,
                        n_fft=N_FFT, n_hop=N_HOP, nb_channels=2, wiener_win_len=WIN).eval()
        with torch.no_grad():
            est = sep.to_dict(sep(torch.from_numpy(audio)))
        for name, value in est.items():
            out[f"est/{case}/{name}"] = value.numpy()
    np.savez_compressed(path, **out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
