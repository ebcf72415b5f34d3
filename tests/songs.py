"""Tiny synthetic songs for the training tests: every dataset kind of `unmix.training.datasets`, written in
tmp_path as 8 kHz float WAVs of 1.5 s (a tone, noise bursts, a bass tone and soft noise)."""
import numpy as np
import soundfile as sf

RATE = 8000
LENGTH = int(1.5 * RATE)


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
