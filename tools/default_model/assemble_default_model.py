"""Gather the four trained targets of tools/default_model/train_default_model.sh into the bundled model folder.

    python tools/default_model/assemble_default_model.py RUNS OUT CURVES [--half] [--example FLAC]

For each target, ``RUNS/<target>/<target>.h5`` (the best-validation weights) and its training
history ``<target>.json`` go to OUT (no solver states or checkpoints), its loss plot to CURVES
(models/ in the repository). With --half the weight matrices are stored in float16
(`unmix.models.model_folder.half_precision`), but only if each target's network output on the example
mixture moves by at most 1e-3 x its maximum; the measured figure is written to separator.json.
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from unmix.io import audio
from unmix.dsp import transforms
from unmix.errors import UnmixError
from unmix.models.model_folder import (check_params, half_precision, load_params, read_separator_json, save_params,
                               write_separator_json)
from unmix.models.onnx_graph import OnnxModel

TARGETS = ("vocals", "drums", "bass", "other")
HALF_TOLERANCE = 1e-3


def example_magnitude(path, n_fft, n_hop):
    """``(1, nb_channels, nb_bins, nb_frames)`` magnitude of the example mixture."""
    mix, _ = audio.load(path)
    return transforms.magnitude(transforms.stft(mix[None], n_fft, n_hop))


def half_precision_error(config, params, mag):
    """max |out(float16 weights) - out(float32)| / max |out(float32)| on `mag`."""
    full = OnnxModel((config, params))(mag)
    half = OnnxModel((config, check_params(config, half_precision(params))))(mag)
    return float(np.abs(half - full).max() / np.abs(full).max())


def assemble(runs, out, curves, half, example):
    runs, out, curves = Path(runs), Path(out), Path(curves)
    meta = read_separator_json(runs / TARGETS[0])
    mag = example_magnitude(example, meta["n_fft"], meta["n_hop"]) if half else None
    configs, errors = {}, {}
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # the old folder stays until all is checked
        for target in TARGETS:
            config, params = load_params(runs / target, target)
            if half:
                errors[target] = half_precision_error(config, params, mag)
                if errors[target] > HALF_TOLERANCE:
                    raise UnmixError(f"{target}: float16 weights move the output by {errors[target]:.2e} "
                                     f"x its maximum (> {HALF_TOLERANCE}); assemble without --half")
            target_meta = read_separator_json(runs / target)
            if (target_meta["n_fft"], target_meta["n_hop"]) != (meta["n_fft"], meta["n_hop"]):
                raise UnmixError(f"{target} was trained with another STFT than {TARGETS[0]}")
            save_params(tmp, target, config, params, half=half)
            shutil.copy(runs / target / f"{target}.json", Path(tmp) / f"{target}.json")
            configs[target] = config
        extra = {"half_precision": {"tolerance": HALF_TOLERANCE, "max_output_error": errors,
                                    "measured_on": Path(example).name}} if half else {}
        write_separator_json(tmp, configs, meta["sample_rate"], meta["n_fft"], meta["n_hop"], **extra)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp, out)
        out.chmod(0o755)  # not the 0o700 of the temporary folder that copytree copied
    Path(curves).mkdir(parents=True, exist_ok=True)
    for target in TARGETS:
        shutil.copy(runs / target / f"{target}_loss.png", Path(curves) / f"{target}_loss.png")
    return errors


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs")
    p.add_argument("out")
    p.add_argument("curves")
    p.add_argument("--half", action="store_true", help="weight matrices in float16 (checked, see above)")
    p.add_argument("--example", default=str(Path(__file__).resolve().parents[2] / "unmix/assets/example/example.flac"))
    args = p.parse_args(argv)
    try:
        errors = assemble(args.runs, args.out, args.curves, args.half, args.example)
    except UnmixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for target, error in errors.items():
        print(f"{target}: float16 output error {error:.2e} x max")
    print("wrote", args.out, sorted(p.name for p in Path(args.out).iterdir()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
