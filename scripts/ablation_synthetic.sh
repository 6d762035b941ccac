#!/usr/bin/env bash
# LSNet ablation on the embedded synthetic dataset (CPU, no download).
#
# Trains TSN, TSM, LSNet (identity taps), LSNet-start2-shiftinit (the default shift taps, the first
# 2 epochs as TSM: the recommended configuration from scratch) and LSNet with only its short-term or
# only its long-term branch through main.py with one recipe (ResNet-18 from scratch, 8 segments of
# 32x32 px, cosine lr, seed 0), evaluates each with test_models.py --class_groups, and prints
# top-1 accuracy per class group and inside each temporal pair (tools/ablation.py does the work;
# it reuses finished runs).
#
# The set is the quick start's 14 classes plus the long-range order pair (gen_synthetic.py
# --families ... order_long), 16 classes, in its own folder.
#
# Environment: LSNET_DATA_ROOT (default ./data; the set goes to $LSNET_DATA_ROOT/synthetic_ablation),
# ABLATION_OUT (default ./ablation), ABLATION_EPOCHS (default 10), ABLATION_JOBS (models trained
# at once, default 1), ABLATION_THREADS (torch threads per run, default 2), ABLATION_GEN_ARGS
# (generator flags for a smoke run, e.g. "--train_per_class 2 --val_per_class 1"), ABLATION_SEEDS
# (e.g. "0 1 2": one ablation per seed in $ABLATION_OUT/seed<N>, then the mean (min-max) table).
# Extra arguments go to tools/ablation.py (e.g. --models TSM LSNet, --force; --models TSM LSNet
# --tune_from TSM for the fine-tuning protocol; --models TSM LSNet-start2 for --lsm_start 2).
set -euo pipefail

cd "$(dirname "$0")/.."
DATA_ROOT="${LSNET_DATA_ROOT:-./data}"
SEEDS=()
if [ -n "${ABLATION_SEEDS:-}" ]; then
    read -r -a SEEDS <<< "$ABLATION_SEEDS"
    SEEDS=(--seeds "${SEEDS[@]}")
fi

python tools/ablation.py --root "$DATA_ROOT/synthetic_ablation" --out "${ABLATION_OUT:-./ablation}" \
    --epochs "${ABLATION_EPOCHS:-10}" --jobs "${ABLATION_JOBS:-1}" --threads "${ABLATION_THREADS:-2}" \
    --gen_args "${ABLATION_GEN_ARGS:-}" "${SEEDS[@]}" "$@"
