"""The HTTP side of `unmix serve`: the page, a JSON API, server-sent events and downloads.

    GET    /                               the page (static/index.html)
    GET    /static/<name>                  its script, style and icon (a fixed list)
    GET    /api/options                    models, targets, formats, niter, upload limit
    GET    /api/settings, PUT              the page's last choices, kept in the database
    GET    /api/jobs                       every job
    POST   /api/jobs?name=&model=&mode=&targets=&niter=&format=    body: the song's bytes
    GET    /api/jobs/<id>, DELETE          one job; deleting removes its files
    GET    /api/jobs/<id>/stems/<target>   a stem (download name: "<song> - <target>.<ext>")
    GET    /api/jobs/<id>/stems.zip        every stem in one zip
    GET    /api/jobs/<id>/spectrograms.png the mixture and the stems, as `unmix demo` draws them
    GET    /api/events                     server-sent events: "jobs" (all, at first), "job", "deleted"

Safety. The app binds 127.0.0.1; any other host needs a token (generated unless given), checked
on every request: header ``X-Unmix-Token`` or ``Authorization: Bearer``, or the cookie that a
``?token=`` link sets. Without a token, the Host header must name the loopback (a web page
cannot reach the app by rebinding its own domain to 127.0.0.1). Requests that change something
need the header ``X-Unmix-Request`` and, when the browser sends an Origin, this app's origin:
another site's page cannot post songs or delete jobs. Paths come from job ids (checked) and
the job's own stem list, never from the request's text; an upload over the limit is refused
with 413 before its body is read.
"""
import contextlib
import errno
import hmac
import http.server
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
import zipfile
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from unmix.errors import UnmixError
from unmix.io.files import atomic_path
from unmix.signals import sigterm_as_ctrl_c
from unmix.web import catalog, uploads
from unmix.web.runner import Runner, draw_spectrograms
from unmix.web.store import JobStore

try:
    import fcntl
except ImportError:  # Windows: no lock on the data folder
    fcntl = None

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
                "icon.svg": "image/svg+xml"}
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg"}
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD = "1G"
MAX_JSON_BODY = 64 << 10
KEEP_ALIVE_S = 15.0  # an SSE comment this often: proxies and browsers keep the stream open
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
CSRF_HEADER = "X-Unmix-Request"
TOKEN_HEADER = "X-Unmix-Token"
_JOB = r"/api/jobs/(?P<job_id>[0-9a-f]{32})"
ROUTES = [
    ("GET", r"/", "page"),
    ("GET", r"/static/(?P<name>[^/]+)", "static"),
    ("GET", r"/api/options", "options"),
    ("GET", r"/api/settings", "get_settings"),
    ("PUT", r"/api/settings", "put_settings"),
    ("GET", r"/api/jobs", "list_jobs"),
    ("POST", r"/api/jobs", "create_job"),
    ("GET", _JOB, "get_job"),
    ("DELETE", _JOB, "delete_job"),
    ("GET", _JOB + r"/stems/(?P<target>[^/]+)", "stem"),
    ("GET", _JOB + r"/stems\.zip", "zip"),
    ("GET", _JOB + r"/spectrograms\.png", "spectrogram"),
    ("GET", r"/api/events", "events"),
]
ROUTES = [(method, re.compile(pattern), name) for method, pattern, name in ROUTES]


