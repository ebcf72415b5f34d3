"""`unmix train --architecture xumx`: the CPU graph of X-UMX's loss against the stock network and
the numpy losses, a tiny X-UMX trained on a synthetic MUSDB folder, resumed bit for bit after
Ctrl-C, and separating."""
import json

import nnabla as nn
import numpy as np
import pytest
import soundfile as sf
from songs import RATE, make_dataset

from unmix import cli
from unmix.dsp import transforms
from unmix.training import train as tr
from unmix.training import processes, validation
from unmix.training.datasets import load_datasets
from unmix.training.options import TrainOptions
from unmix.training.trainer import NonFiniteLoss, Trainer
from unmix.training.views import SourcesDataset, XumxDataset
from unmix.models.losses import multi_domain_loss
from unmix.models.nnabla_graph import CrossNet, ModelConfig, read_h5_params, read_separator_json

pytestmark = pytest.mark.nnabla

TINY = dict(architecture="xumx", dataset="musdb", is_wav=True, valid_tracks=["track0"], hidden_size=8, nb_layers=1,
            nfft=256, nhop=64, seq_dur=0.5, batch_size=2, samples_per_track=2, valid_dur=1.0, quiet=True)


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("musdb")
    make_dataset("musdb", root)
    return root


def test_xumx_dataset_arrays(musdb_root):
    train_ds, valid_ds = load_datasets("musdb", musdb_root, is_wav=True, seq_duration=0.5, samples_per_track=2,
                                       valid_tracks=["track0"])
    mix, real, imag, target_mag, target_time = XumxDataset(train_ds, 256, 64).get(1, epoch=3)
    x, stems = SourcesDataset(train_ds).get(1, epoch=3)
    assert stems.shape == (4, 2, 4000)
    np.testing.assert_allclose(x, stems.sum(0), atol=1e-6)  # the mixture is the sum of the augmented stems
    np.testing.assert_array_equal(x, train_ds.get(1, epoch=3)[0])  # the draws of the UMX dataset
    spec = transforms.stft(x, 256, 64, center=True, frames_first=True)
    assert mix.shape == (2, 63, 129) and target_mag.shape == (4, 2, 63, 129)
    np.testing.assert_allclose(real + 1j * imag, spec, atol=1e-6)
    np.testing.assert_allclose(mix, np.abs(spec), rtol=1e-6)
    bass = transforms.stft(stems[0], 256, 64, center=True, frames_first=True)
    np.testing.assert_allclose(target_mag[0], np.abs(bass), rtol=1e-5, atol=1e-6)  # bass first, as Sony's
    np.testing.assert_array_equal(target_time, stems[..., :62 * 64])
    x_valid, stems_valid = SourcesDataset(valid_ds).get(0)
    assert stems_valid.shape == (4,) + x_valid.shape


def test_crossnet_loss_matches_the_stock_network_and_the_formulas():
    rng = np.random.default_rng(0)
    n_fft, n_hop, nb_frames = 64, 16, 12
    config = ModelConfig(nb_bins=33, nb_channels=2, hidden_size=8, nb_layers=2, max_bin=20)
    audio = rng.normal(size=(2, 4, 2, (nb_frames - 1) * n_hop)).astype(np.float32)  # (N, S, C, L)
    spec = transforms.stft(audio.sum(1), n_fft, n_hop, center=True, frames_first=True)
    target_mag = np.abs(transforms.stft(audio, n_fft, n_hop, center=True, frames_first=True)).astype(np.float32)
    target_time = audio[..., :(nb_frames - 1) * n_hop]
    arrays = [np.abs(spec).astype(np.float32), spec.real, spec.imag, target_mag, target_time]

    fast = CrossNet(config, seed=3)
    inputs = [nn.Variable.from_numpy_array(a) for a in arrays]
    with nn.auto_forward(False):
        loss = fast.build_loss(*inputs, dropout=0.0, n_hop=n_hop)
    loss.forward()

    stock = CrossNet(config, fast.get_params())  # the stock graph, training mode (batch statistics)
    mag = nn.Variable.from_numpy_array(np.ascontiguousarray(np.swapaxes(arrays[0], -1, -2)))
    with nn.auto_forward(False):
        estimates = stock.build(mag, training=True, dropout=0.0)
    for v in estimates.values():
        v.forward()
    est_mag = np.stack([np.swapaxes(estimates[s].d, -1, -2) for s in stock.sources])  # (S, N, C, T, bins)
    est_time = transforms.istft(np.swapaxes(est_mag * np.exp(1j * np.angle(spec)), -1, -2), n_fft, n_hop,
                                length=(nb_frames - 1) * n_hop)
    want, _, _ = multi_domain_loss(est_mag, np.moveaxis(target_mag, 1, 0), est_time, np.moveaxis(target_time, 1, 0))
    np.testing.assert_allclose(float(loss.d), want, rtol=2e-5)


