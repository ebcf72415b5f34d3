"""Score the bundled default model against its predecessor: the README's and models/README.md's tables.

    python tools/default_model/score_default_model.py --new unmix/assets/default_model --previous DIR --evaldir ../eval
    python tools/default_model/score_default_model.py --new unmix/assets/realtime_model \
        --previous unmix/assets/default_model --niter 0 --evaldir ../eval-rt      # bundled-rt against bundled

For each test set it runs `unmix evaluate` (BSSEval v4 SDR, median over 1 s frames, then over
tracks; Wiener filter, niter 1) on the new model, the previous one and the oracles MIX (the
mixture as every estimate) and IRM1, then prints one markdown table per set. Scores already in
an evaldir are reused (`unmix evaluate` skips finished tracks), so give a retrained model a
fresh --evaldir. The sets:

- synthetic (shared): the shared musdb-synth-mini test songs (seeds 2000-2003, earlier generator)
- synthetic (new): tools/default_model/render_training_songs.sh test (seeds 7000-7007, the project's generator)
- synthetic (analog/Festival): tools/default_model/render_training_songs.sh test-v3 (seeds 7008-7015, the
  project's generator with its analog synth and Festival voices)
- real: the MUSDB18 excerpt that ships with stempeg (AAC stems; a folder test/ linking it)

None of them is used in training or to choose the model. Their folders default to where the
other tools put them, beside the repository (../shared/data, ../data); a set whose folder is
missing is skipped with a note.
"""
import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

TARGETS = ("vocals", "drums", "bass", "other")
BESIDE = Path(__file__).resolve().parents[3]  # the folder that holds the repository


def scorable_tracks(root):
    """Names of the MUSDB18-HQ test tracks whose four stems all sound: BSSEval cannot score an
    all-zero reference (the generator makes 4 % of its songs instrumental)."""
    import soundfile as sf

    def sounds(track, target):  # wav or flac
        return any(np.any(sf.read(str(p), dtype="int16")[0]) for p in track.glob(f"{target}.*"))

    return sorted(d.name for d in (Path(root) / "test").iterdir()
                  if d.is_dir() and all(sounds(d, t) for t in TARGETS))


def evaluate(unmix, root, tracks, what, evaldir, niter=1):
    """Run `unmix evaluate` for `what` ("--model DIR" or "--oracle NAME") into `evaldir`; `tracks`
    (of a MUSDB18-HQ folder) to score, or None for every track of a MUSDB18 (.stem.mp4) folder;
    `niter`: the Wiener iterations of a model."""
    cmd = [unmix, "evaluate", "--root", str(root), "--subset", "test", *what, "--evaldir", str(evaldir), "--cores", "2"]
    if what[0] == "--model":
        cmd += ["--niter", str(niter)]
    if tracks is not None:
        cmd += ["--is-wav", "--tracks", *tracks]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(Path(evaldir) / "scores.csv") as f:
        return {row["target"]: float(row["SDR"]) for row in csv.DictReader(f)}


def table(scores):
    """Markdown: SDR per target of each column, and the new model's gain over the previous one."""
    names = list(scores)
    lines = ["| target | " + " | ".join(names) + " | new - previous |", "|---" * (len(names) + 2) + "|"]
    for t in TARGETS:
        gain = scores["new"][t] - scores["previous"][t]
        lines.append(f"| {t} | " + " | ".join(f"{scores[n][t]:.2f}" for n in names) + f" | **{gain:+.2f}** |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new", required=True, help="model folder of the new default model")
    p.add_argument("--previous", required=True, help="model folder of the previous default model")
    p.add_argument("--evaldir", required=True, help="folder for the scores (one subfolder per set and model)")
    p.add_argument("--shared", default=str(BESIDE / "shared" / "data" / "musdb-synth-mini"))
    p.add_argument("--synth", default=str(BESIDE / "data" / "synth-v2"))
    p.add_argument("--synth-v3", default=str(BESIDE / "data" / "synth-v3new"))
    p.add_argument("--real", default=str(BESIDE / "data" / "stempeg-example"))
    p.add_argument("--niter", type=int, default=1, help="Wiener iterations of both models (0: ratio masks, what "
                   "`unmix stream` computes for a causal model)")
    p.add_argument("--unmix", default=str(Path(sys.executable).with_name("unmix")))
    args = p.parse_args(argv)
    sets = [("synthetic (shared)", args.shared, True), ("synthetic (new)", args.synth, True),
            ("synthetic (analog/Festival)", args.synth_v3, True), ("real (stempeg excerpt)", args.real, False)]
    columns = [("new", ["--model", args.new]), ("previous", ["--model", args.previous]),
               ("MIX", ["--oracle", "MIX"]), ("IRM1", ["--oracle", "IRM1"])]
    for label, root, is_wav in sets:
        if not (Path(root) / "test").is_dir():
            print(f"skipping {label}: no {root}/test", file=sys.stderr)
            continue
        slug = label.split()[0] + "-" + Path(root).name
        tracks = scorable_tracks(root) if is_wav else None  # read once for the four columns
        scores = {name: evaluate(args.unmix, root, tracks, what, Path(args.evaldir) / slug / name, args.niter)
                  for name, what in columns}
        print(f"\n{label}: {root}\n\n{table(scores)}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
