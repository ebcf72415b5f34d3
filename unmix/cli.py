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


# (name, add-function, run-function); later stages append here.
COMMANDS = [
    ("convert", _add_convert, _run_convert),
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
