"""20 clients at once on one app: every upload becomes a job, every job finishes, no request
fails (benchmarks/web_load.py measures the same load: time, latencies, peak memory)."""
import io
import json
import threading
import time
import zipfile

import pytest
from web_helpers import get_json, request, song_bytes, start_app

CLIENTS = 20


@pytest.fixture
def app(tmp_path, monkeypatch, tiny_model):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    monkeypatch.setenv("UNMIX_CACHE", str(tmp_path / "cache"))
    app = start_app(tmp_path / "data", jobs=2)
    yield app
    app.stop()


def client(app, index, errors, finished):
    """Upload a song, poll until it ends, fetch its zip; any surprise goes to `errors`."""
    try:
        status, _, body = request(app, "POST", f"/api/jobs?name=c{index}.flac&model=tiny&niter=1",
                                  body=song_bytes(0.5, fmt="FLAC", freq=200.0 + 30 * index))
        assert status == 201, body
        job_id = json.loads(body)["id"]
        deadline = time.monotonic() + 120
        while True:
            status, _, body = request(app, "GET", f"/api/jobs/{job_id}")
            job = json.loads(body)
            assert status == 200 and job["state"] != "failed", body
            if job["state"] == "done":
                break
            assert time.monotonic() < deadline, "not done in time"
            time.sleep(0.1)
        status, _, body = request(app, "GET", job["zip"])
        assert status == 200 and len(zipfile.ZipFile(io.BytesIO(body)).namelist()) == 4
        finished.append(job_id)
    except Exception as exc:  # reported by the test, with the client's number
        errors.append(f"client {index}: {exc!r}")


def test_twenty_clients_at_once_lose_nothing(app):
    errors, finished = [], []
    threads = [threading.Thread(target=client, args=(app, i, errors, finished)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for _ in range(20):  # the page keeps answering meanwhile
        assert request(app, "GET", "/api/jobs")[0] == 200
        time.sleep(0.05)
    for thread in threads:
        thread.join(180)
    assert errors == []
    jobs = get_json(app, "/api/jobs")
    assert len(finished) == CLIENTS and sorted(j["id"] for j in jobs) == sorted(finished)
    assert {j["state"] for j in jobs} == {"done"}
    assert sorted(j["name"] for j in jobs) == sorted(f"c{i}.flac" for i in range(CLIENTS))
    assert len(app.runner._threads) == 2  # the work ran in --jobs workers, whatever the number of clients
