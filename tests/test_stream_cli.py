"""`unmix stream` from files and pipes (raw PCM in and out), and its one-line errors."""
import contextlib
import io
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

import unmix
from streaming_models import RATE, db_below, make_causal_folder, noise
from unmix.cli import main

TARGETS4 = ("vocals", "drums", "bass", "other")


@pytest.fixture(scope="module")
def causal4(tmp_path_factory):
    return make_causal_folder(tmp_path_factory.mktemp("models") / "causal4", targets=TARGETS4)


@pytest.fixture(scope="module")
def bidirectional(tmp_path_factory):
    return make_causal_folder(tmp_path_factory.mktemp("models") / "bidi", unidirectional=False)


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "song.wav"
    sf.write(path, noise(RATE + 777).T, RATE)
    return path


class Pipes:
    """stdin / stdout of a process, as binary buffers, for main() called in this process."""

    def __init__(self, monkeypatch, data):
        self.stdin = io.TextIOWrapper(io.BytesIO(data))
        self.out = io.BytesIO()
        self.stdout = io.TextIOWrapper(self.out, write_through=True)
        monkeypatch.setattr(sys, "stdin", self.stdin)
        monkeypatch.setattr(sys, "stdout", self.stdout)


def test_file_stems_equal_separate(causal4, wav, tmp_path, capsys):
    assert main(["stream", str(wav), "--model", str(causal4), "--outdir", str(tmp_path / "streamed")]) == 0
    assert main(["separate", str(wav), "--model", str(causal4), "--niter", "0", "--outdir",
                 str(tmp_path / "offline")]) == 0
    err = capsys.readouterr().err
    assert "stream: latency " in err and "compute p50" in err
    for target in TARGETS4:
        streamed, rate = sf.read(tmp_path / "streamed" / "song" / f"{target}.wav", always_2d=True)
        offline, _ = sf.read(tmp_path / "offline" / "song" / f"{target}.wav", always_2d=True)
        assert rate == RATE and streamed.shape == offline.shape == (RATE + 777, 2)
        assert db_below(streamed, offline) >= 60


def test_file_at_another_rate_is_resampled(causal4, tmp_path):
    path = tmp_path / "mono.wav"
    sf.write(path, noise(22050, nb_channels=1)[0], 22050)
    assert main(["stream", str(path), "--model", str(causal4), "--outdir", str(tmp_path), "--block", "999"]) == 0
    est, rate = sf.read(tmp_path / "mono" / "bass.wav", always_2d=True)
    assert rate == 22050 and est.shape == (22050, 1)  # the input's rate, channels and length


@pytest.mark.parametrize("fmt, dtype, scale", [("f32le", "<f4", 1.0), ("s16le", "<i2", 32768.0)])
def test_pipe_karaoke(causal4, monkeypatch, capsys, fmt, dtype, scale):
    audio = 0.3 * noise(20000)  # the remix stays within full scale (16-bit output clips)
    pcm = np.clip(np.round(audio.T * scale), -scale, scale - 1).astype(dtype) if scale != 1 else audio.T.astype(dtype)
    pipes = Pipes(monkeypatch, pcm.tobytes())
    assert main(["stream", "-", "--model", str(causal4), "--rate", "44100", "--channels", "2", "--format", fmt,
                 "--mix", "vocals=0,drums=0.5"]) == 0
    out = np.frombuffer(pipes.out.getvalue(), dtype).reshape(-1, 2).T.astype(np.float32) / np.float32(scale)
    assert out.shape == (2, 20000)  # as long as the input, lined up with it
    heard = pcm.T.astype(np.float32) / np.float32(scale)
    stems = unmix.load_separator(causal4, niter=0).separate(heard, RATE)
    want = 0.5 * stems["drums"] + stems["bass"] + stems["other"]
    assert db_below(out, want) >= (60 if fmt == "f32le" else 35)  # s16le: 16-bit rounding of the output
    assert "20000 samples in, 20000 out" in capsys.readouterr().err


