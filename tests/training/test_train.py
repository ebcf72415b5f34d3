"""unmix.training.train: the start from the statistics, steps, checkpoints and resume, every dataset type, the CLI.

Tiny models (hidden 8, n_fft 512) on synthetic 8 kHz folders made in tmp_path, so every run
takes well under a second per epoch.
"""
import json
import os
import signal
from types import SimpleNamespace

import nnabla as nn
import numpy as np
import pytest
import soundfile as sf
from songs import RATE, make_dataset, sources, write

from unmix import cli
from unmix.dsp import transforms
from unmix.training import train
from unmix.training import processes, validation
from unmix.training.options import TrainOptions
from unmix.training.trainer import NonFiniteLoss, Trainer
from unmix.training.datasets import load_datasets
from unmix.training.statistics import compute_statistics
from unmix.training.views import MagnitudeDataset
from unmix.errors import UnmixError
from unmix.models.nnabla_graph import ModelConfig, OpenUnmix, load_target, read_h5_params, read_separator_json

pytestmark = pytest.mark.nnabla

TINY = dict(hidden_size=8, nb_layers=1, nfft=512, nhop=128, seq_dur=0.5, batch_size=2, samples_per_track=2,
            epochs=2, quiet=True)


@pytest.fixture(scope="module")
def aligned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    make_dataset("aligned", root)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, aligned_root):
    """A model folder trained 2 epochs on the aligned dataset, and its result."""
    out = tmp_path_factory.mktemp("trained") / "model"
    result = train.train(TrainOptions(dataset="aligned", root=str(aligned_root), valid_tracks=["track0"],
                                      output=str(out), **TINY))
    return out, result


def options(**kw):
    return TrainOptions(**{**TINY, **kw})


# -- signal parameters and statistics -----------------------------------------------------------------
def test_bandwidth_to_max_bin_matches_reference():
    assert train.bandwidth_to_max_bin(44100, 4096, 16000) == 1487  # umxhq's max_bin
    assert train.bandwidth_to_max_bin(16000, 1024, 16000) == 513  # all bins
    assert train.bandwidth_to_max_bin(8000, 512, 2000) == 129  # 2000 Hz is bin 128 exactly


def test_model_starts_from_the_statistics(tmp_path, aligned_root):
    # epochs=0 writes the initial checkpoint only: the standardisation holds -mean and 1/std up to max_bin
    out = tmp_path / "m"
    result = train.train(options(dataset="aligned", root=str(aligned_root), valid_tracks=["track0"], output=str(out),
                              epochs=0, bandwidth=2000))
    assert result.epochs_trained == 0 and result.best_loss is None
    train_ds, _ = load_datasets("aligned", aligned_root, "vocals", seq_duration=0.5, valid_tracks=["track0"])
    mean, std = compute_statistics(train_ds, 512, 128)
    params = read_h5_params(out / "vocals.chkpnt.h5")
    np.testing.assert_allclose(params["input_mean"], -mean[:129], rtol=1e-6)
    np.testing.assert_allclose(params["input_scale"], 1 / std[:129], rtol=1e-6)
    history = json.loads((out / "vocals.json").read_text())
    assert history["config"]["max_bin"] == 129 and history["epochs_trained"] == 0


