"""Peak memory and wall time of `unmix separate` on 1, 5 and 10 minute songs.

Each run is a fresh `unmix separate` process on a synthetic stereo wav at 44.1 kHz with
an umxhq-shaped model (4 targets, 2049 bins, max_bin 1487, hidden 512, 3 layers; random
weights: the cost does not depend on their values), Open-Unmix or X-UMX of the same size
(``--architecture umx xumx`` runs both side by side). Peak memory is the child's max RSS.

    .venv/bin/python benchmarks/separate_long.py --minutes 1 5 10 [--niter 1] [--backend onnx]
        [--architecture umx xumx]
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100


def make_model(folder, architecture="umx"):
    """An umxhq-sized model folder with random weights (no NNabla needed)."""
    from unmix.models.model_folder import XUMX_SOURCES, ModelConfig, init_params, save_params, write_separator_json

    config = ModelConfig(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487)
    targets = list(XUMX_SOURCES) if architecture == "xumx" else ["vocals", "drums", "bass", "other"]
    write_separator_json(folder, {t: config for t in targets}, sample_rate=RATE, architecture=architecture)
    for i, target in enumerate(targets):
        save_params(folder, target, config, init_params(config, seed=i))
    return folder


def make_song(path, minutes):
    """Noise shaped by a slow envelope, written in blocks (no 10-minute array in this process)."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as f:
        for _ in range(int(minutes * 60)):
            block = rng.standard_normal((RATE, 2)) * 0.1 * (1 + np.sin(np.linspace(0, 6, RATE)))[:, None]
            f.write(block.astype(np.float32))
    return path


# runs one command and prints its wall time and its own peak RSS: RUSAGE_CHILDREN keeps the
# maximum over every child a process had, so each measured run gets a parent of its own
_MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - start
sys.stderr.write(proc.stderr)
print(proc.returncode, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def run(song, model, outdir, niter, backend):
    """Wall seconds and peak RSS (MB) of one `unmix separate` child process."""
    cmd = [sys.executable, "-m", "unmix", "separate", str(song), "--model", str(model), "--outdir", str(outdir),
           "--niter", str(niter), "--backend", backend, "--force"]
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True)
    code, wall, peak = proc.stdout.split()
    if int(code) != 0:
        raise SystemExit(proc.stderr)
    return float(wall), float(peak)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10])
    parser.add_argument("--niter", type=int, default=1)
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--architecture", nargs="+", default=["umx"], choices=["umx", "xumx"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = {a: make_model(tmp / a, a) for a in args.architecture}
        print("| model | audio | wall time (s) | x real time | peak RSS (MB) |")
        print("|---|---|---|---|---|")
        for minutes in args.minutes:
            song = make_song(tmp / f"song{minutes:g}.wav", minutes)
            for name, model in models.items():
                wall, peak = run(song, model, tmp / "out", args.niter, args.backend)
                print(f"| {name} | {minutes:g} min stereo | {wall:.1f} | {wall / (minutes * 60):.3f} | {peak:.0f} |",
                      flush=True)
            song.unlink()


if __name__ == "__main__":
    main()
