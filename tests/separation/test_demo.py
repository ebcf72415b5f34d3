"""`unmix demo` with the bundled model, and which model None stands for offline."""
import numpy as np
import pytest
import soundfile as sf
from conftest import make_model_folder

from unmix import cli
from unmix.separation import demo
from unmix.weights import registry
from unmix.errors import UnmixError
from unmix.models.model_folder import read_separator_json

TARGETS = ("vocals", "drums", "bass", "other")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """No published model cached; tests are offline (conftest): None must mean the bundled model."""
    monkeypatch.setenv("UNMIX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_bundled_model_and_example_ship_with_the_package():
    meta = read_separator_json(registry.BUNDLED_MODEL)
    assert meta["targets"] == list(TARGETS) and meta["sample_rate"] == 44100.0
    assert {(m["hidden_size"], m["nb_layers"]) for m in meta["models"].values()} == {(384, 3)}
    assert not list(registry.BUNDLED_MODEL.glob("*.solver.h5"))  # no training leftovers shipped
    size = sum(p.stat().st_size for p in registry.BUNDLED_MODEL.iterdir())
    assert size < 50e6  # float16 weight matrices (91 MB in float32): the package stays under 60 MB
    # ... checked when it was assembled (tools/default_model/assemble_default_model.py) to move no output by more
    # than 1e-3 of its maximum
    errors = meta["half_precision"]["max_output_error"]
    assert set(errors) == set(TARGETS) and all(0 < e <= 1e-3 for e in errors.values())
    info = sf.info(str(demo.EXAMPLE_PATH))
    assert (info.samplerate, info.channels) == (44100, 2) and 8.0 <= info.duration <= 12.0


def test_default_is_umxhq_when_cached_else_bundled_offline(empty_cache, capsys):
    assert registry.resolve_model(None, progress=False) == registry.BUNDLED_MODEL
    assert "notice: cannot download umxhq" in capsys.readouterr().err
    cached = make_model_folder(empty_cache / registry.DEFAULT_MODEL, hidden_size=4)
    assert registry.resolve_model(None) == cached  # found in the cache: no download, no notice
    assert capsys.readouterr().err == ""


def test_demo_writes_four_non_silent_stems_that_sum_to_the_mixture(empty_cache, tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--outdir", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert err.count("notice: cannot download umxhq") == 1  # offline: the bundled model
    mixture, rate = sf.read(str(demo.EXAMPLE_PATH), dtype="float32")
    stems = {}
    for target in TARGETS:
        assert f"wrote {out / (target + '.wav')}" in printed
        stems[target], stem_rate = sf.read(str(out / f"{target}.wav"), dtype="float32")
        assert stem_rate == rate and stems[target].shape == mixture.shape
        rms_db = 10 * np.log10(np.mean(stems[target] ** 2) / np.mean(mixture ** 2))
        assert rms_db > -30.0, target  # each stem holds a real part of the song
    # Wiener masks share the mixture out: the stems add back up to it
    residual = sum(stems.values()) - mixture
    assert np.sqrt(np.mean(residual ** 2)) < 0.05 * np.sqrt(np.mean(mixture ** 2))
    # the stems differ from each other (a trained model, not four copies)
    assert np.corrcoef(stems["vocals"][:, 0], stems["drums"][:, 0])[0, 1] < 0.5
    png = (out / demo.PNG_NAME).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 600 and height >= 600


def test_demo_with_another_model_and_a_missing_example(tiny_model, tmp_path):
    written = demo.run_demo(tmp_path / "out", model=tiny_model, progress=False)
    assert sorted(written) == sorted(TARGETS + ("png",))
    with pytest.raises(UnmixError, match="missing"):
        demo.run_demo(tmp_path / "out2", model=tiny_model, example=tmp_path / "gone.flac")


def test_log_spectrogram_peaks_at_the_tone():
    rate, freq = 44100, 1000.0
    t = np.arange(rate) / rate
    audio = np.stack([np.sin(2 * np.pi * freq * t)] * 2)
    spec = demo.log_spectrogram(audio, n_fft=2048, n_hop=512)
    assert spec.shape == (1025, 1 + (rate - 2048) // 512)
    assert np.argmax(spec[:, 10]) == round(freq * 2048 / rate)
    assert demo.log_spectrogram(audio[:, :100]).shape == (1025, 1)  # shorter than a frame: padded
