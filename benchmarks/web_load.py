"""Load on `unmix serve`: many clients uploading and polling at once, on 127.0.0.1.

    .venv/bin/python benchmarks/web_load.py [--clients 20] [--jobs 2] [--seconds 2] [--model tiny|bundled]

Starts `python -m unmix serve --port 0` in a fresh data folder (a fresh process, so its peak
memory is its own), then `--clients` threads at once: each uploads its own synthetic song
(`--seconds` long, a different pitch each), polls its job every 0.2 s until it is done, and
downloads its zip. A monitor thread meanwhile asks for /api/jobs every 0.1 s (the page staying
responsive while songs are separated). Prints: wall time, job latencies, request latencies,
errors, lost jobs (uploaded but not listed, or not done), and the server's peak RSS (VmHWM)
and RSS after startup. `--model tiny` (default) is a hidden-8 Open-Unmix with the real bin
layout, so the load is the app's (uploads, decoding, the queue, stems, zips), not the network's.
"""
import argparse
import http.client
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100


def tiny_model(folder):
    """A random tiny Open-Unmix model folder (as tests/conftest.py makes)."""
    from unmix.models.model_folder import ModelConfig, init_params, save_params, write_separator_json

    config = ModelConfig(nb_bins=2049, nb_channels=2, hidden_size=8, nb_layers=1, max_bin=1487)
    targets = ["vocals", "drums", "bass", "other"]
    write_separator_json(folder, {t: config for t in targets}, sample_rate=RATE)
    for i, target in enumerate(targets):
        save_params(folder, target, config, init_params(config, i))
    return folder


def song(seconds, freq):
    t = np.arange(int(seconds * RATE)) / RATE
    sig = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.random.default_rng(int(freq)).normal(size=t.size)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([sig, 0.8 * sig], axis=1).astype(np.float32), RATE, format="FLAC")
    return buffer.getvalue()


class Client:
    """HTTP to the app, timing every request."""

    def __init__(self, port, timings, lock):
        self.port, self.timings, self.lock = port, timings, lock

    def __call__(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        start = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers={"X-Unmix-Request": "1"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        with self.lock:
            self.timings.append(time.perf_counter() - start)
        return response.status, data


def run_client(client, index, seconds, model, results):
    """Upload one song, poll it to the end, fetch its zip; records ``(latency, error)``."""
    start = time.perf_counter()
    try:
        status, body = client("POST", f"/api/jobs?name=client{index}.flac&model={model}&niter=1",
                              song(seconds, 110 + 20 * index))
        if status != 201:
            raise RuntimeError(f"upload: {status} {body[:200]!r}")
        job_id = json.loads(body)["id"]
        while True:
            status, body = client("GET", f"/api/jobs/{job_id}")
            job = json.loads(body)
            if status != 200 or job["state"] == "failed":
                raise RuntimeError(f"job: {status} {job.get('error')}")
            if job["state"] == "done":
                break
            time.sleep(0.2)
        status, body = client("GET", job["zip"])
        if status != 200 or len(zipfile.ZipFile(io.BytesIO(body)).namelist()) != len(job["stems"]):
            raise RuntimeError(f"zip: {status}")
        results.append((job_id, time.perf_counter() - start, None))
    except Exception as exc:  # counted and printed: the point is to find them
        results.append((None, time.perf_counter() - start, f"client {index}: {exc}"))


def memory(pid, field):
    """A /proc/<pid>/status field in MB (VmRSS, VmHWM)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def percentile(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="the app's --jobs")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each client's song")
    parser.add_argument("--model", default="tiny", help="tiny (made here) or a model name the app offers")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "cache").mkdir()
        if args.model == "tiny":
            tiny_model(tmp / "cache" / "tiny")
        env = dict(os.environ, UNMIX_CACHE=str(tmp / "cache"))
        server = subprocess.Popen([sys.executable, "-m", "unmix", "serve", "--port", "0", "--data", str(tmp / "data"),
                                   "--jobs", str(args.jobs)], stdout=subprocess.PIPE, text=True, env=env)
        try:
            port = int(re.search(r":(\d+)/", server.stdout.readline()).group(1))
            timings, lock, results = [], threading.Lock(), []
            client = Client(port, timings, lock)
            # warm-up: the first job loads the model (and its kernels) in each worker
            for i in range(args.jobs):
                run_client(client, 1000 + i, 0.5, args.model, results)
            rss_idle = memory(server.pid, "VmRSS")
            results.clear()
            timings.clear()
            stop = threading.Event()
            monitor_times = []

            def monitor():
                watch = Client(port, monitor_times, threading.Lock())
                while not stop.wait(0.1):
                    watch("GET", "/api/jobs")

            threads = [threading.Thread(target=run_client, args=(client, i, args.seconds, args.model, results))
                       for i in range(args.clients)]
            watcher = threading.Thread(target=monitor)
            start = time.perf_counter()
            watcher.start()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            stop.set()
            watcher.join()
            status, body = client("GET", "/api/jobs")
            listed = {j["id"]: j["state"] for j in json.loads(body)}
            peak = memory(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(60)

    errors = [e for _, _, e in results if e]
    done = [job_id for job_id, _, e in results if not e]
    lost = [j for j in done if listed.get(j) != "done"]
    latencies = [t for _, t, e in results if not e]
    print(f"clients {args.clients}, app --jobs {args.jobs}, songs {args.seconds:g} s, model {args.model}, "
          f"{os.cpu_count()} CPUs")
    print(f"wall time {wall:.1f} s for {args.clients} songs "
          f"({args.clients * args.seconds / wall:.2f} s of audio per s)")
    print(f"job latency (upload to zip): median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s"
          if latencies else "no job finished")
    print(f"client requests: {len(timings)}, latency p50 {1000 * percentile(timings, 50):.0f} ms, "
          f"p99 {1000 * percentile(timings, 99):.0f} ms, max {1000 * max(timings):.0f} ms")
    print(f"/api/jobs while loaded (monitor): {len(monitor_times)} requests, p50 "
          f"{1000 * percentile(monitor_times, 50):.0f} ms, max {1000 * max(monitor_times):.0f} ms")
    print(f"errors {len(errors)}, lost jobs {len(lost)} (listed {len(listed)} jobs, {args.jobs} warm-up)")
    for line in errors[:10]:
        print("  " + line)
    print(f"server RSS after warm-up {rss_idle:.0f} MB, peak (VmHWM) {peak:.0f} MB")
    return 1 if errors or lost else 0


if __name__ == "__main__":
    sys.exit(main())
