"""The `unmix` command line: argparse only; the work is done by the API.

Each subcommand is a pair of functions: `_add_<name>(subparsers)` declares its
arguments, `_run_<name>(args)` calls the API with explicit parameters and
returns an exit code. `main(argv)` catches `UnmixError` and prints one line.
"""
import argparse
import logging
import math
import sys

from unmix import __version__
from unmix.errors import UnmixError, require_nnabla


def _integer(minimum, maximum=None):
    """An argparse `type`: an integer in [minimum, maximum], else a usage error (exit 2)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _seconds(zero_ok):
    """An argparse `type`: finite seconds, >= 0 (`zero_ok`) or > 0."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"must be finite and {'>= 0' if zero_ok else '> 0'} seconds, got {text}")
        return value
    parse.__name__ = "seconds"
    return parse


def _filename_template(text):
    """An argparse `type`: an output name template (see `unmix.separation.stems.check_filename`)."""
    from unmix.separation.stems import check_filename

    try:
        return check_filename(text)
    except UnmixError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _stem_name(text):
    """An argparse `type`: a name that becomes a file name (`unmix.io.paths.safe_name`)."""
    from unmix.io.paths import safe_name

    try:
        return safe_name(text, "name")
    except UnmixError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    from unmix.weights import convert

    out = convert.convert(args.src, args.out, targets=args.targets, force=args.force)
    print(f"wrote {out}")
    return 0


def _add_export(sub):
    p = sub.add_parser("export", help="export a model folder as ONNX graphs (for --model and other ONNX runtimes)",
                       description="Write <out>/<target>.onnx + separator.json: a model folder that --model takes "
                                   "without .h5 files or NNabla, and that ONNX Runtime reads in any language.")
    p.add_argument("model", help="model folder (separator.json + <target>.h5) or registry name")
    p.add_argument("out", help="folder to write <target>.onnx + separator.json into, "
                               "or a .onnx file for a single target")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default: onnx)")
    p.add_argument("--targets", nargs="+", default=None, help="targets to export (default: all)")
    p.add_argument("--streaming", action="store_true",
                   help="also write a step graph per target (<target>.step.onnx: mix frames, LSTM state h, c -> "
                        "target, h_out, c_out) for frame-by-frame streaming, e.g. in a plugin; causal models only")
    return p


def _run_export(args):
    from unmix.models.export import export
    from unmix.weights import registry

    model = registry.resolve_model(args.model)
    for path in export(model, args.out, targets=args.targets, force=args.force, streaming=args.streaming):
        print(f"wrote {path}")
    return 0


