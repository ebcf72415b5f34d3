"""unmix evaluate, the run: MUSDB track reading, museval-equivalent scores end to end, resume,
settings, tables, plot, failures, CLI.

Two 2 s synthetic tracks in MUSDB18-HQ layout (once as 16-bit WAV, once as 16-bit FLAC, the
same samples) are scored end to end; two targets keep museval at about a second per track.
"""
import contextlib
import dataclasses
import io
import json
import os
import shutil
from pathlib import Path

import matplotlib.image
import musdb
import museval
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import make_model_folder
from hq_tracks import RATE, SECONDS, TARGETS, TRACK_NAMES, assert_same_scores, synth_sources, write_hq

from unmix import cli
from unmix.errors import UnmixError
from unmix.evaluation import evaluate as ev
from unmix.evaluation import scores
from unmix.io import musdb as musdb_io
from unmix.separation.separator import Separator


def run_cli(argv):
    """``(exit code, stdout, stderr)`` of ``unmix <argv>``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("musdb")
    return {"wav": write_hq(base / "wav", ".wav"), "flac": write_hq(base / "flac", ".flac"), "base": base}


@pytest.fixture(scope="module")
def model_run(data):
    """The tiny random model evaluated on the WAV tracks, with estimates, scores and a plot."""
    base = data["base"]
    model = make_model_folder(base / "model", targets=TARGETS)
    paths = {"model": model, "evaldir": base / "eval-model", "outdir": base / "est-model",
             "plot": base / "model.png"}
    rc, out, err = run_cli(["evaluate", "--root", data["wav"], "--is-wav", "--model", model,
                            "--evaldir", paths["evaldir"], "--outdir", paths["outdir"], "--plot", paths["plot"]])
    assert rc == 0, err
    return dict(paths, out=out, err=err)


@pytest.fixture(scope="module")
def oracle_run(data):
    """The IRM1 oracle on the FLAC copy of the same tracks."""
    base = data["base"]
    paths = {"evaldir": base / "eval-irm1", "outdir": base / "est-irm1"}
    rc, out, err = run_cli(["evaluate", "--root", data["flac"], "--oracle", "IRM1", "--targets", *TARGETS,
                            "--evaldir", paths["evaldir"], "--outdir", paths["outdir"]])
    assert rc == 0, err
    return dict(paths, out=out)


def read_estimates(outdir, name, targets=TARGETS):
    """Written estimates as float32 ``(nb_timesteps, nb_channels)`` (the float wav round-trips exactly)."""
    return {t: sf.read(Path(outdir) / "test" / name / f"{t}.wav", dtype="float32", always_2d=True)[0]
            for t in targets}


def json_scores(path):
    """target -> metric -> per-frame values (NaN kept) of a museval JSON file."""
    written = json.loads(Path(path).read_text())
    return {t["name"]: {m: np.array([np.nan if f["metrics"][m] is None else float(f["metrics"][m])
                                     for f in t["frames"]]) for m in scores.METRICS}
            for t in written["targets"]}


# ------------------------------------------------------------------------------ end to end


def test_model_scores_equal_museval_eval_mus_track(data, model_run):
    """Our JSON is what museval.eval_mus_track writes for the same estimates (within 1e-3 dB:
    written by the default fast scorer)."""
    mus = musdb.DB(root=str(data["wav"]), subsets="test", is_wav=True)
    assert [t.name for t in mus] == sorted(TRACK_NAMES)
    for track in mus:
        estimates = read_estimates(model_run["outdir"], track.name)
        assert all(e.shape == track.audio.shape for e in estimates.values())
        expected = museval.eval_mus_track(track, estimates).json
        written = (model_run["evaldir"] / "test" / f"{track.name}.json").read_text()
        assert_same_scores(written, expected)
        assert [t["name"] for t in json.loads(written)["targets"]] == TARGETS
        assert len(json.loads(written)["targets"][0]["frames"]) == int(SECONDS)  # 1 s windows


def test_flac_oracle_scores_equal_museval_on_written_estimates(oracle_run):
    """FLAC folders (which musdb cannot read) score as museval.evaluate with 1 s windows/hops."""
    for index, name in enumerate(sorted(TRACK_NAMES)):
        sources = synth_sources(TRACK_NAMES.index(name))
        estimates = read_estimates(oracle_run["outdir"], name)
        sdr, isr, sir, sar = museval.evaluate([sources[t].T for t in TARGETS], [estimates[t] for t in TARGETS],
                                              win=RATE, hop=RATE)
        got = json_scores(oracle_run["evaldir"] / "test" / f"{name}.json")
        for i, target in enumerate(TARGETS):
            for metric, values in zip(("SDR", "ISR", "SIR", "SAR"), (sdr, isr, sir, sar)):
                np.testing.assert_allclose(got[target][metric], values[i], atol=1e-5)  # JSON keeps 5 decimals


def test_oracle_irm_beats_the_random_model(model_run, oracle_run):
    model = pd.read_csv(model_run["evaldir"] / "scores.csv", index_col="target")
    oracle = pd.read_csv(oracle_run["evaldir"] / "scores.csv", index_col="target")
    assert list(model.index) == list(oracle.index) == TARGETS
    for target in TARGETS:
        assert oracle.loc[target, "SDR"] > 15.0
        assert oracle.loc[target, "SDR"] > model.loc[target, "SDR"] + 10.0


def test_table_printed_and_saved_as_median_of_medians(model_run):
    per_track = {name: json_scores(model_run["evaldir"] / "test" / f"{name}.json") for name in TRACK_NAMES}
    table = pd.read_csv(model_run["evaldir"] / "scores.csv", index_col="target")
    assert list(table.columns) == list(scores.METRICS)
    for target in TARGETS:
        for metric in scores.METRICS:
            expected = np.median([np.nanmedian(per_track[n][target][metric]) for n in TRACK_NAMES])
            assert table.loc[target, metric] == pytest.approx(expected, abs=1e-5)
    row = "| vocals | " + " | ".join(f"{table.loc['vocals', m]:.2f}" for m in scores.METRICS) + " |"
    assert "| target | SDR | SIR | ISR | SAR |" in model_run["out"]
    assert row in model_run["out"]
    assert "UMX" not in model_run["out"]  # not the MUSDB18 test set: no published numbers
    md = (model_run["evaldir"] / "scores.md").read_text()
    assert row in md and "model: test" in md and "over 2 tracks" in md
    for name in TRACK_NAMES:  # one progress line per track
        assert f"{name}: vocals SDR" in model_run["err"]


def test_plot_is_a_png(model_run):
    png = model_run["plot"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 300


def test_resume_skips_scored_tracks(data, model_run, tmp_path, monkeypatch):
    evaldir = tmp_path / "eval"
    shutil.copytree(model_run["evaldir"], evaldir)
    calls = []
    original = Separator.separate
    monkeypatch.setattr(Separator, "separate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    argv = ["evaluate", "--root", data["wav"], "--is-wav", "--model", model_run["model"], "--evaldir", evaldir]

    rc, out, err = run_cli(argv)
    assert rc == 0 and calls == []
    assert "2 of 2 tracks already scored" in err

    redo = evaldir / "test" / f"{TRACK_NAMES[1]}.json"
    before = redo.read_text()
    redo.unlink()
    rc, out, err = run_cli(argv)
    assert rc == 0 and len(calls) == 1
    assert redo.read_text() == before  # the same separation gives the same scores
    assert "1 of 2 tracks already scored" in err


def test_is_done_needs_the_same_targets_and_a_readable_json(data, model_run, tmp_path):
    track = musdb_io.find_tracks(data["wav"], "test", is_wav=True)[0]
    assert ev.is_done(track, model_run["evaldir"], TARGETS)
    assert ev.is_done(track, model_run["evaldir"], TARGETS, outdir=model_run["outdir"])
    assert not ev.is_done(track, model_run["evaldir"], TARGETS, outdir=tmp_path)  # estimates missing
    assert not ev.is_done(track, model_run["evaldir"], ["vocals", "drums", "bass"])  # other targets
    broken = tmp_path / "test" / f"{track.name}.json"
    broken.parent.mkdir()
    broken.write_text('{"targets": [')
    assert not ev.is_done(track, tmp_path, TARGETS)


def test_mix_baseline_in_parallel_scores_the_mixture(data, tmp_path):
    """--oracle MIX on 2 processes: every estimate is the mixture itself."""
    evaldir, outdir = tmp_path / "eval", tmp_path / "est"
    rc, out, err = run_cli(["evaluate", "--root", data["flac"], "--oracle", "MIX", "--targets", *TARGETS,
                            "--cores", 2, "--evaldir", evaldir, "--outdir", outdir])
    assert rc == 0, err
    for name in TRACK_NAMES:
        sources = synth_sources(TRACK_NAMES.index(name))
        mixture = sum(sources.values())
        estimates = read_estimates(outdir, name)
        for t in TARGETS:
            np.testing.assert_array_equal(estimates[t], mixture.T.astype(np.float32))
        mix32 = mixture.T.astype(np.float32)
        sdr, isr, sir, sar = museval.evaluate([sources[t].T for t in TARGETS], [mix32] * len(TARGETS),
                                              win=RATE, hop=RATE)
        got = json_scores(evaldir / "test" / f"{name}.json")
        for i, target in enumerate(TARGETS):
            for metric, values in zip(("SDR", "ISR", "SIR", "SAR"), (sdr, isr, sir, sar)):
                np.testing.assert_allclose(got[target][metric], values[i], atol=1e-5)


# ------------------------------------------------------------------------------ pieces


def test_hq_folders_read_as_musdb_reads_them(data, tmp_path):
    mus = musdb.DB(root=str(data["wav"]), subsets="test", is_wav=True)
    tracks = musdb_io.find_tracks(data["wav"], "test", is_wav=True)
    assert [t.name for t in tracks] == [t.name for t in mus] and not tracks[0].is_stem
    mixture, sources, rate = musdb_io.load_track(tracks[0])
    assert rate == mus[0].rate == RATE and mixture.dtype == np.float64
    assert np.array_equal(mixture, mus[0].audio.T)
    refs = scores.musdb_references(sources, list(scores.MUSDB_TARGETS))
    for target in scores.MUSDB_TARGETS:  # sums included, bit for bit
        assert np.array_equal(refs[target], mus[0].targets[target].audio.T), target
    # a folder without a mixture file: the sum of its sources
    write_hq(tmp_path, ".flac", names=("Solo - Song",), mixture=False)
    mixture, sources, _ = musdb_io.load_track(musdb_io.find_tracks(tmp_path, "test")[0])
    np.testing.assert_array_equal(mixture, sum(synth_sources(0).values()))


def test_stem_files_read_as_musdb_reads_them(tmp_path):
    stempeg = pytest.importorskip("stempeg")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    (tmp_path / "test").mkdir()
    sources = synth_sources(0, seconds=1.0)
    stems = np.stack([sum(sources.values())] + [sources[s] for s in ("drums", "bass", "other", "vocals")])
    stempeg.write_stems(str(tmp_path / "test" / "Gamma - Stems.stem.mp4"), stems.transpose(0, 2, 1),
                        sample_rate=RATE, writer=stempeg.StreamsWriter(codec="aac"))
    (tmp_path / "test" / "not a track").mkdir()  # folders are ignored when stems exist
    tracks = musdb_io.find_tracks(tmp_path, "test")
    assert [(t.name, t.is_stem) for t in tracks] == [("Gamma - Stems", True)]
    mixture, ours, rate = musdb_io.load_track(tracks[0])
    theirs = musdb.DB(root=str(tmp_path), subsets="test")[0]
    assert rate == RATE and np.array_equal(mixture, theirs.audio.T)
    for source in musdb_io.MUSDB_SOURCES:
        assert np.array_equal(ours[source], theirs.targets[source].audio.T), source


def test_published_sdrs_shown_for_the_musdb18_test_set(tmp_path, monkeypatch):
    names = sorted(scores.MUSDB18_TEST_TRACKS)
    write_hq(tmp_path, ".flac", names=names, seconds=0.2)

    def fake_score(name, references, estimates, rate, **kw):  # museval would take an hour here
        store = museval.TrackStore(win=1.0, hop=1.0, track_name=name)
        for i, target in enumerate(scores.scored_targets(list(estimates))):
            v = float(names.index(name) + i)
            store.add_target(target, {"SDR": [v], "SIR": [v], "ISR": [v], "SAR": [v]})
        return store

    monkeypatch.setattr(ev, "score_track", fake_score)  # the name `evaluate_track` calls
    rc, out, err = run_cli(["evaluate", "--root", tmp_path, "--oracle", "MIX", "--evaldir", tmp_path / "eval"])
    assert rc == 0, err
    assert "| target | SDR | SIR | ISR | SAR | UMX SDR | UMXHQ SDR | UMXL SDR |" in out
    assert "| vocals | 24.50 | 24.50 | 24.50 | 24.50 | 6.32 | 6.25 | 7.21 |" in out  # median of 0..49
    assert "| other | 27.50 | 27.50 | 27.50 | 27.50 | 4.02 | 4.28 | 4.89 |" in out


@pytest.mark.parametrize("make, argv, message", [
    (None, ["--root", "{tmp}/missing", "--oracle", "MIX"], "does not exist"),
    ("empty", ["--root", "{tmp}", "--oracle", "MIX"], "no MUSDB tracks"),
    ("hq", ["--root", "{tmp}", "--oracle", "MIX", "--tracks", "Nobody - Nothing"], "unknown track"),
    ("hq", ["--root", "{tmp}", "--subset", "train", "--oracle", "MIX"], "no subset folder"),
    ("hq", ["--root", "{tmp}", "--oracle", "IBM", "--targets", "vocals"], "two MUSDB targets"),
    ("hq", ["--root", "{tmp}", "--oracle", "IBM", "--targets", "vocals", "piano"], "not piano"),
    ("hq", ["--root", "{tmp}", "--oracle", "MIX", "--plot", "{tmp}/plot.jpg"], "PNG"),
    ("hq", ["--root", "{tmp}", "--model", "{tmp}/no-model"], "model"),
])
def test_user_errors_are_one_line_and_exit_1(tmp_path, make, argv, message):
    if make == "empty":
        (tmp_path / "test").mkdir()
    elif make == "hq":
        write_hq(tmp_path, ".wav", names=TRACK_NAMES[:1], seconds=0.5)
    rc, out, err = run_cli(["evaluate"] + [a.format(tmp=tmp_path) for a in argv] + ["--evaldir", tmp_path / "e"])
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "e").exists()  # nothing scored, nothing written


# ------------------------------------------------------------------------------ settings, failures


def test_settings_json_records_what_made_the_scores(data, model_run):
    settings = json.loads((model_run["evaldir"] / "settings.json").read_text())
    assert settings == {"model": str(model_run["model"].resolve()), "targets": TARGETS, "niter": 1,
                        "wiener_win_len": 300, "residual": None, "softmask": False, "backend": "onnx",
                        "root": str(data["wav"].resolve()), "is_wav": True, "subset": "test", "scorer": "fast"}
    assert "scored by unmix.evaluation.bsseval" in (model_run["evaldir"] / "scores.md").read_text()


def test_scorer_is_recorded_and_a_rerun_with_the_other_is_refused(data, tmp_path):
    """--scorer museval runs museval (the same numbers); settings.json and the table say which
    made the scores; an evaldir from before the scorer existed holds museval's."""
    argv = ["evaluate", "--root", data["wav"], "--is-wav", "--oracle", "MIX", "--targets", "vocals", "drums",
            "--tracks", TRACK_NAMES[0], "--evaldir", tmp_path / "museval"]
    rc, out, _ = run_cli(argv + ["--scorer", "museval"])
    assert rc == 0 and "scorer museval" in out
    assert json.loads((tmp_path / "museval" / "settings.json").read_text())["scorer"] == "museval"
    assert "scored by museval" in (tmp_path / "museval" / "scores.md").read_text()
    rc, _, err = run_cli(argv)
    assert rc == 1 and "scorer: museval -> fast" in err
    rc, _, _ = run_cli(argv[:-1] + [tmp_path / "fast"])
    assert rc == 0
    name = f"test/{TRACK_NAMES[0]}.json"
    fast, slow = json_scores(tmp_path / "fast" / name), json_scores(tmp_path / "museval" / name)
    for target in ("vocals", "drums"):
        for metric in scores.METRICS:  # equal within 1e-3 dB (JSON keeps 5 decimals: the last may differ)
            np.testing.assert_allclose(fast[target][metric], slow[target][metric], rtol=0, atol=1e-3)
    settings = json.loads((tmp_path / "museval" / "settings.json").read_text())
    del settings["scorer"]  # as unmix wrote it before it had a scorer of its own
    (tmp_path / "museval" / "settings.json").write_text(json.dumps(settings))
    assert run_cli(argv + ["--scorer", "museval"])[0] == 0


