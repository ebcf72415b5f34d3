"""Real-time streaming: compute per block, deadlines under a real audio server, memory, and what
streaming costs in quality. Results and commands: benchmarks/README.md ("Streaming").

    .venv/bin/python benchmarks/streaming.py [--sections steps jack blockonline wiener] [--quick]
        [--minutes 10] [--seconds 60] [--cache benchmarks/.cache/streaming] [--json out.json]

Sections:
- steps: causal models shaped like ``bundled-rt`` (unidirectional, n_fft 1024, n_hop 256, 3 layers,
  16 kHz bandwidth: max_bin 372, stereo) with random weights, hidden 128 / 192 / 256, all four
  targets, pinned to one core, blocks of one hop (5.8 ms): p50 / p99 / max compute per block
  against the block's duration (the budget: p99 <= 25%), with niter 0 and the causal Wiener filter.
- jack: `unmix stream <song> --output-device system` on a JACK dummy server (256-frame periods)
  for --minutes (0.5 with --quick), the hidden-128 model: blocks slower than real time, the
  callbacks the server flagged (xruns), the process's RSS after 1 minute (10 s with --quick) and
  at the end.
- blockonline: the bundled model (bidirectional, hidden 384, n_fft 4096) streamed block-online on
  the synthetic test songs for chunk / lookahead pairs: latency, real-time factor, and the SDR
  (BSSEval v4, median over 1 s windows, then over songs) against the offline separation.
- umxhq: the same pairs with a umxhq-shaped model (random weights): latency and real-time factor.
- wiener: the bundled model's magnitudes filtered offline (niter 1, windows of 300 frames)
  and causally (niter 1, exponential windows of 30, 300 and every past frame) and with ratio
  masks (niter 0): the SDR of each.
"""
import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: set before numpy
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SONGS = Path("/work/shared/data/musdb-synth-mini/test")
TARGETS = ("vocals", "drums", "bass", "other")
RATE = 44100


def rt_folder(cache, hidden):
    """A model folder shaped like bundled-rt with random weights (made once)."""
    from unmix.models.model_folder import ModelConfig, init_params, save_params, write_separator_json

    folder = Path(cache) / f"rt-h{hidden}"
    if not (folder / "separator.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        config = ModelConfig(nb_bins=513, nb_channels=2, hidden_size=hidden, nb_layers=3, max_bin=372,
                             unidirectional=True)
        for i, target in enumerate(TARGETS):
            save_params(folder, target, config, init_params(config, seed=i))
        write_separator_json(folder, {t: config for t in TARGETS}, sample_rate=RATE, n_fft=1024, n_hop=256)
    return folder


def song_audio(seconds=None):
    """The synthetic test songs' mixtures end to end, looped to `seconds` if given: (2, n) float32."""
    mixes = [sf.read(p / "mixture.flac", dtype="float32", always_2d=True)[0].T for p in sorted(SONGS.iterdir())]
    audio = np.concatenate(mixes, axis=1)
    if seconds is not None:
        audio = np.tile(audio, (1, int(np.ceil(seconds * RATE / audio.shape[1]))))[:, :int(seconds * RATE)]
    return audio