def _add_separate(sub):
    p = sub.add_parser("separate", help="separate audio files into stems",
                       description="Separate songs into <outdir>/<track>/<target>.<ext> (see --filename).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio files: wav, flac, ogg (soundfile); mp3, m4a, aac, .stem.mp4 (ffmpeg)")
    p.add_argument("--model", default=None,
                   help="registry name, model folder or 'bundled' (default: umxhq, downloaded once; the bundled "
                        "model when offline; see `unmix models`)")
    p.add_argument("--targets", nargs="+", default=None, help="targets to separate (default: all of the model)")
    p.add_argument("--outdir", default="separated", help="output folder (default: separated)")
    p.add_argument("--niter", type=_integer(0), default=1, help="Wiener EM iterations; 0 keeps the mixture phase")
    p.add_argument("--softmask", action="store_true", help="initial estimates by ratio masks")
    p.add_argument("--residual", default=None, metavar="NAME", type=_stem_name,
                   help="add a target NAME = mixture minus the other targets (a single target with --niter > 0 "
                        "gets one named accompaniment)")
    p.add_argument("--wiener-win-len", type=_integer(0), default=300,
                   help="frames per Wiener window (0: whole track)")
    p.add_argument("--start", type=_seconds(True), default=0.0, help="start offset in seconds")
    p.add_argument("--duration", type=_seconds(False), default=None,
                   help="seconds to separate (default: to the end)")
    p.add_argument("--filename", type=_filename_template, default="{track}/{target}.{ext}",
                   help="output names inside --outdir, from {track} (the input's name; the folder's name for "
                        "MUSDB's <song>/mixture.wav), {trackext}, {target} (or {stem}) and {ext} "
                        "(default: {track}/{target}.{ext})")
    p.add_argument("--ext", default=".wav", type=lambda text: "." + text.lower().lstrip("."),
                   choices=[".wav", ".flac", ".mp3"], help="output format (mp3 through ffmpeg)")
    p.add_argument("--bits", type=int, default=None, choices=[16, 24, 32],
                   help="bits per sample: wav 16, 24 or 32 (float, the default); flac 16 or 24 (the default)")
    p.add_argument("--mp3-bitrate", type=_integer(8, 320), default=320, metavar="KBPS",
                   help="mp3 bitrate in kbit/s (default: 320)")
    p.add_argument("--clip-mode", default="rescale", choices=["rescale", "clamp", "none"],
                   help="rescale: divide each stem by max(1.01 x its peak, 1) (default, as "
                        "demucs); clamp: clip at +-0.99; none: leave samples as they are (integer formats and mp3 "
                        "clip at full scale). Each stem rescaled or clipped is named with its peak")
    p.add_argument("--jobs", type=_integer(1), default=1, help="files separated in parallel processes")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="separate on the Dask cluster of this scheduler (tcp://host:8786) instead of local "
                        "processes; paths must be the same on every worker")
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "nnabla"],
                   help="network runtime: onnx (ONNX Runtime, fast) or nnabla")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="gpu: NNabla networks on cuDNN (needs nnabla-ext-cuda)")
    p.add_argument("--downmix", action="store_true", help="average inputs with more than 2 channels")
    p.add_argument("--force", action="store_true", help="overwrite existing track folders")
    return p


def _run_separate(args):
    from unmix.separation import stems

    try:
        fmt = stems.StemFormat(ext=args.ext, bits=args.bits, clip_mode=args.clip_mode, mp3_bitrate=args.mp3_bitrate)
    except UnmixError as exc:  # flac at 32 bits, mp3 with --bits: a usage error
        args._parser.error(str(exc))
    options = dict(model=args.model, targets=args.targets, niter=args.niter, softmask=args.softmask,
                   residual=args.residual, wiener_win_len=args.wiener_win_len or None, backend=args.backend,
                   device=args.device)
    file_options = dict(outdir=args.outdir, filename=args.filename, fmt=fmt, start=args.start,
                        duration=args.duration, force=args.force, downmix=args.downmix)
    failures = stems.separate_files(args.inputs, options, file_options, jobs=args.jobs, scheduler=args.scheduler)
    return 1 if failures else 0


def _add_demo(sub):
    p = sub.add_parser("demo", help="separate the bundled example song and plot its stems",
                       description="Separate the bundled 10 s example song with the default model; write "
                                   "<outdir>/<target>.wav and <outdir>/spectrograms.png.")
    p.add_argument("--outdir", default="separated/demo", help="output folder (default: separated/demo)")
    p.add_argument("--model", default=None,
                   help="registry name, model folder or 'bundled' (default: umxhq, downloaded once; the bundled "
                        "model when offline)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "nnabla"],
                   help="network runtime: onnx (ONNX Runtime, fast) or nnabla")
    return p


def _run_demo(args):
    from unmix.separation import demo

    for path in demo.run_demo(args.outdir, model=args.model, backend=args.backend).values():
        print(f"wrote {path}")
    return 0


