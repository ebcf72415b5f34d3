"""tools/default_model/assemble_default_model.py: four training runs -> the bundled model folder (half
precision checked)."""
import importlib.util
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_model_folder, tone

from unmix.io import audio
from unmix.models.model_folder import load_params

TARGETS = ("vocals", "drums", "bass", "other")
TOOL = Path(__file__).resolve().parents[1] / "tools" / "default_model" / "assemble_default_model.py"


def _load_tool(path):
    """The tool as a module, from its path (tools/ is not a package, and sys.path stays as it is)."""
    spec = importlib.util.spec_from_file_location("assemble_default_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


assemble = _load_tool(TOOL)


@pytest.fixture
def runs(tmp_path):
    """RUNS/<target>/ as `unmix train --output` leaves it: separator.json, weights, history, plot."""
    for i, target in enumerate(TARGETS):
        folder = make_model_folder(tmp_path / "runs" / target, targets=(target,), seed=10 * i)
        (folder / f"{target}.json").write_text(json.dumps({"target": target, "best_epoch": i}))
        (folder / f"{target}_loss.png").write_bytes(b"png of " + target.encode())
    example = tmp_path / "example.flac"
    audio.save(example, tone(2.0), 44100)
    return tmp_path / "runs", example


def test_half_precision_folder_is_written_checked_and_loads(runs, tmp_path):
    folder, example = runs
    (tmp_path / "curves").mkdir()
    out = tmp_path / "default_model"
    assert assemble.main([str(folder), str(out), str(tmp_path / "curves"), "--half", "--example", str(example)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{t}.{e}" for t in TARGETS for e in ("h5", "json")]
                                                          + ["separator.json"])
    meta = json.loads((out / "separator.json").read_text())
    assert meta["targets"] == list(TARGETS)
    errors = meta["half_precision"]["max_output_error"]
    assert set(errors) == set(TARGETS) and all(0 < e <= 1e-3 for e in errors.values())
    for target in TARGETS:
        with h5py.File(out / f"{target}.h5", "r") as f:
            assert f["fc1/affine/W"].dtype == np.float16 and f["input_scale"].dtype == np.float32
        _, trained = load_params(folder / target, target)
        _, shipped = load_params(out, target)
        assert np.array_equal(shipped["fc1/affine/W"], trained["fc1/affine/W"].astype(np.float16).astype(np.float32))
        assert json.loads((out / f"{target}.json").read_text())["target"] == target
        assert (tmp_path / "curves" / f"{target}_loss.png").read_bytes() == f"png of {target}".encode()


def test_too_large_an_error_is_refused_and_the_old_folder_kept(runs, tmp_path, monkeypatch, capsys):
    folder, example = runs
    out = tmp_path / "default_model"
    shutil.copytree(folder / "vocals", out)
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(assemble, "HALF_TOLERANCE", 1e-12)
    assert assemble.main([str(folder), str(out), str(tmp_path), "--half", "--example", str(example)]) == 1
    assert "error: vocals: float16 weights move the output by" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
