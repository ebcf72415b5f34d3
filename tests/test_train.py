"""unmix.train: statistics, schedules, steps, checkpoints and resume, every dataset type, the CLI.

Tiny models (hidden 8, n_fft 512) on synthetic 8 kHz folders made in tmp_path, so every run
takes well under a second per epoch.
"""
import json
import os
import signal

import nnabla as nn
import numpy as np
import pytest
import soundfile as sf

from unmix import cli, transforms
from unmix import train as tr
from unmix.data import load_datasets
from unmix.errors import UnmixError
from unmix.model import ModelConfig, OpenUnmix, load_target, read_h5_params, read_separator_json

pytestmark = pytest.mark.nnabla

RATE = 8000
LENGTH = int(1.5 * RATE)
TINY = dict(hidden_size=8, nb_layers=1, nfft=512, nhop=128, seq_dur=0.5, batch_size=2, samples_per_track=2,
            epochs=2, quiet=True)


# -- synthetic data --------------------------------------------------------------------------------
def sources(seed):
    """Four stereo sources (2, LENGTH): a tone (vocals), noise bursts, a bass tone, soft noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH) / RATE
    pan = np.array([[0.8], [1.0]])
    f0 = rng.uniform(300, 700)
    bursts = (np.sin(2 * np.pi * 4 * t) > 0.5) * rng.standard_normal(LENGTH)
    return {
        "vocals": pan * 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t)),
        "drums": 0.1 * np.stack([bursts, bursts]),
        "bass": 0.3 * np.stack([np.sin(2 * np.pi * 70 * t)] * 2),
        "other": 0.03 * rng.standard_normal((2, LENGTH)),
    }


def write(path, audio):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(audio, np.float32).T, RATE, subtype="FLOAT")


def make_dataset(kind, root, nb_tracks=3):
    """Write a `kind` dataset under root; returns the TrainOptions fields that select it."""
    names = [f"track{k}" for k in range(nb_tracks)]
    for k, name in enumerate(names):
        src = sources(k)
        track = root / "train" / name
        if kind == "musdb":
            for part, audio in src.items():
                write(track / f"{part}.wav", audio)
            write(track / "mixture.wav", sum(src.values()))
        elif kind == "aligned":
            write(track / "mixture.wav", sum(src.values()))
            write(track / "vocals.wav", src["vocals"])
        elif kind == "trackfolder_fix":
            for part in ("vocals", "bass", "drums"):
                write(track / f"{part}.wav", src[part])
        elif kind == "trackfolder_var":
            write(track / "vocals.wav", src["vocals"])
            for part in ("bass", "drums", "other")[: 1 + k % 3]:  # a different number of interferers
                write(track / f"{part}.wav", src[part])
        elif kind == "sourcefolder":
            split = "valid" if k == 0 else "train"
            for part in ("vocals", "bass", "drums"):
                write(root / split / part / f"{name}.wav", src[part])
    options = dict(dataset=kind, root=str(root), target="vocals")
    if kind == "musdb":
        options["is_wav"] = True
    if kind == "sourcefolder":
        options["dataset_options"] = dict(nb_train_samples=4, nb_valid_samples=2)
    else:
        options["valid_tracks"] = ["track0"]
    return options


@pytest.fixture(scope="module")
def aligned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    make_dataset("aligned", root)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, aligned_root):
    """A model folder trained 2 epochs on the aligned dataset, and its result."""
    out = tmp_path_factory.mktemp("trained") / "model"
    result = tr.train(tr.TrainOptions(dataset="aligned", root=str(aligned_root), valid_tracks=["track0"],
                                      output=str(out), **TINY))
    return out, result


def options(**kw):
    return tr.TrainOptions(**{**TINY, **kw})


# -- signal parameters and statistics -----------------------------------------------------------------
def test_bandwidth_to_max_bin_matches_reference():
    assert tr.bandwidth_to_max_bin(44100, 4096, 16000) == 1487  # umxhq's max_bin
    assert tr.bandwidth_to_max_bin(16000, 1024, 16000) == 513  # all bins
    assert tr.bandwidth_to_max_bin(8000, 512, 2000) == 129  # 2000 Hz is bin 128 exactly


@pytest.mark.parametrize("nb_workers", [0, 2])
def test_statistics_equal_direct_computation(aligned_root, nb_workers):
    train_ds, _ = load_datasets("aligned", aligned_root, "vocals", seq_duration=0.5, valid_tracks=["track0"])
    mean, std = tr.compute_statistics(train_ds, 512, 128, nb_workers=nb_workers)
    frames = []
    for name in ("track1", "track2"):  # the training tracks, whole, mixture only
        audio, _ = sf.read(aligned_root / "train" / name / "mixture.wav", dtype="float32", always_2d=True)
        mag = np.abs(transforms.stft(audio.T, 512, 128, center=False))  # (2, bins, frames)
        frames.append(mag.mean(axis=0).T)  # mono downmix of the magnitudes
    frames = np.concatenate(frames).astype(np.float64)
    expected_std = frames.std(axis=0)
    expected_std = np.maximum(expected_std, 1e-4 * expected_std.max())
    assert mean.shape == std.shape == (257,)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std, expected_std, rtol=1e-7, atol=1e-12)


def test_scaler_std_zero_variance_and_floor():
    # sklearn's StandardScaler gives a constant feature scale 1; then the reference floors at 1e-4 * max
    std = tr.scaler_std(np.array([0.0, 4.0, 0.25]), np.array([0.0, 1.0, 1.0]), 10)
    np.testing.assert_allclose(std, [1.0, 2.0, 0.5])
    std = tr.scaler_std(np.array([4.0, 1e-12]), np.array([1.0, 1.0]), 10)
    np.testing.assert_allclose(std, [2.0, 2e-4])


def test_model_starts_from_the_statistics(tmp_path, aligned_root):
    # epochs=0 writes the initial checkpoint only: the standardisation holds -mean and 1/std up to max_bin
    out = tmp_path / "m"
    result = tr.train(options(dataset="aligned", root=str(aligned_root), valid_tracks=["track0"], output=str(out),
                              epochs=0, bandwidth=2000))
    assert result.epochs_trained == 0 and result.best_loss is None
    train_ds, _ = load_datasets("aligned", aligned_root, "vocals", seq_duration=0.5, valid_tracks=["track0"])
    mean, std = tr.compute_statistics(train_ds, 512, 128)
    params = read_h5_params(out / "vocals.chkpnt.h5")
    np.testing.assert_allclose(params["input_mean"], -mean[:129], rtol=1e-6)
    np.testing.assert_allclose(params["input_scale"], 1 / std[:129], rtol=1e-6)
    history = json.loads((out / "vocals.json").read_text())
    assert history["config"]["max_bin"] == 129 and history["epochs_trained"] == 0


# -- schedules and solver -----------------------------------------------------------------------------
# metric sequence and the learning rates / stop flags torch 2.13 and openunmix 1.3 give for it
METRICS = [1.0, 0.9, 0.9, 0.95, 0.9, 0.89995, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.7, 0.75, 0.75, 0.75, 0.75]
TORCH_LRS = [1e-3] * 4 + [3e-4] * 5 + [9e-5] * 6 + [2.7e-5] * 2  # ReduceLROnPlateau(0.3, patience 2, cooldown 1)
REFERENCE_STOPS = [False, False, False, False, True, False, False, False, False, True, True, True, False, False,
                   False, True, True]  # EarlyStopping(patience=3)


def test_reduce_lr_on_plateau_matches_torch():
    scheduler = tr.ReduceLROnPlateau(1e-3, factor=0.3, patience=2, cooldown=1)
    np.testing.assert_allclose([scheduler.step(m) for m in METRICS], TORCH_LRS, rtol=1e-12)
    # the state survives JSON (resume), infinity included
    fresh = tr.ReduceLROnPlateau(1e-3, factor=0.3, patience=2, cooldown=1)
    restored = tr.ReduceLROnPlateau(1.0)
    restored.load_state_dict(json.loads(json.dumps(fresh.state_dict())))
    assert restored.best == float("inf") and restored.lr == 1e-3
    half = tr.ReduceLROnPlateau(1e-3, factor=0.3, patience=2, cooldown=1)
    for m in METRICS[:7]:
        half.step(m)
    restored.load_state_dict(json.loads(json.dumps(half.state_dict())))
    np.testing.assert_allclose([restored.step(m) for m in METRICS[7:]], TORCH_LRS[7:], rtol=1e-12)


def test_early_stopping_matches_reference():
    stopper = tr.EarlyStopping(patience=3)
    assert [stopper.step(m) for m in METRICS] == REFERENCE_STOPS
    zero = tr.EarlyStopping(patience=0)  # the reference stops at the second epoch
    assert [zero.step(m) for m in METRICS[:4]] == [False, True, True, True]
    assert tr.EarlyStopping(patience=3).step(1.0) is False
    nan = tr.EarlyStopping(patience=3)
    nan.step(1.0)
    assert nan.step(float("nan")) is True


def test_adam_with_weight_decay_matches_torch():
    # the calls Trainer makes (zero_grad, backward, weight_decay, update) against torch's
    # Adam(lr=0.1, weight_decay=0.01) on sum(c * (p - t)^2), 5 steps
    import nnabla.functions as F
    import nnabla.solvers as S

    p = nn.Variable.from_numpy_array(np.array([1.0, -2.0, 0.5], np.float32), need_grad=True)
    t = nn.Variable.from_numpy_array(np.array([0.3, 0.1, -0.4], np.float32))
    c = nn.Variable.from_numpy_array(np.array([1.0, 2.0, 3.0], np.float32))
    loss = F.sum(F.squared_error(p, t) * c)
    solver = S.Adam(alpha=0.1)
    solver.set_parameters({"p": p})
    for _ in range(5):
        loss.forward()
        solver.zero_grad()
        loss.backward()
        solver.weight_decay(0.01)
        solver.update()
    np.testing.assert_allclose(p.d, [0.5144957900047302, -1.502774953842163, 0.009451113641262054], atol=2e-6)


# -- steps --------------------------------------------------------------------------------------------
def one_batch(root, nb_channels=2):
    train_ds, _ = load_datasets("aligned", root, "vocals", seq_duration=0.5, valid_tracks=["track0"])
    mags = tr.MagnitudeDataset(train_ds, 512, 128, nb_channels)
    pairs = [mags.get(i, 0) for i in range(2)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_magnitude_dataset_is_the_training_stft(aligned_root):
    train_ds, _ = load_datasets("aligned", aligned_root, "vocals", seq_duration=0.5, valid_tracks=["track0"])
    x, y = train_ds.get(1, 3)
    X, Y = tr.MagnitudeDataset(train_ds, 512, 128, 2).get(1, 3)
    assert X.shape == Y.shape == (2, 257, transforms.nb_frames_for(4000, 512, 128, center=False))
    np.testing.assert_allclose(X, np.abs(transforms.stft(x, 512, 128, center=False)), rtol=1e-6)
    Xm, _ = tr.MagnitudeDataset(train_ds, 512, 128, 1).get(1, 3)  # mono: mean of the channel magnitudes
    np.testing.assert_allclose(Xm[0], X.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("nb_channels,nb_layers", [(2, 2), (1, 1)])
def test_loss_falls_on_one_batch(aligned_root, nb_channels, nb_layers):
    x, y = one_batch(aligned_root, nb_channels)
    model = OpenUnmix(ModelConfig(nb_bins=257, nb_channels=nb_channels, hidden_size=16, nb_layers=nb_layers))
    trainer = tr.Trainer(model, lr=0.01, weight_decay=1e-5)
    losses = [trainer.train_step(x, y) for _ in range(25)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


def test_nan_batch_changes_nothing(aligned_root):
    x, y = one_batch(aligned_root)
    model = OpenUnmix(ModelConfig(nb_bins=257, nb_channels=2, hidden_size=8, nb_layers=2))
    trainer = tr.Trainer(model)
    trainer.train_step(x, y)
    before = model.get_params()
    y[0, 0, 5, 3] = np.nan
    with pytest.raises(tr.NonFiniteLoss, match="nan"):
        trainer.train_step(x, y)
    after = model.get_params()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # running statistics included


def test_track_loss_in_windows_equals_one_pass(aligned_root):
    model = OpenUnmix(ModelConfig(nb_bins=257, nb_channels=2, hidden_size=8, nb_layers=2), seed=3)
    x, _ = sf.read(aligned_root / "train" / "track0" / "mixture.wav", dtype="float32", always_2d=True)
    y, _ = sf.read(aligned_root / "train" / "track0" / "vocals.wav", dtype="float32", always_2d=True)
    x, y = x.T, y.T
    X = np.abs(transforms.stft(x[None], 512, 128, center=False))
    Y = np.abs(transforms.stft(y[None], 512, 128, center=False))
    expected = np.mean((model(X).astype(np.float64) - Y) ** 2)
    assert X.shape[-1] > 20
    assert tr.track_loss(model, x, y, 512, 128, 2, window=20) == pytest.approx(expected, rel=1e-5)


def test_sigint_is_held_while_writing():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with tr._sigint_held():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("wrote everything")
    assert done == ["wrote everything"]


# -- whole runs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["musdb", "aligned", "sourcefolder", "trackfolder_fix", "trackfolder_var"])
def test_every_dataset_type_trains_into_a_model_folder(tmp_path, kind):
    out = tmp_path / "model"
    result = tr.train(options(output=str(out), **make_dataset(kind, tmp_path / "data")))
    assert result.stopped == "completed" and result.epochs_trained == 2 and result.target == "vocals"
    assert len(result.train_losses) == len(result.valid_losses) == 2
    assert np.all(np.isfinite(result.train_losses + result.valid_losses))
    for name in ("separator.json", "vocals.h5", "vocals.json", "vocals.chkpnt.h5", "vocals.solver.h5",
                 "vocals_loss.png"):
        assert (out / name).is_file(), name
    history = json.loads((out / "vocals.json").read_text())
    assert history["valid_loss_history"] == result.valid_losses
    assert history["best_loss"] == min(result.valid_losses)
    assert result.valid_losses[history["best_epoch"] - 1] == history["best_loss"]
    assert history["lr_history"] == [1e-3, 1e-3] and len(history["train_time_history"]) == 2
    assert history["args"]["dataset"] == kind and history["args"]["nfft"] == 512
    meta = read_separator_json(out)
    assert meta["targets"] == ["vocals"] and meta["sample_rate"] == RATE and meta["n_fft"] == 512


def test_output_folder_separates(trained, aligned_root):
    import unmix

    out, result = trained
    # <target>.h5 holds the best epoch's weights
    model = load_target(out, "vocals")
    assert model.config == ModelConfig(nb_bins=257, nb_channels=2, hidden_size=8, nb_layers=1)
    mag = np.random.default_rng(0).uniform(0, 1, (1, 2, 257, 9)).astype(np.float32)
    assert model(mag).shape == mag.shape and np.all(np.isfinite(model(mag)))
    audio, rate = sf.read(aligned_root / "train" / "track0" / "mixture.wav", dtype="float32", always_2d=True)
    estimates = unmix.separate(audio.T, rate, model=str(out), niter=0, backend="nnabla")
    assert list(estimates) == ["vocals"] and estimates["vocals"].shape == audio.T.shape
    assert np.all(np.isfinite(estimates["vocals"])) and np.abs(estimates["vocals"]).max() > 0


def test_resume_continues_the_same_curve(tmp_path, aligned_root, monkeypatch):
    common = dict(dataset="aligned", root=str(aligned_root), valid_tracks=["track0"], nb_layers=2, epochs=3)
    full = tr.train(options(output=str(tmp_path / "full"), **common))

    # the same run, interrupted by Ctrl-C in the middle of epoch 2, then resumed
    calls = []
    real_step = tr.Trainer.train_step

    def interrupted(self, x, y):
        calls.append(1)
        if len(calls) == 4:  # 2 tracks x 2 samples in batches of 2: the 2nd batch of epoch 2
            raise KeyboardInterrupt
        return real_step(self, x, y)

    monkeypatch.setattr(tr.Trainer, "train_step", interrupted)
    cut = tr.train(options(output=str(tmp_path / "cut"), **common))
    monkeypatch.setattr(tr.Trainer, "train_step", real_step)
    assert cut.stopped == "interrupted" and cut.epochs_trained == 1
    assert json.loads((tmp_path / "cut" / "vocals.json").read_text())["epochs_trained"] == 1

    # resumed in place, with data-loading workers this time (samples do not depend on them)
    resumed = tr.train(options(output=str(tmp_path / "cut"), checkpoint=str(tmp_path / "cut"), nb_workers=2,
                               **common))
    assert resumed.stopped == "completed" and resumed.epochs_trained == 3
    assert resumed.train_losses == full.train_losses  # identical: seeded data, dropout and solver state
    assert resumed.valid_losses == full.valid_losses
    for name in ("vocals.chkpnt.h5", "vocals.h5"):
        a, b = read_h5_params(tmp_path / "full" / name), read_h5_params(tmp_path / "cut" / name)
        assert all(np.array_equal(a[k], b[k]) for k in a), name
    history = json.loads((tmp_path / "cut" / "vocals.json").read_text())
    assert history["epochs_trained"] == 3 and len(history["lr_history"]) == 3

    # a finished training resumed into another folder with the same --epochs trains no more,
    # and that folder gets the checkpoint and the best weights
    moved = tr.train(options(output=str(tmp_path / "moved"), checkpoint=str(tmp_path / "cut"), **common))
    assert moved.epochs_trained == 3 and moved.train_losses == full.train_losses
    assert load_target(tmp_path / "moved", "vocals").config.nb_layers == 2
    assert json.loads((tmp_path / "moved" / "vocals.json").read_text())["valid_loss_history"] == full.valid_losses


def test_nan_in_the_data_stops_with_a_clear_error(tmp_path, capsys):
    root = tmp_path / "data"
    make_dataset("aligned", root)
    vocals = sources(1)["vocals"]
    vocals[:, ::1000] = np.nan  # a training track's target, in every chunk
    write(root / "train" / "track1" / "vocals.wav", vocals)
    out = tmp_path / "model"
    argv = ["train", "--dataset", "aligned", "--root", str(root), "--valid-tracks", "track0", "--output", str(out),
            "--hidden-size", "8", "--nb-layers", "1", "--nfft", "512", "--nhop", "128", "--seq-dur", "0.5",
            "--batch-size", "1", "--samples-per-track", "1", "--epochs", "2", "--quiet"]
    assert cli.main(argv) == 1
    message = capsys.readouterr().err
    assert "nan" in message.lower() and "epoch 1" in message and message.count("\n") == 1
    assert not (out / "vocals.h5").exists()  # never a best model from NaN weights
    params = read_h5_params(out / "vocals.chkpnt.h5")  # the initial checkpoint, intact
    assert all(np.all(np.isfinite(v)) for v in params.values())


def test_cli_train_refuses_to_clobber_and_fine_tunes(tmp_path, trained, aligned_root, capsys):
    out, _ = trained
    base = ["train", "--dataset", "aligned", "--root", str(aligned_root), "--valid-tracks", "track0",
            "--nfft", "512", "--nhop", "128", "--seq-dur", "0.5", "--batch-size", "2", "--samples-per-track", "2",
            "--quiet"]
    assert cli.main(base + ["--output", str(out), "--epochs", "1"]) == 1
    assert "already holds a training" in capsys.readouterr().err
    # fine-tune: architecture from the folder, no new statistics; lr 0 leaves the weights as they were
    tuned = tmp_path / "tuned"
    assert cli.main(base + ["--output", str(tuned), "--model", str(out), "--epochs", "1", "--lr", "0",
                            "--weight-decay", "0", "--hidden-size", "64"]) == 0
    source, result = read_h5_params(out / "vocals.h5"), read_h5_params(tuned / "vocals.h5")
    for name in ("fc1/affine/W", "input_mean", "input_scale", "lstm/lstm/weight_l0"):
        np.testing.assert_array_equal(source[name], result[name])
    history = json.loads((tuned / "vocals.json").read_text())
    assert history["fine_tuned_from"] == str(out) and history["config"]["hidden_size"] == 8


def test_targets_share_one_model_folder(tmp_path):
    root = tmp_path / "data"
    common = make_dataset("musdb", root)
    out = tmp_path / "model"
    tr.train(options(output=str(out), epochs=1, **common))
    tr.train(options(output=str(out), epochs=1, **{**common, "target": "bass"}))
    meta = read_separator_json(out)
    assert meta["targets"] == ["vocals", "bass"]
    assert {t: load_target(out, t).config.hidden_size for t in meta["targets"]} == {"vocals": 8, "bass": 8}
    with pytest.raises(UnmixError, match="n_fft"):  # a folder holds one STFT
        tr.train(options(output=str(out), epochs=1, **{**common, "target": "drums", "nfft": 256, "nhop": 64}))


def test_solver_state_round_trip_is_exact(tmp_path, aligned_root):
    # nnabla 1.39's Solver.load_states gives lstm/lstm/weight the moments of lstm/lstm/weight_l0
    x, y = one_batch(aligned_root)
    model = OpenUnmix(ModelConfig(nb_bins=257, nb_channels=2, hidden_size=8, nb_layers=3))
    trainer = tr.Trainer(model)
    for _ in range(2):
        trainer.train_step(x, y)
    trainer.save_solver(tmp_path / "solver.h5")
    other = tr.Trainer(OpenUnmix(model.config, model.get_params()))
    other.load_solver(tmp_path / "solver.h5")
    saved, loaded = trainer.solver.get_states(), other.solver.get_states()
    assert list(saved) == list(loaded) and "lstm/lstm/weight" in saved
    for name, state in saved.items():
        assert loaded[name].t == state.t == 2
        for key, var in state.pstate.items():
            np.testing.assert_array_equal(loaded[name].pstate[key].d, var.d, err_msg=f"{name}/{key}")
    with pytest.raises(UnmixError, match="solver state"):
        tr.Trainer(OpenUnmix(ModelConfig(nb_bins=257, hidden_size=16, nb_layers=3))).load_solver(tmp_path / "solver.h5")


def test_context_errors_are_clear(monkeypatch):
    assert tr._setup_context("cpu") is None
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # under mpirun: data parallel needs the CUDA extension
    with pytest.raises(UnmixError, match="cudnn"):
        tr._setup_context("cpu")
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    try:
        import nnabla_ext.cuda  # noqa: F401
    except ImportError:
        with pytest.raises(UnmixError, match="nnabla-ext-cuda"):
            tr._setup_context("cudnn")


def test_resumed_early_stopping_keeps_progress_but_takes_the_new_patience():
    stopped = tr.EarlyStopping(patience=3)
    for loss in [1.0, 1.1, 1.2, 1.3]:
        stopped.step(loss)
    assert stopped.num_bad_epochs == 3
    resumed = tr.EarlyStopping(patience=200)  # the user resumes with a larger --patience
    resumed.load_state_dict(json.loads(json.dumps(stopped.state_dict())))
    assert (resumed.best, resumed.num_bad_epochs, resumed.patience) == (1.0, 3, 200)
    assert resumed.step(1.4) is False and resumed.num_bad_epochs == 4


def test_sigterm_stops_like_ctrl_c_with_a_usable_checkpoint(tmp_path, aligned_root, monkeypatch):
    import os
    import signal

    calls = []
    real_step = tr.Trainer.train_step

    def terminated(self, x, y):
        calls.append(1)
        if len(calls) == 4:  # the 2nd batch of epoch 2, as a cluster's time limit would
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, x, y)

    monkeypatch.setattr(tr.Trainer, "train_step", terminated)
    result = tr.train(options(output=str(tmp_path / "out"), dataset="aligned", root=str(aligned_root),
                              valid_tracks=["track0"], epochs=3))
    assert result.stopped == "interrupted" and result.epochs_trained == 1
    assert json.loads((tmp_path / "out" / "vocals.json").read_text())["epochs_trained"] == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored after the run