def _add_train(sub):
    p = sub.add_parser(
        "train", help="train one target model (the open-unmix recipe), or X-UMX (--architecture xumx)",
        description="Train one target; --output becomes a model folder for `unmix separate --model DIR`. "
                    "Multi-GPU: mpirun -n N unmix train --context cudnn ...")
    p.add_argument("--root", default=None, help="dataset root (musdb: $MUSDB_PATH if unset)")
    p.add_argument("--dataset", default="musdb",
                   choices=["musdb", "aligned", "sourcefolder", "trackfolder_fix", "trackfolder_var"])
    p.add_argument("--is-wav", action="store_true", help="musdb: read the MUSDB18-HQ folder layout")
    p.add_argument("--target", default="vocals", help="target source (musdb; ignored by xumx)")
    p.add_argument("--architecture", default="umx", choices=["umx", "xumx"],
                   help="umx: one target; xumx: X-UMX, one network for bass, drums, vocals and other trained "
                        "jointly with its multi-domain combination loss (musdb)")
    p.add_argument("--mcoef", type=float, default=10.0, help="xumx: weight of the time-domain (weighted SDR) loss")
    p.add_argument("--valid-dur", type=float, default=10.0, help="xumx: seconds per validation chunk")
    p.add_argument("--output", default="open-unmix", help="model folder to write")
    p.add_argument("--checkpoint", default=None, metavar="DIR", help="resume the training saved in DIR")
    p.add_argument("--model", default=None, help="fine-tune from a model folder or registry name")
    p.add_argument("--force", action="store_true",
                   help="start over where --output holds a training or model of --target: its files (weights, "
                        "checkpoint, history, plot) are replaced when the new run starts; other targets stay")
    p.add_argument("--epochs", type=int, default=1000,
                   help="total epochs (a resumed run continues to it); 0 trains nothing and writes the initial "
                        "weights (input statistics set) as a model folder that separates, and a checkpoint")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.001, help="learning rate")
    p.add_argument("--patience", type=int, default=None,
                   help="early-stopping patience (epochs; default 140, with --architecture xumx 1000 as Sony's: "
                        "no early stopping within the 1000 epochs)")
    p.add_argument("--lr-decay-patience", type=int, default=80, help="plateau epochs before a decay")
    p.add_argument("--lr-decay-gamma", type=float, default=0.3, help="learning-rate decay factor")
    p.add_argument("--weight-decay", type=float, default=0.00001)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--seq-dur", type=float, default=6.0, help="seconds per training sample (<= 0: full tracks)")
    p.add_argument("--samples-per-track", type=int, default=None,
                   help="training samples per track and epoch (default: 64 for musdb, 1 for the others, "
                        "as the reference)")
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--nb-layers", type=int, default=3, help="LSTM layers")
    p.add_argument("--unidirectional", action="store_true", help="causal (unidirectional) LSTM")
    p.add_argument("--nb-channels", type=int, default=2, choices=[1, 2])
    p.add_argument("--bandwidth", type=float, default=16000, help="highest frequency (Hz) the model sees")
    p.add_argument("--nfft", type=int, default=None, help="STFT size (default 4096, or the --model's)")
    p.add_argument("--nhop", type=int, default=None, help="STFT hop (default 1024, or the --model's)")
    p.add_argument("--nb-workers", type=int, default=0, help="data loading processes")
    p.add_argument("--source-augmentations", nargs="+", default=None,
                   help="gain, channelswap, force_stereo (default: gain channelswap for musdb, none otherwise)")
    p.add_argument("--valid-tracks", nargs="+", default=None, help="track names held out for validation")
    p.add_argument("--context", default="cpu", choices=["cpu", "cuda", "cudnn"], help="NNabla context")
    p.add_argument("--valid-backend", default="auto", choices=["auto", "onnx", "nnabla"],
                   help="validation runtime (auto: onnx on cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    g = p.add_argument_group("dataset files (as open-unmix's)")
    g.add_argument("--input-file", help="aligned: mixture file name/glob")
    g.add_argument("--output-file", help="aligned: target file name/glob")
    g.add_argument("--target-dir", help="sourcefolder: folder of the target")
    g.add_argument("--interferer-dirs", nargs="+", help="sourcefolder: folders of the interferers")
    g.add_argument("--ext", help="sourcefolder, trackfolder_var: audio extension (default .wav)")
    g.add_argument("--nb-train-samples", type=int, help="sourcefolder: samples per epoch")
    g.add_argument("--nb-valid-samples", type=int, help="sourcefolder: validation samples")
    g.add_argument("--target-file", help="trackfolder_*: target file name")
    g.add_argument("--interferer-files", nargs="+", help="trackfolder_fix: interferer file names")
    g.add_argument("--random-track-mix", action="store_true", help="trackfolder_fix: mix across tracks")
    g.add_argument("--random-interferer-mix", action="store_true", help="trackfolder_var: mix across tracks")
    g.add_argument("--silence-missing", action="store_true",
                   help="trackfolder_var: use tracks without the target (silent target)")
    return p


def _run_train(args):
    require_nnabla("`unmix train`")
    from unmix.training import train
    from unmix.training.options import TrainOptions

    names = ("input_file", "output_file", "target_dir", "interferer_dirs", "ext", "nb_train_samples",
             "nb_valid_samples", "target_file", "interferer_files")
    dataset_options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    for flag, key in (("random_track_mix", "random_track_mix"), ("random_interferer_mix", "random_interferer_mix"),
                      ("silence_missing", "silence_missing_targets")):
        if getattr(args, flag):
            dataset_options[key] = True
    options = TrainOptions(
        root=args.root, output=args.output, dataset=args.dataset, target=args.target, is_wav=args.is_wav,
        checkpoint=args.checkpoint, model=args.model, force=args.force, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, patience=args.patience, lr_decay_patience=args.lr_decay_patience,
        lr_decay_gamma=args.lr_decay_gamma, weight_decay=args.weight_decay, seed=args.seed, seq_dur=args.seq_dur,
        samples_per_track=args.samples_per_track, hidden_size=args.hidden_size, nb_layers=args.nb_layers,
        unidirectional=args.unidirectional, nb_channels=args.nb_channels, bandwidth=args.bandwidth,
        nfft=args.nfft, nhop=args.nhop, nb_workers=args.nb_workers,
        source_augmentations=args.source_augmentations, valid_tracks=args.valid_tracks,
        dataset_options=dataset_options, context=args.context, valid_backend=args.valid_backend,
        quiet=args.quiet, architecture=args.architecture, mcoef=args.mcoef, valid_dur=args.valid_dur)
    result = train.train(options)
    interrupted = result.stopped == "interrupted"
    if interrupted or not args.quiet:
        best = "none" if result.best_loss is None else f"{result.best_loss:.5g} (epoch {result.best_epoch})"
        if not result.has_model:
            where = f"checkpoint in {result.output} (no model weights yet)"
        elif result.best_epoch == 0:
            where = f"model folder {result.output} (no epoch trained: the initial weights)"
        else:
            where = f"model folder {result.output}"
        print(f"{result.target}: {result.epochs_trained} epochs ({result.stopped}), best valid loss {best}; {where}"
              + (f"; resume with --checkpoint {result.output}" if interrupted else ""),
              file=sys.stderr if interrupted else sys.stdout)
    return 130 if interrupted else 0


def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate", help="score a model (or an oracle) on MUSDB18 with museval (BSSEval v4)",
        description="Separate every track of a MUSDB18 (.stem.mp4) or MUSDB18-HQ (wav/flac folders) subset, "
                    "score it with museval as MUSDB papers do, write <evaldir>/<subset>/<track>.json "
                    "(finished tracks are skipped on a rerun) and the median-of-medians table "
                    "<evaldir>/scores.csv and scores.md.")
    p.add_argument("--root", required=True, help="MUSDB18 folder (holding train/ and test/)")
    p.add_argument("--subset", default="test", help="subset folder (default: test)")
    p.add_argument("--is-wav", action="store_true", help="read the MUSDB18-HQ folder layout")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--model", default=None, help="registry name or model folder (default: the default model)")
    what.add_argument("--oracle", default=None, choices=["IRM1", "IRM2", "IBM", "MIX"],
                      help="score an oracle instead: ratio masks of magnitudes (IRM1) or powers (IRM2), "
                           "binary masks (IBM), on sigsep-mus-oracle's STFT (2048 / hop 1024, Hann), "
                           "or the mixture as every estimate (MIX)")
    p.add_argument("--targets", nargs="+", default=None,
                   help="targets to estimate (default: all of the model; an oracle's: vocals drums bass other)")
    p.add_argument("--niter", type=_integer(0), default=1, help="Wiener EM iterations (default: 1)")
    p.add_argument("--residual", default=None, metavar="NAME", type=_stem_name,
                   help="add a target NAME = mixture minus the others")
    p.add_argument("--wiener-win-len", type=_integer(0), default=300,
                   help="frames per Wiener window (default: 300, bounded memory); 0: whole tracks, as the "
                        "reference's evaluate.py filters for the published umx/umxhq scores (it never passes "
                        "its --wiener-win-len on), which needs several GB for a 7-minute track")
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "nnabla"], help="network runtime")
    p.add_argument("--outdir", default=None, help="also write the estimates to <outdir>/<subset>/<track>/")
    p.add_argument("--evaldir", default=None,
                   help="scores folder, one per model and settings (kept in its settings.json): tracks scored "
                        "there are skipped, other settings are refused (default: eval/<model or oracle name>)")
    p.add_argument("--cores", type=_integer(1), default=1, help="tracks evaluated in parallel processes")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the tracks on the Dask cluster of this scheduler (tcp://host:8786) instead of "
                        "local processes; paths must be the same on every worker")
    p.add_argument("--scorer", default="fast", choices=["fast", "museval"],
                   help="BSSEval v4 implementation: fast (unmix's, museval's numbers within 1e-3 dB, "
                        "default) or museval itself")
    p.add_argument("--tracks", nargs="+", default=None, metavar="NAME", help="evaluate only these tracks")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a per-track SDR box plot")
    return p