def section_steps(cache, seconds):
    """p50 / p99 / max compute per 256-sample block, one core."""
    import unmix
    from unmix.separation.streamer import BlockStats

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    audio = song_audio(seconds)
    rows = []
    for hidden, niter in ((128, 0), (128, 1), (192, 0), (256, 0)):
        sep = unmix.load_separator(rt_folder(cache, hidden), niter=niter, nb_threads=1)
        st = sep.streamer(block_size=256)
        st.warm_up()
        cpu = BlockStats()  # the thread's CPU time per block: the compute, without the waits for a core
        for pos in range(0, audio.shape[1] - 255, 256):
            began = time.thread_time()
            st.feed(audio[:, pos:pos + 256])
            cpu.add(time.thread_time() - began, 256 / RATE)
        s = st.stats
        block_ms = 1000 * 256 / RATE
        row = dict(hidden=hidden, niter=niter, weights_mb=_weights_mb(hidden), blocks=s.blocks,
                   p50_ms=1000 * s.percentile(50), p99_ms=1000 * s.percentile(99), max_ms=1000 * s.max,
                   cpu_p50_ms=1000 * cpu.percentile(50), cpu_p99_ms=1000 * cpu.percentile(99),
                   cpu_max_ms=1000 * cpu.max, block_ms=block_ms, late=s.late, latency_ms=1000 * st.latency / RATE,
                   load=os.getloadavg()[0])
        row["p99_pct"] = 100 * row["p99_ms"] / block_ms
        row["cpu_p99_pct"] = 100 * row["cpu_p99_ms"] / block_ms
        rows.append(row)
        print(f"hidden {hidden} niter {niter} ({row['weights_mb']:.1f} MB of weights): wall p50 {row['p50_ms']:.2f} ms, "
              f"p99 {row['p99_ms']:.2f} ms ({row['p99_pct']:.0f}% of {block_ms:.1f} ms), max {row['max_ms']:.2f} ms, "
              f"{s.late} of {s.blocks} blocks late; CPU p50 {row['cpu_p50_ms']:.2f} ms, p99 {row['cpu_p99_ms']:.2f} ms "
              f"({row['cpu_p99_pct']:.0f}%), max {row['cpu_max_ms']:.2f} ms; latency {row['latency_ms']:.1f} ms; "
              f"load {row['load']:.1f}", flush=True)
    return rows


def _weights_mb(hidden):
    from unmix.models.model_folder import ModelConfig, param_shapes

    config = ModelConfig(nb_bins=513, nb_channels=2, hidden_size=hidden, nb_layers=3, max_bin=372, unidirectional=True)
    return 4 * 4 * sum(int(np.prod(s)) for s in param_shapes(config).values()) / 2**20


def section_jack(cache, minutes, quick):
    """`unmix stream` on a JACK dummy server: deadlines and memory."""
    seconds = 60 * minutes
    song = Path(cache) / f"song-{seconds:g}s.wav"
    if not song.is_file():
        sf.write(song, song_audio(seconds).T, RATE, subtype="FLOAT")
    name = f"unmix-bench-{uuid.uuid4().hex[:8]}"
    jackd = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "44100", "-p", "256"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1", PYTHONPATH=str(ROOT))
    try:
        time.sleep(1.0)
        # the baseline: a client that only writes silence, same period: the xruns of the machine alone
        seconds_base = min(seconds, 120)
        base = subprocess.run([sys.executable, "-c", _SILENT_CLIENT, str(seconds_base)], env=env, capture_output=True,
                              text=True, check=True).stdout.split()
        base_calls, base_flagged = int(base[0]), int(base[1])
        print(f"baseline (silence, {seconds_base:g} s): {base_flagged} of {base_calls} callbacks flagged", flush=True)
        cmd = [sys.executable, "-m", "unmix", "stream", str(song), "--model", str(rt_folder(cache, 128)),
               "--output-device", "system", "--mix", "vocals=0"]
        began = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        early = 10 if quick else 60
        rss_early, rss_last = None, None
        while proc.poll() is None:
            time.sleep(1.0)
            rss = _rss_mb(proc.pid)
            if rss is not None:
                rss_last = rss
                if rss_early is None and time.monotonic() - began >= early:
                    rss_early = rss
        out, err = proc.communicate()
        wall = time.monotonic() - began
    finally:
        jackd.send_signal(signal.SIGTERM)
        jackd.wait(timeout=10)
    summary = [line for line in err.splitlines() if line.startswith("stream:")]
    if proc.returncode != 0 or not summary:
        raise SystemExit(f"unmix stream failed ({proc.returncode}): {err[-2000:]}")
    line = summary[-1]
    late = int(re.search(r"(\d+) blocks slower", line).group(1))
    xruns = int(re.search(r"(\d+) callbacks flagged", line).group(1))
    row = dict(minutes=minutes, wall_s=wall, summary=line, late_blocks=late, xruns=xruns,
               baseline=dict(seconds=seconds_base, callbacks=base_calls, flagged=base_flagged),
               rss_early_mb=rss_early, rss_end_mb=rss_last, rss_early_at_s=early, command=" ".join(cmd))
    print(f"JACK dummy, 256-frame periods, {minutes:g} min: {line}\nRSS {rss_early} MB at {early} s, "
          f"{rss_last} MB at the end", flush=True)
    return row


