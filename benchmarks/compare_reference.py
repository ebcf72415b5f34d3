"""unmix against open-unmix-pytorch on the same machine: time, peak memory, stages, FLOP rate.

One run does everything:

1. once, into a cache folder: four umxhq-shaped open-unmix models with random weights, written
   by the reference itself (`reference_worker.py make-model`: <target>.pth, <target>.json,
   separator.json), converted with `unmix convert`; stereo 44.1 kHz test songs (16-bit wav);
2. for every song length and niter: N repetitions, alternating which implementation goes first,
   each separation in a fresh process with the same thread count (torch.set_num_threads(T);
   ONNX Runtime intra-op T; OMP/MKL/OpenBLAS T); median of N;
3. markdown tables: wall seconds and peak RSS (VmHWM of the child) per implementation with
   ratios reference / unmix, the per-stage split, the model loading, how far the networks are
   from their FLOP bound, and the largest difference between the two implementations' stems.

What is timed as "separation" is what a user waits for once the models are loaded: read the
song, separate it, write the four stems (unmix: `stems.separate_file`, exactly what
`unmix separate` does per file; reference: `Separator.forward` replicated with stage timers,
see reference_worker.py). Loading (imports, weights, ONNX sessions) is reported apart.

    .venv/bin/python benchmarks/compare_reference.py [--seconds 30 60 300] [--niter 0 1]
        [--repeats 3] [--threads 2] [--cache benchmarks/.cache] [--json results.json]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TORCH_PYTHON = str(ROOT.parent / "envs" / "torch311" / "bin" / "python")  # beside the repo
RATE = 44100
TARGETS = ["vocals", "drums", "bass", "other"]
# umxhq: 2049 bins (1487 used by the encoder), stereo, hidden 512, 3 bidirectional LSTM layers
UMXHQ = dict(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487)
N_FFT, N_HOP = 4096, 1024
STAGES = ["stft", "networks", "wiener", "istft", "io", "other"]


# -- FLOPs ------------------------------------------------------------------------------------
def network_flops(nb_frames, nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487,
                  nb_targets=4):
    """Multiply-add FLOPs (2 per MAC) of the target networks on `nb_frames` frames.

    Per frame and target: fc1 (nb_channels * max_bin -> hidden), every LSTM layer and direction
    (input and recurrent projections to 4 gates of hidden/2), fc2 (2 * hidden -> hidden),
    fc3 (hidden -> nb_channels * nb_bins). Element-wise work (batch norm, gates, tanh) is < 1%.
    """
    h = hidden_size // 2  # per direction
    fc1 = nb_channels * max_bin * hidden_size
    lstm = nb_layers * 2 * 4 * h * (hidden_size + h)  # every layer's input is hidden_size wide
    fc2 = 2 * hidden_size * hidden_size
    fc3 = hidden_size * nb_channels * nb_bins
    return 2 * (fc1 + lstm + fc2 + fc3) * nb_frames * nb_targets


def nb_frames_for(nb_timesteps):
    return 1 + nb_timesteps // N_HOP  # centred STFT: (nb_timesteps + n_fft - n_fft) // n_hop + 1


# -- set-up -----------------------------------------------------------------------------------
def child_env(threads):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tools" / "fixtures" / "stubs"), env.get("PYTHONPATH")]))
    return env


def setup(cache, seconds, torch_python):
    """Reference model, converted unmix model and songs in `cache` (made once, then reused)."""
    cache.mkdir(parents=True, exist_ok=True)
    ref_model, unmix_model = cache / "reference-umxhq-random", cache / "unmix-umxhq-random"
    if not (ref_model / "separator.json").is_file():
        print(f"writing random umxhq-shaped reference weights to {ref_model}", file=sys.stderr)
        _check_call([torch_python, str(HERE / "reference_worker.py"), "make-model", str(ref_model)], child_env(1))
        shutil.rmtree(unmix_model, ignore_errors=True)
    if not (unmix_model / "separator.json").is_file():
        print(f"unmix convert {ref_model} {unmix_model}", file=sys.stderr)
        _check_call([sys.executable, "-m", "unmix", "convert", str(ref_model), str(unmix_model)], child_env(1))
    songs = {s: make_song(cache / f"song_{s:g}s.wav", s) for s in seconds}
    return ref_model, unmix_model, songs


def make_song(path, seconds):
    """Stereo test audio, 16-bit wav: a few decaying tones over noise (deterministic, written in blocks)."""
    if path.is_file():
        return path
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    with sf.SoundFile(str(path) + ".part", "w", RATE, 2, subtype="PCM_16", format="WAV") as f:
        for _ in range(int(seconds)):
            freqs = rng.choice([110.0, 220.0, 330.0, 440.0, 660.0, 880.0], 3)
            tones = sum(np.sin(2 * np.pi * fr * t) * np.exp(-3 * t) for fr in freqs)
            noise = rng.standard_normal((2, RATE)) * 0.05
            block = 0.15 * np.stack([tones, 0.8 * tones + 0.2 * np.roll(tones, 50)]) + noise
            f.write(block.T.astype(np.float32))
    os.replace(str(path) + ".part", path)
    return path


def _check_call(cmd, env):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc.stdout


# -- one run ----------------------------------------------------------------------------------
def run_child(impl, model, song, niter, threads, outdir, torch_python):
    """One separation in a fresh process -> its JSON report plus the parent's wall seconds."""
    if impl == "reference":
        cmd = [torch_python, str(HERE / "reference_worker.py"), "separate"]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "unmix-child"]
    cmd += ["--model", str(model), "--audio", str(song), "--niter", str(niter), "--threads", str(threads),
            "--outdir", str(outdir)]
    start = time.perf_counter()
    out = _check_call(cmd, child_env(threads))
    report = json.loads(out.strip().splitlines()[-1])
    report["process_wall"] = time.perf_counter() - start
    return report


