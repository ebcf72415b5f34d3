"""Write tests/fixtures/transforms.npz: torch.stft / torch.istft outputs as open-unmix uses them.

Run in the reference venv (Python 3.11, torch 2.13 CPU, openunmix 1.3):
    PYTHONPATH=tools/stubs /work/envs/torch311/bin/python tools/make_transform_fixtures.py
"""
import numpy as np
import torch
from openunmix.transforms import make_filterbanks

CASES = [  # (name, n_fft, n_hop, center, nb_timesteps)
    ("small_center", 512, 128, True, 3001),
    ("small_nocenter", 512, 128, False, 3001),
    ("umx_center", 4096, 1024, True, 8000),
]


def main(path="tests/fixtures/transforms.npz"):
    rng = np.random.default_rng(7)
    out = {}
    for name, n_fft, n_hop, center, length in CASES:
        audio = rng.standard_normal((1 if n_fft > 1000 else 2, 2, length)).astype(np.float32)  # (nb_samples, nb_channels, nb_timesteps)
        stft, istft = make_filterbanks(n_fft=n_fft, n_hop=n_hop, center=center)
        spec = stft(torch.from_numpy(audio))  # (nb_samples, nb_channels, nb_bins, nb_frames, 2)
        # torch.istft refuses a vanishing window envelope, so only centred transforms are inverted
        back = istft(spec, length=length).numpy() if center else np.zeros(0, np.float32)
        out[f"{name}/audio"] = audio
        out[f"{name}/spec"] = torch.view_as_complex(spec).numpy()
        out[f"{name}/istft"] = back
        out[f"{name}/params"] = np.array([n_fft, n_hop, int(center), length])
    np.savez_compressed(path, **out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
