"""The streamer: sample-exact streaming of causal models, its latency, bad blocks, block-online streaming."""
import numpy as np
import pytest

import unmix
from unmix.errors import UnmixError
from unmix.separation.streamer import BlockStats, BlockOnlineStreamer, Streamer

from streaming_models import N_FFT, N_HOP, RATE, db_below, make_causal_folder, noise, stream


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    return make_causal_folder(tmp_path_factory.mktemp("models") / "causal")


@pytest.fixture(scope="module")
def bidirectional(tmp_path_factory):
    return make_causal_folder(tmp_path_factory.mktemp("models") / "bidi", unidirectional=False)


@pytest.mark.parametrize("block_size, length", [(1, 1500), (7, 3000), (N_HOP, 20000), (300, 20000),
                                                (3 * RATE, 3 * RATE + 1234), (None, 20000)])
def test_causal_stream_equals_offline(causal, block_size, length):
    sep = unmix.load_separator(causal, niter=0, residual="rest")
    audio = noise(length)
    reference = sep.separate(audio, RATE)
    st = sep.streamer(block_size=block_size)
    sizes = [block_size] if block_size else list(np.random.default_rng(1).integers(1, 2000, 50))
    out = stream(st, audio, sizes)
    assert set(out) == {"vocals", "drums", "rest"}
    for target, value in out.items():
        assert value.shape == (2, length + st.latency)
        assert not value[:, :st.latency].any()  # the delay is silence
        assert db_below(value[:, st.latency:], reference[target]) >= 60
        assert np.abs(reference[target]).max() > 1e-3  # a real signal was compared


def test_latency_and_block_returns(causal):
    sep = unmix.load_separator(causal, niter=0)
    assert sep.streamer(block_size=N_HOP).latency == N_FFT - N_HOP  # 384 samples, 8.7 ms at 44.1 kHz
    assert sep.streamer(block_size=2 * N_HOP).latency == N_FFT - N_HOP
    assert sep.streamer().latency == N_FFT - 1  # any block sizes
    assert sep.streamer(block_size=1).latency == N_FFT - 1
    st = sep.streamer(block_size=N_HOP)
    audio = noise(50 * N_HOP)
    for i in range(50):  # what an audio callback needs: a block out for every block in
        out = st.feed(audio[:, i * N_HOP:(i + 1) * N_HOP])
        assert {v.shape for v in out.values()} == {(2, N_HOP)}
    assert {v.shape for v in st.flush().values()} == {(2, st.latency)}


def test_state_stays_bounded(causal):
    sep = unmix.load_separator(causal, niter=1)
    st = sep.streamer(block_size=N_HOP)
    block = noise(N_HOP)
    sizes = []
    for i in range(600):
        st.feed(block)
        if i in (100, 599):
            sizes.append((st.stft.buffer.shape, st.ola.pending.shape, st.signal.shape,
                          st.wiener.sums.shape, st.wiener.weights.shape))
    assert sizes[0] == sizes[1]
    assert st.stft.buffer.shape[1] <= N_FFT
    assert st.stats.blocks == 600 and 0 < st.stats.percentile(50) <= st.stats.percentile(99) <= st.stats.max


def test_mono_blocks_for_a_stereo_model(causal):
    sep = unmix.load_separator(causal, niter=0)
    audio = noise(6000, nb_channels=1)
    reference = sep.separate(audio, RATE)
    st = sep.streamer(block_size=500, nb_channels=1)
    out = stream(st, audio, [500])
    for target, value in out.items():
        assert value.shape == (1, 6000 + st.latency)
        assert db_below(value[:, st.latency:], reference[target]) >= 60


def test_reset_starts_again(causal):
    sep = unmix.load_separator(causal, niter=1)
    st = sep.streamer(block_size=256)
    audio = noise(5000)
    first = stream(st, audio, [256])
    with pytest.raises(UnmixError, match="reset"):
        st.feed(audio[:, :10])
    with pytest.raises(UnmixError, match="already flushed"):
        st.flush()
    st.reset()
    second = stream(st, audio, [256])
    for target in first:
        np.testing.assert_array_equal(first[target], second[target])


def test_short_stream_flushes_silence(causal):
    st = unmix.load_separator(causal, niter=0).streamer(block_size=64)
    out = stream(st, noise(100), [64])
    assert {v.shape for v in out.values()} == {(2, 100 + st.latency)}
    assert not any(v.any() for v in out.values())


@pytest.mark.parametrize("block, message", [
    (np.zeros((3, 10), np.float32), r"nb_channels=2"),
    (np.zeros(10, np.float32), r"nb_channels=2"),
    (np.zeros((2, 10), np.int16), "float samples"),
    (np.full((2, 10), np.nan, np.float32), "NaN"),
])
def test_bad_blocks(causal, block, message):
    st = unmix.load_separator(causal, niter=0).streamer()
    with pytest.raises(UnmixError, match=message) as info:
        st.feed(block)
    assert "\n" not in str(info.value)


