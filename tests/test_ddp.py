"""Two CPU processes under torchrun (gloo) train one epoch like a single process does.

Each process gets half of every global batch (same samples, same augmentation draws: items are
seeded by (seed, epoch, index)), gradients are averaged, so the only difference left is that
BatchNorm statistics are per process: results agree within a tolerance, not bit for bit.
"""
import csv
import math
import os
import subprocess
import sys

import pytest
import torch

import main as train_main
from test_e2e import ROOT, make_color_dataset, run_dir, train_argv


def _rows(out):
    log_dir = os.path.join(out, 'log', os.path.basename(run_dir(out, 1)))
    with open(os.path.join(log_dir, 'log.csv')) as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed not built')
def test_torchrun_two_cpu_processes_match_single_process(tmp_path):
    from ops.checkpoint import load_checkpoint
    data = make_color_dataset(str(tmp_path / 'data'))
    extra = ['--lr', '0.001', '--npb', '--dropout', '0', '--lr_steps', '100']
    single, ddp = str(tmp_path / 'single'), str(tmp_path / 'ddp')
    assert train_main.main(train_argv(data, single, epochs=1, extra=extra)) == 0

    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nnodes', '1', '--nproc_per_node', '2',
           os.path.join(ROOT, 'main.py')] + train_argv(data, ddp, epochs=1, extra=extra)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert '2 process(es)' in proc.stdout
    assert proc.stdout.count('done: best Prec@1') == 1  # rank 0 alone logs

    a, b = _rows(single)[0], _rows(ddp)[0]
    for key in ('train_loss', 'val_loss'):
        assert float(b[key]) == pytest.approx(float(a[key]), rel=0.05), (key, a, b)
    sa = load_checkpoint(os.path.join(run_dir(single, 1), 'ckpt.pth.tar'))['state_dict']
    sb = load_checkpoint(os.path.join(run_dir(ddp, 1), 'ckpt.pth.tar'))['state_dict']
    assert sa.keys() == sb.keys()
    params = [k for k in sa if sa[k].is_floating_point() and 'running_' not in k]  # BN statistics differ by design
    num = sum(((sa[k].float() - sb[k].float()) ** 2).sum().item() for k in params)
    den = sum((sa[k].float() ** 2).sum().item() for k in params)
    assert math.sqrt(num / den) < 1e-2
