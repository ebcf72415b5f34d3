"""The web app's memory: jobs and settings in SQLite, each job's files in a folder of its own.

Layout of the data folder:

    unmix-web.sqlite3        jobs and settings
    jobs/<id>/input.<ext>    the upload (its extension comes from its decoded format, not its name)
    jobs/<id>/stems/         the stems, ``<target>.<ext>``
    jobs/<id>/spectrograms.png, jobs/<id>/stems.zip

A job id is 32 random hex digits; it is the only thing from a request that becomes part of a
path, and only after `check_id`. An upload's own name is kept as display text only.

A restart loses nothing: a job that was running when the app stopped (or was killed) is queued
again, and the leftovers of an interrupted run (staging folders, half stems) are removed.
"""
import contextlib
import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from unmix.errors import UnmixError

DB_NAME = "unmix-web.sqlite3"
SCHEMA_VERSION = 1
JOB_ID = re.compile(r"[0-9a-f]{32}")
STATES = ("queued", "running", "done", "failed")
_JSON_FIELDS = ("options", "stems", "notes")
_FIELDS = ("name", "state", "stage", "progress", "started", "finished", "error", "options", "input", "duration",
           "stems", "notes")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,                 -- display name: the upload's name, sanitised
    created REAL NOT NULL,
    state TEXT NOT NULL,                -- queued, running, done, failed
    stage TEXT NOT NULL DEFAULT '',     -- what a running job is doing
    progress REAL NOT NULL DEFAULT 0,   -- 0..1
    started REAL,
    finished REAL,
    error TEXT,                         -- one line, when failed
    options TEXT NOT NULL,              -- JSON: model, mode, targets, niter, format
    input TEXT NOT NULL,                -- file name of the upload in the job folder
    duration REAL,                      -- seconds of audio
    stems TEXT,                         -- JSON: target -> file name in the job folder
    notes TEXT                          -- JSON: warning lines (clipping)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def check_id(job_id):
    """`job_id` if it is a well-formed job id, else UnmixError (it is about to become a path)."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise UnmixError(f"not a job id: {job_id!r}")
    return job_id


class JobStore:
    """Jobs and settings of one data folder; safe to share between threads.

    Every change bumps a version number and wakes `wait_for_change`, which is how the
    server-sent events learn what to send.
    """

    def __init__(self, folder):
        self.folder = Path(folder).expanduser()
        self.jobs_folder = self.folder / "jobs"
        self.jobs_folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._versions = {}  # job id -> version of its last change (deleted jobs included)
        try:
            self._db = sqlite3.connect(str(self.folder / DB_NAME), check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the workers' progress writes
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync per progress write; safe from crashes
            self._db.executescript(_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise UnmixError(f"{self.folder / DB_NAME} cannot be used as the job database ({exc})") from None
        if version > SCHEMA_VERSION:
            raise UnmixError(f"{self.folder / DB_NAME} was written by a newer unmix (schema {version})")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._recover()

    def close(self):
        with self._lock:
            self._db.close()

    # -- jobs ---------------------------------------------------------------------------------
    @staticmethod
    def new_id():
        return uuid.uuid4().hex

    def job_dir(self, job_id):
        """The folder of job `job_id` (not created)."""
        return self.jobs_folder / check_id(job_id)

    def add(self, job_id, name, options, input_name, duration):
        """Queue a new job whose upload is already at ``job_dir(job_id) / input_name``."""
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, name, created, state, options, input, duration) "
                             "VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                             (check_id(job_id), name, time.time(), json.dumps(options), input_name, duration))
            self._touch(job_id)
        return self.get(job_id)

    def get(self, job_id):
        """The job as a dict (JSON fields decoded), or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _decode(row)

    def list(self):
        """Every job, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created, rowid").fetchall()
        return [_decode(r) for r in rows]

    def update(self, job_id, **fields):
        """Set `fields` of a job. Returns False when the job no longer exists (deleted)."""
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}")
        values = [json.dumps(v) if k in _JSON_FIELDS and v is not None else v for k, v in fields.items()]
        with self._lock:
            cursor = self._db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                                      (*values, job_id))
            if cursor.rowcount:
                self._touch(job_id)
        return bool(cursor.rowcount)

    def claim_next(self):
        """The oldest queued job, switched to running; None when nothing waits."""
        with self._lock:
            row = self._db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created, rowid LIMIT 1"
                                   ).fetchone()
            if row is None:
                return None
            self.update(row["id"], state="running", stage="starting", progress=0.0, started=time.time(),
                        finished=None, error=None)
            return self.get(row["id"])

    def queue_position(self, job):
        """How many queued jobs come before `job` (0: next)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND (created < ? OR "
                                    "(created = ? AND rowid < (SELECT rowid FROM jobs WHERE id = ?)))",
                                    (job["created"], job["created"], job["id"])).fetchone()[0]

    def delete(self, job_id):
        """Forget a job (its files are removed by `remove_files`). Returns False if unknown."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            if cursor.rowcount:
                self._touch(job_id)
        return bool(cursor.rowcount)

    def remove_files(self, job_id):
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # -- settings -----------------------------------------------------------------------------
    def settings(self):
        """The saved settings (the page's last choices) as a dict."""
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM settings").fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def save_settings(self, settings):
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM settings")
            self._db.executemany("INSERT INTO settings (key, value) VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in settings.items()])

    # -- changes ------------------------------------------------------------------------------
    @property
    def version(self):
        with self._lock:
            return self._version

    def wait_for_change(self, since, timeout):
        """Wait until a job changes after version `since` (or `timeout` s, or `wake_all`).

        Returns:
            ``(version, ids)``: the current version and the jobs changed since `since`.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._version > since, timeout=timeout)
            return self._version, [i for i, v in self._versions.items() if v > since]

    def wake_all(self):
        """Wake every waiter (the app is stopping)."""
        with self._changed:
            self._changed.notify_all()

    def _touch(self, job_id):
        self._version += 1
        self._versions[job_id] = self._version
        self._changed.notify_all()

    # -- restart ------------------------------------------------------------------------------
    def _recover(self):
        """After a stop or a crash: queue the jobs that were running again, and remove what an
        interrupted run or deletion left (staging folders, half stems, folders of no job)."""
        with self._lock:
            running = [r["id"] for r in self._db.execute("SELECT id FROM jobs WHERE state = 'running'")]
            for job_id in running:
                self.update(job_id, state="queued", stage="", progress=0.0, started=None)
            known = {r["id"] for r in self._db.execute("SELECT id FROM jobs")}
            unfinished = {r["id"] for r in self._db.execute("SELECT id FROM jobs WHERE state != 'done'")}
        for entry in self.jobs_folder.iterdir():
            if entry.name not in known:  # an upload that never became a job, or a deleted job's folder
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
            elif entry.name in unfinished:
                clear_outputs(entry)


def clear_outputs(folder):
    """Remove a job folder's outputs and staging leftovers; keep its input."""
    for entry in Path(folder).iterdir():
        if entry.name.startswith("input."):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry)


def _decode(row):
    if row is None:
        return None
    job = dict(row)
    for key in _JSON_FIELDS:
        job[key] = json.loads(job[key]) if job[key] is not None else None
    return job
