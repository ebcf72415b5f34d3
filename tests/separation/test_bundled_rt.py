"""The real-time model that ships with unmix (`--model bundled-rt`): causal, streamable, exact."""
import numpy as np

import unmix
from unmix.io import audio as audio_io
from unmix.models.model_folder import read_separator_json, target_config
from unmix.separation.demo import EXAMPLE_PATH
from unmix.weights import registry

from streaming_models import db_below, stream


def test_bundled_rt_ships_as_a_causal_23_ms_model():
    folder = registry.resolve_model("bundled-rt")
    assert folder == registry.REALTIME_MODEL
    meta = read_separator_json(folder)
    assert meta["targets"] == ["vocals", "drums", "bass", "other"]
    assert (meta["sample_rate"], meta["n_fft"], meta["n_hop"]) == (44100, 1024, 256)  # 23 ms windows
    for target in meta["targets"]:
        config = target_config(folder, target)
        assert config.unidirectional and config.hidden_size == 128 and config.nb_layers == 3
    assert not list(folder.glob("*.solver.h5")) and not list(folder.glob("*.chkpnt.h5"))  # no training leftovers
    assert "bundled-rt" in registry.list_models()


def test_bundled_rt_streams_the_example_as_it_separates_it():
    """Hop-sized blocks, as an audio callback gives them: 17.4 ms of delay, then the stems of
    `separate` (niter 0) sample for sample; and the model separates: its stems are no copies of
    the mixture, and together they account for it (12.7 dB here: ratio masks of the magnitudes,
    with the mixture's phase per channel, need not add up to the mixture exactly)."""
    audio, rate = audio_io.load(EXAMPLE_PATH, duration=3.0)
    sep = unmix.load_separator("bundled-rt", niter=0)
    reference = sep.separate(audio, rate)
    st = sep.streamer(block_size=256)
    assert st.latency == 1024 - 256 and st.latency / rate < 0.0175
    out = stream(st, audio, [256])
    for target, value in out.items():
        assert db_below(value[:, st.latency:], reference[target]) >= 60
    total = sum(reference.values())
    assert db_below(total, audio) >= 10
    vocals_share = np.sum(reference["vocals"] ** 2) / np.sum(audio ** 2)
    assert 0.01 < vocals_share < 0.9  # neither silence nor the whole mixture
