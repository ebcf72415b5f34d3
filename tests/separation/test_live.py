"""`unmix stream` on audio devices, against a real audio server: JACK's dummy backend, started
and stopped (by its PID) by these tests; PortAudio (through sounddevice) talks to it.

Each test runs the CLI in a process of its own: PortAudio reads ``JACK_DEFAULT_SERVER`` (the
server's unique name, so that parallel runs do not meet) when sounddevice is imported.
"""
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import soundfile as sf

import unmix
from streaming_models import RATE, db_below, make_causal_folder, noise

pytestmark = pytest.mark.skipif(shutil.which("jackd") is None or ctypes.util.find_library("portaudio") is None,
                                reason="needs jackd and PortAudio (apt-get install jackd2 libportaudio2)")


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    return make_causal_folder(tmp_path_factory.mktemp("models") / "causal")


@pytest.fixture
def jack(tmp_path):
    """A JACK server on the dummy backend (44.1 kHz, 256-frame periods) under a unique name;
    yields the environment that points PortAudio at it."""
    name = f"unmix-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log = open(tmp_path / "jackd.log", "w+")
    proc = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "44100", "-p", "256"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if any(os.path.exists(p) for p in _sockets(name)):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"jackd did not start: {log.read()[-500:]}")
        yield dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1",
                   PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _sockets(name):
    """The server socket jackd2 makes (``jack_<name>_<uid>_0`` in /dev/shm): the server is up."""
    return [f"/dev/shm/jack_{name}_{os.getuid()}_0"]


def unmix_cli(env, *argv, timeout=60):
    return subprocess.run([sys.executable, "-m", "unmix", "stream", *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_play_a_file_with_a_remix_and_record_the_stems(causal, jack, tmp_path):
    audio = noise(RATE // 2)
    song = tmp_path / "song.wav"
    sf.write(song, audio.T, RATE, subtype="FLOAT")
    result = unmix_cli(jack, song, "--model", causal, "--output-device", "system", "--mix", "vocals=0",
                       "--outdir", tmp_path / "rec", "--stats")
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stderr.splitlines() if line.startswith("stream: latency 384 samples")]
    assert summary and "blocks of 2.9 ms" in summary[-1] and "underrun" in summary[-1]
    want = unmix.load_separator(causal, niter=0).separate(audio, RATE)
    for target in ("vocals", "drums"):
        recorded, rate = sf.read(tmp_path / "rec" / "song" / f"{target}.wav", always_2d=True)
        assert rate == RATE and recorded.shape == (RATE // 2, 2)
        assert db_below(recorded.T, want[target]) >= 60  # computed live, the offline stems


def test_capture_from_the_input_device(causal, jack, tmp_path):
    result = unmix_cli(jack, "--input-device", "system", "--output-device", "system", "--model", causal,
                       "--duration", "0.6", "--outdir", tmp_path, "--name", "take")
    assert result.returncode == 0, result.stderr
    vocals, rate = sf.read(tmp_path / "take" / "vocals.wav", always_2d=True)
    assert rate == RATE and vocals.shape[1] == 2 and vocals.shape[0] >= RATE // 4
    assert np.abs(vocals).max() == 0  # the dummy backend captures silence
    assert "callbacks flagged an underrun/overflow" in result.stderr


def test_missing_server_or_device_is_one_line(causal, jack, tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, noise(1000).T, RATE)
    no_server = dict(jack, JACK_DEFAULT_SERVER=f"unmix-absent-{uuid.uuid4().hex[:8]}")
    for env, device in ((no_server, "system"), (jack, "no-such-card")):
        result = unmix_cli(env, song, "--model", causal, "--output-device", device)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no output audio device"), result.stderr


def test_list_devices(jack):
    result = unmix_cli(jack, "--list-devices")
    assert result.returncode == 0 and "system" in result.stdout and "JACK" in result.stdout