def is_loopback(host):
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class WebApp:
    """The app: a job store in `data`, `jobs` workers, and an HTTP server on `host`:`port`.

    Args:
        data: the data folder (jobs database and files); default ``<cache root>/web``.
        host, port: where to listen; port 0 picks a free port (see `url`).
        jobs: songs separated at once.
        token: required on every request; None: none on the loopback, a generated one elsewhere.
        max_upload: largest upload in bytes (or a size text such as ``"500M"``).
        verbose: log every request to stderr.
    """

    def __init__(self, data=None, host=DEFAULT_HOST, port=DEFAULT_PORT, jobs=1, token=None,
                 max_upload=DEFAULT_MAX_UPLOAD, verbose=False):
        from unmix.weights.registry import cache_root

        if int(jobs) < 1:
            raise UnmixError(f"--jobs must be >= 1, got {jobs}")
        if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{8,}", token):
            # it travels in a URL and a cookie: no characters that either would need to escape
            raise UnmixError("--token must be 8 or more letters, digits or . _ ~ -")
        if token is None and not is_loopback(host):
            token = secrets.token_urlsafe(24)  # another host: never open, as Jupyter
        self.data = Path(data).expanduser() if data else cache_root() / "web"
        self.host, self.port, self.jobs, self.token = host, int(port), int(jobs), token
        self.max_upload = max_upload if isinstance(max_upload, int) else uploads.parse_size(max_upload)
        self.verbose = verbose
        self.store = self.runner = self.httpd = self._thread = self._lock_file = None
        self.stopping = threading.Event()
        self.zip_lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------------
    def start(self):
        """Open the data folder, start the workers and the server (in a thread). Returns self."""
        self.data.mkdir(parents=True, exist_ok=True)
        self._lock_data()
        self.store = JobStore(self.data)
        try:
            self.httpd = _Server(self, (self.host, self.port))
        except OSError as exc:
            self.store.close()
            self._unlock_data()
            if exc.errno == errno.EADDRINUSE:
                raise UnmixError(f"port {self.port} on {self.host} is in use: choose another with --port") from None
            raise UnmixError(f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc})") from None
        self.port = self.httpd.server_address[1]
        self.runner = Runner(self.store, self.jobs)
        self.runner.start()
        # a short poll: `stop` (shutdown) returns within it
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="unmix-http", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving; running jobs are queued again for the next start."""
        if self.httpd is None:
            return
        self.stopping.set()
        self.store.wake_all()  # the event streams end
        self.httpd.shutdown()
        self.httpd.server_close()
        self.runner.stop()
        self.store.close()
        self._unlock_data()
        self.httpd = None

    def __enter__(self):
        return self if self.httpd is not None else self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        """The address to open (without the token)."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def link(self):
        """`url` with the token: opening it once sets the token's cookie."""
        return self.url + (f"?token={self.token}" if self.token else "")

    @property
    def cookie_name(self):
        return f"unmix_token_{self.port}"  # one per port: two apps on one host keep their tokens apart

    def _lock_data(self):
        """One app per data folder: two would run each other's jobs twice."""
        if fcntl is None:
            return
        self._lock_file = open(self.data / ".lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            raise UnmixError(f"another `unmix serve` uses {self.data}: stop it, or give this one --data") from None

    def _unlock_data(self):
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- what the handlers share ----------------------------------------------------------------
    def job_json(self, job):
        """A job as the page sees it: no paths, URLs for its files, time left or queue place."""
        base = f"/api/jobs/{job['id']}"
        out = {k: job[k] for k in ("id", "name", "state", "stage", "progress", "error", "options", "duration",
                                   "created", "started", "finished", "notes")}
        if job["state"] == "running" and job["started"] and job["progress"] >= 0.03:
            elapsed = max(0.0, time.time() - job["started"])
            out["eta"] = round(elapsed * (1.0 - job["progress"]) / job["progress"], 1)
        if job["state"] == "queued":
            out["position"] = self.store.queue_position(job)
        if job["state"] == "done":
            stem = uploads.name_stem(job["name"])
            out["stems"] = [dict(target=t, url=f"{base}/stems/{quote(t)}", download=_download_name(stem, t, path))
                            for t, path in (job["stems"] or {}).items()]
            out["zip"] = f"{base}/stems.zip"
            out["spectrogram"] = f"{base}/spectrograms.png"
        return out


def _download_name(stem, target, path):
    return f"{stem} - {target}{Path(path).suffix}"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a stalled client never keeps the app from stopping
    request_queue_size = 128  # socketserver's 5 drops connections when a page and many uploads arrive at once

    def __init__(self, app, address):
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a client that went away
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the page's many small requests share connections
    server_version = "unmix"
    timeout = 120  # seconds a connection may stall (idle keep-alive, a stopped upload)

    @property
    def app(self):
        return self.server.app

    def log_message(self, format, *args):
        if self.app.verbose:
            super().log_message(format, *args)

    # -- dispatch -------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        if not self._authorized(method, split.path):
            return
        allowed = []
        for route_method, pattern, name in ROUTES:
            match = pattern.fullmatch(split.path)
            if match:
                if route_method == method:
                    try:
                        return getattr(self, f"_{name}")(**match.groupdict())
                    except (ConnectionError, TimeoutError):
                        self.close_connection = True
                        return
                allowed.append(route_method)
        if allowed:
            return self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed here",
                               headers={"Allow": ", ".join(allowed)})
        self._error(HTTPStatus.NOT_FOUND, "not found")

    # -- safety ---------------------------------------------------------------------------------
    def _authorized(self, method, path):
        """Check host, token and origin; answer the request (and return False) when refused."""
        app = self.app
        if app.token is None:
            host = _hostname(self.headers.get("Host", ""))
            if host and not (is_loopback(host) or host == app.host):
                return self._refuse(HTTPStatus.FORBIDDEN, f"this app answers to 127.0.0.1, not {host!r}")
        else:
            given = self.query.get("token")
            if given is not None and _same(given, app.token) and method == "GET" and path == "/":
                return self._set_token_cookie()
            given = given or self.headers.get(TOKEN_HEADER) or _bearer(self.headers.get("Authorization"))
            given = given or _cookie(self.headers.get("Cookie"), app.cookie_name)
            if not (given and _same(given, app.token)):
                return self._refuse(HTTPStatus.FORBIDDEN, "a token is needed: open the link that `unmix serve` "
                                                          "printed (http://...?token=...)")
        if method not in ("GET", "HEAD"):
            origin = self.headers.get("Origin")
            if not self.headers.get(CSRF_HEADER):
                return self._refuse(HTTPStatus.FORBIDDEN, f"requests that change something need the {CSRF_HEADER} "
                                                          "header")
            if origin and urlsplit(origin).netloc != self.headers.get("Host", ""):
                return self._refuse(HTTPStatus.FORBIDDEN, f"requests from {origin} are not allowed")
        return True

    def _refuse(self, status, message):
        self.close_connection = True  # the body, if any, is not read
        self._error(status, message)
        return False

    def _set_token_cookie(self):
        """A ``?token=`` link: remember the token in a cookie and reload without it (so it does not
        stay in the address bar or the history)."""
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Set-Cookie", f"{self.app.cookie_name}={self.app.token}; Path=/; HttpOnly; SameSite=Lax")
        self.send_header("Location", "/")
        self.send_header("Content-Length", "0")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        return False

    # -- responses ------------------------------------------------------------------------------
    def _common_headers(self):
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")

    def _send(self, status, body, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self._common_headers()
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, value, headers=None):
        self._send(status, json.dumps(value).encode(), "application/json", headers)

    def _error(self, status, message, headers=None):
        self._json(status, {"error": message}, headers)

    def _file(self, path, content_type, download=None):
        """Stream a file; `download` names it for the browser's save dialog."""
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        with f:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            self.send_header("Cache-Control", "no-store")
            self._common_headers()
            if download:
                self.send_header("Content-Disposition", _content_disposition(download))
            self.end_headers()
            while True:
                block = f.read(uploads.CHUNK_BYTES)
                if not block:
                    break
                self.wfile.write(block)

    def _read_json(self):
        length = self._content_length()
        if length is None or length > MAX_JSON_BODY:
            self.close_connection = True
            return None
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return None

    def _content_length(self):
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return length if length >= 0 else None

    # -- pages ----------------------------------------------------------------------------------
    def _page(self):
        body = (STATIC / "index.html").read_bytes()
        self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", headers={"Content-Security-Policy": _CSP})

    def _static(self, name):
        if name not in STATIC_FILES:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), STATIC_FILES[name])

    def _options(self):
        self._json(HTTPStatus.OK, catalog.options_json(self.app.max_upload))

    def _get_settings(self):
        self._json(HTTPStatus.OK, self.app.store.settings())

    def _put_settings(self):
        values = self._read_json()
        if not isinstance(values, dict):
            return self._error(HTTPStatus.BAD_REQUEST, "settings must be a JSON object")
        try:
            settings = catalog.job_options({k: ",".join(v) if isinstance(v, list) else v
                                            for k, v in values.items() if k in catalog.SETTINGS})
        except UnmixError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        self.app.store.save_settings(settings)
        self._json(HTTPStatus.OK, settings)

    # -- jobs -----------------------------------------------------------------------------------
    def _list_jobs(self):
        self._json(HTTPStatus.OK, [self.app.job_json(j) for j in self.app.store.list()])

    def _get_job(self, job_id):
        job = self.app.store.get(job_id)
        if job is None:
            return self._error(HTTPStatus.NOT_FOUND, "no such job")
        self._json(HTTPStatus.OK, self.app.job_json(job))

    def _create_job(self):
        """An upload: checked in this order, each refusal one line: options, size, content."""
        app = self.app
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._refuse(HTTPStatus.LENGTH_REQUIRED, "send the file with a Content-Length")
        length = self._content_length()
        if length is None:
            return self._refuse(HTTPStatus.LENGTH_REQUIRED, "send the file with a Content-Length")
        name = uploads.display_name(self.query.get("name"))
        if length > app.max_upload:
            return self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"{name} is {uploads.format_size(length)}: larger than this app's limit of "
                                f"{uploads.format_size(app.max_upload)} (unmix serve --max-upload)")
        if length == 0:
            return self._refuse(HTTPStatus.BAD_REQUEST, f"{name}: the file is empty (0 bytes)")
        try:
            options = catalog.job_options(self.query)
        except UnmixError as exc:
            return self._refuse(HTTPStatus.BAD_REQUEST, str(exc))
        job_id = app.store.new_id()
        folder = app.store.job_dir(job_id)
        folder.mkdir(parents=True)
        part = folder / "upload.part"
        status = HTTPStatus.BAD_REQUEST  # until the body is in: a cut-off upload
        try:
            uploads.receive(self.rfile, length, part)
            status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE  # then: a file that is not audio
            ext, seconds = uploads.check_audio(part)
            os.rename(part, folder / f"input{ext}")
            job = app.store.add(job_id, name, options, f"input{ext}", seconds)
        except (UnmixError, OSError) as exc:
            app.store.remove_files(job_id)
            self.close_connection = True
            if isinstance(exc, (ConnectionError, TimeoutError)):  # the client went away: nobody to answer
                raise
            if isinstance(exc, OSError):  # e.g. a full disk
                full = exc.errno == errno.ENOSPC
                status = HTTPStatus.INSUFFICIENT_STORAGE if full else HTTPStatus.INTERNAL_SERVER_ERROR
                exc = f"the upload could not be stored ({exc.strerror or exc})"
            return self._error(status, f"{name}: {exc}")
        except BaseException:
            app.store.remove_files(job_id)
            raise
        app.runner.wake()
        self._json(HTTPStatus.CREATED, app.job_json(job), headers={"Location": f"/api/jobs/{job_id}"})

    def _delete_job(self, job_id):
        app = self.app
        if not app.store.delete(job_id):
            return self._error(HTTPStatus.NOT_FOUND, "no such job")
        app.runner.cancel(job_id)  # waits until its worker has let go of the folder
        app.store.remove_files(job_id)
        self._json(HTTPStatus.OK, {"deleted": job_id})

    def _finished_job(self, job_id):
        """The job if it is done, else None (and the request answered)."""
        job = self.app.store.get(job_id)
        if job is None:
            self._error(HTTPStatus.NOT_FOUND, "no such job")
        elif job["state"] != "done":
            self._error(HTTPStatus.CONFLICT, f"the job is {job['state']}, not done")
            job = None
        return job

    def _stem(self, job_id, target):
        job = self._finished_job(job_id)
        if job is None:
            return
        stems = job["stems"] or {}
        target = unquote(target)
        if target not in stems:  # the job's own list: nothing from the URL becomes a path
            return self._error(HTTPStatus.NOT_FOUND, f"no stem {target!r} in this job")
        path = self.app.store.job_dir(job_id) / stems[target]
        suffix = Path(stems[target]).suffix
        self._file(path, AUDIO_TYPES.get(suffix, "application/octet-stream"),
                   download=_download_name(uploads.name_stem(job["name"]), target, path))

    def _spectrogram(self, job_id):
        job = self._finished_job(job_id)
        if job is None:
            return
        try:
            png = draw_spectrograms(self.app.store.job_dir(job_id), job)
        except (UnmixError, OSError):  # deleted meanwhile
            return self._error(HTTPStatus.NOT_FOUND, "no such job")
        self._file(png, "image/png")

    def _zip(self, job_id):
        job = self._finished_job(job_id)
        if job is None:
            return
        folder = self.app.store.job_dir(job_id)
        path = folder / "stems.zip"
        stem = uploads.name_stem(job["name"])
        try:
            with self.app.zip_lock:  # built once, on the first request
                if not path.exists():
                    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
                        for target, name in job["stems"].items():
                            archive.write(folder / name, f"{stem}/{target}{Path(name).suffix}")
        except OSError:  # deleted meanwhile
            return self._error(HTTPStatus.NOT_FOUND, "no such job")
        self._file(path, "application/zip", download=f"{stem} - stems.zip")

    # -- events ---------------------------------------------------------------------------------
    def _events(self):
        """Server-sent events until the page goes away or the app stops: every job at first,
        then each job that changes (``job``) or is deleted (``deleted``)."""
        app, store = self.app, self.app.store
        self.close_connection = True
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self._common_headers()
        self.end_headers()
        version = store.version
        self._event("jobs", [app.job_json(j) for j in store.list()])
        while not app.stopping.is_set():
            version, changed = store.wait_for_change(version, KEEP_ALIVE_S)
            if app.stopping.is_set():
                break
            if not changed:
                self.wfile.write(b": keep-alive\n\n")
            for job_id in changed:
                job = store.get(job_id)
                if job is None:
                    self._event("deleted", {"id": job_id})
                else:
                    self._event("job", app.job_json(job))
            self.wfile.flush()

    def _event(self, name, value):
        self.wfile.write(f"event: {name}\ndata: {json.dumps(value)}\n\n".encode())
        self.wfile.flush()


