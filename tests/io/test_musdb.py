"""unmix.io.musdb: MUSDB18 / MUSDB18-HQ track discovery and reading, one rule for training and evaluation."""
from pathlib import Path

import numpy as np
import pytest
from ramps import make_musdb, ramp, write

from unmix.training import datasets
from unmix.io import musdb
from unmix.errors import UnmixError


def test_official_validation_names_match_musdb_package():
    musdb_package = pytest.importorskip("musdb")
    import yaml

    setup = yaml.safe_load((Path(musdb_package.__file__).parent / "configs" / "mus.yaml").read_text())
    assert tuple(setup["validation_tracks"]) == musdb.MUSDB_VALIDATION_TRACKS
    assert len(musdb.MUSDB_VALIDATION_TRACKS) == 14


def test_find_tracks_layouts_and_errors(tmp_path):
    root = make_musdb(tmp_path, ["B", "A"])
    write(root / "train" / ".cache" / "vocals.wav", ramp(0, 0))  # hidden: not a track
    (root / "train" / "notes").mkdir()  # no audio: not a track
    tracks = musdb.find_tracks(root, "train")
    assert tracks == [musdb.Track("A", "train", str(root / "train" / "A"), False),
                      musdb.Track("B", "train", str(root / "train" / "B"), False)]
    assert [t.name for t in musdb.find_tracks(root, "train", names=["B"])] == ["B"]
    with pytest.raises(UnmixError, match="unknown track"):
        musdb.find_tracks(root, "train", names=["C"])
    # stems win over folders unless is_wav; hidden stems (e.g. macOS ._ files) are not tracks
    (root / "train" / "C - Stems.stem.mp4").write_bytes(b"")
    (root / "train" / "._C - Stems.stem.mp4").write_bytes(b"")
    assert [(t.name, t.is_stem) for t in musdb.find_tracks(root, "train")] == [("C - Stems", True)]
    assert [t.name for t in musdb.find_tracks(root, "train", is_wav=True)] == ["A", "B"]
    with pytest.raises(UnmixError, match="no dataset root given"):
        musdb.find_tracks(None)
    with pytest.raises(UnmixError, match="does not exist"):
        musdb.find_tracks(tmp_path / "nowhere")
    with pytest.raises(UnmixError, match="no subset folder"):
        musdb.find_tracks(root, "test")
    (root / "empty").mkdir()
    with pytest.raises(UnmixError, match="no MUSDB tracks"):
        musdb.find_tracks(root, "empty")


def test_a_track_without_a_source_is_refused_by_training_and_evaluation(tmp_path):
    root = make_musdb(tmp_path, ["A", "B"])
    (root / "train" / "B" / "drums.wav").unlink()
    track = musdb.find_tracks(root, "train")[1]
    assert track.name == "B"
    message = "B has no drums.wav or drums.flac"
    with pytest.raises(UnmixError, match=message):
        musdb.load_track(track)
    with pytest.raises(UnmixError, match=message):
        datasets.MUSDBDataset(root, split=None)


@pytest.mark.parametrize("mixture", [True, False])
def test_training_and_evaluation_read_the_same_samples(tmp_path, mixture):
    root = make_musdb(tmp_path, ["A", "B"], mixture=mixture)
    mix, sources, rate = musdb.load_track(musdb.find_tracks(root, "train")[1])
    assert rate == 8000 and mix.dtype == np.float64
    dataset = datasets.MUSDBDataset(root, split=None, seq_duration=None, samples_per_track=1, target="drums")
    x, y = dataset[1]
    np.testing.assert_array_equal(y, sources["drums"])
    np.testing.assert_array_equal(x, mix)  # the mixture file, or the sum of the sources
    np.testing.assert_array_equal(mix, sum(ramp(1, s) for s in range(4)).T)
