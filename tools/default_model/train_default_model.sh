#!/usr/bin/env bash
# Trains the bundled default model (unmix/assets/default_model) on the songs rendered by
# tools/default_model/render_training_songs.sh (train: 320 songs of the project's generator, seeds 5000-5319,
# and the first default model's 84 songs, seeds 3000-3083; valid: 16 songs, seeds 6000-6015).
# The four targets train side by side, niced, one BLAS thread each (2 CPU cores in all). Each
# training is stopped with SIGINT after SECONDS_PER_TARGET s unless it stopped early (the trainer
# keeps the weights of its best validation epoch); then the four targets are gathered into one
# model folder with the weight matrices in float16 (tools/default_model/assemble_default_model.py checks that
# this moves each network's output by at most 1e-3 of its maximum).
#
#   T=tools/default_model/train_default_model.sh
#   $T            # train the four targets, then assemble
#   $T resume     # go on from the checkpoints in RUNS, then assemble
#   $T finetune   # start TARGETS from the models in FROM/<target> (fresh optimizer and schedule,
#                 # lr LR) on ROOT; the other targets are linked from FROM; then assemble
#   $T assemble   # only gather RUNS/<target> into OUT
#
# ROOT (the songs), RUNS and FROM default to ../data/synth-v2 and ../runs/default-v2 beside the
# repository.
#
# The real-time model (`--model bundled-rt`, unmix/assets/realtime_model): unidirectional, 1024/256 STFT
# (23 ms at 44.1 kHz), hidden 128:
#     CAUSAL=1 NFFT=1024 NHOP=256 HIDDEN=128 ROOT=<songs> RUNS=<runs> OUT=unmix/assets/realtime_model \
#         CURVES=models/realtime tools/default_model/train_default_model.sh
# (models/README.md gives the exact steps and times). On MUSDB18-HQ: ROOT=<musdb18hq> with the same flags.
#
# The shipped model: `all` (the default) with SECONDS_PER_TARGET=4300 (24 epochs of 50 steps), then `resume`
# with SECONDS_PER_TARGET=8000 SAMPLES_PER_TRACK=2 SEED=43 (epochs of 100 steps: validation, a
# third of the wall time at 50 steps, runs half as often; a new seed draws new excerpts).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BESIDE=$(cd "$REPO/.." && pwd)  # the folder that holds the repository (and ../data, ../runs)
ROOT=${ROOT:-$BESIDE/data/synth-v2}  # the songs of render_training_songs.sh (its OUT)
RUNS=${RUNS:-$BESIDE/runs/default-v2}
SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-5400}
SAMPLES_PER_TRACK=${SAMPLES_PER_TRACK:-1}
SEED=${SEED:-42}
LR=${LR:-0.001}
FROM=${FROM:-$BESIDE/runs/default-v2}
TARGETS=${TARGETS:-vocals drums bass other}
HIDDEN=${HIDDEN:-384}
LAYERS=${LAYERS:-3}
NFFT=${NFFT:-4096}
NHOP=${NHOP:-1024}
CAUSAL=${CAUSAL:-0}  # 1: unidirectional LSTMs, a model that streams sample by sample (bundled-rt)
UNMIX=${UNMIX:-$REPO/.venv/bin/unmix}
OUT=${OUT:-$REPO/unmix/assets/default_model}
CURVES=${CURVES:-$REPO/models}  # the loss plots, for models/README.md

train_one() {  # target [--checkpoint DIR]
  # lr 1e-3 (LR), decayed x0.3 after 3 epochs without a better validation loss, stopped after 10:
  # an epoch is 404 songs x SAMPLES_PER_TRACK / batch 8 = 50 (100) steps, so the schedule acts within the budget.
  OPENBLAS_NUM_THREADS=1 nice -n 10 timeout -s INT -k 300 "$SECONDS_PER_TARGET" "$UNMIX" train \
    --root "$ROOT" --dataset musdb --is-wav --target "$1" --output "$RUNS/$1" "${@:2}" \
    --epochs 1000 --batch-size 8 --seq-dur 3 --samples-per-track "$SAMPLES_PER_TRACK" --random-track-mix \
    --hidden-size "$HIDDEN" --nb-layers "$LAYERS" --nb-channels 2 --bandwidth 16000 --nfft "$NFFT" --nhop "$NHOP" \
    --lr "$LR" --lr-decay-patience 3 --lr-decay-gamma 0.3 --patience 10 \
    --nb-workers 0 --seed "$SEED" --quiet $( [ "$CAUSAL" = 1 ] && echo --unidirectional ) \
    >> "$RUNS/$1.log" 2>&1 || true
}

mkdir -p "$RUNS"
case "${1:-all}" in
  all) for target in vocals drums bass other; do train_one "$target" --force & done; wait ;;
  resume) for target in vocals drums bass other; do train_one "$target" --checkpoint "$RUNS/$target" & done; wait ;;
  finetune)
    for target in vocals drums bass other; do
      case " $TARGETS " in
        *" $target "*) train_one "$target" --model "$FROM/$target" --force & ;;
        *) ln -sfn "$FROM/$target" "$RUNS/$target" ;;
      esac
    done
    wait ;;
  assemble) ;;
  *) echo "usage: $0 [all|resume|finetune|assemble]" >&2; exit 2 ;;
esac
"$REPO/.venv/bin/python" "$REPO/tools/default_model/assemble_default_model.py" "$RUNS" "$OUT" "$CURVES" --half
