"""`unmix separate` end to end on a tiny model: outputs, options and every bad input."""
import errno
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import RATE, TARGETS, tone
from unmix.cli import main


def run(*argv):
    return main(["separate", *map(str, argv)])


def stems_of(folder):
    return sorted(p.name for p in folder.iterdir())


def test_writes_four_stems_with_input_length(tiny_model, song, tmp_path):
    assert run(song, "--model", tiny_model, "--outdir", tmp_path / "out") == 0
    folder = tmp_path / "out" / "song"
    assert stems_of(folder) == sorted(f"{t}.wav" for t in TARGETS)
    mix, _ = sf.read(song, always_2d=True)
    for target in TARGETS:
        est, rate = sf.read(folder / f"{target}.wav", always_2d=True)
        assert rate == RATE and est.shape == mix.shape and np.all(np.isfinite(est))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")], "no temporary folders left"


def test_options_targets_residual_flac_and_span(tiny_model, song, tmp_path):
    code = run(song, "--model", tiny_model, "--outdir", tmp_path, "--targets", "vocals", "--residual",
               "accompaniment", "--ext", ".flac", "--start", "0.25", "--duration", "0.5", "--niter", "2")
    assert code == 0
    folder = tmp_path / "song"
    assert stems_of(folder) == ["accompaniment.flac", "vocals.flac"]
    vocals, rate = sf.read(folder / "vocals.flac")
    assert rate == RATE and vocals.shape == (RATE // 2, 2)
    accompaniment, _ = sf.read(folder / "accompaniment.flac")
    mix = tone()[:, RATE // 4: RATE // 4 + RATE // 2].T
    err = np.sum((vocals + accompaniment - mix) ** 2) / np.sum(mix**2)
    assert err < 1e-3, "target + residual add up to the mixture"


def test_mp3_and_mono_and_other_rate(tiny_model, tmp_path):
    wav = tmp_path / "mono.wav"
    sf.write(wav, tone(1.0, nb_channels=1, rate=22050).T, 22050)
    mp3 = tmp_path / "song.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), str(mp3)], check=True)
    assert run(wav, mp3, "--model", tiny_model, "--outdir", tmp_path / "out", "--niter", "0") == 0
    est, rate = sf.read(tmp_path / "out" / "mono" / "drums.wav", always_2d=True)
    assert rate == 22050 and est.shape == (22050, 1)  # the input's rate, channels and length
    est, rate = sf.read(tmp_path / "out" / "song" / "bass.wav", always_2d=True)
    assert rate == 22050 and est.shape[1] == 1


def test_silence_gives_silent_stems(tiny_model, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros((RATE, 2), np.float32), RATE)
    assert run(path, "--model", tiny_model, "--outdir", tmp_path / "out") == 0
    est, _ = sf.read(tmp_path / "out" / "silence" / "vocals.wav")
    assert np.all(est == 0)


def bad_file(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "missing":
        return path
    if kind == "not_audio":
        path.write_text("this is not audio")
    elif kind == "empty":
        sf.write(path, np.zeros((0, 2), np.float32), RATE)
    elif kind == "too_short":
        sf.write(path, np.zeros((100, 2), np.float32), RATE)
    elif kind == "nan":
        data = tone().T.copy()
        data[100] = np.nan
        sf.write(path, data, RATE, subtype="FLOAT")
    elif kind == "six_channels":
        sf.write(path, np.zeros((RATE, 6), np.float32), RATE)
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such file"), ("not_audio", "not"), ("empty", "empty"), ("too_short", "too short"),
    ("nan", "NaN"), ("six_channels", "6 channels"),
])
def test_bad_input_one_line_and_no_output(tiny_model, tmp_path, capsys, kind, message):
    path = bad_file(tmp_path, kind)
    assert run(path, "--model", tiny_model, "--outdir", tmp_path / "out") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message.lower() in err[0].lower()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_downmix_accepts_many_channels(tiny_model, tmp_path):
    path = tmp_path / "surround.wav"
    sf.write(path, np.repeat(tone(), 3, axis=0).T, RATE)
    assert run(path, "--model", tiny_model, "--outdir", tmp_path / "out", "--downmix") == 0
    est, _ = sf.read(tmp_path / "out" / "surround" / "other.wav", always_2d=True)
    assert est.shape == (RATE, 2)


def test_one_failure_does_not_stop_the_others(tiny_model, song, tmp_path, capsys):
    code = run(tmp_path / "missing.wav", song, "--model", tiny_model, "--outdir", tmp_path / "out")
    assert code == 1
    assert stems_of(tmp_path / "out" / "song") == sorted(f"{t}.wav" for t in TARGETS)
    assert "missing.wav" in capsys.readouterr().err


def test_existing_output_kept_unless_force(tiny_model, song, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "song").mkdir(parents=True)
    (out / "song" / "vocals.wav").write_text("earlier result")
    assert run(song, "--model", tiny_model, "--outdir", out) == 1
    assert "--force" in capsys.readouterr().err
    assert (out / "song" / "vocals.wav").read_text() == "earlier result"
    assert run(song, "--model", tiny_model, "--outdir", out, "--force") == 0
    assert sf.info(out / "song" / "vocals.wav").frames == RATE


def test_disk_full_leaves_nothing_half_written(tiny_model, song, tmp_path, capsys, monkeypatch):
    real_write, calls = sf.SoundFile.write, []

    def write_then_fail(self, data):
        calls.append(self.name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", self.name)
        return real_write(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", write_then_fail)
    out = tmp_path / "out"
    assert run(song, "--model", tiny_model, "--outdir", out) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert list(out.iterdir()) == [], "neither the track folder nor its temporary folder remains"


def test_unwritable_outdir(tiny_model, song, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert run(song, "--model", tiny_model, "--outdir", blocker / "out") == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Not a directory" in err and len(err.splitlines()) == 1


def test_bad_model_folder(song, tmp_path, capsys):
    assert run(song, "--model", tmp_path) == 1
    assert "not a model folder" in capsys.readouterr().err


def test_jobs_in_parallel(tiny_model, tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"s{i}.wav")
        sf.write(paths[-1], tone(0.5).T * (i + 1), RATE)
    assert run(*paths, "--model", tiny_model, "--outdir", tmp_path / "out", "--jobs", "2", "--niter", "0") == 0
    assert all(stems_of(tmp_path / "out" / f"s{i}") for i in range(2))


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "unmix 0.1.0" in capsys.readouterr().out
    assert main([]) == 2
    out = subprocess.run([sys.executable, "-m", "unmix", "separate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--wiener-win-len" in out.stdout


@pytest.mark.nnabla
def test_gpu_without_cuda_is_one_line(tiny_model, song, tmp_path, capsys):
    try:
        import nnabla_ext.cuda  # noqa: F401
        pytest.skip("a CUDA extension is installed here")
    except ImportError:
        pass
    assert run(song, "--model", tiny_model, "--outdir", tmp_path, "--device", "gpu") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nnabla-ext-cuda" in err[0]
    assert run(song, "--model", tiny_model, "--outdir", tmp_path, "--device", "gpu", "--backend", "onnx") == 1


@pytest.mark.nnabla
def test_nnabla_backend_matches_onnx_backend(tiny_model, song, tmp_path):
    assert run(song, "--model", tiny_model, "--outdir", tmp_path / "onnx", "--backend", "onnx") == 0
    assert run(song, "--model", tiny_model, "--outdir", tmp_path / "nnabla", "--backend", "nnabla") == 0
    for target in TARGETS:
        a, _ = sf.read(tmp_path / "onnx" / "song" / f"{target}.wav")
        b, _ = sf.read(tmp_path / "nnabla" / "song" / f"{target}.wav")
        assert np.sum((a - b) ** 2) <= 1e-6 * np.sum(a**2)


def test_models_lists_the_registry_with_licenses_the_bundled_model_and_the_default(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "umxhq" in out and "umxl" in out and "NON-COMMERCIAL" in out.upper()
    assert "\nbundled " in out and "Without --model: umxhq, downloaded once" in out


def test_without_model_offline_the_bundled_model_separates_with_one_notice(tmp_path, capsys):
    """conftest keeps tests offline: the default umxhq cannot be fetched, the bundled model steps in,
    once for the whole batch (the worker processes get the resolved folder)."""
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"s{i}.wav")
        sf.write(paths[-1], tone(0.5).T * (i + 1), RATE)
    assert run(*paths, "--outdir", tmp_path / "out", "--jobs", "2") == 0
    err = capsys.readouterr().err
    assert err.count("notice: cannot download umxhq, the default model") == 1
    assert all(stems_of(tmp_path / "out" / f"s{i}") == sorted(f"{t}.wav" for t in TARGETS) for i in range(2))


@pytest.mark.parametrize("argv, feature", [
    (["separate", "{song}", "--model", "{model}", "--outdir", "{out}", "--backend", "nnabla"], "--backend nnabla"),
    (["separate", "{song}", "--model", "{model}", "--outdir", "{out}", "--device", "gpu"], "--device gpu"),
    (["train", "--root", "{out}", "--output", "{out}/model"], "`unmix train`"),
])
def test_without_nnabla_its_features_say_how_to_get_it_in_one_line(tiny_model, song, tmp_path, capsys, monkeypatch,
                                                                   argv, feature):
    monkeypatch.setitem(sys.modules, "nnabla", None)  # `import nnabla` fails, as where it is not installed
    monkeypatch.setattr(sys, "version_info", (3, 12, 1, "final", 0))
    argv = [a.format(song=song, model=tiny_model, out=tmp_path / "out") for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {feature} needs NNabla")
    assert "Python 3.8-3.10 only (this is Python 3.12)" in err[0] and "pip install 'unmix[train]'" in err[0]
    assert not (tmp_path / "out").exists()


def test_stems_are_written_behind_in_order_and_a_failed_write_stops_the_work():
    from unmix.separation.stems import _write_behind

    written = []
    _write_behind(iter(range(5)), written.append)
    assert written == [0, 1, 2, 3, 4]

    computed = []

    def chunks():
        for i in range(10):
            computed.append(i)
            yield i

    def write(chunk):
        if chunk == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        _write_behind(chunks(), write)
    assert computed == [0, 1, 2, 3]  # at most one chunk is computed past the one that failed


@pytest.mark.parametrize("options, message", [
    (["--niter", "-1"], "--niter: must be >= 0"),
    (["--niter", "one"], "--niter: 'one' is not an integer"),
    (["--wiener-win-len", "-5"], "--wiener-win-len: must be >= 0"),
    (["--jobs", "0"], "--jobs: must be >= 1"),
    (["--jobs", "-3"], "--jobs: must be >= 1"),
    (["--start", "-1"], "--start: must be finite and >= 0"),
    (["--start", "nan"], "--start: must be finite and >= 0"),
    (["--duration", "0"], "--duration: must be finite and > 0"),
    (["--duration", "-2"], "--duration: must be finite and > 0"),
    (["--duration", "inf"], "--duration: must be finite and > 0"),
    (["--mp3-bitrate", "0"], "--mp3-bitrate: must be from 8 to 320"),
    (["--ext", ".ogg"], "--ext: invalid choice"),
    (["--bits", "8"], "--bits: invalid choice"),
    (["--ext", ".flac", "--bits", "32"], "FLAC stores integers only"),
    (["--ext", ".mp3", "--bits", "16"], "--bits applies to wav and flac"),
    (["--clip-mode", "tanh"], "--clip-mode: invalid choice"),
    (["--filename", "{track}.{ext}"], "has no {target}"),
    (["--filename", "{song}/{target}.{ext}"], "unknown field 'song'"),
    (["--filename", "../{target}.{ext}"], "must name a file inside --outdir"),
])
def test_bad_options_are_usage_errors_before_any_work(song, tmp_path, capsys, options, message):
    # the model folder does not exist: any work would end in "not a model folder" (exit 1) instead
    with pytest.raises(SystemExit) as exc:
        run(song, "--model", tmp_path / "no-model", "--outdir", tmp_path / "out", *options)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("unmix") and "error: " in err[-1] and message in err[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    (["--niter", "-1"], "--niter: must be >= 0"),
    (["--wiener-win-len", "-1"], "--wiener-win-len: must be >= 0"),
    (["--cores", "0"], "--cores: must be >= 1"),
])
def test_bad_evaluate_options_are_usage_errors(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--root", str(tmp_path / "no-musdb"), *options])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_decoder_errors_are_one_line_and_the_batch_goes_on(tiny_model, song, tmp_path, capsys):
    flac = tmp_path / "full.flac"
    sf.write(flac, tone(2.0).T, RATE)
    data = flac.read_bytes()
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(data[: len(data) // 2])  # the header opens; decoding loses sync halfway
    junk_mp3 = tmp_path / "junk.mp3"
    junk_mp3.write_bytes(b"ID3" + bytes(range(256)) * 40)
    code = run(truncated, junk_mp3, song, "--model", tiny_model, "--outdir", tmp_path / "out", "--niter", "0")
    assert code == 1
    errors = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if ln.startswith("error:")]
    assert len(errors) == 2 and "truncated.flac could not be decoded" in errors[0] and "junk.mp3" in errors[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["song"]
    assert stems_of(tmp_path / "out" / "song") == sorted(f"{t}.wav" for t in TARGETS)


def test_an_xumx_folder_separates_its_targets(tiny_xumx, song, tmp_path):
    assert run(song, "--model", tiny_xumx, "--outdir", tmp_path, "--targets", "vocals", "bass", "--niter", "1",
               "--residual", "rest") == 0
    files = sorted(p.name for p in (tmp_path / "song").iterdir())
    assert files == ["bass.wav", "rest.wav", "vocals.wav"]
    audio, rate = sf.read(song)
    for name in files:
        stem, stem_rate = sf.read(tmp_path / "song" / name)
        assert stem.shape == audio.shape and stem_rate == rate
