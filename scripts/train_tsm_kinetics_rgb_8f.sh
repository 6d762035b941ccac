#!/usr/bin/env bash
# You should get TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50
# Data root: --root_path, else $LSNET_DATA_ROOT (see README "Data preparation").
set -euo pipefail
cd "$(dirname "$0")/.."
python main.py kinetics RGB \
     --arch resnet50 --num_segments 8 \
     --gd 20 --lr 0.02 --wd 1e-4 --lr_steps 20 40 --epochs 50 \
     --batch-size 128 -j 16 --dropout 0.5 --consensus_type=avg --eval-freq=1 \
     --shift --shift_div=8 --shift_place=blockres --npb "$@"