def test_rerun_with_other_settings_is_refused(data, tmp_path):
    """IRM1 then MIX in one evaldir: refused, naming what differs (it used to reuse IRM1's scores)."""
    evaldir = tmp_path / "eval"
    base = ["evaluate", "--root", data["flac"], "--tracks", TRACK_NAMES[0], "--evaldir", evaldir]
    rc, out, err = run_cli(base + ["--oracle", "IRM1", "--targets", *TARGETS])
    assert rc == 0, err
    settings = json.loads((evaldir / "settings.json").read_text())
    assert settings == {"model": None, "oracle": "IRM1", "targets": TARGETS,
                        "oracle_stft": {"n_fft": 2048, "n_hop": 1024, "window": "hann"},
                        "root": str(data["flac"].resolve()), "is_wav": False, "subset": "test", "scorer": "fast"}
    track_json = (evaldir / "test" / f"{TRACK_NAMES[0]}.json").read_text()
    table = (evaldir / "scores.md").read_text()

    rc, out, err = run_cli(base + ["--oracle", "MIX", "--targets", *TARGETS])
    assert rc == 1 and out == ""
    assert err.strip() == (f"error: {evaldir} holds scores made with other settings (oracle: IRM1 -> MIX; "
                           'oracle_stft: {"n_fft": 2048, "n_hop": 1024, "window": "hann"} -> none); '
                           "use another --evaldir or remove it")
    rc, out, err = run_cli(base + ["--oracle", "IRM1", "--targets", "vocals", "bass"])
    assert rc == 1 and 'targets: ["vocals", "drums"] -> ["vocals", "bass"]' in err
    rc, out, err = run_cli(["evaluate", "--root", data["wav"], "--is-wav", "--tracks", TRACK_NAMES[0],
                            "--evaldir", evaldir, "--oracle", "IRM1", "--targets", *TARGETS])
    assert rc == 1 and "is_wav: False -> True" in err and str(data["wav"].resolve()) in err
    assert (evaldir / "test" / f"{TRACK_NAMES[0]}.json").read_text() == track_json  # untouched
    assert (evaldir / "scores.md").read_text() == table and json.loads(
        (evaldir / "settings.json").read_text()) == settings

    # what cannot change a score is not compared: more cores, a plot
    rc, out, err = run_cli(base + ["--oracle", "IRM1", "--targets", *TARGETS, "--cores", 2,
                                   "--plot", tmp_path / "p.png"])
    assert rc == 0, err
    assert "1 of 1 tracks already scored" in err and (tmp_path / "p.png").is_file()


