"""Evaluation reports and runtime flags of test_models.py / main.py (issue 21).

``--confusion FILE.png`` (row-normalised, class names, the most-confused classes at 400 classes),
per-class precision / recall / F1 in ``--json_file``, ``--amp`` (bf16 autocast on the CPU), and
DataLoader workers that persist between epochs and evaluations (``-j 1``).  Tiny: ResNet-18 TSM at
32 px, 4 segments, the colour clips of test_e2e.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import main as train_main
import test_models
from ops.metrics import confusion, most_confused, plot_confusion, summarize
from test_e2e import NAMES, eval_argv, make_color_dataset, train_argv

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_color_dataset(str(tmp_path_factory.mktemp('reports_data')), train_per_class=2, val_per_class=2)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    """A random-weight 4-class ResNet-18 TSM checkpoint of ours (config and class names stored)."""
    from ops.checkpoint import make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    torch.manual_seed(0)
    model = tsn(len(NAMES), 4, arch='resnet18', pretrain='none', shift=True, input_size=32)
    path = str(tmp_path_factory.mktemp('reports_ckpt') / 'ckpt.pth.tar')
    save_checkpoint(make_checkpoint(model, epoch=1, categories=NAMES), path)
    return path


def test_precision_recall_f1_by_hand():
    """labels 0 0 1 1 2, predictions 0 1 1 1 0: class 0 P 1/2 R 1/2; class 1 P 2/3 R 1; class 2 P 0 R 0."""
    labels = np.array([0, 0, 1, 1, 2])
    scores = np.eye(3, dtype=np.float32)[[0, 1, 1, 1, 0]]
    res = summarize(scores, labels, ['a', 'b', 'c'], None)
    got = [(r['name'], r['precision'], r['recall'], r['f1']) for r in res['per_class']]
    expect = [('a', 50.0, 50.0, 50.0), ('b', 200 / 3, 100.0, 80.0), ('c', 0.0, 0.0, 0.0)]
    for g, e in zip(got, expect):
        assert g[0] == e[0] and g[1:] == pytest.approx(e[1:])
    assert res['macro'] == pytest.approx({'precision': (50 + 200 / 3) / 3, 'recall': 50.0, 'f1': 130 / 3})
    assert [r['acc'] for r in res['per_class']] == pytest.approx([50.0, 100.0, 0.0])


def test_most_confused_classes_at_400():
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(400), 5)
    preds = labels.copy()
    preds[labels == 308] = 309          # one class always taken for another
    preds[(labels == 7)[:] & (np.arange(len(labels)) % 5 < 2)] = 11
    noise = rng.rand(len(labels)) < 0.02
    preds[noise] = rng.randint(0, 400, noise.sum())
    idx = most_confused(confusion(labels, preds, 400), 30)
    assert len(idx) == 30 and list(idx) == sorted(idx) and {7, 11, 308, 309} <= set(idx)
    assert list(most_confused(confusion(labels[:20], preds[:20], 4), 30)) == [0, 1, 2, 3]


def test_confusion_png_at_400_classes(tmp_path):
    from ops.dataset_config import kinetics400_names
    rng = np.random.RandomState(1)
    labels = rng.randint(0, 400, 2000)
    preds = np.where(rng.rand(2000) < 0.3, rng.randint(0, 400, 2000), labels)
    path = str(tmp_path / 'cm.png')
    title = plot_confusion(labels, preds, kinetics400_names(), path)
    assert 'all 400 classes' in title and 'the 30 most-confused classes' in title
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert 600 <= min(img.size) and max(img.size) <= 2000  # 30 labelled rows, not 400


def test_test_models_confusion_png_and_json_prf(data, ckpt, tmp_path, capsys):
    """Through test_models.py (with -j 1: persistent workers): PNG with all 4 classes, JSON P/R/F1
    equal to scikit-learn on the JSON's own predictions."""
    from sklearn.metrics import precision_recall_fscore_support
    png, js = str(tmp_path / 'cm.png'), str(tmp_path / 'res.json')
    argv = eval_argv(data, [ckpt], ['--confusion', png, '--json_file', js])
    argv[argv.index('-j') + 1] = '1'
    assert test_models.main(argv) == 0
    assert 'cm.png' in capsys.readouterr().out
    with open(png, 'rb') as f:
        assert f.read(8) == PNG_MAGIC
    with Image.open(png) as img:
        assert 300 <= min(img.size) and max(img.size) <= 2000
    with open(js) as f:
        res = json.load(f)
    labels = [p['label'] for p in res['predictions']]
    preds = [p['pred'] for p in res['predictions']]
    p, r, f1, _ = precision_recall_fscore_support(labels, preds, labels=[0, 1, 2, 3], zero_division=0)
    for row in res['per_class']:
        c = row['class']
        assert (row['precision'], row['recall'], row['f1']) == pytest.approx((100 * p[c], 100 * r[c], 100 * f1[c]))
    assert set(res['macro']) == {'precision', 'recall', 'f1'}


