"""Rendering pretty_midi instruments with the FluidSynth command-line player."""
import os
import subprocess

import numpy as np
import pretty_midi
import soundfile as sf

from .effects import SR


def add_ccs(inst, volume=100, pan=64, reverb=0, chorus=0, t=0.0):
    """Initial channel controllers (volume 7, pan 10, reverb send 91, chorus send 93)."""
    for num, val in ((7, volume), (10, pan), (91, reverb), (93, chorus)):
        inst.control_changes.append(pretty_midi.ControlChange(num, int(np.clip(val, 0, 127)), t))


def render(inst, sf2, n, tmpdir, tag, bank=None, gain=0.4, tail=2.0, fs_reverb=False):
    """One instrument -> (n, 2) float32. bank: a bank-select value (128 for the drum bank of
    drum-only soundfonts). FluidSynth's own reverb/chorus are off unless fs_reverb, since the
    mixing stage adds its own effects. A preset whose channels come out in anti-phase gets its
    right channel flipped so the part stays mono-compatible like a real recording."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    if bank is not None:
        inst.control_changes.insert(0, pretty_midi.ControlChange(0, bank // 128 if bank >= 128 else bank, 0.0))
    pm.instruments.append(inst)
    end = max([nt.end for nt in inst.notes], default=0.0)
    # a last silent event keeps the player running so release tails are not cut
    inst.control_changes.append(pretty_midi.ControlChange(1, 0, max(end + tail, n / SR + 0.5)))
    mid = os.path.join(tmpdir, tag + ".mid")
    wav = os.path.join(tmpdir, tag + ".wav")
    pm.write(mid)
    on = "1" if fs_reverb else "0"
    # dynamic sample loading: only the samples of the used preset are read (and, for .sf3,
    # decoded), 3.2 s instead of 16 s per part with MuseScore_General.sf3
    cmd = ["fluidsynth", "-ni", "-q", "-g", str(gain), "-r", str(SR), "-R", on, "-C", on,
           "-o", "synth.dynamic-sample-loading=1",
           "-F", wav, "-T", "wav", "-O", "float", sf2, mid]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    os.remove(wav)
    if sr != SR:
        raise RuntimeError("fluidsynth wrote %d Hz, wanted %d" % (sr, SR))
    y = np.zeros((n, 2), np.float32)
    L = min(n, len(x))
    y[:L] = x[:L, :2]
    if y.std() > 0 and np.corrcoef(y[:, 0], y[:, 1])[0, 1] < 0:
        y[:, 1] *= -1
    return y
