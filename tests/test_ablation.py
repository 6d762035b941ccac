"""tools/ablation.py end to end on a tiny synthetic set: train, evaluate, diagnose, knock out."""
import json
import os

from tools import ablation


def test_ablation_smoke_run_writes_the_table_and_a_consistent_knockout(tmp_path):
    out, root = str(tmp_path / 'out'), str(tmp_path / 'set')
    argv = ['--root', root, '--out', out, '--models', 'LSNet-split', '--epochs', '1',
            '--num_segments', '4', '--batch_size', '4', '--workers', '0', '--diag_clips', '4',
            '--gen_args', '--train_per_class 2 --val_per_class 2 --frames 8 --size 32']
    assert ablation.main(argv) == 0
    result = json.load(open(os.path.join(out, 'LSNet-split.json')))
    diag = json.load(open(os.path.join(out, 'diagnostics.json')))['LSNet-split']
    assert [r['module'] for r in diag['modules']] == [
        'layer{}.{}.lsm'.format(k, i) for k in (1, 2, 3, 4) for i in (0, 1)]
    rows = {r['off']: r for r in diag['knockout']}
    assert list(rows) == ['none', 'short in stage 1', 'short in stage 2', 'long in stage 3',
                          'long in stage 4', 'short in every stage', 'long in every stage']
    # nothing switched off scores the validation set as test_models.py did, group by group
    assert abs(rows['none']['top1'] - result['top1']) < 1e-6
    for g in result['groups']:
        assert abs(rows['none'][g['group']] - g['acc']) < 1e-6
    table = open(os.path.join(out, 'diagnostics.md')).read()
    assert '| long in stage 3 |' in table and 'switched off at test time' in table
