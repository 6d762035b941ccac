#!/usr/bin/env bash
# Quickstart: temporal modelling on a CPU in minutes, with no download.
#
#   1. render the embedded synthetic dataset (tools/gen_synthetic.py, a few seconds);
#   2. train TSN (frame averaging) and TSM (temporal shift) from scratch, same recipe, on CPU;
#   3. evaluate both and print the accuracy per class group and inside each temporal pair.
#
# Most synthetic classes come in pairs whose clips are each other's time reversal, so TSN can only
# guess inside a pair (~50%) while TSM tells them apart.  Measured with this recipe (seed 0): TSM
# 100% on direction, scale, order and speed, 98.3% on rotation, 96.7% over all 14 classes; TSN 50%
# inside every reversal pair, 52.4% over all.  The whole script takes about 13 minutes on 2 cores.
# It trains without --compile: on this recipe a compiled run is no faster per epoch and spends
# about 2 minutes compiling per model (docs/performance.md, "Compiled execution").
#
# Environment: LSNET_DATA_ROOT (default ./data; the set goes to $LSNET_DATA_ROOT/synthetic),
# QUICKSTART_OUT (default ./quickstart: logs, checkpoints, scores), QUICKSTART_EPOCHS (default
# 10), QUICKSTART_THREADS (torch threads, default 2), QUICKSTART_GEN_ARGS (extra generator flags
# for a smoke test, e.g. "--train_per_class 2 --val_per_class 1").
set -euo pipefail

abspath() { mkdir -p "$1" && (cd "$1" && pwd); }
DATA_ROOT=$(abspath "${LSNET_DATA_ROOT:-./data}")
OUT=$(abspath "${QUICKSTART_OUT:-./quickstart}")
ROOT="$DATA_ROOT/synthetic"
cd "$(dirname "$0")/.."
EPOCHS="${QUICKSTART_EPOCHS:-10}"
export OMP_NUM_THREADS="${QUICKSTART_THREADS:-2}"

t0=$(date +%s)
# shellcheck disable=SC2086  # word splitting of the extra flags is intended
python tools/gen_synthetic.py --out "$ROOT" ${QUICKSTART_GEN_ARGS:-}

COMMON=(synthetic RGB --root_path "$ROOT" --arch resnet18 --pretrain none --num_segments 8
        --input_size 32 --epochs "$EPOCHS" -b 16 --lr 0.01 --lr_type cos --warmup 1 --wd 5e-4
        --dropout 0.5 --npb --gd 20 --seed 0 -j 1 --eval-freq "$EPOCHS" --print-freq 50
        --root_log "$OUT/logs" --root_model "$OUT/checkpoints")

for model in TSN TSM; do
    extra=()
    if [ "$model" = TSM ]; then extra=(--shift --shift_div 8 --shift_place blockres); fi
    echo "== training $model"
    start=$(date +%s)
    python main.py "${COMMON[@]}" "${extra[@]}"
    echo "== $model trained in $(( $(date +%s) - start )) s"
done

# run folders as main.py names them (ops.utils.store_name)
TSN_DIR="$OUT/checkpoints/TSM_synthetic_RGB_resnet18_avg_segment8_e${EPOCHS}_none_cos"
TSM_DIR="$OUT/checkpoints/TSM_synthetic_RGB_resnet18_shift8_blockres_avg_segment8_e${EPOCHS}_none_cos"
for pair in "TSN:$TSN_DIR" "TSM:$TSM_DIR"; do
    model=${pair%%:*}
    dir=${pair#*:}
    echo "== evaluating $model ($dir/ckpt.pth.tar)"
    python test_models.py synthetic --root_path "$ROOT" --weights "$dir/ckpt.pth.tar" \
        --test_segments 8 --test_crops 1 --batch_size 32 -j 1 \
        --class_groups "$ROOT/class_groups.json" \
        --json_file "$OUT/$model.json" --save_scores "$OUT/$model.npz"
done

python - "$ROOT" "$OUT" <<'EOF'
import json, sys
import numpy as np

root, out = sys.argv[1:3]
meta = json.load(open(f'{root}/synthetic_meta.json'))
names = open(f'{root}/category.txt').read().splitlines()
res = {m: json.load(open(f'{out}/{m}.json')) for m in ('TSN', 'TSM')}
npz = {m: np.load(f'{out}/{m}.npz') for m in ('TSN', 'TSM')}
print('\n== TSN vs TSM, top-1 % on the synthetic validation set')
print(f'{"group":<14} {"TSN":>7} {"TSM":>7}')
groups = {m: {g['group']: g['acc'] for g in res[m]['groups']} for m in res}
for g in groups['TSN']:
    print(f'{g:<14} {groups["TSN"][g]:7.1f} {groups["TSM"][g]:7.1f}')
print(f'{"all":<14} {res["TSN"]["top1"]:7.1f} {res["TSM"]["top1"]:7.1f}')
print('\n== inside each temporal pair (the pair\'s two scores compared), %')
print(f'{"pair":<62} {"TSN":>6} {"TSM":>6}')
for a, b in meta.get('pairs', meta['temporal_pairs']):
    row = []
    for m in ('TSN', 'TSM'):
        s, y = npz[m]['scores'], npz[m]['labels']
        keep = (y == a) | (y == b)
        pred = np.where(s[keep, a] >= s[keep, b], a, b)
        row.append(100.0 * float((pred == y[keep]).mean()))
    print(f'{names[a] + " / " + names[b]:<62} {row[0]:6.1f} {row[1]:6.1f}')
EOF
echo "== quickstart done in $(( $(date +%s) - t0 )) s"
