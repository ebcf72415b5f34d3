#!/usr/bin/env bash
# Renders the synthetic songs the bundled default model (unmix/assets/default_model) was trained on,
# and the bundled example mixture (unmix/assets/example). Nothing rendered here is committed except
# the example mixture (FLAC).
#
# Uses the project's generator, tools/musdb_synth (README there: what the songs contain, statistics).
# Needs its environment, made once by its recipe (as root, Debian 12):
#     bash tools/musdb_synth/setup.sh      # apt: fluidsynth, 4 GM soundfonts, Hydrogen kits, avldrums,
#                                          # espeak-ng; venv ~/.venvs/musdb-synth
# Seeds do not collide with the shared musdb-synth-mini set (train 1000-1007, test 2000-2003).
# The current default model and example were rendered with the earlier shared generator
# (/work/shared/tools/musdb_synth): the same seeds now give different (richer) songs.
#
#   tools/render_training_songs.sh train     # N songs (default 84) of DUR s (default 25), seeds 3000..
#   tools/render_training_songs.sh example   # one 10 s song, seed 4000 -> unmix/assets/example/example.flac
set -euo pipefail
GEN=${GEN:-$(cd "$(dirname "$0")" && pwd)/musdb_synth}
VENV=${VENV:-$HOME/.venvs/musdb-synth}
OUT=${OUT:-/work/data/synth-train}
N=${N:-84}
DUR=${DUR:-25}
SEED=${SEED:-3000}
JOBS=${JOBS:-2}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY="$VENV/bin/python"

case "${1:-train}" in
  train)
    # JOBS songs at a time in separate processes; each is written (atomically) as soon as it is
    # done, so training can start on a partial set and a stopped run resumes where it was.
    nice -n 19 "$PY" "$GEN/musdb_synth.py" --out "$OUT" --n "$N" --dur "$DUR" --seed "$SEED" \
        --subset train --jobs "$JOBS"
    ;;
  example)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    nice -n 19 "$PY" "$GEN/musdb_synth.py" --out "$tmp" --n 1 --dur 10 --seed 4000 --subset example
    mkdir -p "$REPO/unmix/assets/example"
    # mixture only, 16-bit FLAC (the stems stay out of the package)
    "$PY" - "$tmp/example" "$REPO/unmix/assets/example/example.flac" <<'PYEOF'
import glob, os, sys
import soundfile as sf
track = glob.glob(os.path.join(sys.argv[1], "*"))[0]
audio, rate = sf.read(os.path.join(track, "mixture.wav"), dtype="int16")
sf.write(sys.argv[2], audio, rate, subtype="PCM_16")
print(os.path.basename(track), audio.shape, rate, os.path.getsize(sys.argv[2]), "bytes")
PYEOF
    ;;
  *) echo "usage: $0 [train|example]" >&2; exit 2 ;;
esac