_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def _hostname(host_header):
    """``"127.0.0.1:8000"`` -> ``"127.0.0.1"``; ``"[::1]:8000"`` -> ``"::1"``."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _same(given, token):
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8", "replace"))


def _bearer(header):
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def _cookie(header, name):
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _content_disposition(name):
    """An attachment header for any name: an ASCII fallback and the UTF-8 name (RFC 6266)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def serve(data=None, host=DEFAULT_HOST, port=DEFAULT_PORT, jobs=1, token=None, max_upload=DEFAULT_MAX_UPLOAD,
          verbose=False, out=sys.stdout):
    """Run the app until Ctrl-C (`unmix serve`); prints where to open it."""
    app = WebApp(data, host=host, port=port, jobs=jobs, token=token, max_upload=max_upload, verbose=verbose)
    with contextlib.suppress(KeyboardInterrupt), sigterm_as_ctrl_c(), app:
        print(f"unmix serve: open {app.link}", file=out)
        if app.host in ("0.0.0.0", "::"):
            print(f"  or, on this machine, http://127.0.0.1:{app.port}/" + (f"?token={app.token}" if app.token
                                                                          else ""), file=out)
        print(f"jobs and stems in {app.data}; {app.jobs} song(s) at a time; uploads up to "
              f"{uploads.format_size(app.max_upload)}; Ctrl-C stops (running jobs resume at the next start)",
              file=out, flush=True)
        app.stopping.wait()
    return 0


