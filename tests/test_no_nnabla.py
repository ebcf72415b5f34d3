"""The main job without NNabla: separate, convert, export, models, evaluate and demo in a process
where `import nnabla` fails (as on Python 3.11+, where NNabla has no wheels)."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import RATE, make_model_folder, tone

FIXTURES = Path(__file__).parent / "fixtures"

SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["nnabla"] = None  # any import of nnabla or its submodules fails
    from unmix.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        print(f"{argv[0]} -> {code}", flush=True)

    work, song, model, musdb = sys.argv[1:5]
    run("convert", sys.argv[5], f"{work}/converted")
    run("export", model, f"{work}/exported")
    run("separate", song, "--model", model, "--outdir", f"{work}/from_h5")
    run("separate", song, "--model", f"{work}/exported", "--outdir", f"{work}/from_onnx")
    run("models")
    run("evaluate", "--root", musdb, "--is-wav", "--model", model, "--evaldir", f"{work}/eval")
    run("demo", "--model", "bundled", "--outdir", f"{work}/demo")
    run("train", "--root", musdb, "--output", f"{work}/trained")
    loaded = [m for m in sys.modules if m.split(".")[0] == "nnabla" and sys.modules[m] is not None]
    print("nnabla modules loaded:", loaded)
""")


def write_track(folder, seconds=1.5):
    """One MUSDB18-HQ track: four noise stems and their sum."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    stems = {s: 0.1 * rng.standard_normal((int(seconds * RATE), 2)) for s in ("vocals", "drums", "bass", "other")}
    for name, audio in {**stems, "mixture": sum(stems.values())}.items():
        sf.write(folder / f"{name}.wav", audio, RATE, subtype="FLOAT")


def test_the_main_job_runs_without_nnabla(tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, tone(1.0).T, RATE)
    model = make_model_folder(tmp_path / "model", targets=["vocals", "drums"])
    write_track(tmp_path / "musdb" / "test" / "Artist - Song")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, tmp_path, song, model, tmp_path / "musdb",
                           FIXTURES / "parity_stereo_bi.pth"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = dict(line.split(" -> ") for line in proc.stdout.splitlines() if " -> " in line)
    assert results == {"convert": "0", "export": "0", "separate": "0", "models": "0", "evaluate": "0",
                       "demo": "0", "train": "1"}, proc.stderr
    assert "nnabla modules loaded: []" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["drums.onnx", "separator.json", "vocals.onnx"]
    for target in ("vocals", "drums"):
        a, _ = sf.read(tmp_path / "from_h5" / "song" / f"{target}.wav")
        b, _ = sf.read(tmp_path / "from_onnx" / "song" / f"{target}.wav")
        assert a.shape == (RATE, 2) and np.array_equal(a, b)
    assert (tmp_path / "converted" / "parity_stereo_bi.h5").is_file()
    assert (tmp_path / "eval" / "test" / "Artist - Song.json").is_file()
    assert (tmp_path / "demo" / "spectrograms.png").is_file()
    train_error = [line for line in proc.stderr.splitlines() if "unmix train" in line]
    assert len(train_error) == 1 and "needs NNabla" in train_error[0] and "unmix[train]" in train_error[0]
