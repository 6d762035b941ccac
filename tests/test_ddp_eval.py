"""``torchrun --nproc_per_node 2 test_models.py`` (two CPU processes, gloo) writes what one process does.

Each process scores the videos ``rank::2`` of the list (7 videos: shards of 4 and 3); rank 0 gathers
them back into list order and alone prints and writes: the same per-video scores (within 1e-6), the
same CSV and the same JSON predictions as a single process.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import test_models
from test_e2e import NAMES, ROOT, eval_argv, make_color_dataset


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    from ops.checkpoint import make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    root = tmp_path_factory.mktemp('ddp_eval')
    data = make_color_dataset(str(root / 'data'), train_per_class=1, val_per_class=2)
    with open(os.path.join(data, 'val.txt')) as f:
        lines = f.read().split()
    with open(os.path.join(data, 'val7.txt'), 'w') as f:  # 7 videos: uneven shards
        f.write('\n'.join(' '.join(lines[i:i + 3]) for i in range(0, 21, 3)) + '\n')
    torch.manual_seed(0)
    model = tsn(len(NAMES), 4, arch='resnet18', pretrain='none', shift=True, input_size=32)
    ckpt = str(root / 'ckpt.pth.tar')
    save_checkpoint(make_checkpoint(model, epoch=1, categories=NAMES), ckpt)
    return data, ckpt, root


def _argv(data, ckpt, out):
    argv = eval_argv(data, [ckpt], ['--save_scores', os.path.join(out, 'scores.npz'), '--csv_file',
                                    os.path.join(out, 'pred.csv'), '--json_file', os.path.join(out, 'res.json'),
                                    '--test_crops', '3', '--twice_sample'])
    argv[argv.index('--test_list') + 1] = os.path.join(data, 'val7.txt')
    return argv


def _outputs(out):
    scores = dict(np.load(os.path.join(out, 'scores.npz')))
    with open(os.path.join(out, 'pred.csv')) as f:
        csv_text = f.read()
    with open(os.path.join(out, 'res.json')) as f:
        res = json.load(f)
    return scores, csv_text, res


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed not built')
def test_torchrun_two_cpu_processes_score_like_one(setup, capsys):
    data, ckpt, root = setup
    single, ddp = str(root / 'single'), str(root / 'ddp')
    os.makedirs(single)
    os.makedirs(ddp)
    assert test_models.main(_argv(data, ckpt, single)) == 0
    capsys.readouterr()

    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nnodes', '1', '--nproc_per_node', '2',
           os.path.join(ROOT, 'test_models.py')] + _argv(data, ckpt, ddp)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count('-----Evaluation is finished------') == 1  # rank 0 alone reports
    assert '2 processes scored the 7 videos, 4 of them on rank 0' in proc.stdout

    (s1, csv1, json1), (s2, csv2, json2) = _outputs(single), _outputs(ddp)
    assert s1['scores'].shape == (7, 4)
    assert np.allclose(s1['scores'], s2['scores'], rtol=1e-6, atol=1e-6)
    for key in ('labels', 'predictions', 'videos', 'categories'):
        assert np.array_equal(s1[key], s2[key]), key
    assert csv1 == csv2 and len(csv1.splitlines()) == 7
    assert json1['predictions'] == json2['predictions']
    assert [p['video'] for p in json1['predictions']] == [line.split()[0] for line in
                                                          open(os.path.join(data, 'val7.txt')).read().splitlines()]
    for key in ('videos', 'top1', 'top5', 'mean_class_acc'):
        assert json1[key] == pytest.approx(json2[key]), key
    assert len(json1['per_class']) == len(json2['per_class'])
    for a, b in zip(json1['per_class'], json2['per_class']):
        assert (a['name'], a['count']) == (b['name'], b['count'])
        assert [a[k] for k in ('acc', 'precision', 'recall', 'f1')] == \
            pytest.approx([b[k] for k in ('acc', 'precision', 'recall', 'f1')])