# settings.json of an IRM1 run as unmix wrote it before evaluate.py was split (commit dcde0e8),
# with the dataset's root left to fill in: evaldirs written then must still be resumed
OLD_SETTINGS = """{
  "model": null,
  "oracle": "IRM1",
  "targets": [
    "vocals",
    "drums"
  ],
  "oracle_stft": {
    "n_fft": 2048,
    "n_hop": 1024,
    "window": "hann"
  },
  "root": %s,
  "is_wav": false,
  "subset": "test",
  "scorer": "fast"
}
"""


def test_an_evaldir_written_before_the_options_object_is_resumed(data, oracle_run, tmp_path):
    evaldir = tmp_path / "eval"
    shutil.copytree(oracle_run["evaldir"] / "test", evaldir / "test")
    (evaldir / "settings.json").write_text(OLD_SETTINGS % json.dumps(str(data["flac"].resolve())))
    options = ev.EvaluateOptions(root=str(data["flac"]), oracle="IRM1", targets=TARGETS, evaldir=str(evaldir),
                                 progress=False)
    log = io.StringIO()
    result = ev.evaluate(options, log=log)
    assert "2 of 2 tracks already scored" in log.getvalue()
    assert result.skipped == sorted(TRACK_NAMES) and result.method == "IRM1" and result.scorer == "fast"
    assert list(result.scores.index) == TARGETS and result.evaldir == evaldir
    assert (evaldir / "settings.json").read_text() == OLD_SETTINGS % json.dumps(str(data["flac"].resolve()))