def _run_evaluate(args):
    from unmix.evaluation import evaluate

    options = evaluate.EvaluateOptions(
        root=args.root, subset=args.subset, is_wav=args.is_wav, tracks=args.tracks, model=args.model,
        targets=args.targets, niter=args.niter, residual=args.residual, wiener_win_len=args.wiener_win_len,
        backend=args.backend, oracle=args.oracle, outdir=args.outdir, evaldir=args.evaldir, cores=args.cores,
        scheduler=args.scheduler, scorer=args.scorer, plot=args.plot)
    result = evaluate.evaluate(options)
    print(f"{result.method}: median over 1 s frames, then over {len(result.tracks)} tracks (dB), "
          f"scorer {result.scorer}")
    print(result.table)
    print(f"wrote {result.evaldir / 'scores.csv'} and {result.evaldir / 'scores.md'}"
          + (f", {args.plot}" if args.plot else ""))
    return 0


def _add_stream(sub):
    p = sub.add_parser(
        "stream", help="separate in real time: a file, a raw PCM pipe or an audio device, with a live remix",
        description="Stream through a separator block by block. A causal (unidirectional) model streams "
                    "sample-exact with about one STFT window of delay; any model streams block-online with "
                    "--chunk. Examples: `unmix stream song.mp3 --outdir stems/`; `ffmpeg -i song.mp3 -f f32le "
                    "-ac 2 -ar 44100 - | unmix stream - --rate 44100 --channels 2 --mix vocals=0 > karaoke.f32`; "
                    "`unmix stream song.wav --output-device default --mix vocals=0`.")
    p.add_argument("input", nargs="?", default=None,
                   help="audio file, or - for raw PCM on stdin (--format, --rate, --channels); "
                        "omit with --input-device")
    p.add_argument("--model", default=None,
                   help="registry name or model folder (default: bundled-rt, the causal model, where this version "
                        "ships it; else as separate)")
    p.add_argument("--targets", nargs="+", default=None, help="targets to separate (default: all of the model)")
    p.add_argument("--niter", type=_integer(0), default=0,
                   help="Wiener EM iterations (default 0: ratio masks, frame by frame); >= 1 with a causal "
                        "model: the causal filter (covariances from past frames)")
    p.add_argument("--softmask", action="store_true", help="initial estimates by ratio masks")
    p.add_argument("--residual", default=None, metavar="NAME", help="add a target NAME = mixture minus the others")
    p.add_argument("--wiener-win-len", type=_integer(0), default=300,
                   help="frames of the Wiener statistics: the causal filter's exponential window "
                        "(0: every past frame); block-online: the offline filter's windows")
    p.add_argument("--block", type=_integer(1), default=None, metavar="SAMPLES",
                   help="samples per block (default: the model's hop for pipes and devices, 1 s for files)")
    p.add_argument("--chunk", type=_seconds(False), default=None, metavar="SECONDS",
                   help="block-online streaming in chunks of SECONDS (any model, bidirectional ones too); "
                        "latency about chunk + lookahead")
    p.add_argument("--lookahead", type=_seconds(True), default=None, metavar="SECONDS",
                   help="block-online: future context after each chunk, and the cross-fade (default 0.5)")
    p.add_argument("--past", type=_seconds(True), default=None, metavar="SECONDS",
                   help="block-online: past context before each chunk (default: --lookahead)")
    p.add_argument("--mix", default=None, metavar="TARGET=GAIN,...",
                   help="the remix written to the pipe or played: e.g. vocals=0 (karaoke) or drums=0,bass=1.5; "
                        "targets not named keep gain 1")
    p.add_argument("--outdir", default=None,
                   help="write the stems: for a file as `separate` does (<outdir>/<track>/<target>.wav); for a "
                        "pipe or a device, recorded while streaming into <outdir>/<name>/")
    p.add_argument("--name", default=None, help="folder name of stems recorded from a pipe or a device "
                                                "(default: the input's name, or 'live')")
    p.add_argument("--ext", default=".wav", type=lambda text: "." + text.lower().lstrip("."),
                   choices=[".wav", ".flac", ".mp3"], help="stem format for a file input (as separate)")
    p.add_argument("--bits", type=int, default=None, choices=[16, 24, 32], help="bits per sample (as separate)")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="write the remix as raw PCM to FILE (- : stdout; the default for a pipe input)")
    p.add_argument("--format", default="f32le", choices=["f32le", "s16le", "s32le"],
                   help="raw PCM sample format of a pipe's input and output (default f32le)")
    p.add_argument("--rate", type=_integer(1), default=None,
                   help="sample rate of raw PCM input (must be the model's)")
    p.add_argument("--channels", type=_integer(1, 2), default=2, help="channels of raw PCM input (default 2)")
    p.add_argument("--input-device", default=None, metavar="DEVICE",
                   help="capture from a PortAudio device (a name, part of one, or an index; 'default')")
    p.add_argument("--output-device", default=None, metavar="DEVICE",
                   help="play the remix on a PortAudio device (name, index or 'default')")
    p.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    p.add_argument("--duration", type=_seconds(False), default=None,
                   help="stop capturing from --input-device after SECONDS (default: until Ctrl-C)")
    p.add_argument("--stats", action="store_true",
                   help="print the latency and the compute time per block every few seconds (a summary is "
                        "always printed at the end)")
    p.add_argument("--force", action="store_true", help="replace existing stems")
    return p


