"""The `unmix` command line: argparse only; the work is done by the API.

Each subcommand is a pair of functions: `_add_<name>(subparsers)` declares its
arguments, `_run_<name>(args)` calls the API with explicit parameters and
returns an exit code. `main(argv)` catches `UnmixError` and prints one line.
"""
import argparse
import sys

from unmix import __version__
from unmix.errors import UnmixError


def _add_convert(sub):
    p = sub.add_parser(
        "convert",
        help="convert open-unmix-pytorch (.pth) or Sony NNabla (.h5) weights to a model folder",
    )
    p.add_argument("src", help="folder with <target>.pth (+ separator.json/<target>.json), "
                               "published files such as vocals-b62c91ce.pth, or a Sony .h5 file")
    p.add_argument("out", help="model folder to write")
    p.add_argument("--targets", nargs="+", default=None, help="targets to convert (default: all found)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model folder")
    return p


def _run_convert(args):
    from unmix import convert

    out = convert.convert(args.src, args.out, targets=args.targets, force=args.force)
    print(f"wrote {out}")
    return 0


def _add_export(sub):
    p = sub.add_parser("export", help="export a model folder for fast CPU inference (ONNX Runtime)")
    p.add_argument("model", help="model folder (separator.json + <target>.h5)")
    p.add_argument("out", help="folder to write <target>.onnx + separator.json into, "
                               "or a .onnx file for a single target")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default: onnx)")
    p.add_argument("--targets", nargs="+", default=None, help="targets to export (default: all)")
    return p


def _run_export(args):
    from unmix import onnx_backend

    for path in onnx_backend.export(args.model, args.out, targets=args.targets):
        print(f"wrote {path}")
    return 0


def _add_separate(sub):
    p = sub.add_parser("separate", help="separate audio files into stems",
                       description="Separate songs into <outdir>/<track>/<target><ext>.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio files: wav, flac, ogg (soundfile); mp3, m4a, aac, .stem.mp4 (ffmpeg)")
    p.add_argument("--model", default=None,
                   help="registry name or model folder (default: the bundled model unless a published one "
                        "is cached; see `unmix models`)")
    p.add_argument("--targets", nargs="+", default=None, help="targets to separate (default: all of the model)")
    p.add_argument("--outdir", default="separated", help="output folder (default: separated)")
    p.add_argument("--niter", type=int, default=1, help="Wiener EM iterations; 0 keeps the mixture phase")
    p.add_argument("--softmask", action="store_true", help="initial estimates by ratio masks")
    p.add_argument("--residual", default=None, metavar="NAME",
                   help="add a target NAME = mixture minus the other targets")
    p.add_argument("--wiener-win-len", type=int, default=300, help="frames per Wiener window (0: whole track)")
    p.add_argument("--start", type=float, default=0.0, help="start offset in seconds")
    p.add_argument("--duration", type=float, default=None, help="seconds to separate (default: to the end)")
    p.add_argument("--ext", default=".wav", choices=[".wav", ".flac"], help="output format")
    p.add_argument("--jobs", type=int, default=1, help="files separated in parallel processes")
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "nnabla"],
                   help="network runtime: onnx (ONNX Runtime, fast) or nnabla")
    p.add_argument("--downmix", action="store_true", help="average inputs with more than 2 channels")
    p.add_argument("--force", action="store_true", help="overwrite existing track folders")
    return p


def _run_separate(args):
    from unmix import stems

    options = dict(model=args.model, targets=args.targets, niter=args.niter, softmask=args.softmask,
                   residual=args.residual, wiener_win_len=args.wiener_win_len or None, backend=args.backend)
    file_options = dict(outdir=args.outdir, ext=args.ext, start=args.start, duration=args.duration,
                        force=args.force, downmix=args.downmix)
    failures = stems.separate_files(args.inputs, options, file_options, jobs=args.jobs)
    return 1 if failures else 0


def _add_demo(sub):
    p = sub.add_parser("demo", help="separate the bundled example song and plot its stems",
                       description="Separate the bundled 10 s example song with the default model; write "
                                   "<outdir>/<target>.wav and <outdir>/spectrograms.png.")
    p.add_argument("--outdir", default="separated/demo", help="output folder (default: separated/demo)")
    p.add_argument("--model", default=None,
                   help="registry name or model folder (default: the bundled model unless a published one "
                        "is cached)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "nnabla"],
                   help="network runtime: onnx (ONNX Runtime, fast) or nnabla")
    return p


def _run_demo(args):
    from unmix import demo

    for path in demo.run_demo(args.outdir, model=args.model, backend=args.backend).values():
        print(f"wrote {path}")
    return 0


# (name, add-function, run-function); later stages append here.
COMMANDS = [
    ("separate", _add_separate, _run_separate),
    ("convert", _add_convert, _run_convert),
    ("export", _add_export, _run_export),
    ("demo", _add_demo, _run_demo),
]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="unmix", description="Open-Unmix music source separation in NNabla."
    )
    parser.add_argument("--version", action="version", version=f"unmix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add, run in COMMANDS:
        add(sub).set_defaults(_run=run)
    return parser


def main(argv=None):
    """Run the CLI; returns the exit code (0 ok, 1 user error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args._run(args)
    except UnmixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