def test_options_are_frozen_with_the_cli_defaults():
    options = ev.EvaluateOptions(root="musdb")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.cores = 2
    parser = cli.build_parser()
    args = parser.parse_args(["evaluate", "--root", "musdb"])
    for field in dataclasses.fields(ev.EvaluateOptions):
        if field.name != "progress":
            assert getattr(options, field.name) == getattr(args, field.name), field.name


def test_rerun_of_a_model_with_other_filter_options_is_refused(data, model_run, tmp_path):
    evaldir = tmp_path / "eval"
    shutil.copytree(model_run["evaldir"], evaldir)
    argv = ["evaluate", "--root", data["wav"], "--is-wav", "--model", model_run["model"], "--evaldir", evaldir]
    rc, out, err = run_cli(argv + ["--niter", 0, "--wiener-win-len", 0])
    assert rc == 1 and "(niter: 1 -> 0; wiener_win_len: 300 -> 0)" in err, err
    (evaldir / "settings.json").unlink()  # scores whose settings are unknown are not reused either
    rc, out, err = run_cli(argv)
    assert rc == 1 and err.strip() == (f"error: {evaldir} holds scores without settings.json (settings unknown); "
                                       "use another --evaldir or remove it")


def _fail_beta(original):
    """`evaluate_track` that raises a ValueError (not a UnmixError) for the second track."""
    def evaluate_track(track, *args, **kwargs):
        if track.name == TRACK_NAMES[1]:
            raise ValueError("boom\nsecond line")
        return original(track, *args, **kwargs)
    return evaluate_track


