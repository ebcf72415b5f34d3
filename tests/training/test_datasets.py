"""unmix.training.datasets on tiny synthetic datasets written in tmp_path (the ramps of `ramps`): the five
datasets, their splits, seeding, `load_datasets`."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import MUSDB_SYNTH_MINI
from ramps import FRAMES, RATE, SEQ, SEQ_LEN, decode, make_musdb, make_trackfolder, ramp, ramp_slice, write

from unmix.errors import UnmixError
from unmix.io import musdb
from unmix.training import augment, datasets
from unmix.training.chunks import read_chunk


# ---------------------------------------------------------------- musdb


def test_musdb_train_chunks_are_coherent_mixes(tmp_path):
    root = make_musdb(tmp_path, [f"T{k}" for k in range(3)])
    ds = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=4)
    assert len(ds) == 12 and ds.sample_rate == RATE and ds.seq_len == SEQ_LEN
    for index in range(len(ds)):
        x, y = ds[index]
        assert x.shape == y.shape == (2, SEQ_LEN) and x.dtype == y.dtype == np.float32
        track, source, channel, start = decode(y)
        assert (track, source, channel) == (index // 4, 0, 0)
        expected = sum(ramp_slice(track, s, start) for s in range(4))
        np.testing.assert_array_equal(x, expected)


def test_musdb_random_track_mix_draws_sources_from_other_tracks(tmp_path):
    root = make_musdb(tmp_path, [f"T{k}" for k in range(4)])
    ds = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=1, random_track_mix=True)
    tracks = {decode(ds.get(0, epoch)[1])[0] for epoch in range(12)}
    assert len(tracks) >= 2  # the reference picks every source's track at random


def test_musdb_augmentations_apply_per_source(tmp_path):
    root = make_musdb(tmp_path, ["A", "B"])
    ds = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=20,
                           source_augmentations=["channelswap"])
    firsts = set()
    for index in range(20):
        x, y = ds[index]
        track, _, channel, start = decode(y)
        firsts.add(channel)
        np.testing.assert_array_equal(y[::-1] if channel else y, ramp_slice(track, 0, start))
        # each source swapped on its own: x[0] takes channel 0 or 1 of every source
        assert (x[0, 0] - x[1, 0]) % 10000 == 0
    assert firsts == {0, 1}

    gained = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=20,
                               source_augmentations=["gain"])
    for index in range(20):
        _, y = gained[index]
        gain = y[0, 1] - y[0, 0]  # ramps rise by 1 per sample
        assert 0.25 <= gain < 1.25
        np.testing.assert_allclose(np.diff(y, axis=1), gain, atol=4e-3)  # float32 at ~1e4


def test_musdb_valid_yields_full_tracks(tmp_path):
    root = make_musdb(tmp_path, [f"T{k}" for k in range(8)])
    ds = datasets.MUSDBDataset(root, split="valid", seq_duration=None, samples_per_track=1)
    assert len(ds) == 1
    x, y = ds[0]
    track = decode(y)[0]
    name = ds.tracks[0][0]
    assert name == f"T{track}"
    np.testing.assert_array_equal(y, ramp(track, 0).T)
    np.testing.assert_array_equal(x, sf.read(str(root / "train" / name / "mixture.wav"), dtype="float32")[0].T)
    acc = datasets.MUSDBDataset(root, target="accompaniment", split="valid", seq_duration=None, samples_per_track=1)
    np.testing.assert_array_equal(acc[0][1], sum(ramp(track, s) for s in (1, 2, 3)).T)


def test_musdb_without_mixture_file_sums_sources(tmp_path):
    root = make_musdb(tmp_path, ["A", "B"], mixture=False)
    ds = datasets.MUSDBDataset(root, split=None, seq_duration=None, samples_per_track=1, target="drums")
    x, y = ds[1]
    np.testing.assert_array_equal(x, sum(ramp(1, s) for s in range(4)).T)
    np.testing.assert_array_equal(y, ramp(1, 1).T)


def test_musdb_accompaniment_training_target_is_mix_minus_vocals(tmp_path):
    root = make_musdb(tmp_path, ["A", "B"])
    ds = datasets.MUSDBDataset(root, target="accompaniment", valid_tracks=[], seq_duration=SEQ, samples_per_track=2)
    x, y = ds[3]
    track, source, _, start = decode(x - y)  # x - y: the vocals
    assert (track, source) == (1, 0)
    np.testing.assert_array_equal(y, sum(ramp_slice(track, s, start) for s in (1, 2, 3)))


def test_split_uses_official_tracks_when_they_match(tmp_path):
    official = list(musdb.MUSDB_VALIDATION_TRACKS[:2])
    root = make_musdb(tmp_path, official + ["Other - One", "Other - Two"], frames=3000)
    train = datasets.MUSDBDataset(root, split="train", seq_duration=SEQ)
    valid = datasets.MUSDBDataset(root, split="valid", seq_duration=None, samples_per_track=1)
    assert sorted(t[0] for t in valid.tracks) == sorted(official)
    assert [t[0] for t in train.tracks] == ["Other - One", "Other - Two"]


def test_split_explicit_and_seeded():
    names = [f"T{k}" for k in range(17)]
    assert datasets.validation_names(names, ["T3", "T5"]) == ["T3", "T5"]
    seeded = datasets.validation_names(names, seed=1)
    assert len(seeded) == 2 and set(seeded) <= set(names)
    assert datasets.validation_names(names, seed=1) == seeded
    assert datasets.validation_names(["a", "b"]) in (["a"], ["b"])
    with pytest.raises(UnmixError, match="not found among the training tracks: T99"):
        datasets.validation_names(names, ["T99"])
    with pytest.raises(UnmixError, match="at least 2 tracks"):
        datasets.validation_names(["only"])
    with pytest.raises(UnmixError, match="no training tracks"):
        datasets.validation_names(["a", "b"], ["a", "b"])


def test_musdb_seeded_split_is_disjoint_and_complete(tmp_path):
    names = [f"T{k}" for k in range(9)]
    root = make_musdb(tmp_path, names, frames=2500)
    train, valid = datasets.load_datasets("musdb", root, seq_duration=SEQ, samples_per_track=2, seed=3)
    tnames, vnames = [t[0] for t in train.tracks], [t[0] for t in valid.tracks]
    assert len(vnames) == 1 and sorted(tnames + vnames) == names
    assert len(train) == 16 and len(valid) == 1
    assert train.source_augmentations.augmentations == [augment.augment_gain, augment.augment_channelswap]
    assert valid.source_augmentations.augmentations == []
    assert train.random_track_mix and valid.seq_duration is None
    for seed in (4, 42):  # the split does not follow the training seed: a seed sweep validates alike
        _, same = datasets.load_datasets("musdb", root, seq_duration=SEQ, samples_per_track=2, seed=seed)
        assert [t[0] for t in same.tracks] == vnames
    _, valid2 = datasets.load_datasets("musdb", root, seq_duration=SEQ, valid_tracks=["T4"])
    assert [t[0] for t in valid2.tracks] == ["T4"]
    with pytest.raises(UnmixError, match=r"\(valid split\): no tracks found"):
        datasets.load_datasets("musdb", root, seq_duration=SEQ, valid_tracks=[])


def test_musdb_skips_short_tracks_and_errors(tmp_path):
    make_musdb(tmp_path / "long", ["long"])
    make_musdb(tmp_path / "short", ["short"], frames=1000)
    root = tmp_path / "both"
    shutil.copytree(tmp_path / "long", root)
    shutil.copytree(tmp_path / "short", root, dirs_exist_ok=True)
    ds = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ)
    assert [t[0] for t in ds.tracks] == ["long"] and ds.skipped == ["short"]
    with pytest.raises(UnmixError, match="at least 2 s long"):
        datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=2.0)
    (root / "train" / "short" / "vocals.wav").unlink()
    with pytest.raises(UnmixError, match="short has no vocals.wav or vocals.flac"):
        datasets.MUSDBDataset(root, split=None)
    with pytest.raises(UnmixError, match="does not exist"):
        datasets.MUSDBDataset(tmp_path / "nowhere")
    with pytest.raises(UnmixError, match="unknown MUSDB target 'piano'"):
        datasets.MUSDBDataset(root, target="piano")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(UnmixError, match="no MUSDB tracks"):
        datasets.MUSDBDataset(tmp_path / "empty")


def test_stems_of_another_length_than_the_mixture_are_refused(tmp_path):
    root = make_musdb(tmp_path, ["A", "B"])
    write(root / "train" / "B" / "bass.wav", ramp(1, 2, frames=FRAMES - 1))
    folder = root / "train" / "B"
    message = f"track {folder}: files differ in length: bass.wav has {FRAMES - 1} frames, mixture.wav has {FRAMES}"
    with pytest.raises(UnmixError, match=f"^{re.escape(message)}$"):
        datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ)
    with pytest.raises(UnmixError, match="files differ in length"):
        datasets.load_datasets("musdb", root, seq_duration=SEQ, valid_tracks=["A"])  # either split
    with pytest.raises(UnmixError, match="files differ in length"):  # evaluation refuses it too
        musdb.load_track(musdb.find_tracks(root, "train", True, ["B"])[0])
    (folder / "mixture.wav").unlink()  # without a mixture file the sources are compared
    with pytest.raises(UnmixError, match=f"bass.wav has {FRAMES - 1} frames, vocals.wav has {FRAMES}$"):
        datasets.MUSDBDataset(root, split=None)
    aligned = make_trackfolder(tmp_path / "aligned", "train", 2, ["mixture.wav", "vocals.wav"])
    write(aligned / "train" / "01" / "vocals.wav", ramp(1, 1, frames=FRAMES + 5))
    with pytest.raises(UnmixError, match=f"01: files differ in length: vocals.wav has {FRAMES + 5} frames, "
                                         f"mixture.wav has {FRAMES}$"):
        datasets.AlignedDataset(aligned, valid_tracks=[], seq_duration=SEQ)


def test_mismatched_rates_and_channels_are_errors(tmp_path):
    root = make_musdb(tmp_path, ["A", "B"])
    write(root / "train" / "B" / "other.wav", ramp(1, 3), rate=16000)
    with pytest.raises(UnmixError, match="different sample rates"):
        datasets.MUSDBDataset(root, split=None)
    write(root / "train" / "B" / "other.wav", ramp(1, 3, channels=1))
    with pytest.raises(UnmixError, match="different channel counts"):
        datasets.MUSDBDataset(root, split=None)
    ds = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=1, nb_channels=1)
    assert ds[1][0].shape == (1, SEQ_LEN)
    with pytest.raises(UnmixError, match="expected 44100 Hz"):
        datasets.MUSDBDataset(root, split=None, sample_rate=44100, nb_channels=2)


def test_musdb_stems_mp4(tmp_path):
    stempeg = pytest.importorskip("stempeg")
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg is not installed")
    example = Path(stempeg.example_stem_path())  # a 6 s MUSDB-style stem shipped with stempeg
    (tmp_path / "train").mkdir()
    for name in ("One - A", "Two - B"):
        (tmp_path / "train" / f"{name}.stem.mp4").symlink_to(example)
    train, valid = datasets.load_datasets("musdb", tmp_path, seq_duration=0.5, valid_tracks=["Two - B"])
    assert [t[0] for t in train.tracks] == ["One - A"] and [t[0] for t in valid.tracks] == ["Two - B"]
    refs = train.tracks[0][1]
    assert refs["vocals"].stem_id == 4 and refs["mixture"].stem_id == 0 and train.sample_rate == 44100
    full = read_chunk(refs["vocals"])
    np.testing.assert_array_equal(read_chunk(refs["vocals"], 12345, 34567), full[:, 12345:34567])

    ds = datasets.MUSDBDataset(tmp_path, valid_tracks=[], seq_duration=0.5, samples_per_track=1)
    x, y = ds[0]
    assert x.shape == y.shape == (2, 22050)
    # find the chunk's start from a loud 32-sample window of the vocals
    k = int(np.argmax(np.abs(y[0])))
    k = min(k, y.shape[1] - 32)
    windows = np.lib.stride_tricks.sliding_window_view(full[0], 32)
    start = int(np.flatnonzero(np.all(windows == y[0, k:k + 32], axis=1))[0]) - k
    np.testing.assert_array_equal(y, full[:, start:start + 22050])
    sources = sum(read_chunk(refs[s], start, start + 22050) for s in musdb.MUSDB_SOURCES)
    np.testing.assert_allclose(x, sources, atol=1e-6)

    x_valid, y_valid = valid[0]
    np.testing.assert_array_equal(y_valid, full)
    np.testing.assert_array_equal(x_valid, read_chunk(refs["mixture"]))


@pytest.mark.skipif(not MUSDB_SYNTH_MINI.is_dir(), reason=f"no musdb-synth-mini at {MUSDB_SYNTH_MINI} "
                    "(set UNMIX_MUSDB_SYNTH_MINI)")
def test_musdb_synth_mini():
    train, valid = datasets.load_datasets("musdb", MUSDB_SYNTH_MINI, seq_duration=2.0, samples_per_track=2, seed=42)
    assert len(train.tracks) == 7 and len(valid.tracks) == 1 and train.sample_rate == 44100
    x, y = train[5]
    assert x.shape == y.shape == (2, 88200) and np.abs(y).max() > 0
    x, y = valid[0]
    folder = MUSDB_SYNTH_MINI / "train" / valid.tracks[0][0]
    sources = sum(sf.read(str(folder / f"{s}.flac"), dtype="float32")[0] for s in musdb.MUSDB_SOURCES)
    np.testing.assert_allclose(x, sources.T, atol=1e-6)
    np.testing.assert_array_equal(y, sf.read(str(folder / "vocals.flac"), dtype="float32")[0].T)


# ---------------------------------------------------------------- determinism and loader


def test_seeding_reproduces_samples(tmp_path):
    root = make_musdb(tmp_path, ["A", "B", "C"])
    kwargs = dict(valid_tracks=[], seq_duration=SEQ, samples_per_track=3,
                  source_augmentations=["gain", "channelswap"], random_track_mix=True)
    a, b = datasets.MUSDBDataset(root, seed=7, **kwargs), datasets.MUSDBDataset(root, seed=7, **kwargs)
    other = datasets.MUSDBDataset(root, seed=8, **kwargs)
    for index in (4, 0, 8):  # order of reads does not matter
        np.testing.assert_array_equal(a.get(index, 2)[0], b.get(index, 2)[0])
    assert not np.array_equal(a.get(4, 0)[0], a.get(4, 1)[0])
    assert not np.array_equal(a.get(4, 0)[0], other.get(4, 0)[0])
    a.set_epoch(2)
    np.testing.assert_array_equal(a[8][1], b.get(8, 2)[1])
    with pytest.raises(IndexError):
        a[len(a)]


def test_for_statistics_yields_whole_unaugmented_tracks(tmp_path):
    root = make_musdb(tmp_path, [f"T{k}" for k in range(3)])
    train = datasets.MUSDBDataset(root, valid_tracks=[], seq_duration=SEQ, samples_per_track=8,
                              source_augmentations=["gain"], random_track_mix=True)
    stats = train.for_statistics()
    assert len(stats) == 3 and len(train) == 24
    x, y = stats[2]
    np.testing.assert_array_equal(y, ramp(2, 0).T)
    np.testing.assert_array_equal(x, sum(ramp(2, s) for s in range(4)).T)
    assert train[0][0].shape == (2, SEQ_LEN)  # the original is untouched


# ---------------------------------------------------------------- aligned


def test_aligned_pairs_share_the_chunk(tmp_path):
    root = make_trackfolder(tmp_path, "train", 3, ["mixture.wav", "vocals.wav"])
    make_trackfolder(root, "valid", 1, ["mixture.wav", "vocals.wav"])
    train, valid = datasets.load_datasets("aligned", root, seq_duration=SEQ, samples_per_track=5)
    assert len(train) == 15 and len(valid) == 1 and train.target == "vocals"
    for index in range(len(train)):
        x, y = train[index]
        track, _, _, start = decode(x)
        assert track == index // 5
        np.testing.assert_array_equal(x, ramp_slice(track, 0, start))
        np.testing.assert_array_equal(y, ramp_slice(track, 1, start))
    assert len({decode(train[k][0])[3] for k in range(5)}) > 1
    x, y = valid[0]
    np.testing.assert_array_equal(y, ramp(0, 1).T)


def test_aligned_globs_splits_and_errors(tmp_path):
    root = make_trackfolder(tmp_path, "train", 8, ["noisy_a.wav", "clean.wav"])
    ds = datasets.AlignedDataset(root, split="valid", input_file="noisy*.wav", output_file="clean.wav")
    assert len(ds) == 1 and ds.target == "clean"  # no valid folder: split of train
    (root / "train" / "03" / "clean.wav").unlink()
    with pytest.raises(UnmixError, match="03 has no file matching 'clean.wav'"):
        datasets.AlignedDataset(root, input_file="noisy*.wav", output_file="clean.wav", valid_tracks=[])
    with pytest.raises(UnmixError, match="no folder"):
        datasets.AlignedDataset(root, split="test")


# ---------------------------------------------------------------- source folders


def make_sourcefolder(root, split, counts, frames=FRAMES):
    for s, (source, count) in enumerate(counts.items()):
        for k in range(count):
            write(root / split / source / f"f{k}.wav", ramp(k, s, frames))
    return root


def test_sourcefolder_mixes_random_files(tmp_path):
    counts = {"bass": 2, "drums": 3, "vocals": 4}
    make_sourcefolder(tmp_path, "train", counts)
    make_sourcefolder(tmp_path, "valid", counts)
    train, valid = datasets.load_datasets("sourcefolder", tmp_path, seq_duration=SEQ,
                                      nb_train_samples=12, nb_valid_samples=3)
    assert len(train) == 12 and len(valid) == 3 and train.target == "vocals"
    seen = set()
    for index in range(len(train)):
        x, y = train[index]
        track, source, _, start = decode(y)
        assert source == 2  # the target is the vocals folder
        np.testing.assert_array_equal(y, ramp_slice(track, 2, start))
        rest = x - y
        assert rest.shape == (2, SEQ_LEN) and np.all(np.diff(rest, axis=1) == 2)  # two ramps
        seen.add(track)
    assert len(seen) > 1
    # valid samples are fixed per index, train ones change per epoch
    np.testing.assert_array_equal(valid.get(1, 0)[0], valid.get(1, 9)[0])
    assert not np.array_equal(train.get(1, 0)[0], train.get(1, 9)[0])


def test_sourcefolder_center_chunks_short_files_and_errors(tmp_path):
    make_sourcefolder(tmp_path, "train", {"bass": 1, "vocals": 2})
    write(tmp_path / "train" / "vocals" / "f1.wav", ramp(1, 1, frames=500))
    ds = datasets.SourceFolderDataset(tmp_path, interferer_dirs=["bass"], seq_duration=SEQ,
                                  random_chunks=False, nb_samples=2)
    assert len(ds.source_tracks["vocals"]) == 1 and ds.skipped[0].endswith("f1.wav")
    _, y = ds[0]
    assert decode(y) == (0, 1, 0, FRAMES // 2 - SEQ_LEN // 2)
    with pytest.raises(UnmixError, match="needs a seq_duration"):
        datasets.SourceFolderDataset(tmp_path, interferer_dirs=["bass"], seq_duration=None)
    with pytest.raises(UnmixError, match="no source folder .*drums"):
        datasets.SourceFolderDataset(tmp_path, interferer_dirs=["drums"], seq_duration=SEQ)
    with pytest.raises(UnmixError, match="no .flac files"):
        datasets.SourceFolderDataset(tmp_path, interferer_dirs=["bass"], ext="flac", seq_duration=SEQ)


# ---------------------------------------------------------------- fixed sources track folders


def test_trackfolder_fix_mixes_target_and_interferers(tmp_path):
    files = ["vocals.wav", "bass.wav", "drums.wav"]
    root = make_trackfolder(tmp_path, "train", 3, files)
    make_trackfolder(root, "valid", 2, files)
    train, valid = datasets.load_datasets("trackfolder_fix", root, seq_duration=SEQ, samples_per_track=2)
    assert len(train) == 6 and train.target == "vocals"
    for index in range(len(train)):
        x, y = train[index]
        track, source, _, start = decode(y)
        assert (track, source) == (index // 2, 0)
        np.testing.assert_array_equal(x, sum(ramp_slice(track, j, start) for j in range(3)))
    x, y = valid[1]
    np.testing.assert_array_equal(x, sum(ramp(1, j) for j in range(3)).T)


def test_trackfolder_fix_random_track_mix(tmp_path):
    root = make_trackfolder(tmp_path, "train", 4, ["vocals.wav", "bass.wav"])
    ds = datasets.FixedSourcesTrackFolderDataset(root, interferer_files=["bass.wav"], seq_duration=SEQ,
                                             random_chunks=True, random_track_mix=True, valid_tracks=[])
    interferer_tracks = set()
    for epoch in range(8):
        x, y = ds.get(0, epoch)
        assert decode(y)[0] == 0  # the target stays with its track
        track, source, _, start = decode(x - y)
        assert source == 1
        np.testing.assert_array_equal(x - y, ramp_slice(track, 1, start))
        interferer_tracks.add(track)
    assert len(interferer_tracks) > 1


def test_trackfolder_fix_errors(tmp_path):
    root = make_trackfolder(tmp_path, "train", 2, ["vocals.wav", "bass.wav"])
    with pytest.raises(UnmixError, match="has no drums.wav"):
        datasets.FixedSourcesTrackFolderDataset(root, interferer_files=["bass.wav", "drums.wav"], valid_tracks=[])
    with pytest.raises(UnmixError, match="random_track_mix needs a seq_duration"):
        datasets.FixedSourcesTrackFolderDataset(root, random_track_mix=True)
    with pytest.raises(UnmixError, match="at least 5 s long"):
        datasets.FixedSourcesTrackFolderDataset(root, interferer_files=["bass.wav"], seq_duration=5, valid_tracks=[])
    with pytest.raises(UnmixError, match="unknown dataset 'tracks'"):
        datasets.load_datasets("tracks", root)


# ---------------------------------------------------------------- variable sources track folders


def test_trackfolder_var_sums_every_source(tmp_path):
    root = tmp_path
    layouts = {"00": ["vocals.wav", "a.wav"], "01": ["vocals.wav", "a.wav", "b.wav", "c.wav"],
               "02": ["a.wav", "b.wav"]}  # 02 has no target
    for track, files in layouts.items():
        for j, f in enumerate(files):
            write(root / "train" / track / f, ramp(int(track), j))
    write(root / "train" / "01" / "mixture.wav", np.ones((FRAMES, 2), np.float32))  # never a source
    ds = datasets.VariableSourcesTrackFolderDataset(root, seq_duration=SEQ, random_chunks=True,
                                                samples_per_track=2, valid_tracks=[])
    assert [t[0] for t in ds.tracks] == ["00", "01"] and ds.skipped == ["02"]
    x, y = ds[3]
    track, source, _, start = decode(y)
    assert (track, source) == (1, 0)
    np.testing.assert_array_equal(x, sum(ramp_slice(1, j, start) for j in range(4)))

    silent = datasets.VariableSourcesTrackFolderDataset(root, silence_missing_targets=True, valid_tracks=[])
    x, y = silent[2]
    assert np.all(y == 0)
    np.testing.assert_array_equal(x, (ramp(2, 0) + ramp(2, 1)).T)


def test_trackfolder_var_random_interferer_mix_and_errors(tmp_path):
    for k in range(3):
        write(tmp_path / "train" / f"{k}" / "vocals.wav", ramp(k, 0))
        write(tmp_path / "train" / f"{k}" / "other.wav", ramp(k, 1))
    train, valid = datasets.load_datasets("trackfolder_var", tmp_path, seq_duration=SEQ, random_interferer_mix=True,
                                      samples_per_track=1, valid_tracks=["2"])
    assert len(train) == 2 and len(valid) == 1
    tracks = {decode(train.get(0, e)[0] - train.get(0, e)[1])[0] for e in range(8)}
    assert tracks == {0, 1}
    with pytest.raises(UnmixError, match="no track in .* has piano.wav"):
        datasets.VariableSourcesTrackFolderDataset(tmp_path, target_file="piano.wav", valid_tracks=[])
    with pytest.raises(UnmixError, match="random_interferer_mix needs a seq_duration"):
        datasets.VariableSourcesTrackFolderDataset(tmp_path, random_interferer_mix=True)


def test_trackfolder_var_force_stereo_on_mono_files(tmp_path):
    for k in range(2):
        write(tmp_path / "train" / f"{k}" / "vocals.wav", ramp(k, 0, channels=1))
        write(tmp_path / "train" / f"{k}" / "other.wav", ramp(k, 1, channels=1))
    ds = datasets.VariableSourcesTrackFolderDataset(tmp_path, seq_duration=SEQ, samples_per_track=1, valid_tracks=[],
                                                source_augmentations=["force_stereo"])
    x, y = ds[1]
    assert x.shape == y.shape == (2, SEQ_LEN)
    track, source, _, start = decode(y)
    assert (track, source) == (1, 0)
    expected = ramp_slice(1, 0, start, frames=FRAMES)[:1] + ramp_slice(1, 1, start, frames=FRAMES)[:1]
    np.testing.assert_array_equal(x, np.repeat(expected, 2, axis=0))


def test_samples_per_track_defaults_as_the_reference(tmp_path):
    make_trackfolder(tmp_path, "train", 3, ["mixture.wav", "vocals.wav"])
    train, _ = datasets.load_datasets("aligned", tmp_path, seq_duration=SEQ, valid_tracks=["02"])
    assert len(train) == 2  # one sample per track and epoch outside musdb
    musdb = make_musdb(tmp_path / "musdb", ["A", "B", "C"])
    train, _ = datasets.load_datasets("musdb", musdb, seq_duration=SEQ, valid_tracks=["C"], is_wav=True)
    assert len(train) == 2 * 64


def test_validation_files_at_another_rate_are_an_error(tmp_path):
    make_trackfolder(tmp_path, "train", 2, ["mixture.wav", "vocals.wav"])
    for f in ("mixture.wav", "vocals.wav"):
        write(tmp_path / "valid" / "00" / f, ramp(0, 0), rate=RATE // 2)
    with pytest.raises(UnmixError, match="validation files are at 4000 Hz and the training files at 8000 Hz"):
        datasets.load_datasets("aligned", tmp_path, seq_duration=SEQ)


def test_datasets_own_their_state():
    """Each dataset has its own skipped list and settings (no class-level defaults to share)."""
    class Empty(datasets.UnmixDataset):
        def __len__(self):
            return 0

    a, b = Empty(), Empty(split="valid", seq_duration=2.0, seed=3, nb_channels=1)
    a.skipped.append("short")
    assert b.skipped == [] and "skipped" not in vars(datasets.UnmixDataset)
    assert (a.split, a.seq_len, a.seed, a.epoch) == ("train", None, 42, 0)
    assert (b.split, b.seq_duration, b.seq_len, b.seed, b.nb_channels) == ("valid", 2.0, 88200, 3, 1)
    with pytest.raises(UnmixError, match="seed must be >= 0"):
        Empty(seed=-1)