def _run_stream(args):
    from unmix.separation import live, pipes

    if args.list_devices:
        print(live.list_devices())
        return 0
    if (args.input is None) == (args.input_device is None):
        args._parser.error("give an INPUT (a file or -) or --input-device, not both")
    options = dict(model=args.model, targets=args.targets, niter=args.niter, softmask=args.softmask,
                   residual=args.residual, wiener_win_len=args.wiener_win_len)
    streaming = dict(block=args.block, chunk=args.chunk, lookahead=args.lookahead, past=args.past)
    if args.input_device is not None or args.output_device is not None:
        return live.run_live(options, streaming, source=args.input, input_device=args.input_device,
                             output_device=args.output_device, mix=args.mix, outdir=args.outdir, name=args.name,
                             duration=args.duration, stats=args.stats, force=args.force, fmt=args.format,
                             rate=args.rate, channels=args.channels)
    if args.input == "-":
        output = args.output or ("-" if args.outdir is None else None)
        return pipes.run_pipe_command(options, streaming, output=output, fmt=args.format, rate=args.rate,
                                      channels=args.channels, mix=args.mix, outdir=args.outdir, name=args.name,
                                      stats=args.stats, force=args.force)
    if args.outdir is None and args.output is None:
        args._parser.error("a file input needs --outdir (its stems), --output (the remix as raw PCM) "
                           "or --output-device")
    return pipes.run_file_command(options, streaming, args.input, outdir=args.outdir, output=args.output,
                                  fmt=args.format, mix=args.mix, ext=args.ext, bits=args.bits, stats=args.stats,
                                  force=args.force)