_SILENT_CLIENT = """
import sys, time
import sounddevice as sd
counts = [0, 0]
def callback(outdata, frames, when, status):
    counts[0] += 1
    counts[1] += bool(status)
    outdata.fill(0)
with sd.OutputStream(device="system", samplerate=44100, blocksize=256, channels=2, dtype="float32",
                     callback=callback):
    time.sleep(float(sys.argv[1]))
print(counts[0], counts[1])
"""


def _rss_mb(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return round(int(match.group(1)) / 1024, 1) if match else None


def _songs():
    """(name, mixture (2, n), references (4, 2, n)) of the synthetic test songs."""
    for path in sorted(SONGS.iterdir()):
        mix = sf.read(path / "mixture.flac", dtype="float32", always_2d=True)[0].T
        refs = np.stack([sf.read(path / f"{t}.flac", dtype="float32", always_2d=True)[0].T for t in TARGETS])
        yield path.name, mix, refs


def _sdr(refs, estimates):
    """Median SDR over 1 s windows per target: refs (4, 2, n), estimates target -> (2, n)."""
    from unmix.evaluation import bsseval

    est = np.stack([estimates[t] for t in TARGETS])
    sdr = bsseval.evaluate(refs.transpose(0, 2, 1), est.transpose(0, 2, 1))[0]
    return {t: float(np.nanmedian(sdr[i])) for i, t in enumerate(TARGETS)}


def _table(per_song):
    """target -> median over songs, plus the mean of the four."""
    table = {t: float(np.median([s[t] for s in per_song])) for t in TARGETS}
    table["mean"] = float(np.mean([table[t] for t in TARGETS]))
    return table


def section_blockonline(pairs):
    """The bundled model block-online: latency, real-time factor, SDR against offline."""
    import unmix

    sep = unmix.load_separator("bundled", niter=1, nb_threads=2)
    songs = list(_songs())
    began = time.perf_counter()
    offline = [_sdr(refs, sep.separate(mix, RATE)) for _, mix, refs in songs]
    offline_rtf = (time.perf_counter() - began) / sum(m.shape[1] for _, m, _ in songs) * RATE
    rows = [dict(chunk=None, lookahead=None, latency_s=None, rtf=offline_rtf, sdr=_table(offline))]
    print(f"offline: SDR {rows[0]['sdr']}", flush=True)
    for chunk, lookahead in pairs:
        per_song, compute, total = [], 0.0, 0
        for _, mix, refs in songs:
            st = sep.streamer(chunk=chunk, lookahead=lookahead, block_size=1024)
            outs = []
            began = time.perf_counter()
            for pos in range(0, mix.shape[1], 1024):
                outs.append(st.feed(mix[:, pos:pos + 1024]))
            outs.append(st.flush())
            compute += time.perf_counter() - began
            total += mix.shape[1]
            est = {t: np.concatenate([o[t] for o in outs], axis=-1)[:, st.latency:] for t in TARGETS}
            per_song.append(_sdr(refs, est))
        row = dict(chunk=chunk, lookahead=lookahead, latency_s=st.latency / RATE, rtf=compute / total * RATE,
                   sdr=_table(per_song))
        row["sdr_lost"] = rows[0]["sdr"]["mean"] - row["sdr"]["mean"]
        rows.append(row)
        print(f"chunk {chunk} s, lookahead {lookahead} s: latency {row['latency_s']:.2f} s, RTF {row['rtf']:.3f}, "
              f"SDR {row['sdr']}, lost {row['sdr_lost']:.2f} dB", flush=True)
    return rows


def umxhq_folder(cache):
    """A umxhq-shaped model folder (bidirectional, hidden 512, 3 layers, n_fft 4096) with random weights."""
    from unmix.models.model_folder import ModelConfig, init_params, save_params, write_separator_json

    folder = Path(cache) / "umxhq-shaped"
    if not (folder / "separator.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        config = ModelConfig(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487)
        for i, target in enumerate(TARGETS):
            save_params(folder, target, config, init_params(config, seed=i))
        write_separator_json(folder, {t: config for t in TARGETS}, sample_rate=RATE)
    return folder


def section_umxhq(cache, pairs):
    """Block-online with a umxhq-shaped model (random weights): latency and real-time factor."""
    import unmix

    sep = unmix.load_separator(umxhq_folder(cache), niter=1, nb_threads=2)
    mix = song_audio(24)
    began = time.perf_counter()
    sep.separate(mix, RATE)
    rows = [dict(chunk=None, lookahead=None, latency_s=None, rtf=(time.perf_counter() - began) / 24)]
    for chunk, lookahead in pairs:
        st = sep.streamer(chunk=chunk, lookahead=lookahead, block_size=1024)
        began = time.perf_counter()
        for pos in range(0, mix.shape[1], 1024):
            st.feed(mix[:, pos:pos + 1024])
        st.flush()
        rows.append(dict(chunk=chunk, lookahead=lookahead, latency_s=st.latency / RATE,
                         rtf=(time.perf_counter() - began) / 24))
    for row in rows:
        print(f"umxhq-shaped, chunk {row['chunk']} s, lookahead {row['lookahead']} s: latency {row['latency_s']} s, "
              f"RTF {row['rtf']:.3f}", flush=True)
    return rows


def section_wiener():
    """Offline vs causal Wiener filter on the bundled model's magnitudes."""
    import unmix
    from unmix.dsp import filtering, transforms
    from unmix.dsp.causal_wiener import CausalWiener

    sep = unmix.load_separator("bundled", niter=0, nb_threads=2)
    variants = {"niter 0 (ratio of magnitudes, mixture phase)": None, "offline niter 1, windows of 300": "offline",
                "causal niter 1, window 30": 30, "causal niter 1, window 300": 300,
                "causal niter 1, every past frame": 0}
    scores = {k: [] for k in variants}
    for _, mix, refs in _songs():
        spec = transforms.stft(mix, sep.n_fft, sep.n_hop)  # (C, F, T)
        mag = transforms.magnitude(spec[None])
        targets = np.stack([sep.models[t](mag)[0] for t in TARGETS]).swapaxes(-1, -2)  # (J, C, T, F)
        x = np.ascontiguousarray(spec.swapaxes(-1, -2))  # (C, T, F)
        for name, how in variants.items():
            if how is None:
                y = filtering.wiener_planar(targets, x, 0)
            elif how == "offline":
                y = np.concatenate([filtering.wiener_planar(targets[:, :, s:s + 300], x[:, s:s + 300], 1)
                                    for s in range(0, x.shape[1], 300)], axis=2)
            else:
                y = CausalWiener(2, x.shape[2], niter=1, wiener_win_len=how)(targets, x)
            est = {t: transforms.istft(y[j].swapaxes(-1, -2), sep.n_fft, sep.n_hop, length=mix.shape[1])
                   for j, t in enumerate(TARGETS)}
            scores[name].append(_sdr(refs, est))
    rows = [dict(filter=name, sdr=_table(s)) for name, s in scores.items()]
    for row in rows:
        print(f"{row['filter']}: {row['sdr']}", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=["steps", "jack", "blockonline", "umxhq", "wiener"],
                        choices=["steps", "jack", "blockonline", "umxhq", "wiener"])
    parser.add_argument("--quick", action="store_true", help="short runs (20 s of blocks, 0.5 min under JACK)")
    parser.add_argument("--seconds", type=float, default=None, help="audio per model in `steps` (default 60)")
    parser.add_argument("--minutes", type=float, default=None, help="the JACK run's length (default 10)")
    parser.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "streaming"))
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    results = dict(machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                                load=os.getloadavg(), python=platform.python_version()))
    if "steps" in args.sections:
        results["steps"] = section_steps(args.cache, args.seconds or (20 if args.quick else 60))
    if "jack" in args.sections:
        results["jack"] = section_jack(args.cache, args.minutes or (0.5 if args.quick else 10), args.quick)
    if "blockonline" in args.sections:
        pairs = [(1.0, 0.5), (4.0, 1.0)] if args.quick else [(0.5, 0.25), (1.0, 0.5), (2.0, 0.5), (4.0, 1.0),
                                                              (8.0, 2.0)]
        results["blockonline"] = section_blockonline(pairs)
    if "umxhq" in args.sections:
        pairs = [(1.0, 0.5), (4.0, 1.0)] if args.quick else [(0.5, 0.25), (1.0, 0.5), (2.0, 0.5), (4.0, 1.0),
                                                              (8.0, 2.0)]
        results["umxhq"] = section_umxhq(args.cache, pairs)
    if "wiener" in args.sections:
        results["wiener"] = section_wiener()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