@pytest.mark.parametrize("cores", [1, 2])
def test_a_failing_track_is_one_line_and_the_others_go_on(data, tmp_path, monkeypatch, cores):
    monkeypatch.setattr(ev, "evaluate_track", _fail_beta(ev.evaluate_track))  # workers fork with it
    evaldir = tmp_path / "eval"
    rc, out, err = run_cli(["evaluate", "--root", data["flac"], "--oracle", "MIX", "--targets", *TARGETS,
                            "--cores", cores, "--evaldir", evaldir])
    assert rc == 1 and out == ""
    assert f"error: {TRACK_NAMES[1]}: ValueError: boom second line" in err.splitlines()
    assert f"{TRACK_NAMES[0]}: vocals SDR" in err and "Traceback" not in err
    assert err.strip().endswith(f"error: 1 of 2 tracks failed (see above); the others are scored in {evaldir}, "
                                "a rerun does only the failed ones")
    assert (evaldir / "test" / f"{TRACK_NAMES[0]}.json").is_file()
    assert not (evaldir / "test" / f"{TRACK_NAMES[1]}.json").exists()


def test_a_silent_stem_is_named_and_the_other_tracks_are_scored(tmp_path):
    """museval cannot score a source that is silent throughout (its ValueError names none)."""
    root = write_hq(tmp_path / "root", ".wav", names=TRACK_NAMES, seconds=1.0)
    drums = root / "test" / TRACK_NAMES[1] / "drums.wav"
    sf.write(drums, np.zeros((RATE, 2)), RATE, subtype="PCM_16")
    evaldir = tmp_path / "eval"
    rc, out, err = run_cli(["evaluate", "--root", root, "--oracle", "MIX", "--targets", *TARGETS,
                            "--evaldir", evaldir, "--cores", 1])
    assert rc == 1 and "Traceback" not in err
    assert (f"error: {TRACK_NAMES[1]}: the reference of drums is silent throughout, "
            "and BSSEval cannot score a silent source") in err.splitlines()
    assert (evaldir / "test" / f"{TRACK_NAMES[0]}.json").is_file()
    assert not (evaldir / "test" / f"{TRACK_NAMES[1]}.json").exists()


