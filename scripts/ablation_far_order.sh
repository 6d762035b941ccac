#!/usr/bin/env bash
# Long-range order and speed beyond TSM's reach (CPU, no download): the ablation of README
# "Long-range order beyond TSM's reach".
#
# 1. TSM ResNet-18 on the 16-class synthetic set (the standard ablation recipe, 8 segments), the
#    source checkpoint;
# 2. the far set: 64-frame clips of three pairs, order_long (red flash near the start, blue near
#    the end, or the reverse), order_far (both flashes >= 16 frames from either end and more than
#    16 frames apart: out of reach of the +-8 frames a TSM ResNet-18 output frame sees) and
#    speed_far (an object seen twice, 2 frames each, 24 or 17 blank frames apart, as far from the
#    ends), 75 training clips per class;
# 3. TSM, LSNet with the original identity taps (ablation model LSNet) and with the default
#    shift-initialised taps (LSNet-shiftinit), each started from step 1's checkpoint
#    (tools/ablation.py --init_from) and trained at 64 segments, batch 4, 15 epochs.
#
# Environment: LSNET_DATA_ROOT (default ./data), ABLATION_OUT (default ./ablation_far),
# ABLATION_JOBS (default 2), ABLATION_THREADS (default 1), ABLATION_SEED (default 0),
# FAR_EPOCHS (default 15), FAR_FAMILIES (default "order_long order_far speed_far"; the set's folder
# is named after them); for a smoke run, SOURCE_EPOCHS (step 1, default 10), SOURCE_GEN_ARGS and
# FAR_GEN_ARGS (extra generator flags of steps 1 and 2, e.g. "--train_per_class 2 --val_per_class 1").
# Extra arguments go to step 3's tools/ablation.py (e.g. --models TSM LSNet).
set -euo pipefail

cd "$(dirname "$0")/.."
DATA_ROOT="${LSNET_DATA_ROOT:-./data}"
OUT="${ABLATION_OUT:-./ablation_far}"
SEED="${ABLATION_SEED:-0}"
COMMON=(--jobs "${ABLATION_JOBS:-2}" --threads "${ABLATION_THREADS:-1}" --seed "$SEED")

SOURCE_EPOCHS="${SOURCE_EPOCHS:-10}"
python tools/ablation.py --root "$DATA_ROOT/synthetic_ablation" --out "$OUT/source" --models TSM \
    --epochs "$SOURCE_EPOCHS" --gen_args "${SOURCE_GEN_ARGS:-}" --no_diagnose "${COMMON[@]}"
SOURCE="$OUT/source/checkpoints/TSM_synthetic_RGB_resnet18_shift8_blockres_avg_segment8_e${SOURCE_EPOCHS}_none_cos_TSM/ckpt.pth.tar"

FAMILIES="${FAR_FAMILIES:-order_long order_far speed_far}"
python tools/ablation.py --root "$DATA_ROOT/synthetic_far-${FAMILIES// /-}" --out "$OUT/far-${FAMILIES// /-}" \
    --gen_args "--families $FAMILIES --frames 64 --train_per_class 75 ${FAR_GEN_ARGS:-}" \
    --num_segments 64 --batch_size 4 --epochs "${FAR_EPOCHS:-15}" --init_from "$SOURCE" \
    --models TSM LSNet LSNet-shiftinit "${COMMON[@]}" "$@"
