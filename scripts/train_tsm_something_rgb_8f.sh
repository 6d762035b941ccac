#!/usr/bin/env bash
# Train TSM on Something-Something (V1 & V2) from ImageNet pre-training.
# Data root: --root_path, else $LSNET_DATA_ROOT (see README "Data preparation").
set -euo pipefail
cd "$(dirname "$0")/.."
python main.py something RGB \
     --arch resnet50 --num_segments 8 \
     --gd 20 --lr 0.01 --lr_steps 20 40 --epochs 50 \
     --batch-size 64 -j 16 --dropout 0.5 --consensus_type=avg --eval-freq=1 \
     --shift --shift_div=8 --shift_place=blockres --npb "$@"