def unmix_child(model, audio, niter, threads, outdir):
    """The unmix side: `unmix separate` for one file (as the CLI does it), with stage timers."""
    t0 = time.perf_counter()
    from unmix.io import audio as audio_io
    from unmix.dsp import filtering
    from unmix.models import nnabla_graph as _model
    from unmix.models import onnx_graph as _onnx
    from unmix.separation import stems
    from unmix.dsp import transforms# noqa: F401
    from unmix.separation.separator import load_separator

    timers = {}
    t1 = time.perf_counter()
    sep = load_separator(model, niter=niter, backend="onnx", nb_threads=threads)
    t2 = time.perf_counter()
    for name, stage in [("stft_frames", "stft"), ("magnitude", "stft")]:
        _wrap(transforms, name, stage, timers)
    # the Separator calls the planar Wiener filter (`wiener` itself wraps it: never wrap both)
    _wrap(filtering, "wiener_planar" if hasattr(filtering, "wiener_planar") else "wiener", "wiener", timers)
    _wrap(transforms.OverlapAdd, "add", "istft", timers)
    _wrap(audio_io, "load", "io", timers)
    _wrap(audio_io.StreamWriter, "write", "io", timers)
    _wrap(audio_io.StreamWriter, "close", "io", timers)
    for net in sep.models.values():
        for method in ("encode", "recur", "decode"):
            _wrap(net, method, f"networks.{method}", timers)
    t3 = time.perf_counter()
    # float wav as the reference writes, unscaled (--clip-mode none), straight to <outdir>/<target>.wav
    stems.separate_file(audio, sep, outdir, filename="{target}.{ext}", fmt=stems.StemFormat(clip_mode="none"),
                        force=True)
    t4 = time.perf_counter()
    seconds = {stage: _covered(spans) for stage, spans in timers.items()}
    seconds["networks"] = _covered([s for k, spans in timers.items() if k.startswith("networks.") for s in spans])
    separation = t4 - t3
    # the stem writes run on a thread, overlapping the other stages: "other" is the time that
    # no stage covers
    seconds["other"] = separation - _covered([s for spans in timers.values() for s in spans])
    return {"impl": "unmix", "import": t1 - t0, "load": t2 - t1, "separation": separation, "stages": seconds,
            "peak_mb": _peak_rss_mb(), "threads": threads}


