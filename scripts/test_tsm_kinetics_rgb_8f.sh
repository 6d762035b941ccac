#!/usr/bin/env bash
# Test the Kinetics model-zoo checkpoints (put them in pretrained/) on the 8-frame setting.
# Change to --test_crops=10 for 10-crop evaluation. Data root: $LSNET_DATA_ROOT or --root_path.
set -euo pipefail
cd "$(dirname "$0")/.."

# test TSN
python test_models.py kinetics \
    --weights=pretrained/TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth \
    --test_segments=8 --test_crops=1 \
    --batch_size=64 "$@"

# test TSM
python test_models.py kinetics \
    --weights=pretrained/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth \
    --test_segments=8 --test_crops=1 \
    --batch_size=64 "$@"
