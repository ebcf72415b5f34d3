"""`unmix serve` over HTTP: every endpoint, bad uploads, tokens, traversal, restart recovery."""
import http.client
import io
import json
import re
import socket
import threading
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf
from web_helpers import get_json, read_events, request, song_bytes, start_app, upload, wait_for

from unmix import cli
from unmix.errors import UnmixError
from unmix.separation import stems as stems_io
from unmix.web.server import WebApp
from unmix.web.store import JobStore

MAX_UPLOAD = 4 << 20


@pytest.fixture
def cache(tmp_path, monkeypatch, tiny_model):
    """A model cache holding the tiny test model as the folder 'tiny' (a cached model folder)."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "tiny").symlink_to(tiny_model, target_is_directory=True)
    monkeypatch.setenv("UNMIX_CACHE", str(root))
    return root


@pytest.fixture
def app(tmp_path, cache):
    app = start_app(tmp_path / "data", max_upload=MAX_UPLOAD)
    yield app
    app.stop()


def job_files(app):
    return sorted(p.name for p in (app.data / "jobs").iterdir())


# ------------------------------------------------------------------------------ page and options


def test_page_and_its_assets_come_from_the_app_alone(app):
    status, headers, page = request(app, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    assets = re.findall(rb'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith(b"/static/") for a in assets)  # nothing from a CDN: it works offline
    for asset in set(assets):
        status, headers, body = request(app, "GET", asset.decode())
        assert status == 200, asset
        # no script, style or font fetched from elsewhere (an SVG's xmlns is a name, not a fetch)
        body = body.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")
        assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", body), asset
    assert request(app, "GET", "/static/missing.js")[0] == 404


def test_options_offer_the_cached_and_bundled_models_and_the_formats(app):
    options = get_json(app, "/api/options")
    models = {m["name"]: m for m in options["models"]}
    assert models["tiny"]["cached"] and models["tiny"]["targets"] == ["vocals", "drums", "bass", "other"]
    assert models["bundled"]["cached"] and models["bundled"]["karaoke"]
    assert not models["umxhq"]["cached"]  # a registry model, downloaded on first use
    assert options["default_model"] == "tiny"  # cached, before the bundled model
    assert {f["id"] for f in options["formats"]} >= {"wav", "wav16", "flac"}
    assert options["max_upload"] == MAX_UPLOAD and options["niter"]["max"] >= 1


def test_settings_are_checked_saved_and_kept_across_a_restart(tmp_path, cache):
    settings = {"model": "tiny", "mode": "stems", "targets": ["vocals", "bass"], "niter": 0, "format": "flac"}
    with start_app(tmp_path / "data") as app:
        assert get_json(app, "/api/settings") == {}
        status, _, body = request(app, "PUT", "/api/settings", body=json.dumps(settings))
        assert status == 200 and json.loads(body)["targets"] == ["vocals", "bass"]
        status, _, body = request(app, "PUT", "/api/settings", body=json.dumps({**settings, "niter": 99}))
        assert status == 400 and b"niter" in body
    with start_app(tmp_path / "data") as app:
        assert get_json(app, "/api/settings") == settings


# ------------------------------------------------------------------------------------ a whole job


def test_a_job_from_upload_to_progress_events_stems_spectrogram_zip_and_delete(app, monkeypatch):
    real = stems_io.separate_file

    def slowed(*args, progress=None, **kwargs):  # each step takes a moment, as on a real song
        def step(done, total):
            progress(done, total)
            time.sleep(0.1)
        return real(*args, progress=step, **kwargs)

    monkeypatch.setattr(stems_io, "separate_file", slowed)
    events = []
    listening = threading.Thread(target=lambda: events.extend(read_events(
        app, lambda name, value: name == "job" and value["state"] in ("done", "failed"))))
    listening.start()  # the page listens before it uploads
    time.sleep(0.2)
    status, job = upload(app, song_bytes(3.0), name="My Song.wav", model="tiny", niter="1", format="wav16")
    assert status == 201 and job["state"] == "queued" and job["name"] == "My Song.wav"
    assert job["duration"] == pytest.approx(3.0)
    listening.join(60)
    assert events[0][0] == "jobs"  # the page gets every job first
    updates = [v for n, v in events if n == "job" and v["id"] == job["id"]]
    assert updates[-1]["state"] == "done", updates[-1]
    progress = [u["progress"] for u in updates if u["state"] == "running"]
    assert progress == sorted(progress) and len({p for p in progress if 0 < p < 1}) >= 2  # a moving bar
    assert {u["stage"] for u in updates} >= {"loading model", "separating"}

    done = get_json(app, f"/api/jobs/{job['id']}")
    assert [s["target"] for s in done["stems"]] == ["vocals", "drums", "bass", "other"]
    assert get_json(app, "/api/jobs")[0]["id"] == job["id"]
    for stem in done["stems"]:
        status, headers, body = request(app, "GET", stem["url"])
        assert status == 200 and headers["content-type"] == "audio/wav"
        assert f"My Song - {stem['target']}.wav" in headers["content-disposition"]
        audio, rate = sf.read(io.BytesIO(body))
        assert rate == 44100 and audio.shape == (3 * 44100, 2)
        assert sf.info(io.BytesIO(body)).subtype == "PCM_16"
    status, headers, png = request(app, "GET", done["spectrogram"])
    assert status == 200 and headers["content-type"] == "image/png" and png.startswith(b"\x89PNG")

    status, headers, body = request(app, "GET", done["zip"])
    assert status == 200 and "My Song - stems.zip" in headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert sorted(archive.namelist()) == [f"My Song/{t}.wav" for t in ("bass", "drums", "other", "vocals")]
        assert archive.read("My Song/vocals.wav") == request(app, "GET", done["stems"][0]["url"])[2]

    status, _, _ = request(app, "DELETE", f"/api/jobs/{job['id']}")
    assert status == 200 and job_files(app) == []
    assert request(app, "GET", f"/api/jobs/{job['id']}")[0] == 404
    assert request(app, "GET", done["stems"][0]["url"])[0] == 404
    assert request(app, "DELETE", f"/api/jobs/{job['id']}")[0] == 404


def test_karaoke_split_gives_vocals_and_the_rest_in_flac(app):
    status, job = upload(app, song_bytes(1.0, fmt="FLAC"), name="k.flac", model="tiny", mode="karaoke",
                         format="flac")
    assert status == 201 and job["options"]["targets"] == ["vocals"]
    done = wait_for(app, job["id"])
    assert done["state"] == "done", done["error"]
    assert [s["target"] for s in done["stems"]] == ["vocals", "accompaniment"]
    assert all(s["download"].endswith(".flac") for s in done["stems"])


def test_a_subset_of_targets_and_niter_0(app):
    status, job = upload(app, song_bytes(1.0), model="tiny", targets="bass,vocals", niter="0")
    done = wait_for(app, job["id"])
    assert [s["target"] for s in done["stems"]] == ["vocals", "bass"]  # the model's order


def test_stems_of_an_unfinished_job_and_wrong_methods(app, monkeypatch):
    release = _hold_separation(monkeypatch)
    _, job = upload(app, song_bytes(1.0), model="tiny")
    wait_for(app, job["id"], states=("running",))
    assert request(app, "GET", f"/api/jobs/{job['id']}/stems.zip")[0] == 409
    assert request(app, "GET", f"/api/jobs/{job['id']}/stems/vocals")[0] == 409
    status, headers, _ = request(app, "POST", f"/api/jobs/{job['id']}")
    assert status == 405 and headers["allow"] == "GET, DELETE"
    assert request(app, "GET", "/api/jobs/" + "0" * 32)[0] == 404
    release.set()
    assert wait_for(app, job["id"])["state"] == "done"


# ------------------------------------------------------------------------------------ bad uploads


def _raw_post(app, path, length, body=b"", headers=()):
    """A POST that announces `length` bytes and sends only `body` before reading the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Length", str(length))
        conn.putheader("X-Unmix-Request", "1")
        for key, value in headers:
            conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_bad_uploads_are_refused_in_one_line_and_other_jobs_go_on(app):
    _, good = upload(app, song_bytes(2.0), name="good.wav", model="tiny")
    flac = song_bytes(2.0, fmt="FLAC")
    cases = {
        "notes.txt": (b"these are my lyrics, not audio\n" * 50, 415, "not an audio file"),
        "cut.flac": (flac[: len(flac) // 2], 415, "truncated"),
        "empty.wav": (b"", 400, "empty"),
        "noise.mp3": (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), 415, None),
    }
    for name, (data, code, words) in cases.items():
        status, body = upload(app, data, name=name, model="tiny")
        assert status == code, (name, body)
        assert body["error"].startswith(name) and "\n" not in body["error"]
        assert words is None or words in body["error"], body["error"]
    # too large: refused from the headers, before the body is sent
    status, body = _raw_post(app, "/api/jobs?name=big.wav&model=tiny", MAX_UPLOAD + 1)
    assert status == 413 and "big.wav is 4 MB" in body["error"] and "--max-upload" in body["error"]
    for query, words in (("model=nope", "unknown model"), ("model=tiny&niter=9", "niter"),
                         ("model=tiny&targets=piano", "no target piano"), ("model=tiny&format=ogg", "format"),
                         ("model=tiny&mode=remix", "split")):
        status, body = upload(app, song_bytes(0.5), **dict(p.split("=") for p in query.split("&")))
        assert status == 400 and words in body["error"], (query, body)
    status, body = _raw_post(app, "/api/jobs?model=tiny", 10, b"0123456789",
                             headers=[("Transfer-Encoding", "chunked")])
    assert status == 411
    _, after = upload(app, song_bytes(1.0), name="after.wav", model="tiny")
    assert wait_for(app, good["id"])["state"] == "done" and wait_for(app, after["id"])["state"] == "done"
    assert [j["name"] for j in get_json(app, "/api/jobs")] == ["good.wav", "after.wav"]
    assert job_files(app) == sorted([good["id"], after["id"]])  # nothing left of the refused uploads


def test_an_upload_that_stops_midway_leaves_nothing(app):
    conn = socket.create_connection(("127.0.0.1", app.port))
    conn.sendall(b"POST /api/jobs?model=tiny HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Unmix-Request: 1\r\n"
                 b"Content-Length: 100000\r\n\r\n" + song_bytes(0.1)[:5000])
    conn.close()
    deadline = time.monotonic() + 10
    while job_files(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job_files(app) == [] and get_json(app, "/api/jobs") == []


def test_a_failing_job_shows_one_line_and_the_queue_goes_on(app, monkeypatch):
    real = stems_io.separate_file
    calls = []

    def fails_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(stems_io, "separate_file", fails_first)
    _, bad = upload(app, song_bytes(0.5), model="tiny")
    _, good = upload(app, song_bytes(0.5), model="tiny")
    failed = wait_for(app, bad["id"])
    assert failed["state"] == "failed" and failed["error"] == "No space left on device"
    assert wait_for(app, good["id"])["state"] == "done"


# --------------------------------------------------------------------------------------- safety


def test_upload_names_are_display_text_never_paths(app):
    status, job = upload(app, song_bytes(0.5), name="../../../etc/evil\x07 name?.wav", model="tiny")
    assert status == 201 and job["name"] == "evil name_.wav"
    done = wait_for(app, job["id"])
    assert job_files(app) == [job["id"]]
    folder = app.data / "jobs" / job["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["input.wav", "stems"]
    assert done["stems"][0]["download"] == "evil name_ - vocals.wav"
    status, headers, _ = request(app, "GET", done["zip"])
    assert 'filename="evil name_ - stems.zip"' in headers["content-disposition"]


def test_a_file_is_judged_by_its_content_not_its_name(app):
    status, job = upload(app, song_bytes(0.5, fmt="FLAC"), name="really a flac.mp3", model="tiny")
    assert status == 201
    assert (app.data / "jobs" / job["id"] / "input.flac").is_file()
    assert wait_for(app, job["id"])["state"] == "done"


def test_no_path_traversal_in_any_url(app):
    _, job = upload(app, song_bytes(0.5), model="tiny")
    wait_for(app, job["id"])
    base = f"/api/jobs/{job['id']}"
    attempts = ["/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/store.py", "/static/",
                "/../unmix-web.sqlite3", "/api/jobs/../unmix-web.sqlite3", "/api/jobs/..%2f..%2funmix-web.sqlite3",
                f"{base}/stems/..%2f..%2f..%2funmix-web.sqlite3", f"{base}/stems/../input.wav",
                f"{base}/stems/%2e%2e", f"{base}/stems/..", f"{base}/stems/vocals%2f..%2f..%2finput.wav",
                f"{base}/stems/%2fetc%2fpasswd", "//etc/passwd", f"{base}/../../unmix-web.sqlite3",
                f"/api/jobs/{job['id'].upper()}", f"/api/jobs/{job['id']}x/stems.zip", "/static/app.js%00.png"]
    for path in attempts:
        status, _, body = request(app, "GET", path)
        assert status in (400, 404), (path, status)
        assert b"SQLite" not in body and b"RIFF" not in body and b"import" not in body, path


def test_a_token_guards_every_request_and_a_link_sets_its_cookie(tmp_path, cache):
    with start_app(tmp_path / "data", token="s3cret-token-value") as app:
        _, job = upload(app, song_bytes(0.5), model="tiny")
        done = wait_for(app, job["id"])
        guarded = ["/", "/static/app.js", "/api/options", "/api/jobs", f"/api/jobs/{job['id']}", done["zip"],
                   done["stems"][0]["url"], done["spectrogram"], "/api/events", "/api/settings"]
        for path in guarded:
            for headers in ({"X-Unmix-Token": ""}, {"X-Unmix-Token": "wrong-token-value"},
                            {"X-Unmix-Token": "", "Cookie": "unmix_token_1=s3cret-token-value"}):
                status, _, body = request(app, "GET", path, headers=headers)
                assert status == 403 and b"token" in body, (path, headers)
        status, _, _ = request(app, "DELETE", f"/api/jobs/{job['id']}", headers={"X-Unmix-Token": ""})
        assert status == 403 and get_json(app, f"/api/jobs/{job['id']}")["state"] == "done"

        status, headers, _ = request(app, "GET", "/?token=s3cret-token-value", headers={"X-Unmix-Token": ""})
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"].split(";")[0]
        assert cookie == f"unmix_token_{app.port}=s3cret-token-value" and "HttpOnly" in headers["set-cookie"]
        for headers in ({"Cookie": cookie}, {"Authorization": "Bearer s3cret-token-value"}):
            status, _, _ = request(app, "GET", done["zip"], headers={"X-Unmix-Token": "", **headers})
            assert status == 200


def test_another_host_gets_a_generated_token():
    app = WebApp("unused", host="0.0.0.0", port=0)
    assert app.token and len(app.token) >= 24 and app.link.endswith(f"?token={app.token}")
    assert WebApp("unused", host="127.0.0.1").token is None
    assert WebApp("unused", host="192.168.1.5", token="given-token").token == "given-token"
    for bad in ("short", "has space in it", "semi;colon=x", "é-accented"):
        with pytest.raises(UnmixError, match="--token must be"):
            WebApp("unused", token=bad)


def test_other_sites_cannot_reach_or_change_anything(app):
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1
    status, _, body = request(app, "GET", "/api/jobs", headers={"Host": "evil.example:8000"})
    assert status == 403 and b"127.0.0.1" in body
    assert request(app, "GET", "/api/jobs", headers={"Host": f"localhost:{app.port}"})[0] == 200
    # cross-site requests: no custom header (a form or a simple fetch), or another origin
    status, _, body = request(app, "POST", "/api/jobs?model=tiny", body=song_bytes(0.2),
                              headers={"X-Unmix-Request": ""})
    assert status == 403 and b"X-Unmix-Request" in body
    status, _, _ = request(app, "POST", "/api/jobs?model=tiny", body=song_bytes(0.2),
                           headers={"Origin": "http://evil.example"})
    assert status == 403
    assert get_json(app, "/api/jobs") == []


# ------------------------------------------------------------------------------ restart and delete


def _hold_separation(monkeypatch):
    """Make separations run (reporting progress) until the returned event is set or they are
    cancelled: a long song, without the wait."""
    real = stems_io.separate_file
    release = threading.Event()

    def held(*args, progress=None, **kwargs):
        while not release.wait(0.02):
            progress(1, 10)  # raises runner.Cancelled when the job is deleted or the app stops
        return real(*args, progress=progress, **kwargs)

    monkeypatch.setattr(stems_io, "separate_file", held)
    return release


def test_a_job_running_when_the_app_stops_runs_again_at_the_next_start(tmp_path, cache, monkeypatch):
    release = _hold_separation(monkeypatch)
    app = start_app(tmp_path / "data")
    _, job = upload(app, song_bytes(1.0), name="long.wav", model="tiny")
    _, queued = upload(app, song_bytes(1.0), name="next.wav", model="tiny")
    running = wait_for(app, job["id"], states=("running",))
    assert running["progress"] > 0 or running["stage"]
    app.stop()
    store = JobStore(tmp_path / "data")
    assert [(j["name"], j["state"]) for j in store.list()] == [("long.wav", "queued"), ("next.wav", "queued")]
    store.close()
    release.set()
    with start_app(tmp_path / "data") as app:
        assert wait_for(app, job["id"])["state"] == "done" and wait_for(app, queued["id"])["state"] == "done"
        assert [j["name"] for j in get_json(app, "/api/jobs")] == ["long.wav", "next.wav"]


def test_a_crash_mid_job_loses_nothing(tmp_path, cache):
    """As if the app had been killed: the database says running, staging files are left."""
    with start_app(tmp_path / "data") as app:
        _, job = upload(app, song_bytes(1.0), model="tiny")
        wait_for(app, job["id"])
    store = JobStore(tmp_path / "data")
    store.update(job["id"], state="running", progress=0.5, stems=None)
    folder = store.job_dir(job["id"])
    (folder / ".input.abcd.part").mkdir()
    (tmp_path / "data" / "jobs" / ("f" * 32)).mkdir()  # an upload that never became a job
    store.close()
    with start_app(tmp_path / "data") as app:
        done = wait_for(app, job["id"])
        assert done["state"] == "done" and len(done["stems"]) == 4
        assert not (folder / ".input.abcd.part").exists()
        assert job_files(app) == [job["id"]]


def test_deleting_a_running_job_stops_it_and_removes_its_files(app, monkeypatch):
    release = _hold_separation(monkeypatch)
    _, job = upload(app, song_bytes(1.0), model="tiny")
    _, other = upload(app, song_bytes(1.0), model="tiny")
    wait_for(app, job["id"], states=("running",))
    status, _, _ = request(app, "DELETE", f"/api/jobs/{job['id']}")
    assert status == 200 and job["id"] not in job_files(app)
    running = wait_for(app, other["id"], states=("running",))  # the worker moved on
    assert running["id"] == other["id"]
    release.set()
    assert wait_for(app, other["id"])["state"] == "done"
    assert [j["id"] for j in get_json(app, "/api/jobs")] == [other["id"]]


def test_one_app_per_data_folder(tmp_path, cache):
    with start_app(tmp_path / "data"):
        with pytest.raises(Exception, match="another `unmix serve` uses"):
            start_app(tmp_path / "data")


# ------------------------------------------------------------------------------------------ CLI


def test_cli_serve_refuses_bad_options_and_a_busy_port(tmp_path, capsys, cache):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--max-upload", "lots"])
    assert exit_info.value.code == 2 and "--max-upload" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["serve", "--jobs", "0"])
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        code = cli.main(["serve", "--port", str(busy.getsockname()[1]), "--data", str(tmp_path / "d")])
    finally:
        busy.close()
    assert code == 1 and "is in use: choose another with --port" in capsys.readouterr().err


def test_cli_serve_prints_the_link_and_stops_on_sigterm(tmp_path, cache):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "unmix", "serve", "--port", "0", "--data", str(tmp_path / "d"),
                             "--token", "printed-token"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert re.fullmatch(r"unmix serve: open http://127\.0\.0\.1:\d+/\?token=printed-token\n", line), line
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, proc.stderr.read()
