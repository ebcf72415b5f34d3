"""`--scheduler`: evaluation and separation on a Dask cluster give the local run's results.

One LocalCluster on the loopback interface with two worker processes serves the module.
"""
import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import RATE, tone
from hq_tracks import TRACK_NAMES, write_hq

from unmix import cli, cluster

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def run_cli(argv, cwd):
    """``(exit code, stdout, stderr)`` of ``unmix <argv>`` run in folder `cwd`."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)  # relative paths, as a user types them: the workers must get absolute ones
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([str(a) for a in argv])
    finally:
        os.chdir(here)
    return rc, out.getvalue(), err.getvalue()


def test_evaluate_on_the_cluster_equals_the_local_run_and_resumes(scheduler, tmp_path):
    write_hq(tmp_path / "musdb", ".wav")
    broken = tmp_path / "musdb" / "test" / "Zeta - Broken"
    broken.mkdir()
    for part in ("mixture", "vocals", "drums", "bass", "other"):
        (broken / f"{part}.wav").write_bytes(b"not audio")
    common = ["evaluate", "--root", "musdb", "--is-wav", "--oracle", "IRM1", "--targets", "vocals", "drums"]

    rc, _, err = run_cli(common + ["--evaldir", "local"], tmp_path)
    assert rc == 1 and "Zeta - Broken" in err
    rc, out, err = run_cli(common + ["--evaldir", "cluster", "--scheduler", scheduler], tmp_path)
    assert rc == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "cannot read" in errors[0] and "Zeta - Broken" in errors[0]  # the track, the sum
    assert "1 of 3 tracks failed" in errors[1]
    assert "evaluating" in err  # the progress bar
    for name in TRACK_NAMES:
        local = (tmp_path / "local" / "test" / f"{name}.json").read_text()
        assert (tmp_path / "cluster" / "test" / f"{name}.json").read_text() == local
    assert json.loads((tmp_path / "cluster" / "settings.json").read_text())["scorer"] == "fast"

    shutil.rmtree(broken)  # no longer a track: the rerun has nothing left to do
    rc, out, err = run_cli(common + ["--evaldir", "cluster", "--scheduler", scheduler], tmp_path)
    assert rc == 0 and "2 of 2 tracks already scored" in err
    assert "scorer fast" in out


def test_separate_on_the_cluster_equals_the_local_run(scheduler, tiny_model, tmp_path):
    names = []
    for i in range(2):
        names.append(f"s{i}.wav")
        sf.write(tmp_path / names[-1], tone(0.5).T * (i + 1), RATE)
    sf.write(tmp_path / "bad.wav", np.zeros((0, 2)), RATE)
    options = ["--model", tiny_model, "--niter", "1"]
    # one thread per file, as on the cluster's workers
    assert run_cli(["separate", *names, *options, "--outdir", "local", "--jobs", "2"], tmp_path)[0] == 0
    rc, out, err = run_cli(["separate", *names, "bad.wav", *options, "--outdir", "cluster", "--scheduler", scheduler],
                           tmp_path)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1 and len(errors) == 1 and "bad.wav" in errors[0]
    assert "separating" in err  # the progress bar
    for name in names:
        folder = name[: -len(".wav")]
        for stem in sorted((tmp_path / "local" / folder).iterdir()):
            # the samples (the bytes differ: libsndfile's PEAK chunk holds the time of writing)
            np.testing.assert_array_equal(sf.read(tmp_path / "cluster" / folder / stem.name)[0], sf.read(stem)[0])
    rc, _, err = run_cli(["separate", *names, *options, "--outdir", "cluster", "--scheduler", scheduler], tmp_path)
    assert rc == 1 and err.count("exists; use --force") == 2  # as locally: kept unless --force


def test_an_unreachable_scheduler_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    write_hq(tmp_path / "musdb", ".wav")
    rc, _, err = run_cli(["evaluate", "--root", "musdb", "--is-wav", "--oracle", "MIX", "--targets", "vocals",
                          "drums", "--scheduler", "tcp://127.0.0.1:9"], tmp_path)
    assert rc == 1 and err.strip().splitlines()[-1].startswith("error: cannot reach the dask scheduler")
