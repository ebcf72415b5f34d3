#!/usr/bin/env bash
# Renders the synthetic songs the bundled default model (unmix/assets/default_model) was trained,
# validated and tested on, and the bundled example mixture (unmix/assets/example). Nothing rendered
# here is committed except the example mixture (FLAC).
#
# Uses the project's generator, tools/musdb_synth (README there: what the songs contain, statistics).
# Needs its environment, made once by its recipe (as root, Debian 12):
#     bash tools/musdb_synth/setup.sh      # apt: fluidsynth, 4 GM soundfonts, Hydrogen kits, avldrums,
#                                          # espeak-ng; venv ~/.venvs/musdb-synth
# Seed ranges never overlap: shared musdb-synth-mini train 1000-1007 / test 2000-2003, the first
# default model's songs 3000-3083, example 4000, training 5000.., validation 6000.., test 7000..
# The first default model and the example were rendered with the earlier shared generator
# (../shared/tools/musdb_synth, beside the repository). train, valid and test are the songs of the
# generator before its analog synth and Festival voices (--analog 0 --festival 0); train-v3 and
# valid-v3 add songs with both (the defaults, 0.6 and 0.5) for the fine-tuning stage, and link-v3
# makes the dataset root that holds all of them (OUT_V3/{train,valid,test} of symlinks; training
# reads train and valid only). Songs go to DATA (default: ../data beside the repository):
# OUT=DATA/synth-v2, OUT_NEW=DATA/synth-v3new, OUT_V3=DATA/synth-v3, each settable on its own.
#
#   R=tools/default_model/render_training_songs.sh
#   $R train     # N songs (default 320) of DUR s (default 25), seeds 5000.. -> OUT/train
#   $R train-v1  # the first default model's 84 songs (seeds 3000-3083) made by the earlier
#                # generator, GEN_V1 (default ../shared's)
#   $R valid     # N_VALID songs (default 16), seeds 6000.. -> OUT/valid
#   $R test      # N_TEST songs (default 8), seeds 7000.. -> OUT/test
#   $R train-v3  # N_V3 songs (default 160), seeds 5320.. -> OUT_NEW/train
#   $R synth-v3  # 10 songs in each of 8 synth-heavy genres, --analog 0.9, seeds 5480-5559 ->
#                # OUT_NEW/train, and one valid song each of synthpop, edm, house, pop: seeds 6024-6027
#   $R valid-v3  # 8 songs, seeds 6016-6023 -> OUT_NEW/valid
#   $R test-v3   # 8 test songs with both, seeds 7008-7015 -> OUT_NEW/test
#   $R link-v3   # OUT_V3 = OUT's and OUT_NEW's songs (test: OUT's)
#   $R example   # one 10 s song, seed 4000 -> unmix/assets/example/example.flac
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BESIDE=$(cd "$REPO/.." && pwd)  # the folder that holds the repository (and ../shared, ../data)
GEN=${GEN:-$REPO/tools/musdb_synth}
GEN_V1=${GEN_V1:-$BESIDE/shared/tools/musdb_synth}
VENV=${VENV:-$HOME/.venvs/musdb-synth}
DATA=${DATA:-$BESIDE/data}
OUT=${OUT:-$DATA/synth-v2}
OUT_NEW=${OUT_NEW:-$DATA/synth-v3new}
OUT_V3=${OUT_V3:-$DATA/synth-v3}
N=${N:-320}
N_V3=${N_V3:-160}
N_VALID=${N_VALID:-16}
N_TEST=${N_TEST:-8}
DUR=${DUR:-25}
JOBS=${JOBS:-2}
PY="$VENV/bin/python"

render() {  # subset n first-seed [generator]
  # JOBS songs at a time in separate processes; each is written (atomically) as soon as it is
  # done, so training can start on a partial set and a stopped run resumes where it was.
  local opts=(--analog 0 --festival 0)
  [ -n "${4:-}" ] && opts=()                      # the earlier generator has neither option
  nice -n 19 "$PY" "${4:-$GEN}/musdb_synth.py" --out "$OUT" --n "$2" --dur "$DUR" --seed "$3" \
      --subset "$1" --jobs "$JOBS" "${opts[@]}"
}

render_v3() {  # subset n first-seed: with the analog synth and Festival voices (the defaults)
  nice -n 19 "$PY" "$GEN/musdb_synth.py" --out "$OUT_NEW" --n "$2" --dur "$DUR" --seed "$3" \
      --subset "$1" --jobs "$JOBS" --analog 0.6 --festival 0.5
}

synth_v3() {  # 10 songs per synth-heavy genre: about a tenth of the parts of a natural draw are analog
  local seed=5480 genre
  for genre in synthpop edm house pop rnb trap disco hiphop; do
    nice -n 19 "$PY" "$GEN/musdb_synth.py" --out "$OUT_NEW" --n 10 --dur "$DUR" --seed "$seed" \
        --subset train --jobs "$JOBS" --analog 0.9 --festival 0.5 --genre "$genre"
    seed=$((seed + 10))
  done
  seed=6024
  for genre in synthpop edm house pop; do
    nice -n 19 "$PY" "$GEN/musdb_synth.py" --out "$OUT_NEW" --n 1 --dur "$DUR" --seed "$seed" \
        --subset valid --analog 0.9 --festival 0.5 --genre "$genre"
    seed=$((seed + 1))
  done
}

link_v3() {  # OUT_V3/<subset>/<track> -> the track folders of OUT and OUT_NEW
  for subset in train valid test; do
    mkdir -p "$OUT_V3/$subset"
    for d in "$OUT/$subset"/*/ "$OUT_NEW/$subset"/*/; do
      [ -d "$d" ] && ln -sfn "${d%/}" "$OUT_V3/$subset/$(basename "$d")"
    done
  done
  echo "$OUT_V3: $(ls "$OUT_V3/train" | wc -l) train, $(ls "$OUT_V3/valid" | wc -l) valid, $(ls "$OUT_V3/test" | wc -l) test"
}

case "${1:-train}" in
  train) render train "$N" 5000 ;;
  train-v1) render train 84 3000 "$GEN_V1" ;;
  valid) render valid "$N_VALID" 6000 ;;
  test) render test "$N_TEST" 7000 ;;
  train-v3) render_v3 train "$N_V3" 5320 ;;
  synth-v3) synth_v3 ;;
  valid-v3) render_v3 valid 8 6016 ;;
  test-v3) render_v3 test 8 7008 ;;
  link-v3) link_v3 ;;
  example)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    nice -n 19 "$PY" "$GEN/musdb_synth.py" --out "$tmp" --n 1 --dur 10 --seed 4000 --subset example \
        --analog 0 --festival 0
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
  *) echo "usage: $0 [train|train-v1|valid|test|train-v3|synth-v3|valid-v3|test-v3|link-v3|example]" >&2; exit 2 ;;
esac
