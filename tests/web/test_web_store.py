"""The web app's pieces on their own: job store, upload checks, what a job may ask for."""
import io
import threading

import numpy as np
import pytest
import soundfile as sf
from web_helpers import song_bytes

from unmix.errors import UnmixError
from unmix.web import catalog, uploads
from unmix.web.store import JobStore, check_id

OPTIONS = {"model": "tiny", "mode": "stems", "targets": ["vocals"], "niter": 0, "format": "wav"}


def add(store, name="a.wav"):
    job_id = store.new_id()
    store.job_dir(job_id).mkdir(parents=True)
    (store.job_dir(job_id) / "input.wav").write_bytes(b"x")
    return store.add(job_id, name, OPTIONS, "input.wav", 1.0)


# -------------------------------------------------------------------------------------- store


def test_jobs_are_queued_claimed_oldest_first_and_updated(tmp_path):
    store = JobStore(tmp_path)
    first, second = add(store, "first.wav"), add(store, "second.wav")
    assert first["state"] == "queued" and first["options"] == OPTIONS
    assert store.queue_position(second) == 1
    claimed = store.claim_next()
    assert claimed["id"] == first["id"] and claimed["state"] == "running" and claimed["started"]
    assert store.update(first["id"], progress=0.5, stems={"vocals": "stems/vocals.wav"})
    assert store.get(first["id"])["stems"] == {"vocals": "stems/vocals.wav"}
    assert store.claim_next()["id"] == second["id"] and store.claim_next() is None
    assert store.delete(first["id"]) and not store.update(first["id"], progress=1.0)
    assert [j["name"] for j in store.list()] == ["second.wav"]
    with pytest.raises(ValueError):
        store.update(second["id"], id="x")


def test_changes_wake_the_waiters_with_the_changed_jobs(tmp_path):
    store = JobStore(tmp_path)
    job = add(store)
    version = store.version
    threading.Timer(0.1, lambda: store.update(job["id"], progress=0.3)).start()
    new_version, changed = store.wait_for_change(version, timeout=10)
    assert new_version > version and changed == [job["id"]]
    assert store.wait_for_change(new_version, timeout=0.05) == (new_version, [])


def test_reopening_queues_running_jobs_again_and_clears_leftovers(tmp_path):
    store = JobStore(tmp_path)
    running, done = add(store, "running.wav"), add(store, "done.wav")
    store.claim_next()
    store.update(done["id"], state="done")
    (store.job_dir(done["id"]) / "stems").mkdir()
    (store.job_dir(running["id"]) / "stems").mkdir()  # half written when the app died
    (store.job_dir(running["id"]) / ".input.x.part").mkdir()
    orphan = tmp_path / "jobs" / ("a" * 32)
    orphan.mkdir()
    store.close()
    store = JobStore(tmp_path)
    assert store.get(running["id"])["state"] == "queued" and store.get(running["id"])["started"] is None
    assert sorted(p.name for p in store.job_dir(running["id"]).iterdir()) == ["input.wav"]
    assert (store.job_dir(done["id"]) / "stems").is_dir()  # a finished job keeps its stems
    assert not orphan.exists()


def test_settings_round_trip(tmp_path):
    store = JobStore(tmp_path)
    store.save_settings(OPTIONS)
    store.close()
    assert JobStore(tmp_path).settings() == OPTIONS


def test_ids_are_checked_before_they_become_paths(tmp_path):
    store = JobStore(tmp_path)
    for bad in ("../x", "a" * 31, "A" * 32, "a" * 32 + "/..", "", None):
        with pytest.raises(UnmixError):
            store.job_dir(bad)
    assert check_id("0123456789abcdef" * 2)


def test_a_database_that_is_not_one_is_a_one_line_error(tmp_path):
    (tmp_path / "unmix-web.sqlite3").write_text("not a database, really " * 100)
    with pytest.raises(UnmixError, match="cannot be used as the job database"):
        JobStore(tmp_path)


# ------------------------------------------------------------------------------------ uploads


@pytest.mark.parametrize("text, size", [("500M", 500 << 20), ("2G", 2 << 30), ("1.5k", 1536), ("4096", 4096),
                                        ("10 MiB", 10 << 20)])
def test_sizes(text, size):
    assert uploads.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1M", "0", "5X"])
def test_bad_sizes(text):
    with pytest.raises(UnmixError, match="not a size"):
        uploads.parse_size(text)


@pytest.mark.parametrize("name, shown", [("song.mp3", "song.mp3"), ("../../etc/passwd", "passwd"),
                                         ("C:\\music\\a:b*c?.wav", "a_b_c_.wav"), ("..", "untitled"),
                                         ("\x00\x1b[31mred.wav", "[31mred.wav"), ("", "untitled"),
                                         ("  .hidden.wav ", "hidden.wav"), ("x" * 300, "x" * 120)])
def test_display_names(name, shown):
    assert uploads.display_name(name) == shown


def test_uploads_are_judged_by_decoding(tmp_path):
    def check(data):
        path = tmp_path / "upload.part"
        path.write_bytes(data)
        return uploads.check_audio(path)

    assert check(song_bytes(1.5, fmt="FLAC")) == (".flac", 1.5)
    assert check(song_bytes(1.0, fmt="OGG", subtype="VORBIS"))[0] == ".ogg"
    assert check(song_bytes(1.0)) == (".wav", 1.0)
    for data, words in ((b"", "empty"), (b"hello" * 100, "not an audio file"),
                        (song_bytes(2.0, fmt="FLAC")[:3000], "truncated")):
        with pytest.raises(UnmixError, match=words):
            check(data)


def test_a_header_that_claims_more_than_the_file_holds_is_refused(tmp_path):
    # a FLAC's STREAMINFO holds the total sample count in 36 bits: claim 2^36 - 1 (18 days)
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((44100, 2), np.float32), 44100, format="FLAC")
    flac = bytearray(buffer.getvalue())
    info = flac.index(b"fLaC") + 8  # STREAMINFO block data
    total = (1 << 36) - 1
    flac[info + 13] = (flac[info + 13] & 0xF0) | (total >> 32)
    flac[info + 14:info + 18] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    path = tmp_path / "liar.flac"
    path.write_bytes(bytes(flac))
    with pytest.raises(UnmixError, match="truncated or damaged"):  # read in blocks: nothing allocated for 18 days
        uploads.check_audio(path)


# ------------------------------------------------------------------------------------ catalog


def test_job_options_are_checked_names_never_paths(tmp_path, monkeypatch, tiny_model):
    (tmp_path / "tiny").symlink_to(tiny_model, target_is_directory=True)
    monkeypatch.setenv("UNMIX_CACHE", str(tmp_path))
    choices = catalog.models()
    assert catalog.job_options({"model": "tiny"}, choices)["targets"] == ["vocals", "drums", "bass", "other"]
    karaoke = catalog.job_options({"model": "tiny", "mode": "karaoke", "targets": "drums"}, choices)
    assert karaoke["targets"] == ["vocals"]
    assert catalog.separator_options(karaoke, choices)["residual"] == "accompaniment"
    for values in ({"model": str(tiny_model)}, {"model": "../tiny"}, {"model": "tiny", "niter": "x"},
                   {"model": "tiny", "format": "../../x"}):
        with pytest.raises(UnmixError):
            catalog.job_options(values, choices)
    assert catalog.separator_options(catalog.job_options({"model": "bundled"}, choices), choices)["model"].endswith(
        "default_model")