def _add_models(sub):
    return sub.add_parser("models", help="list the models `--model NAME` takes, and the default")


def _run_models(args):
    from unmix.weights import registry

    print(registry.list_models())
    return 0


def _add_serve(sub):
    p = sub.add_parser("serve", help="a local web app: drop songs in a browser, get their stems and a mixer",
                       description="Start the web app (default http://127.0.0.1:8000): drop songs, choose the "
                                   "model and stems, follow the queue, play the stems in a mixer, download them. "
                                   "Jobs are kept in --data and resume after a restart.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only); any other needs a token, "
                        "generated unless --token")
    p.add_argument("--port", type=_integer(0, 65535), default=8000, help="port (default 8000; 0: a free one)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder of the jobs database and the stems (default: <$UNMIX_CACHE or ~/.cache/unmix>/web)")
    p.add_argument("--jobs", type=_integer(1), default=1, help="songs separated at once (default 1)")
    p.add_argument("--token", default=None,
                   help="require this token on every request (default: none on 127.0.0.1, a generated one on "
                        "any other host)")
    p.add_argument("--max-upload", default="1G", metavar="SIZE",
                   help="largest song accepted, e.g. 500M or 2G (default 1G); larger uploads get HTTP 413")
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def _run_serve(args):
    from unmix.web import server, uploads

    try:
        max_upload = uploads.parse_size(args.max_upload)
    except UnmixError as exc:
        args._parser.error(f"--max-upload: {exc}")
    return server.serve(args.data, host=args.host, port=args.port, jobs=args.jobs, token=args.token,
                        max_upload=max_upload, verbose=args.verbose)


# (name, add-function, run-function); later stages append here.
COMMANDS = [
    ("separate", _add_separate, _run_separate),
    ("models", _add_models, _run_models),
    ("convert", _add_convert, _run_convert),
    ("export", _add_export, _run_export),
    ("demo", _add_demo, _run_demo),
    ("train", _add_train, _run_train),
    ("evaluate", _add_evaluate, _run_evaluate),
    ("stream", _add_stream, _run_stream),
    ("serve", _add_serve, _run_serve),
]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="unmix", description="Open-Unmix music source separation in NNabla."
    )
    parser.add_argument("--version", action="version", version=f"unmix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add, run in COMMANDS:
        p = add(sub)
        p.set_defaults(_run=run, _parser=p)
    return parser


def main(argv=None):
    """Run the CLI; returns the exit code (0 ok, 1 user error, 2 usage)."""
    # NNabla logs "Initializing CPU extension..." at INFO when imported; users need its warnings only
    logging.getLogger("nnabla").setLevel(logging.WARNING)
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
