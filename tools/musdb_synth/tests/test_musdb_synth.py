"""The training-song generator's pure-numpy parts (tools/musdb_synth/msynth): seeds, the plan,
drum grooves, effects, the analog synth and the sum-exact mixdown. Rendering itself needs FluidSynth, espeak-ng
and WORLD (its own venv, tools/musdb_synth/setup.sh) and is not run here.

    python -m pytest tools/musdb_synth/tests      # from the repository's root (`make test` runs it)

`msynth` is importable because this folder is a package (see __init__.py)."""
import numpy as np
import pytest
from msynth import analog, drums, effects, mixing, plan, rng, vocals
from msynth.hydrogen import gm_note
from msynth.singer import Singer


def test_child_streams_are_reproducible_and_independent():
    a1 = rng.child(7, "drums").random(4)
    assert np.array_equal(a1, rng.child(7, "drums").random(4))
    assert not np.array_equal(a1, rng.child(7, "vocals").random(4))
    assert not np.array_equal(a1, rng.child(8, "drums").random(4))


@pytest.mark.parametrize("seed", range(12))
def test_plan_is_seeded_and_consistent(seed):
    p = plan.make_plan(rng.child(seed, "plan"), 20.0)
    q = plan.make_plan(rng.child(seed, "plan"), 20.0)
    assert p == q
    assert p["n_bars"] * p["bar"] >= 20.5
    assert p["sections"][0][0] == 0 and p["sections"][-1][1] == p["n_bars"]
    assert all(len(v) == p["n_bars"] for v in p["active"].values())
    assert p["chords"][-1][1] == pytest.approx(p["n_bars"] * p["bar"])
    # every bar has something in "other" (comp or pad) and the harmony only sings with the lead
    assert all(c or d for c, d in zip(p["active"]["comp"], p["active"]["pad"]))
    assert all(v or not h for v, h in zip(p["active"]["vocals"], p["active"]["harmony"]))


def test_melody_phrases_span_the_register():
    spans = []
    for seed in range(20):
        p = plan.make_plan(rng.child(seed, "plan"), 25.0)
        pitches = [n[2] for n in vocals.make_melody(rng.child(seed, "vocals"), p, 50, 72, "dense", ["la"] * 32)]
        assert all(50 <= q <= 72 for q in pitches)
        if pitches:
            spans.append(max(pitches) - min(pitches))
    assert len(spans) >= 15 and np.median(spans) >= 8  # was 3-8 semitones before phrases moved


def test_breaths_fit_the_song_when_a_phrase_starts_at_its_end():
    n = 44100
    notes = [(0.5, 0.8, 60, "la", 1.0), (1.02, 1.3, 62, "la", 1.0)]  # the second phrase starts after the end
    out = vocals.breaths(np.random.default_rng(0), notes, n, 0.1)
    assert out.shape == (n,) and np.abs(out[:22050]).max() > 0


