"""What the web app's tests share: an app on a free loopback port, an HTTP client, audio bytes."""
import http.client
import io
import json
import time
from urllib.parse import urlencode

import numpy as np
import soundfile as sf

from unmix.web.server import WebApp

RATE = 44100


def start_app(data, **options):
    """A started `WebApp` on 127.0.0.1, port 0 (a free port)."""
    return WebApp(data, host="127.0.0.1", port=0, **options).start()


def request(app, method, path, body=None, headers=None, raw_path=False):
    """One request to `app`: ``(status, headers dict, body bytes)``. The path is sent as is."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=60)
    try:
        headers = dict(headers or {})
        if method not in ("GET", "HEAD"):
            headers.setdefault("X-Unmix-Request", "1")
        if app.token:
            headers.setdefault("X-Unmix-Token", app.token)
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def get_json(app, path):
    status, _, body = request(app, "GET", path)
    assert status == 200, (status, body)
    return json.loads(body)


def upload(app, data, name="song.wav", **options):
    """POST a song; returns ``(status, JSON body)``."""
    query = urlencode(dict(name=name, **options))
    status, _, body = request(app, "POST", f"/api/jobs?{query}", body=data,
                              headers={"Content-Type": "application/octet-stream"})
    return status, json.loads(body)


def wait_for(app, job_id, states=("done", "failed"), timeout=60.0):
    """Poll a job until its state is one of `states`; returns the job."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_json(app, f"/api/jobs/{job_id}")
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout} s"
        time.sleep(0.05)


def song_bytes(seconds=1.0, fmt="WAV", freq=440.0, subtype=None):
    """A stereo test song as file bytes."""
    t = np.arange(int(seconds * RATE)) / RATE
    sig = 0.3 * np.sin(2 * np.pi * freq * t) + 0.2 * np.sin(2 * np.pi * 97 * t)
    audio = np.stack([sig, 0.8 * sig], axis=1).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE, format=fmt, subtype=subtype)
    return buffer.getvalue()


def read_events(app, count_until, timeout=60.0):
    """Read the server-sent events until ``count_until(name, value)`` is true; returns them all
    as ``[(name, value)]``."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=timeout)
    headers = {"X-Unmix-Token": app.token} if app.token else {}
    conn.request("GET", "/api/events", headers=headers)
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    events, name = [], None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = response.fp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if count_until(*events[-1]):
                    return events
        raise AssertionError(f"the awaited event did not come; got {[n for n, _ in events]}")
    finally:
        conn.close()