def test_a_dead_worker_is_one_line(data, tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "evaluate_track", lambda *args, **kwargs: os._exit(1))  # as the OOM killer would
    rc, out, err = run_cli(["evaluate", "--root", data["flac"], "--oracle", "MIX", "--targets", *TARGETS,
                            "--cores", 2, "--evaldir", tmp_path / "eval"])
    assert rc == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: a worker process died (out of memory?); try fewer --cores"


@pytest.mark.parametrize("blocked", ["plot", "table"])
def test_unwritable_plot_or_table_is_one_line(data, tmp_path, blocked):
    evaldir, plot = tmp_path / "eval", tmp_path / "sdr.png"
    path = plot if blocked == "plot" else evaldir / "scores.md"
    path.mkdir(parents=True)  # a folder where the file should go
    rc, out, err = run_cli(["evaluate", "--root", data["flac"], "--tracks", TRACK_NAMES[0], "--oracle", "MIX",
                            "--targets", *TARGETS, "--evaldir", evaldir, "--plot", plot])
    assert rc == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"error: cannot write {path}: Is a directory"
    assert path.is_dir() and not list(path.parent.glob(".*.part*"))  # no temporary file left behind


def test_wiener_win_len_help_says_the_published_scores_filter_whole_tracks():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    option = next(a for a in sub.choices["evaluate"]._actions if a.dest == "wiener_win_len")
    assert option.default == 300
    assert "0: whole tracks" in option.help and "reference's evaluate.py" in option.help
    assert "several GB for a 7-minute track" in option.help


def _blas_threads():
    import threadpoolctl

    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info()]


def test_pool_workers_run_blas_on_one_thread():
    import concurrent.futures

    with concurrent.futures.ProcessPoolExecutor(1, initializer=ev._init_worker,
                                                initargs=(("oracle", "MIX", ["vocals"]),)) as pool:
        threads = pool.submit(_blas_threads).result(timeout=60)
    assert threads and set(threads) == {1}  # one process per core already: no BLAS threads on top


def test_a_track_without_samples_is_a_clear_error(tmp_path):
    folder = tmp_path / "test" / "Empty"
    folder.mkdir(parents=True)
    for name in ("mixture", "vocals", "drums", "bass", "other"):
        sf.write(str(folder / f"{name}.wav"), np.zeros((0, 2), np.float32), 44100)
    with pytest.raises(UnmixError, match="Empty contains no audio samples"):
        musdb_io.load_track(musdb_io.Track("Empty", "test", str(folder), False))
