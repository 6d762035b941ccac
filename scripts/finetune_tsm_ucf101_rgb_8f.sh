#!/usr/bin/env bash
# Fine-tune the 8-frame Kinetics TSM on UCF101 with uniform sampling (the classifier is re-initialised).
# Data root: --root_path, else $LSNET_DATA_ROOT (see README "Data preparation").
set -euo pipefail
cd "$(dirname "$0")/.."
python main.py ucf101 RGB \
     --arch resnet50 --num_segments 8 \
     --gd 20 --lr 0.001 --lr_steps 10 20 --epochs 25 \
     --batch-size 64 -j 16 --dropout 0.8 --consensus_type=avg --eval-freq=1 \
     --shift --shift_div=8 --shift_place=blockres \
     --tune_from=pretrained/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth "$@"