def _wrap(owner, name, stage, timers):
    """Replace ``owner.name`` by the same callable that records its (start, end) in ``timers[stage]``."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timers.setdefault(stage, []).append((start, time.perf_counter()))

    setattr(owner, name, timed)


def _covered(spans):
    """Seconds covered by the union of (start, end) spans: calls that overlap in time (the
    targets' recurrences run side by side on threads) count once, as wall time."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _peak_rss_mb():
    """Peak resident memory of this process (VmHWM counts this program only, not the parent
    that forked it, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_gflops(threads, torch_python, n=2048, repeats=5):
    """Measured float32 GEMM rate (GFLOP/s) at `threads` threads: numpy (OpenBLAS) and torch."""
    code = (f"import time, numpy as np\n"
            f"a = np.random.default_rng(0).standard_normal(({n}, {n}), dtype=np.float32); b = a.copy()\n"
            f"a @ b\nbest = 1e9\n"
            f"for _ in range({repeats}):\n"
            f"    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)\n"
            f"print(2 * {n}**3 / best / 1e9)\n")
    torch_code = (f"import time, torch\ntorch.set_num_threads({threads})\n"
                  f"a = torch.randn({n}, {n}); b = a.clone()\na @ b\nbest = 1e9\n"
                  f"for _ in range({repeats}):\n"
                  f"    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)\n"
                  f"print(2 * {n}**3 / best / 1e9)\n")
    env = child_env(threads)
    return {"numpy": float(_check_call([sys.executable, "-c", code], env)),
            "torch": float(_check_call([torch_python, "-c", torch_code], env))}


# -- comparison of the outputs ---------------------------------------------------------------
def max_difference(ref_dir, unmix_dir):
    """max |reference - unmix| over all stems and samples, and the stems' max |.|."""
    import numpy as np
    import soundfile as sf

    diff = peak = 0.0
    for target in TARGETS:
        ref = np.load(Path(ref_dir) / f"{target}.npy")
        est, _ = sf.read(str(Path(unmix_dir) / f"{target}.wav"), dtype="float32", always_2d=True)
        if est.T.shape != ref.shape:
            raise SystemExit(f"{target}: reference {ref.shape} vs unmix {est.T.shape}")
        diff = max(diff, float(np.abs(ref - est.T).max()))
        peak = max(peak, float(np.abs(ref).max()))
    return diff, peak


# -- the benchmark ----------------------------------------------------------------------------
def benchmark(args):
    cache = Path(args.cache)
    ref_model, unmix_model, songs = setup(cache, args.seconds, args.torch_python)
    models = {"reference": ref_model, "unmix": unmix_model}
    results = []
    for seconds, song in songs.items():
        for niter in args.niter:
            runs = {"reference": [], "unmix": []}
            diff = None
            for rep in range(args.repeats):
                order = ["reference", "unmix"] if rep % 2 == 0 else ["unmix", "reference"]
                with tempfile.TemporaryDirectory(prefix="unmix-bench-") as tmp:
                    for impl in order:
                        outdir = Path(tmp) / impl
                        runs[impl].append(run_child(impl, models[impl], song, niter, args.threads, outdir,
                                                    args.torch_python))
                        r = runs[impl][-1]
                        print(f"{seconds:g} s niter {niter} rep {rep} {impl:9s}: separation {r['separation']:.2f} s"
                              f", peak {r['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
                    if rep == 0:
                        diff = max_difference(Path(tmp) / "reference", Path(tmp) / "unmix")
            results.append({"seconds": seconds, "niter": niter, "runs": runs, "max_diff": diff})
    return results


def median(runs, key, stage=None):
    values = [r["stages"].get(stage, 0.0) if stage else r[key] for r in runs]
    return statistics.median(values)


def report(results, args, gemm):
    lines = []
    add = lines.append
    add(f"Threads: {args.threads}; median of {args.repeats} runs; separation = read song + separate + write "
        "4 stems (models loaded); peak = the child's VmHWM.\n")
    add("| audio | niter | reference (s) | unmix (s) | speed-up | reference peak (MB) | unmix peak (MB) "
        "| memory ratio | max abs diff (stem peak) |")
    add("|---|---|---|---|---|---|---|---|---|")
    for res in results:
        ref, umx = res["runs"]["reference"], res["runs"]["unmix"]
        rs, us = median(ref, "separation"), median(umx, "separation")
        rp, up = median(ref, "peak_mb"), median(umx, "peak_mb")
        diff, peak = res["max_diff"]
        add(f"| {res['seconds']:g} s | {res['niter']} | {rs:.2f} | {us:.2f} | {rs / us:.2f}x | {rp:.0f} | {up:.0f} "
            f"| {rp / up:.2f}x | {diff:.1e} ({peak:.2f}) |")

    add("\nPer stage (seconds, median; STFT includes the magnitude, networks all four targets, "
        "I/O the wav reading and stem writing, other the rest: copies, stacking, resampling checks):\n")
    add("| audio | niter | impl | STFT | networks | Wiener | ISTFT | I/O | other | separation |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        cells = {impl: [median(res["runs"][impl], None, s) for s in STAGES] + [median(res["runs"][impl], "separation")]
                 for impl in ("reference", "unmix")}
        for impl in ("reference", "unmix"):
            add(f"| {res['seconds']:g} s | {res['niter']} | {impl} | " + " | ".join(f"{v:.2f}" for v in cells[impl])
                + " |")
        ratios = [(a / b if b > 1e-3 else float("nan")) for a, b in zip(cells["reference"], cells["unmix"])]
        add(f"| | | ratio | " + " | ".join(f"{r:.1f}x" for r in ratios) + " |")

    add("\nModel loading (not in the separation; median over all runs):\n")
    add("| impl | imports (s) | model load (s) | process wall incl. everything, longest song, niter "
        f"{results[-1]['niter']} (s) |")
    add("|---|---|---|---|")
    for impl in ("reference", "unmix"):
        every = [r for res in results for r in res["runs"][impl]]
        imports = statistics.median(r.get("import", float("nan")) for r in every)
        load = statistics.median(r["load"] for r in every)
        wall = median(results[-1]["runs"][impl], "process_wall")
        add(f"| {impl} | {imports:.2f} | {load:.2f} | {wall:.1f} |")

    bound = max(gemm.values())
    add(f"\nNetworks against their FLOP bound: {network_flops(nb_frames_for(RATE)) / 1e9:.2f} GFLOP per second of "
        f"audio (four umxhq networks, {network_flops(1) / 1e6:.1f} MFLOP per frame). Measured float32 GEMM "
        f"(2048^3) at {args.threads} threads: numpy/OpenBLAS {gemm['numpy']:.0f} GFLOP/s, torch "
        f"{gemm['torch']:.0f} GFLOP/s; the bound below is the better one ({bound:.0f} GFLOP/s).\n")
    add("| audio | niter | impl | networks (s) | GFLOP | GFLOP/s | of the GEMM bound |")
    add("|---|---|---|---|---|---|---|")
    for res in results:
        flops = network_flops(nb_frames_for(int(res["seconds"] * RATE))) / 1e9
        for impl in ("reference", "unmix"):
            t = median(res["runs"][impl], None, "networks")
            add(f"| {res['seconds']:g} s | {res['niter']} | {impl} | {t:.2f} | {flops:.1f} | {flops / t:.1f} "
                f"| {100 * flops / t / bound:.0f}% |")
    split = [(res, {m: median(res["runs"]["unmix"], None, f"networks.{m}") for m in ("encode", "recur", "decode")})
             for res in results]
    add("\nunmix networks by stage (s): " + "; ".join(
        f"{res['seconds']:g} s niter {res['niter']}: " + ", ".join(f"{m} {v:.2f}" for m, v in s.items())
        for res, s in split))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("unmix-child", help="(internal) one timed unmix separation; prints JSON")
    for p in (parser, child):
        p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    child.add_argument("--model", required=True)
    child.add_argument("--audio", required=True)
    child.add_argument("--niter", type=int, default=1)
    child.add_argument("--outdir", required=True)
    parser.add_argument("--seconds", type=float, nargs="+", default=[30, 60, 300], help="song lengths")
    parser.add_argument("--niter", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default=str(HERE / ".cache"), help="models and songs (reused)")
    parser.add_argument("--torch-python", default=TORCH_PYTHON, help="python of the reference venv")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.command == "unmix-child":
        print(json.dumps(unmix_child(args.model, args.audio, args.niter, args.threads, args.outdir)), flush=True)
        return 0
    gemm = gemm_gflops(args.threads, args.torch_python)
    results = benchmark(args)
    if args.json:
        Path(args.json).write_text(json.dumps({"gemm": gemm, "results": results}, indent=1))
    print(report(results, args, gemm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
