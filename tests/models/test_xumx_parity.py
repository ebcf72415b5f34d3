"""X-UMX against asteroid 0.7 (fixtures of tools/fixtures/make_xumx_fixtures.py; no torch needed here).

The asteroid package (random weights, stereo, 2049 bins, max_bin 1487, hidden size 8) is
converted by `unmix convert` with the torch-free reader; its masks must match asteroid's
``forward_masker`` within 1e-4 of their maximum, and a niter-0 separation (mixture phase)
asteroid's masks through open-unmix's STFT/ISTFT at least 60 dB below the signal. Sony's
``x-umx.h5`` layout is checked by writing those same weights under Sony's names.
"""
from pathlib import Path

import h5py
import numpy as np
import pytest

from unmix.cli import main
from unmix.weights.convert import convert
from unmix.errors import UnmixError
from unmix.models.model_folder import load_params, read_separator_json
from unmix.separation.separator import load_separator
from conftest import FIXTURES

PACKAGE = FIXTURES / "xumx_asteroid.pth"
BACKENDS = ["onnx", pytest.param("nnabla", marks=pytest.mark.nnabla)]


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURES / "xumx_reference.npz"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("xumx") / "model"
    assert main(["convert", str(PACKAGE), str(out)]) == 0
    return out


def snr_db(reference, estimate):
    return 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((estimate - reference) ** 2.0))


def masks_of(separator, mag):
    """Each source's mask: its decoder on the mixture's features, times a magnitude of ones."""
    network = next(iter(separator.models.values()))
    bridged = network.recur(network.encode(mag))
    return {s: network.decode(bridged, np.ones_like(mag), s) for s in network.targets}


def test_conversion_keeps_sources_order_signal_and_architecture(converted):
    meta = read_separator_json(converted)
    assert meta["architecture"] == "xumx"
    assert meta["targets"] == ["bass", "drums", "vocals", "other"]
    assert (meta["sample_rate"], meta["n_fft"], meta["n_hop"], meta["nb_channels"]) == (44100.0, 4096, 1024, 2)
    config, params = load_params(converted, "vocals")
    assert (config.nb_bins, config.max_bin, config.hidden_size, config.nb_layers) == (2049, 1487, 8, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_match_asteroid(converted, reference, backend):
    separator = load_separator(converted, niter=0, backend=backend, nb_threads=1)
    mag = reference["mag"].transpose(1, 2, 3, 0)  # (nb_frames, 1, 2, 2049) -> (1, 2, 2049, nb_frames)
    masks = masks_of(separator, mag)
    for j, source in enumerate(reference["sources"]):
        ref = reference["masks"][j].transpose(1, 2, 3, 0)
        assert (ref == 0).mean() > 0.1 and (ref > 0).mean() > 0.5  # the relu clips some bins, not all
        assert np.abs(masks[source] - ref).max() <= 1e-4 * np.abs(ref).max(), source


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("win", [4, None])  # windows shorter than the track, and the whole track at once
def test_niter0_separation_matches_asteroid_masks_with_mixture_phase(converted, reference, backend, win):
    separator = load_separator(converted, niter=0, wiener_win_len=win, backend=backend, nb_threads=1)
    estimates = separator(reference["audio"])
    for j, source in enumerate(reference["sources"]):
        assert snr_db(reference["estimates"][j], estimates[source]) > 60, source


def test_a_subset_of_targets_gives_the_same_estimates(converted, reference):
    full = load_separator(converted, niter=0, wiener_win_len=4, nb_threads=1)(reference["audio"])
    part = load_separator(converted, targets=["vocals"], niter=0, wiener_win_len=4, nb_threads=1)(reference["audio"])
    assert list(part) == ["vocals"]
    np.testing.assert_allclose(part["vocals"], full["vocals"], rtol=0, atol=1e-6)


# -- Sony's x-umx.h5 layout ------------------------------------------------------------------
def sony_names(params, source):
    """One source's parameters (unmix names) under the names Sony's x-umx/model.py gives them:
    root-level ``input_mean_<source>``; ``fc<k>_<source>/affine/W`` and ``fc<k>_<source>/bn/*``
    (its fc_bn puts affine and batch norm in one scope, the batch norm over axis 2 of a 3-D
    input: shape (1, 1, size)); ``lstm_<source>/lstm/*`` of PF.lstm."""
    out = {}
    for name, value in params.items():
        if "/" not in name:
            out[f"{name}_{source}"] = value
        elif name.startswith("bn"):
            k, leaf = name[2], name.rsplit("/", 1)[1]
            out[f"fc{k}_{source}/bn/{leaf}"] = value.reshape(1, 1, -1)
        else:
            layer, _, rest = name.partition("/")
            out[f"{layer}_{source}/{rest}"] = value
    return out


def write_sony_h5(path, folder):
    with h5py.File(path, "w") as f:
        index = 0
        for source in read_separator_json(folder)["targets"]:
            for name, value in sony_names(load_params(folder, source)[1], source).items():
                f[name] = value
                f[name].attrs["index"] = index
                index += 1
        f["conv_cos"] = np.zeros((3, 1, 4), np.float32)  # Sony's ISTFT kernels (nnabla <= 1.15): not weights


def test_sony_h5_layout_converts_to_the_same_model(converted, tmp_path):
    write_sony_h5(tmp_path / "x-umx.h5", converted)
    out = convert(tmp_path / "x-umx.h5", tmp_path / "from-sony")
    meta = read_separator_json(out)
    assert meta["architecture"] == "xumx" and meta["targets"] == ["bass", "drums", "vocals", "other"]
    for source in meta["targets"]:
        ours, theirs = load_params(out, source), load_params(converted, source)
        assert ours[0] == theirs[0]
        for name, value in theirs[1].items():
            np.testing.assert_array_equal(ours[1][name], value, err_msg=f"{source} {name}")


def test_xumx_is_converted_whole(converted, tmp_path):
    with pytest.raises(UnmixError, match="needs all its sources"):
        convert(PACKAGE, tmp_path / "part", targets=["vocals"])
    write_sony_h5(tmp_path / "x-umx.h5", converted)
    with h5py.File(tmp_path / "x-umx.h5", "a") as f:
        del f["fc3_other/affine/W"]
    with pytest.raises(UnmixError, match="X-UMX source 'other'.*missing fc3/affine/W"):
        convert(tmp_path / "x-umx.h5", tmp_path / "broken")
    assert not (tmp_path / "broken").exists()


def test_unknown_sony_names_are_refused(tmp_path):
    with h5py.File(tmp_path / "x-umx.h5", "w") as f:
        f["fc1_bass/affine/W"] = np.zeros((4, 2), np.float32)
        f["something_else"] = np.zeros(3, np.float32)
    with pytest.raises(UnmixError, match="unknown name something_else"):
        convert(tmp_path / "x-umx.h5", tmp_path / "out")
