"""The open-unmix-pytorch side of `compare_reference.py`; runs in the torch venv (Python 3.11).

Two commands:

    make-model DIR      four umxhq-shaped OpenUnmix models with random weights, written as the
                        reference writes a model folder: <target>.pth (state dict), <target>.json
                        (training args) and separator.json.
    separate ...        one timed separation in this (fresh) process; prints one JSON line.

The separation replicates `openunmix.model.Separator.forward` line for line, with timers
around its own components (STFT + magnitude, target networks, Wiener windows, ISTFT), so the
split adds up to what `Separator.forward` costs. Run it with ``PYTHONPATH=tools/fixtures/stubs``
(openunmix imports torchaudio, which the models, filterbank and Wiener filter do not use).
The torch venv has no soundfile: the test audio is 16-bit PCM wav, read here with `wave`,
and the estimates are written as float32 .npy (the same bytes as unmix's float wav).
"""
import time

_T0 = time.perf_counter()  # imports are reported apart from the model loading

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import wave  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

TARGETS = ["vocals", "drums", "bass", "other"]
# umxhq: 4096-point STFT (2049 bins), stereo, hidden 512, 3 BLSTM layers, 16 kHz bandwidth (1487 bins)
UMXHQ = dict(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487)
RATE, N_FFT, N_HOP = 44100, 4096, 1024


def random_model(seed):
    """An OpenUnmix with torch's random initialisation, random input/output scaling and random
    batch-norm statistics (so the converter's batch-norm folding is exercised)."""
    from openunmix.model import OpenUnmix

    torch.manual_seed(seed)
    model = OpenUnmix(**UMXHQ)
    with torch.no_grad():
        model.input_mean.copy_(-torch.rand_like(model.input_mean))
        model.input_scale.copy_(1.0 / (torch.rand_like(model.input_scale) + 0.5))
        model.output_scale.copy_(torch.rand_like(model.output_scale) + 0.5)
        model.output_mean.copy_(torch.rand_like(model.output_mean) + 0.5)
        for bn in (model.bn1, model.bn2, model.bn3):
            bn.running_mean.copy_(torch.randn_like(bn.running_mean) * 0.1)
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
    return model.eval()


def make_model(folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    args = {"nfft": N_FFT, "nhop": N_HOP, "nb_channels": UMXHQ["nb_channels"],
            "hidden_size": UMXHQ["hidden_size"], "nb_layers": UMXHQ["nb_layers"], "bandwidth": 16000}
    for i, target in enumerate(TARGETS):
        torch.save(random_model(i).state_dict(), folder / f"{target}.pth")
        (folder / f"{target}.json").write_text(json.dumps({"args": {**args, "target": target}}))
    sep = {"sample_rate": RATE, "nfft": N_FFT, "nhop": N_HOP, "nb_channels": UMXHQ["nb_channels"]}
    (folder / "separator.json").write_text(json.dumps(sep))


def read_wav(path):
    """16-bit PCM wav -> float32 ``(nb_channels, nb_timesteps)`` scaled by 1/32768 (as soundfile)."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise SystemExit(f"{path}: 16-bit PCM expected")
        data = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").reshape(-1, f.getnchannels())
        return (data.T.astype(np.float32) / 32768.0), f.getframerate()


class Timers:
    """Wall seconds summed per stage name."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, name):
        return _Timer(self, name)


class _Timer:
    def __init__(self, timers, name):
        self.timers, self.name = timers, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        elapsed = time.perf_counter() - self.start
        self.timers.seconds[self.name] = self.timers.seconds.get(self.name, 0.0) + elapsed


def forward(sep, audio, timer):
    """`openunmix.model.Separator.forward`, with timers around its components."""
    from openunmix.filtering import wiener

    nb_sources = sep.nb_targets
    nb_samples = audio.shape[0]
    with timer("stft"):
        mix_stft = sep.stft(audio)
        X = sep.complexnorm(mix_stft)
    with timer("networks"):
        spectrograms = torch.zeros(X.shape + (nb_sources,), dtype=audio.dtype, device=X.device)
        for j, (target_name, target_module) in enumerate(sep.target_models.items()):
            spectrograms[..., j] = target_module(X.detach().clone())
    with timer("wiener"):
        spectrograms = spectrograms.permute(0, 3, 2, 1, 4)
        mix_stft = mix_stft.permute(0, 3, 2, 1, 4)
        if sep.residual:
            nb_sources += 1
        nb_frames = spectrograms.shape[1]
        targets_stft = torch.zeros(mix_stft.shape + (nb_sources,), dtype=audio.dtype, device=mix_stft.device)
        for sample in range(nb_samples):
            pos = 0
            wiener_win_len = sep.wiener_win_len or nb_frames
            while pos < nb_frames:
                cur_frame = torch.arange(pos, min(nb_frames, pos + wiener_win_len))
                pos = int(cur_frame[-1]) + 1
                targets_stft[sample, cur_frame] = wiener(
                    spectrograms[sample, cur_frame], mix_stft[sample, cur_frame], sep.niter,
                    softmask=sep.softmask, residual=sep.residual)
    with timer("istft"):
        targets_stft = targets_stft.permute(0, 5, 3, 2, 1, 4).contiguous()
        estimates = sep.istft(targets_stft, length=audio.shape[2])
    return estimates


def peak_rss_mb():
    """This process's peak resident memory (VmHWM: this program only, not the parent before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def separate(model, audio_path, niter, threads, outdir, wiener_win_len=300):
    from openunmix import utils

    torch.set_num_threads(threads)
    timer = Timers()
    t0 = time.perf_counter()
    imports = t0 - _T0
    with timer("load"):
        sep = utils.load_separator(model, targets=TARGETS, niter=niter, residual=False,
                                   wiener_win_len=wiener_win_len, device="cpu", pretrained=True)
        sep.freeze()
    t1 = time.perf_counter()
    with torch.no_grad():
        with timer("io"):
            audio, rate = read_wav(audio_path)
            audio = utils.preprocess(torch.from_numpy(audio), rate, sep.sample_rate)
        estimates = forward(sep, audio, timer)
        with timer("io"):
            out = Path(outdir) if outdir else None
            if out:
                out.mkdir(parents=True, exist_ok=True)
            for name, value in sep.to_dict(estimates).items():
                if out:
                    np.save(out / f"{name}.npy", value[0].numpy())
    t2 = time.perf_counter()
    seconds = dict(timer.seconds)
    separation = t2 - t1
    seconds["other"] = separation - sum(v for k, v in seconds.items() if k != "load")
    return {"impl": "reference", "import": imports, "load": t1 - t0, "separation": separation, "stages": seconds,
            "peak_mb": peak_rss_mb(), "threads": torch.get_num_threads()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("folder")
    p = sub.add_parser("separate")
    p.add_argument("--model", required=True)
    p.add_argument("--audio", required=True)
    p.add_argument("--niter", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--outdir", default=None, help="write the estimates as <target>.npy here")
    args = parser.parse_args(argv)
    if args.command == "make-model":
        make_model(args.folder)
    else:
        print(json.dumps(separate(args.model, args.audio, args.niter, args.threads, args.outdir)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
