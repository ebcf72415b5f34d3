"""`unmix separate`'s outputs: names from --filename, formats, clipping, the single-target residual."""
import numpy as np
import pytest
import soundfile as sf

from conftest import RATE, TARGETS, make_model_folder, tone
from unmix.separation import stems
from unmix.io.audio import load
from unmix.cli import main
from unmix.errors import UnmixError


def run(*argv):
    return main(["separate", *map(str, argv)])


def write_song(path, seconds=0.5, gain=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, gain * tone(seconds).T, RATE, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def vocals_model(tmp_path_factory):
    """A model folder trained for one target, as `unmix train --target vocals` leaves it."""
    return make_model_folder(tmp_path_factory.mktemp("models") / "vocals_only", targets=["vocals"])


# ----------------------------------------------------------------------------------- names


def test_musdb_mixtures_are_named_after_their_song_folders(tiny_model, tmp_path):
    a = write_song(tmp_path / "test" / "Song A" / "mixture.wav")
    b = write_song(tmp_path / "test" / "Song B" / "mixture.wav")
    assert run(a, b, "--model", tiny_model, "--outdir", tmp_path / "out", "--niter", "0") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Song A", "Song B"]
    assert sorted(p.name for p in (tmp_path / "out" / "Song B").iterdir()) == sorted(f"{t}.wav" for t in TARGETS)


def test_track_name_and_extension_fields():
    assert stems.track_name("x/Artist - Title.stem.mp4") == "Artist - Title"
    assert stems.track_name("x/song.mp3") == "song"
    assert stems.track_name("musdb/test/Al James - Schoolboy Facination/mixture.wav") == \
        "Al James - Schoolboy Facination"
    paths = stems.output_paths("in/Artist.stem.mp4", "out", ["vocals"], "{track}.{trackext}/{stem}-{target}.{ext}",
                               ".flac")
    assert str(paths["vocals"]) == "out/Artist.stem.mp4/vocals-vocals.flac"


def test_flat_template(tiny_model, song, tmp_path, capsys):
    assert run(song, "--model", tiny_model, "--outdir", tmp_path / "out", "--niter", "0",
               "--filename", "{track}_{target}.{ext}") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"song_{t}.wav" for t in TARGETS)
    assert f"wrote {tmp_path / 'out' / 'song_vocals.wav'}" in capsys.readouterr().out


@pytest.mark.parametrize("names, template", [
    (["a/mixture.wav", "b/a.wav"], "{track}/{target}.{ext}"),  # the song folder a meets the file a.wav
    (["x/song.wav", "y/song.wav"], "{track}/{target}.{ext}"),
    (["s1.wav", "s2.wav"], "{target}.{ext}"),
])
def test_two_inputs_onto_one_file_are_refused_before_any_work(tiny_model, tmp_path, capsys, names, template):
    paths = [write_song(tmp_path / "in" / n) for n in names]
    assert run(*paths, "--model", tiny_model, "--outdir", tmp_path / "out", "--filename", template) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would both be written to" in err[0] and str(paths[0]) in err[0]
    assert not (tmp_path / "out").exists()


def test_an_input_given_twice_is_refused(tiny_model, song, tmp_path, capsys):
    assert run(song, song, "--model", tiny_model, "--outdir", tmp_path / "out") == 1
    assert "given twice" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_existing_file_of_a_flat_template_kept_unless_force(tiny_model, song, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "song_drums.wav").write_text("earlier result")
    (out / "unrelated.txt").write_text("not ours")
    args = (song, "--model", tiny_model, "--outdir", out, "--niter", "0", "--filename", "{track}_{target}.{ext}")
    assert run(*args) == 1
    assert "song_drums.wav exists; use --force" in capsys.readouterr().err
    assert (out / "song_drums.wav").read_text() == "earlier result" and not (out / "song_vocals.wav").exists()
    assert run(*args, "--force") == 0
    assert sf.info(out / "song_drums.wav").frames == RATE and (out / "unrelated.txt").read_text() == "not ours"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no staging folder left"


# ---------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("options, name, subtype", [
    ([], "vocals.wav", "FLOAT"),
    (["--bits", "16"], "vocals.wav", "PCM_16"),
    (["--bits", "24"], "vocals.wav", "PCM_24"),
    (["--ext", ".flac"], "vocals.flac", "PCM_24"),
    (["--ext", "flac", "--bits", "16"], "vocals.flac", "PCM_16"),
])
def test_wav_and_flac_bits(tiny_model, song, tmp_path, options, name, subtype):
    assert run(song, "--model", tiny_model, "--outdir", tmp_path, "--niter", "0", *options) == 0
    info = sf.info(tmp_path / "song" / name)
    assert info.subtype == subtype and info.frames == RATE


def test_mp3_stems_through_ffmpeg(tiny_model, song, tmp_path):
    assert run(song, "--model", tiny_model, "--outdir", tmp_path, "--niter", "0", "--ext", ".mp3",
               "--mp3-bitrate", "128") == 0
    assert sorted(p.name for p in (tmp_path / "song").iterdir()) == sorted(f"{t}.mp3" for t in TARGETS)
    audio, rate = load(tmp_path / "song" / "bass.mp3")
    assert rate == RATE and audio.shape[0] == 2 and abs(audio.shape[1] - RATE) < 2 * 1152  # encoder delay/padding
    assert np.abs(audio).max() > 0


def test_stem_format_rules():
    with pytest.raises(UnmixError, match="FLAC stores integers only"):
        stems.StemFormat(ext=".flac", bits=32)
    with pytest.raises(UnmixError, match="mp3-bitrate"):
        stems.StemFormat(ext=".mp3", bits=16)
    with pytest.raises(UnmixError, match="clip mode"):
        stems.StemFormat(clip_mode="tanh")
    assert stems.StemFormat().is_float and not stems.StemFormat(bits=24).is_float