def test_confusion_bad_file_fails_before_evaluating(data, ckpt, tmp_path, capsys):
    assert test_models.main(eval_argv(data, [ckpt], ['--confusion', str(tmp_path / 'cm.txt')])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: --confusion') and '.png' in err[0]
    assert test_models.main(eval_argv(data, [ckpt], ['--confusion', str(tmp_path / 'no' / 'cm.png')])) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_amp_scores_within_bf16_tolerance(data, ckpt, tmp_path):
    out = {}
    for name, extra in (('fp32', []), ('amp', ['--amp'])):
        path = str(tmp_path / (name + '.npz'))
        assert test_models.main(eval_argv(data, [ckpt], extra + ['--save_scores', path])) == 0
        out[name] = np.load(path)['scores']
    a, b = out['fp32'], out['amp']
    assert a.shape == b.shape == (8, 4)
    assert not np.array_equal(a, b)  # bf16 autocast did run
    scale = np.abs(a).max()
    assert np.abs(a - b).max() <= 0.05 * scale + 1e-3, (a, b)


def test_training_workers_persist_between_epochs(data, tmp_path, monkeypatch):
    """-j 1 over 2 epochs: one worker process per loader for the whole run (its pid never changes),
    and the same weights as -j 0 (the workers see each epoch's augmentation seeds)."""
    from ops import dataset
    from ops.checkpoint import load_checkpoint
    pid_log = str(tmp_path / 'pids.txt')
    original = dataset.TSNDataSet.__getitem__

    def logged(self, index):
        with open(pid_log, 'a') as f:
            f.write('{} {}\n'.format(os.path.basename(self.list_file), os.getpid()))
        return original(self, index)

    monkeypatch.setattr(dataset.TSNDataSet, '__getitem__', logged)  # forked workers inherit it
    weights = {}
    for workers in ('1', '0'):
        out = str(tmp_path / ('j' + workers))
        argv = train_argv(data, out, epochs=2)
        argv[argv.index('-j') + 1] = workers
        assert train_main.main(argv) == 0
        (run,) = os.listdir(os.path.join(out, 'ckpt'))
        weights[workers] = load_checkpoint(os.path.join(out, 'ckpt', run, 'ckpt.pth.tar'))['state_dict']
        if workers == '1':
            with open(pid_log) as f:
                rows = [line.split() for line in f]
            pids = {name: {p for n, p in rows if n == name} for name in ('train.txt', 'val.txt')}
            assert len(rows) == 2 * (8 + 8)  # 2 epochs x (8 training + 8 validation clips)
            assert all(len(p) == 1 for p in pids.values()) and str(os.getpid()) not in pids['train.txt'], pids
    for k, v in weights['0'].items():
        assert torch.equal(v, weights['1'][k]), k