def test_bidirectional_needs_chunk(bidirectional):
    sep = unmix.load_separator(bidirectional, niter=0)
    with pytest.raises(UnmixError, match="--chunk") as info:
        sep.streamer()
    assert "\n" not in str(info.value)
    with pytest.raises(UnmixError, match="chunk"):
        sep.streamer(lookahead=0.2)


def test_block_online_one_chunk_is_offline(bidirectional):
    """A chunk longer than the stream: one segment, separated offline (Wiener EM included)."""
    sep = unmix.load_separator(bidirectional, niter=1)
    audio = noise(9000)
    reference = sep.separate(audio, RATE)
    st = sep.streamer(chunk=1.0, block_size=1000)
    assert isinstance(st, BlockOnlineStreamer)
    out = stream(st, audio, [1000])
    for target, value in out.items():
        assert value.shape == (2, 9000 + st.latency)
        assert db_below(value[:, st.latency:], reference[target]) >= 60


def test_block_online_chunks_and_crossfade(bidirectional):
    """Each chunk is the offline separation of its segment (past + chunk + lookahead), and
    consecutive chunks are cross-faded over the lookahead."""
    sep = unmix.load_separator(bidirectional, niter=0)
    chunk, look, past = 2000, 500, 300
    audio = noise(7000)
    st = sep.streamer(chunk=chunk / RATE, lookahead=look / RATE, past=past / RATE, block_size=441)
    assert st.latency <= chunk + look
    out = stream(st, audio, [441])
    out = {t: v[:, st.latency:] for t, v in out.items()}
    seg0 = sep.separate(audio[:, :chunk + look], RATE)  # chunk 0: no past yet
    seg1 = sep.separate(audio[:, chunk - past:2 * chunk + look], RATE)
    ramp = np.sin(0.5 * np.pi * (np.arange(look) + 0.5) / look) ** 2
    for t in out:
        np.testing.assert_allclose(out[t][:, :chunk], seg0[t][:, :chunk], atol=1e-5)
        fade = seg0[t][:, chunk:chunk + look] * (1 - ramp) + seg1[t][:, past:past + look] * ramp
        np.testing.assert_allclose(out[t][:, chunk:chunk + look], fade, atol=1e-5)
        np.testing.assert_allclose(out[t][:, chunk + look:2 * chunk], seg1[t][:, past + look:past + chunk],
                                   atol=1e-5)


def test_block_online_latency(bidirectional):
    sep = unmix.load_separator(bidirectional, niter=0)
    st = sep.streamer(chunk=0.5, lookahead=0.25, block_size=441)
    # chunk and lookahead are whole blocks: the output lags by at most chunk + lookahead - one block
    assert st.latency == int(0.75 * RATE) - 441
    audio = noise(RATE)
    for i in range(RATE // 441):
        assert {v.shape for v in st.feed(audio[:, i * 441:(i + 1) * 441]).values()} == {(2, 441)}


def test_block_stats():
    stats = BlockStats()
    for ms in range(1, 101):
        stats.add(ms / 1000, 0.05)
    assert stats.blocks == 100 and stats.late == 50
    assert stats.percentile(50) == pytest.approx(0.050, rel=0.02)
    assert stats.percentile(99) == pytest.approx(0.099, rel=0.02)
    assert stats.max == 0.1


def test_streamer_class_from_separator(causal):
    assert isinstance(unmix.load_separator(causal, niter=0).streamer(), Streamer)


def test_causal_wiener_stream_does_not_depend_on_blocks(causal):
    """niter >= 1 streams through the causal Wiener filter: frame-synchronous, so the stems are
    the same whatever the blocks, and they differ from the ratio masks of niter 0."""
    audio = noise(12000)
    outs = []
    for block_size in (N_HOP, 1000, None):
        st = unmix.load_separator(causal, niter=2, wiener_win_len=50, residual="rest").streamer(block_size=block_size)
        sizes = [block_size] if block_size else list(np.random.default_rng(2).integers(1, 900, 40))
        out = stream(st, audio, sizes)
        outs.append({t: v[:, st.latency:] for t, v in out.items()})
    for other in outs[1:]:
        for target in outs[0]:
            assert db_below(other[target], outs[0][target]) >= 100
    plain = unmix.load_separator(causal, niter=0, residual="rest").separate(audio, RATE)
    assert db_below(outs[0]["vocals"], plain["vocals"]) < 40
    total = sum(outs[0].values())  # the Wiener estimates still add up to the mixture
    assert db_below(total[:, 2000:], audio[:, 2000:]) >= 40