def test_drum_hits_only_in_active_bars():
    p = plan.make_plan(rng.child(3, "plan"), 20.0, genre="rock")
    hits = drums.groove_hits(rng.child(3, "drums"), p, "rock")
    assert hits == sorted(hits)
    for t, note, vel in hits:
        assert 1 <= vel <= 127
        assert p["active"]["drums"][min(int((t + 0.05) // p["bar"]), p["n_bars"] - 1)] or t % p["bar"] < 0.05


def test_gm_note_from_hydrogen_names():
    assert gm_note("Pearl Kick") == 36
    assert gm_note("Pearl Snare Rimshot") == 40
    assert gm_note("Sabian Hat Open") == 46
    assert gm_note("Closed HH") == 42
    assert gm_note("Hat Pedal") == 44
    assert gm_note("Paiste Bell") == 53
    assert gm_note("Tom Low") == 43
    assert gm_note("Snare Roll") is None


def test_effects_keep_length_and_pan_is_constant_power():
    x = np.random.default_rng(0).normal(0, 0.1, 4410).astype(np.float32)
    mid = effects.pan(x, 0.0)
    assert np.allclose(mid[:, 0], x, atol=1e-6) and np.allclose(mid[:, 1], x, atol=1e-6)
    left = effects.pan(x, -1.0)
    assert np.allclose(left[:, 1], 0, atol=1e-6) and np.allclose(left[:, 0], np.sqrt(2) * x, atol=1e-6)
    assert np.allclose(effects.eq(x, [("peak", 1000.0, 0.0, 1.0)]), x, atol=1e-6)
    assert np.allclose(effects.width(mid, 0.0), mid, atol=1e-6)
    r = np.random.default_rng(1)
    for y in (effects.compress(x), effects.saturate(x, 3.0), effects.delay(x, 0.01, 0.5, 0.3),
              effects.reverb(x, effects.reverb_ir(r, 0.3), 0.2)):
        assert len(y) == len(x)


def test_bus_gain_is_one_gain_for_all_stems():
    r = np.random.default_rng(2)
    stems = {k: r.normal(0, 0.2, (8000, 2)).astype(np.float32) for k in mixing.STEMS}
    stems["drums"][:4000] *= 5
    out = mixing.bus_gain(r, stems, -6.0, 4.0)
    g = out["vocals"][:, 0] / stems["vocals"][:, 0]
    for k in mixing.STEMS:
        assert np.allclose(out[k], stems[k] * g[:, None], rtol=1e-4, atol=1e-7)
    assert g[:4000].mean() < g[4000:].mean() <= 1.0


def test_int16_mixture_is_the_exact_sum():
    r = np.random.default_rng(3)
    stems = {k: r.normal(0, 1, (5000, 2)).astype(np.float32) for k in mixing.STEMS}
    ints, mix = mixing.to_int16(r, stems, peak_range=(1.0, 1.0))
    assert np.array_equal(mix, sum(ints[k] for k in mixing.STEMS))
    assert np.abs(mix).max() <= 32767 and np.abs(mix).max() > 32000
    assert all(np.abs(v).max() <= 32767 for v in ints.values())


def test_check_dataset_counts_foreign_metadata_in_the_audio_table_only(tmp_path, capsys):
    """The first default model's songs (../shared's generator, another info.json layout) sit in the
    same training set: the statistics tool scores their audio and leaves their metadata out."""
    import soundfile as sf

    import check_dataset

    rate, rng_ = 44100, np.random.default_rng(0)
    folder = tmp_path / "train" / "Synth 3000 - old"
    folder.mkdir(parents=True)
    stems = {s: np.round(rng_.uniform(-0.1, 0.1, (rate, 2)) * 32767).astype(np.int16) for s in check_dataset.STEMS}
    for name, audio in dict(stems, mixture=sum(a.astype(np.int32) for a in stems.values()).astype(np.int16)).items():
        sf.write(str(folder / f"{name}.wav"), audio, rate, subtype="PCM_16")
    meta = tmp_path / "_meta" / folder.name
    meta.mkdir(parents=True)
    (meta / "info.json").write_text('{"plan": ["mode", "key"], "vocals": {"voice": "m1"}}')
    check_dataset.audio_summary([str(folder)], None, None)
    check_dataset.meta_summary(str(tmp_path), [str(folder)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 tracks; max |mixture - sum(stems)| over all: 0 LSB"
    assert out[-1] == "1 songs have another generator's metadata and are left out below"


def _notes(*specs):
    """pretty_midi-like instrument: .notes with start, end, pitch, velocity (pretty_midi is not in
    the project's venv; the analog synth only reads these four fields)."""
    from types import SimpleNamespace as NS
    return NS(notes=[NS(start=a, end=b, pitch=p, velocity=v) for a, b, p, v in specs])


def test_polyblep_saw_has_far_less_aliasing_than_a_naive_saw():
    f0, L = 3000.0, 1 << 15
    dph = np.full(L, f0 / effects.SR)
    ph = np.cumsum(dph)
    freqs = np.fft.rfftfreq(L, 1 / effects.SR)
    harmonic = np.abs((freqs / f0) - np.round(freqs / f0)) * f0 < 30        # bins at k * f0
    win = np.hanning(L)

    def alias_db(x):
        P = np.abs(np.fft.rfft(x * win)) ** 2
        return 10 * np.log10(P[~harmonic & (freqs < 15000)].sum() / P[harmonic].sum())

    naive = 2 * (ph % 1.0) - 1
    assert alias_db(analog.oscillator(ph, dph, "saw")) < alias_db(naive) - 10
    slow = np.full(L, 200.0 / effects.SR)
    pulse = analog.oscillator(np.cumsum(slow), slow, "pulse", 0.25)
    assert abs(pulse.mean()) < 0.02                                          # no DC
    assert np.median(pulse[pulse > 0]) == pytest.approx(0.5, abs=0.01)     # 2 * width
    assert np.median(pulse[pulse < 0]) == pytest.approx(-1.5, abs=0.01)    # -2 * (1 - width)


def test_adsr_attack_sustain_release():
    sr = effects.SR
    env = analog.adsr(sr, hold=sr // 2, att=0.01, dec=0.05, sus=0.4, rel=0.1)
    assert env[0] == 0 and env[int(0.01 * sr)] == pytest.approx(1.0, abs=1e-3)
    assert env[sr // 2 - 1] == pytest.approx(0.4, abs=1e-3)               # sustained while held
    assert env[sr // 2 + int(0.1 * sr)] < 0.4 * 0.01                        # released within rel
    assert np.all(np.diff(env[sr // 2:]) <= 0)


def test_lowpass_sweep_follows_its_cutoff():
    x = np.random.default_rng(0).normal(0, 1, 2 * effects.SR)
    half = effects.SR
    cut = np.where(np.arange(len(x)) < half, 500.0, 8000.0)
    y = analog.lowpass_sweep(x, cut, q=0.7071)
    hi = lambda z: np.sum(np.abs(np.fft.rfft(z))[np.fft.rfftfreq(len(z), 1 / effects.SR) > 3000] ** 2)
    assert hi(y[half + 2000:]) > 100 * hi(y[2000:half])                   # 8 kHz passes, 500 Hz cuts
    still = analog.lowpass_sweep(x, np.full(len(x), 1000.0), q=2.0)       # constant cutoff: one filter
    b1 = effects.biquad("lowpass", 1000.0, q=2.0)
    b2 = effects.biquad("lowpass", 1000.0, q=0.7071)
    from scipy import signal
    np.testing.assert_allclose(still, signal.lfilter(*b2, signal.lfilter(*b1, x)), atol=1e-9)


@pytest.mark.parametrize("role", sorted(analog.ROLES))
def test_analog_render_plays_the_notes(role):
    patch = analog.draw_patch(np.random.default_rng(3), role)
    assert patch == analog.draw_patch(np.random.default_rng(3), role)    # seeded
    patch.update(vib_st=0.0, lfo_oct=0.0, noise=0.0)
    pitch = 45 if role == "bass" else 69
    n = 2 * effects.SR
    y = analog.render(_notes((0.5, 1.0, pitch, 100)), n, patch, np.random.default_rng(1))
    assert y.shape == (n, 2) and y.dtype == np.float32
    assert np.abs(y).max() == pytest.approx(0.5, rel=1e-4)
    assert not np.any(y[:int(0.5 * effects.SR)])                           # nothing before the note
    end = int((1.0 + 1.2 * patch["rel"]) * effects.SR) + 2
    assert not np.any(y[end:])                                             # released, then silent
    seg = y[int(0.5 * effects.SR):int(0.9 * effects.SR)].mean(axis=1)
    P = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    freqs = np.fft.rfftfreq(len(seg), 1 / effects.SR)
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    peaks = freqs[np.argsort(P)[-3:]]                                      # strongest partials are harmonics
    k = peaks / f0 if not patch["sub"] else 2 * peaks / f0
    assert np.all(np.abs(k - np.round(k)) < 0.1), (peaks, f0)


def _bare_singer(band):
    """A Singer without pyworld (extend_band is pure numpy): fs_an 22050, the source's band."""
    s = Singer.__new__(Singer)
    s.fs, s.band = 22050, band
    return s


def test_extend_band_keeps_espeaks_envelope_and_extrapolates_above_a_16k_voice():
    nb = 513                                                          # WORLD's bins for fft 1024
    f = np.arange(nb) * 22050 / 1024
    sp = np.tile(1e-3 * np.exp(-f / 3000.0), (2, 1))
    sp[:, f > 8000] = 1e-12                                           # a 16 kHz voice: nothing above 8 kHz
    ap = np.full((2, nb), 0.2)
    voiced = np.array([True, False])
    wide, _, _ = _bare_singer(11025.0).extend_band(sp, ap, voiced)
    np.testing.assert_array_equal(wide[:, :nb], sp)                  # espeak-ng: analysed bins kept
    narrow, ap_hi, _ = _bare_singer(8000.0).extend_band(sp, ap, voiced)
    f_hi = np.arange(narrow.shape[1]) * 44100 / 2048
    keep = f_hi <= 8000
    np.testing.assert_array_equal(narrow[:, keep], sp[:, f <= 8000])
    ref = np.log(sp[:, (f > 8000 * 8000 / 11025) & (f < 10500 * 8000 / 11025)]).mean(axis=1)
    at = np.argmin(np.abs(f_hi - 2 * 9250 * 8000 / 11025))           # one octave above the pivot
    np.testing.assert_allclose(np.log(narrow[:, at]), ref - np.array([2.76, 1.15]), atol=0.01)
    assert np.all(ap_hi[:, ~keep] == 0.9) and np.all(ap_hi[:, keep] == 0.2)


@pytest.mark.parametrize("bad", [["--analog", "1.5"], ["--festival", "-0.1"], ["--seed", "99998", "--n", "5"]])
def test_generator_refuses_bad_options_in_one_line_and_writes_nothing(tmp_path, capsys, bad):
    import musdb_synth
    out = tmp_path / "set"
    assert musdb_synth.main(["--out", str(out), *bad]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: need --n >= 1, --jobs >= 1, --dur > 1, 0 <= --analog, --festival <= 1 and seeds in "
                   "0..99999"]
    assert not out.exists()