def test_xumx_trains_resumes_and_separates(tmp_path, musdb_root, monkeypatch):
    common = dict(root=str(musdb_root), epochs=2, **TINY)
    full = tr.train(TrainOptions(output=str(tmp_path / "full"), **common))
    assert full.stopped == "completed" and full.epochs_trained == 2 and full.has_model
    assert all(np.isfinite(full.train_losses)) and all(np.isfinite(full.valid_losses))
    history = json.loads((tmp_path / "full" / "xumx.json").read_text())
    assert history["architecture"] == "xumx" and history["sources"] == ["bass", "drums", "vocals", "other"]
    assert history["args"]["patience"] is None and (tmp_path / "full" / "xumx_loss.png").is_file()
    meta = read_separator_json(tmp_path / "full")
    assert meta["architecture"] == "xumx" and meta["targets"] == ["bass", "drums", "vocals", "other"]

    # Ctrl-C in epoch 2, then resumed in place: the curve and the weights of the uninterrupted run
    calls, real_step = [], Trainer.train_step

    def interrupted(self, *batch):
        calls.append(1)
        if len(calls) == 3:  # 2 tracks x 2 samples in batches of 2: the 1st batch of epoch 2
            raise KeyboardInterrupt
        return real_step(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    cut = tr.train(TrainOptions(output=str(tmp_path / "cut"), **common))
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert cut.stopped == "interrupted" and cut.epochs_trained == 1
    resumed = tr.train(TrainOptions(output=str(tmp_path / "cut"), checkpoint=str(tmp_path / "cut"), **common))
    assert resumed.epochs_trained == 2 and resumed.train_losses == full.train_losses
    assert resumed.valid_losses == full.valid_losses
    for name in ("xumx.chkpnt.h5", "vocals.h5", "bass.h5"):
        a, b = read_h5_params(tmp_path / "full" / name), read_h5_params(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name

    # the folder separates through the CLI, every source
    audio, rate = sf.read(musdb_root / "train" / "track0" / "mixture.wav", dtype="float32", always_2d=True)
    assert cli.main(["separate", str(musdb_root / "train" / "track0" / "mixture.wav"), "--model",
                     str(tmp_path / "full"), "--outdir", str(tmp_path / "sep"), "--niter", "0"]) == 0
    written = sorted(p.name for p in (tmp_path / "sep").rglob("*.wav"))
    assert written == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    vocals, vocals_rate = sf.read(next((tmp_path / "sep").rglob("vocals.wav")), always_2d=True)
    assert vocals_rate == RATE and vocals.shape == audio.shape and np.all(np.isfinite(vocals))


@pytest.mark.parametrize("flags,message", [
    (["--dataset", "aligned"], "--dataset musdb"),
    (["--model", "TINY_UMX"], "Open-Unmix model: fine-tune it with --architecture umx"),
    (["--context", "cudnn"], "cannot use the NNabla context 'cudnn' (is nnabla-ext-cuda installed?)")])
def test_unsupported_xumx_options_are_one_line_errors(tmp_path, musdb_root, tiny_model, capsys, flags, message):
    """--context cudnn is accepted for X-UMX: what fails here is the missing CUDA extension."""
    argv = ["train", "--architecture", "xumx", "--root", str(musdb_root), "--is-wav", "--output", str(tmp_path / "m"),
            "--seq-dur", "0.5", "--quiet"]
    assert cli.main(argv + [str(tiny_model) if f == "TINY_UMX" else f for f in flags]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def separates(folder, musdb_root, out):
    """Every source of `folder` separates a training mixture through the CLI (finite, right shape)."""
    mixture = musdb_root / "train" / "track0" / "mixture.wav"
    audio, _ = sf.read(mixture, dtype="float32", always_2d=True)
    assert cli.main(["separate", str(mixture), "--model", str(folder), "--outdir", str(out), "--niter", "0"]) == 0
    for source in ("bass", "drums", "other", "vocals"):
        estimate, rate = sf.read(next(out.rglob(f"{source}.wav")), always_2d=True)
        assert rate == RATE and estimate.shape == audio.shape and np.all(np.isfinite(estimate))
        assert np.abs(estimate).max() > 0


def test_xumx_fine_tunes_from_an_xumx_folder_and_separates(tmp_path, musdb_root):
    base = tr.train(TrainOptions(root=str(musdb_root), output=str(tmp_path / "base"), epochs=1, **TINY))
    start = read_h5_params(tmp_path / "base" / "vocals.h5")
    options = dict(root=str(musdb_root), model=str(tmp_path / "base"), **{**TINY, "hidden_size": 512})
    untouched = tr.train(TrainOptions(output=str(tmp_path / "zero"), epochs=0, **options))
    zero = read_h5_params(tmp_path / "zero" / "vocals.h5")
    assert base.has_model and untouched.has_model and all(np.array_equal(zero[k], start[k]) for k in start)
    tuned = tr.train(TrainOptions(output=str(tmp_path / "tuned"), epochs=1, **options))
    assert tuned.has_model and tuned.epochs_trained == 1
    history = json.loads((tmp_path / "tuned" / "xumx.json").read_text())
    assert history["fine_tuned_from"] == str(tmp_path / "base") and history["architecture"] == "xumx"
    assert history["config"]["hidden_size"] == 8  # the folder's network, whatever --hidden-size says
    after = read_h5_params(tmp_path / "tuned" / "vocals.h5")
    assert not np.array_equal(after["fc1/affine/W"], start["fc1/affine/W"])  # trained on
    separates(tmp_path / "tuned", musdb_root, tmp_path / "sep")


def test_mono_xumx_trains_and_separates(tmp_path, musdb_root):
    result = tr.train(TrainOptions(root=str(musdb_root), output=str(tmp_path / "mono"), epochs=1, nb_channels=1,
                                      **TINY))
    assert result.has_model and all(np.isfinite(result.train_losses + result.valid_losses))
    assert read_separator_json(tmp_path / "mono")["nb_channels"] == 1
    assert read_h5_params(tmp_path / "mono" / "bass.h5")["fc1/affine/W"].shape == (129, 8)  # one channel x every bin (8 kHz audio)
    separates(tmp_path / "mono", musdb_root, tmp_path / "sep")


def test_xumx_trains_with_the_stock_graph(tmp_path, musdb_root, monkeypatch):
    """--context cudnn builds the stock graph and NNabla's Adam; here on the CPU context (no GPU)."""
    monkeypatch.setattr(tr, "setup_context", lambda context: None)
    result = tr.train(TrainOptions(root=str(musdb_root), output=str(tmp_path / "gpu"), epochs=1, context="cudnn",
                                      **{**TINY, "seq_dur": 0.3}))
    assert result.has_model and np.isfinite(result.train_losses[0]) and np.isfinite(result.valid_losses[0])
    assert json.loads((tmp_path / "gpu" / "xumx.json").read_text())["args"]["context"] == "cudnn"


def test_epochs_zero_writes_a_model_folder_and_force_starts_over(tmp_path, musdb_root):
    out = tmp_path / "m"
    first = tr.train(TrainOptions(root=str(musdb_root), output=str(out), epochs=0, **TINY))
    assert first.epochs_trained == 0 and first.has_model
    before = read_h5_params(out / "drums.h5")
    with pytest.raises(tr.UnmixError, match="--force"):
        tr.train(TrainOptions(root=str(musdb_root), output=str(out), epochs=0, **TINY))
    again = tr.train(TrainOptions(root=str(musdb_root), output=str(out), epochs=0, force=True, seed=7, **TINY))
    assert again.has_model and read_separator_json(out)["architecture"] == "xumx"
    after, checkpoint = read_h5_params(out / "drums.h5"), read_h5_params(out / "xumx.chkpnt.h5")
    assert np.array_equal(after["fc1/affine/W"], checkpoint["drums/fc1/affine/W"])  # the new run's weights
    assert not np.array_equal(after["fc1/affine/W"], before["fc1/affine/W"])  # another seed: replaced


class OneOfTwo:
    """A data-parallel communicator as rank 0 of 2 processes whose partner computes the same:
    ``all_reduce`` with division leaves the arrays as they are, without it doubles them; records
    what was reduced."""

    rank, size, local_rank = 0, 2, 0

    def __init__(self):
        self.reduced = []

    def all_reduce(self, arrays, division=False, inplace=False):
        self.reduced.append(len(arrays))
        if not division:
            for a in arrays:
                a.data = a.data * 2

    def bcast(self, arrays, src=0, inplace=True):
        self.reduced.append(("bcast", len(arrays)))


def test_xumx_data_parallel_path(tmp_path, musdb_root, monkeypatch):
    """`mpirun -n 2 unmix train --architecture xumx --context cudnn`, as rank 0: the stock graph,
    half the batch per process, the initial weights broadcast, the loss and every gradient
    all-reduced per step, the validation sums reduced."""
    comm = OneOfTwo()
    monkeypatch.setattr(tr, "setup_context", lambda context: comm)
    result = tr.train(TrainOptions(root=str(musdb_root), output=str(tmp_path / "dp"), epochs=1, context="cudnn",
                                      **{**TINY, "seq_dur": 0.3, "batch_size": 2}))
    assert result.has_model and np.isfinite(result.train_losses[0]) and np.isfinite(result.valid_losses[0])
    tiny = CrossNet(ModelConfig(nb_bins=129, hidden_size=8, nb_layers=1))
    nb_params = len(tiny.trainable_parameters())  # every branch's, 15 each (one LSTM layer)
    assert nb_params == 60 and comm.reduced[0] == ("bcast", len(tiny.parameters))
    steps = 2 * 2 // 2  # 2 tracks x 2 samples, batches of 2 / 2 processes
    assert comm.reduced[1:] == [1, nb_params] * steps + [1]  # loss, gradients per step; the validation sums
    assert json.loads((tmp_path / "dp" / "xumx.json").read_text())["nb_processes"] == 2