# --------------------------------------------------------------------------------- clipping


@pytest.fixture
def loud(tmp_path):
    """A loud mixture whose vocals estimate (tiny model, residual) peaks at 1.58."""
    return write_song(tmp_path / "loud.wav", seconds=1.0, gain=3.0)


def separate_loud(model, loud, outdir, *options, more=()):
    return run(loud, *more, "--model", model, "--outdir", outdir, "--targets", "vocals", "--residual", "rest", *options)


def test_clip_modes(tiny_model, loud, tmp_path, capsys):
    assert separate_loud(tiny_model, loud, tmp_path / "raw", "--clip-mode", "none") == 0
    assert "warning" not in capsys.readouterr().err, "float wav keeps every sample: nothing to warn about"
    raw, _ = sf.read(tmp_path / "raw" / "loud" / "vocals.wav", dtype="float32")
    peak = np.abs(raw).max()
    assert peak > 1.5  # the case at hand: a stem well beyond full scale

    assert separate_loud(tiny_model, loud, tmp_path / "rescale", "--ext", ".flac") == 0  # the default mode
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("warning")]
    assert len(lines) == 1 and "vocals.flac" in lines[0] and f"peak {peak:.3g}" in lines[0] and "rescaled" in lines[0]
    rescaled, _ = sf.read(tmp_path / "rescale" / "loud" / "vocals.flac", dtype="float32")
    np.testing.assert_allclose(rescaled, raw / (1.01 * peak), atol=2**-22)  # demucs: / max(1.01 * peak, 1)
    rest, _ = sf.read(tmp_path / "rescale" / "loud" / "rest.flac", dtype="float32")
    raw_rest, _ = sf.read(tmp_path / "raw" / "loud" / "rest.wav", dtype="float32")
    np.testing.assert_allclose(rest, raw_rest, atol=2**-22)  # a stem that does not clip keeps its gain
    assert not [p for p in (tmp_path / "rescale" / "loud").iterdir() if p.suffix == ".wav"], "no float stem left"

    assert separate_loud(tiny_model, loud, tmp_path / "clamp", "--clip-mode", "clamp") == 0
    err = capsys.readouterr().err
    nb = int(np.count_nonzero(np.abs(raw) > 0.99))
    assert f"vocals.wav: peak {peak:.3g}, {nb:,} samples clamped" in err
    clamped, _ = sf.read(tmp_path / "clamp" / "loud" / "vocals.wav", dtype="float32")
    np.testing.assert_array_equal(clamped, np.clip(raw, -0.99, 0.99))

    assert separate_loud(tiny_model, loud, tmp_path / "pcm", "--clip-mode", "none", "--bits", "16") == 0
    nb = int(np.count_nonzero(np.abs(raw) > 1))
    assert f"vocals.wav: peak {peak:.3g}, {nb:,} samples clipped at full scale (16-bit wav" in capsys.readouterr().err


def test_rescale_keeps_a_float_stem_that_does_not_clip(tiny_model, song, tmp_path, capsys):
    assert run(song, "--model", tiny_model, "--outdir", tmp_path / "a", "--niter", "0") == 0
    assert run(song, "--model", tiny_model, "--outdir", tmp_path / "b", "--niter", "0", "--clip-mode", "none") == 0
    assert "warning" not in capsys.readouterr().err
    for target in TARGETS:
        a, _ = sf.read(tmp_path / "a" / "song" / f"{target}.wav", dtype="float32")
        b, _ = sf.read(tmp_path / "b" / "song" / f"{target}.wav", dtype="float32")
        np.testing.assert_array_equal(a, b)


def test_clipping_warnings_come_back_from_parallel_jobs(tiny_model, loud, tmp_path, capsys):
    other = write_song(tmp_path / "quiet.wav")
    assert separate_loud(tiny_model, loud, tmp_path / "out", "--jobs", "2", more=[other]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "loud/vocals.wav: peak" in err and "quiet/" not in err


# ------------------------------------------------------------------------ single-target models


def test_single_target_model_separates_with_the_defaults(vocals_model, song, tmp_path, capsys):
    assert run(song, "--model", vocals_model, "--outdir", tmp_path) == 0
    assert sorted(p.name for p in (tmp_path / "song").iterdir()) == ["accompaniment.wav", "vocals.wav"]
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "'accompaniment'" in notes[0]
    vocals, _ = sf.read(tmp_path / "song" / "vocals.wav")
    accompaniment, _ = sf.read(tmp_path / "song" / "accompaniment.wav")
    mix = tone().T
    assert np.sum((vocals + accompaniment - mix) ** 2) < 1e-3 * np.sum(mix**2)


def test_one_selected_target_gets_the_residual_named_by_the_user(tiny_model, song, tmp_path, capsys):
    assert run(song, "--model", tiny_model, "--outdir", tmp_path / "a", "--targets", "drums") == 0
    assert sorted(p.name for p in (tmp_path / "a" / "song").iterdir()) == ["accompaniment.wav", "drums.wav"]
    assert run(song, "--model", tiny_model, "--outdir", tmp_path / "b", "--targets", "drums",
               "--residual", "rest") == 0
    assert sorted(p.name for p in (tmp_path / "b" / "song").iterdir()) == ["drums.wav", "rest.wav"]
    assert run(song, "--model", tiny_model, "--outdir", tmp_path / "c", "--targets", "drums", "--niter", "0") == 0
    assert [p.name for p in (tmp_path / "c" / "song").iterdir()] == ["drums.wav"]
    assert capsys.readouterr().err.count("note:") == 1  # only where unmix chose the residual