def test_pipe_ending_inside_a_frame_and_recording(causal4, monkeypatch, capsys, tmp_path):
    audio = noise(5000)
    pipes = Pipes(monkeypatch, audio.T.astype("<f4").tobytes()[:-5])  # the last frame is cut
    assert main(["stream", "-", "--model", str(causal4), "--rate", "44100", "--outdir", str(tmp_path), "--name",
                 "take1", "-o", str(tmp_path / "mix.f32")]) == 0
    err = capsys.readouterr().err
    assert "warning: the input ended inside a frame: 3 bytes dropped" in err
    assert os.path.getsize(tmp_path / "mix.f32") == 4999 * 2 * 4
    vocals, rate = sf.read(tmp_path / "take1" / "vocals.wav", always_2d=True)
    assert rate == RATE and vocals.shape == (4999, 2)
    want = unmix.load_separator(causal4, niter=0).separate(audio[:, :4999], RATE)["vocals"]
    assert db_below(vocals.T, want) >= 60
    assert not pipes.out.getvalue()  # -o FILE: nothing on stdout


def test_reader_closing_early_ends_cleanly(causal4, tmp_path):
    """`unmix stream - ... | head -c 4000`: the stream stops when its reader goes, exit 0."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "unmix", "stream", "-", "--model", str(causal4), "--rate",
                             "44100"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    def feed():  # on a thread: the child blocks on its full stdout until we read it
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(noise(RATE).T.astype("<f4").tobytes())
            proc.stdin.close()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    first = proc.stdout.read(4000)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    writer.join(timeout=10)
    assert len(first) == 4000
    assert "the reader closed the output" in err and "Traceback" not in err


def test_block_online_file(bidirectional, wav, tmp_path):
    assert main(["stream", str(wav), "--model", str(bidirectional), "--outdir", str(tmp_path), "--chunk", "0.3",
                 "--lookahead", "0.1", "--niter", "1"]) == 0
    vocals, _ = sf.read(tmp_path / "song" / "vocals.wav", always_2d=True)
    assert vocals.shape == (RATE + 777, 2)
    offline = unmix.load_separator(bidirectional, niter=1).separate(sf.read(wav, always_2d=True)[0].T, RATE)
    assert db_below(vocals.T, offline["vocals"]) > 3  # close to offline, not equal: chunks see 0.1 s around them


@pytest.mark.parametrize("argv, message", [
    (["{song}", "--model", "{bidi}", "--outdir", "{tmp}"], "--chunk"),
    (["-", "--model", "{causal}"], "needs --rate"),
    (["-", "--model", "{causal}", "--rate", "48000"], "resample it first"),
    (["-", "--model", "{causal}", "--rate", "44100", "--mix", "voice=0"], "no target 'voice'"),
    (["-", "--model", "{causal}", "--rate", "44100", "--mix", "vocals=loud"], "TARGET=GAIN"),
    (["{song}", "--model", "{causal}", "--outdir", "{tmp}", "--lookahead", "0.2"], "--chunk"),
])
def test_one_line_errors(causal4, bidirectional, wav, tmp_path, monkeypatch, capsys, argv, message):
    Pipes(monkeypatch, b"")
    fields = dict(song=wav, bidi=bidirectional, causal=causal4, tmp=tmp_path)
    assert main(["stream"] + [a.format(**fields) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_usage_errors(wav, capsys):
    with pytest.raises(SystemExit) as info:
        main(["stream", str(wav)])  # nowhere to write
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["stream"])
    assert "INPUT" in capsys.readouterr().err


def test_live_file_source_reads_ahead_and_resamples(tmp_path):
    """What a live playback reads: blocks at the model's rate, from a file never held whole."""
    from unmix.io import audio as audio_io
    from unmix.separation.live import FileSource

    audio = noise(30000)
    path = tmp_path / "low.flac"
    sf.write(path, audio.T, 22050, subtype="PCM_24")
    source = FileSource(path, RATE, 256)
    blocks = []
    while True:
        block = source.read()
        if block is None:
            break
        if block.shape[1] == 256 and not block.any() and source.late:  # the reader is late: silence, counted
            source.late -= 1
            continue
        blocks.append(block)
    got = np.concatenate(blocks, axis=1)
    want = audio_io.resample(sf.read(path, dtype="float32", always_2d=True)[0].T, 22050, RATE)
    assert got.shape == want.shape == (2, 60000)
    assert db_below(got[:, 1000:-1000], want[:, 1000:-1000]) >= 60
    assert {b.shape[1] for b in blocks[:-1]} == {256}