# -- solver ---------------------------------------------------------------------------------------
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
    mags = MagnitudeDataset(train_ds, 512, 128, nb_channels)
    pairs = [mags.get(i, 0) for i in range(2)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_magnitude_dataset_is_the_training_stft(aligned_root):
    train_ds, _ = load_datasets("aligned", aligned_root, "vocals", seq_duration=0.5, valid_tracks=["track0"])
    x, y = train_ds.get(1, 3)
    X, Y = MagnitudeDataset(train_ds, 512, 128, 2).get(1, 3)
    assert X.shape == Y.shape == (2, 257, transforms.nb_frames_for(4000, 512, 128, center=False))
    np.testing.assert_allclose(X, np.abs(transforms.stft(x, 512, 128, center=False)), rtol=1e-6)
    Xf, Yf = MagnitudeDataset(train_ds, 512, 128, 2, frames_first=True).get(1, 3)  # the CPU trainer's layout
    np.testing.assert_array_equal(Xf, X.transpose(0, 2, 1))
    np.testing.assert_array_equal(Yf, Y.transpose(0, 2, 1))
    Xm, _ = MagnitudeDataset(train_ds, 512, 128, 1).get(1, 3)  # mono: mean of the channel magnitudes
    np.testing.assert_allclose(Xm[0], X.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("nb_channels,nb_layers", [(2, 2), (1, 1)])
def test_loss_falls_on_one_batch(aligned_root, nb_channels, nb_layers):
    x, y = one_batch(aligned_root, nb_channels)
    model = OpenUnmix(ModelConfig(nb_bins=257, nb_channels=nb_channels, hidden_size=16, nb_layers=nb_layers))
    trainer = Trainer(model, lr=0.01, weight_decay=1e-5)
    losses = [trainer.train_step(x, y) for _ in range(25)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


def test_nan_batch_changes_nothing(aligned_root):
    x, y = one_batch(aligned_root)
    model = OpenUnmix(ModelConfig(nb_bins=257, nb_channels=2, hidden_size=8, nb_layers=2))
    trainer = Trainer(model)
    trainer.train_step(x, y)
    before = model.get_params()
    y[0, 0, 5, 3] = np.nan
    with pytest.raises(NonFiniteLoss, match="nan"):
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
    assert validation.track_loss(model, x, y, 512, 128, 2, window=20) == pytest.approx(expected, rel=1e-5)


def test_validation_sessions_take_the_blas_thread_count(monkeypatch):
    """Four trainings side by side with OPENBLAS_NUM_THREADS=1 validated 4x slower than they trained
    while ONNX Runtime sessions took every core each: validation follows the BLAS's threads."""
    from threadpoolctl import threadpool_limits

    from unmix.training import recipes

    with threadpool_limits(1, user_api="blas"):
        assert validation.blas_threads() == 1
    made = []
    monkeypatch.setattr(recipes, "OnnxModel", lambda model, nb_threads=None: made.append(nb_threads))
    monkeypatch.setattr(validation, "validation_sums", lambda *args: (6.0, 3))
    model = OpenUnmix(ModelConfig(nb_bins=257, nb_channels=2, hidden_size=8, nb_layers=1), seed=3)
    run = SimpleNamespace(options=TrainOptions(valid_backend="onnx"), recipe=recipes.get("umx"), model=model,
                          valid_loader=None,
                          n_fft=512, n_hop=128, procs=SimpleNamespace(progress=False, comm=None))
    with threadpool_limits(1, user_api="blas"):
        assert train.validate(run) == 2.0
    assert made == [1]


# -- whole runs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["musdb", "aligned", "sourcefolder", "trackfolder_fix", "trackfolder_var"])
def test_every_dataset_type_trains_into_a_model_folder(tmp_path, kind):
    out = tmp_path / "model"
    result = train.train(options(output=str(out), **make_dataset(kind, tmp_path / "data")))
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
    full = train.train(options(output=str(tmp_path / "full"), **common))

    # the same run, interrupted by Ctrl-C in the middle of epoch 2, then resumed
    calls = []
    real_step = Trainer.train_step

    def interrupted(self, x, y):
        calls.append(1)
        if len(calls) == 4:  # 2 tracks x 2 samples in batches of 2: the 2nd batch of epoch 2
            raise KeyboardInterrupt
        return real_step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    cut = train.train(options(output=str(tmp_path / "cut"), **common))
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert cut.stopped == "interrupted" and cut.epochs_trained == 1
    assert json.loads((tmp_path / "cut" / "vocals.json").read_text())["epochs_trained"] == 1

    # resumed in place, with data-loading workers this time (samples do not depend on them)
    resumed = train.train(options(output=str(tmp_path / "cut"), checkpoint=str(tmp_path / "cut"), nb_workers=2,
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
    moved = train.train(options(output=str(tmp_path / "moved"), checkpoint=str(tmp_path / "cut"), **common))
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


def test_a_second_run_of_a_target_into_a_folder_being_trained_is_refused(tmp_path, aligned_root, capsys):
    from unmix.training.checkpoint import lock_training

    out = tmp_path / "model"
    common = dict(dataset="aligned", root=str(aligned_root), valid_tracks=["track0"], output=str(out), epochs=0)
    message = (f"{out} is being trained for 'vocals' by another process (pid {os.getpid()}); "
               "wait for it or choose another --output")
    with lock_training(out, "vocals"):  # the first run, as `setup` takes it
        with pytest.raises(UnmixError) as refused:
            train.train(options(**common))
        assert str(refused.value) == message
        with pytest.raises(UnmixError, match="being trained"):
            train.train(options(**common, force=True))  # --force replaces files, not a running training
        assert cli.main(["train", "--dataset", "aligned", "--root", str(aligned_root), "--valid-tracks", "track0",
                         "--output", str(out), "--seq-dur", "0.5", "--quiet"]) == 1
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"
        assert [p.name for p in out.iterdir()] == [".vocals.lock"]  # nothing written
    train.train(options(**common))  # free again; the run removes its lock file when it ends
    assert sorted(p.name for p in out.iterdir()) == ["separator.json", "vocals.chkpnt.h5", "vocals.h5", "vocals.json",
                                                      "vocals.solver.h5"]
    fresh = tmp_path / "fresh"
    with pytest.raises(UnmixError, match="no checkpoint"):  # setup fails after taking the lock
        train.train(options(**{**common, "output": str(fresh), "checkpoint": str(tmp_path / "none")}))
    assert not fresh.exists()  # the folder the lock made goes with it


def test_targets_share_one_model_folder(tmp_path):
    root = tmp_path / "data"
    common = make_dataset("musdb", root)
    out = tmp_path / "model"
    train.train(options(output=str(out), epochs=1, **common))
    train.train(options(output=str(out), epochs=1, **{**common, "target": "bass"}))
    meta = read_separator_json(out)
    assert meta["targets"] == ["vocals", "bass"]
    assert {t: load_target(out, t).config.hidden_size for t in meta["targets"]} == {"vocals": 8, "bass": 8}
    with pytest.raises(UnmixError, match="n_fft"):  # a folder holds one STFT
        train.train(options(output=str(out), epochs=1, **{**common, "target": "drums", "nfft": 256, "nhop": 64}))


def test_solver_state_round_trip_is_exact(tmp_path, aligned_root):
    # nnabla 1.39's Solver.load_states gives lstm/lstm/weight the moments of lstm/lstm/weight_l0
    x, y = one_batch(aligned_root)
    model = OpenUnmix(ModelConfig(nb_bins=257, nb_channels=2, hidden_size=8, nb_layers=3))
    trainer = Trainer(model)
    for _ in range(2):
        trainer.train_step(x, y)
    trainer.save_solver(tmp_path / "solver.h5")
    other = Trainer(OpenUnmix(model.config, model.get_params()))
    other.load_solver(tmp_path / "solver.h5")
    saved, loaded = trainer.solver.get_states(), other.solver.get_states()
    assert list(saved) == list(loaded) and "lstm/lstm/weight" in saved
    for name, state in saved.items():
        assert loaded[name].t == state.t == 2
        for key, var in state.pstate.items():
            np.testing.assert_array_equal(loaded[name].pstate[key].d, var.d, err_msg=f"{name}/{key}")
    with pytest.raises(UnmixError, match="solver state"):
        Trainer(OpenUnmix(ModelConfig(nb_bins=257, hidden_size=16, nb_layers=3))).load_solver(tmp_path / "solver.h5")


def test_context_errors_are_clear(monkeypatch):
    assert processes.setup_context("cpu") is None
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # under mpirun: data parallel needs the CUDA extension
    with pytest.raises(UnmixError, match="cudnn"):
        processes.setup_context("cpu")
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    try:
        import nnabla_ext.cuda  # noqa: F401
    except ImportError:
        with pytest.raises(UnmixError, match="nnabla-ext-cuda"):
            processes.setup_context("cudnn")


def test_sigterm_stops_like_ctrl_c_with_a_usable_checkpoint(tmp_path, aligned_root, monkeypatch):
    import os
    import signal

    calls = []
    real_step = Trainer.train_step

    def terminated(self, x, y):
        calls.append(1)
        if len(calls) == 4:  # the 2nd batch of epoch 2, as a cluster's time limit would
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", terminated)
    result = train.train(options(output=str(tmp_path / "out"), dataset="aligned", root=str(aligned_root),
                              valid_tracks=["track0"], epochs=3))
    assert result.stopped == "interrupted" and result.epochs_trained == 1
    assert json.loads((tmp_path / "out" / "vocals.json").read_text())["epochs_trained"] == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored after the run


def test_epochs_0_writes_a_model_folder_that_separates(tmp_path, aligned_root, capsys):
    import unmix

    out = tmp_path / "model"
    argv = ["train", "--dataset", "aligned", "--root", str(aligned_root), "--valid-tracks", "track0", "--output", str(out),
            "--hidden-size", "8", "--nb-layers", "1", "--nfft", "512", "--nhop", "128", "--seq-dur", "0.5",
            "--batch-size", "2", "--samples-per-track", "2", "--epochs", "0"]
    assert cli.main(argv) == 0
    said = capsys.readouterr().out
    assert f"model folder {out} (no epoch trained: the initial weights)" in said
    initial, model = read_h5_params(out / "vocals.chkpnt.h5"), read_h5_params(out / "vocals.h5")
    assert list(initial) == list(model) and all(np.array_equal(initial[k], model[k]) for k in initial)
    assert read_separator_json(out)["targets"] == ["vocals"] and not (out / "vocals_loss.png").exists()
    audio, rate = sf.read(aligned_root / "train" / "track0" / "mixture.wav", dtype="float32", always_2d=True)
    estimates = unmix.separate(audio.T, rate, model=str(out), niter=0, backend="nnabla")
    assert estimates["vocals"].shape == audio.T.shape and np.all(np.isfinite(estimates["vocals"]))


def test_force_leaves_nothing_of_the_old_training_of_its_target(tmp_path, monkeypatch, capsys):
    from conftest import make_model_folder

    import unmix

    root = tmp_path / "data"
    common = make_dataset("musdb", root)
    out = tmp_path / "model"
    train.train(options(output=str(out), epochs=1, **common))
    train.train(options(output=str(out), epochs=1, **{**common, "target": "bass"}))
    bass = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("bass")}
    assert len(bass) == 5

    def interrupted(self, x, y):  # Ctrl-C in the first batch: the new run finishes no epoch
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    argv = ["train", "--dataset", "musdb", "--root", str(root), "--is-wav", "--valid-tracks", "track0",
            "--output", str(out), "--hidden-size", "8", "--nb-layers", "1", "--nfft", "512", "--nhop", "128",
            "--seq-dur", "0.5", "--batch-size", "2", "--samples-per-track", "2", "--seed", "7", "--quiet"]
    assert cli.main(argv) == 1  # without --force
    assert "already holds a training of 'vocals'" in capsys.readouterr().err
    assert cli.main(argv + ["--force"]) == 130
    assert f"checkpoint in {out} (no model weights yet)" in capsys.readouterr().err
    assert not (out / "vocals.h5").exists() and not (out / "vocals_loss.png").exists()
    history = json.loads((out / "vocals.json").read_text())
    assert history["epochs_trained"] == 0 and history["args"]["seed"] == 7  # the new run's checkpoint
    assert read_separator_json(out)["targets"] == ["bass"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("bass")} == bass
    audio = sources(0)["vocals"].astype(np.float32)
    assert list(unmix.separate(audio, RATE, model=str(out), niter=0, backend="nnabla")) == ["bass"]

    # a folder holding only the weights of the target (a converted model) is not overwritten either
    converted = make_model_folder(tmp_path / "converted", targets=["vocals"])
    with pytest.raises(UnmixError, match="already holds a model of 'vocals': pass --force"):
        train.train(options(output=str(converted), **common))


def test_ctrl_c_inside_the_cpu_graph_ends_the_step_then_interrupts(aligned_root, monkeypatch):
    # a KeyboardInterrupt raised inside an NNabla PythonFunction comes out as a SystemError
    from unmix.models import fast_ops

    x, y = (np.ascontiguousarray(a.transpose(0, 1, 3, 2)) for a in one_batch(aligned_root))
    model = OpenUnmix(ModelConfig(nb_bins=257, nb_channels=2, hidden_size=8, nb_layers=2))
    trainer = Trainer(model, fast=True)
    before = model.get_params()["fc3/affine/W"]
    forward = fast_ops.MaskMSE.forward_impl

    def interrupted(self, inputs, outputs):
        os.kill(os.getpid(), signal.SIGINT)
        return forward(self, inputs, outputs)

    monkeypatch.setattr(fast_ops.MaskMSE, "forward_impl", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_step(x, y)
    assert trainer.solver.states["fc3/affine/W"].t == 1  # the step was completed first
    assert not np.array_equal(model.get_params()["fc3/affine/W"], before)
