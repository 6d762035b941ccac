"""tools/early_recognition.py through its command line, on a tiny synthetic set with random checkpoints.

Beyond the output format, the accuracies are recomputed here independently of the tool: the frames
through ``TSNDataSet`` + ``build_transform`` (test_models.py's 1-crop pipeline, every frame sampled),
the online model through ``OnlineRecognizer``, the TSN through its own per-frame logits, and the
offline model on test_models.py's segment sampling; the tool's per-video predictions must equal them.
"""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from ops.checkpoint import load_model, make_checkpoint, save_checkpoint
from ops.config import ModelConfig
from ops.dataset import TSNDataSet, sample_test_indices
from ops.models import build_model
from ops.streaming import OnlineRecognizer
from ops.transforms import build_transform
from ops.utils import to_channels_last

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, 'tools', 'early_recognition.py')
FRAMES = 10
SEGMENTS = 4
PERCENTS = list(range(10, 101, 10))
LAST_LINE = re.compile(r'^early_recognition:((?: \S+@100=\d+\.\d+)+)$')


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('early')
    data = tmp / 'synthetic'
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gen_synthetic.py'), '--out', str(data),
                    '--train_per_class', '1', '--val_per_class', '1', '--frames', str(FRAMES), '--size', '32',
                    '--workers', '1'], check=True, capture_output=True, timeout=300)
    num_class = len((data / 'category.txt').read_text().split('\n')) - 1
    ckpts = {}
    for name, shift, direction, extra in (('TSN', False, 'bi', {}), ('TSM-uni', True, 'uni', {}),
                                          ('TSM-uni-s3', True, 'uni', {'frames_per_segment': 3.0}),
                                          ('TSM', True, 'bi', {})):
        torch.manual_seed(1 if name == 'TSM' else 0)
        model = build_model(ModelConfig(num_class=num_class, num_segments=SEGMENTS, arch='resnet18', pretrain='none',
                                        input_size=32, shift=shift, shift_direction=direction, dropout=0.0))
        with torch.no_grad():  # O(1) logits that differ between videos
            model.new_fc.weight.normal_(0, 3.0 / model.new_fc.in_features ** 0.5)
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.momentum = None
            model.train()(torch.randn(2, SEGMENTS, 3, 32, 32))
        path = tmp / '{}.pth'.format(name)
        save_checkpoint(make_checkpoint(model.eval(), epoch=1, **extra), str(path))
        ckpts[name] = str(path)
    out = tmp / 'out'
    out.mkdir()
    cmd = [sys.executable, TOOL, '--root_path', str(data), '--device', 'cpu', '--threads', '1',
           '--model', 'TSN=' + ckpts['TSN'], '--model', 'TSM-uni=' + ckpts['TSM-uni'],
           '--model', 'TSM-uni-s3=' + ckpts['TSM-uni-s3'], '--offline', 'TSM=' + ckpts['TSM'],
           '--out_png', str(out / 'early.png'), '--out_md', str(out / 'early.md'),
           '--out_json', str(out / 'early.json')]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(data=data, ckpts=ckpts, out=out, stdout=proc.stdout, num_class=num_class)


def all_frames(data, model):
    """Every frame of every validation video, through test_models.py's 1-crop pipeline: [(clip, label)]."""
    assert sample_test_indices(FRAMES, FRAMES) == list(range(FRAMES))  # FRAMES segments = every frame
    tf = build_transform('test', modality='RGB', new_length=1, crop_size=model.crop_size, scale_size=model.scale_size,
                         mean=model.input_mean, std=model.input_std, test_crops=1)
    ds = TSNDataSet(str(data / 'frames'), str(data / 'val_videofolder.txt'), num_segments=FRAMES, transform=tf,
                    random_shift=False, test_mode=True)
    return [(clip.contiguous(memory_format=torch.channels_last), label) for clip, label in ds]


def load(path):
    model, _, _ = load_model(path, 'cpu')
    return to_channels_last(model)


def last_processed(percent, stride):
    return (math.ceil(percent * FRAMES / 100) - 1) // stride * stride


def test_outputs(setup):
    out = setup['out']
    png = (out / 'early.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 1000
    import matplotlib.image
    assert matplotlib.image.imread(str(out / 'early.png')).ndim == 3

    md = (out / 'early.md').read_text().splitlines()
    header = next(line for line in md if line.startswith('| model'))
    assert [c.strip() for c in header.strip('|').split('|')][3:] == ['{} %'.format(p) for p in PERCENTS]
    rows = {line.split('|')[1].strip(): line for line in md if line.startswith('| ') and not line.startswith('| model')}
    assert set(rows) == {'TSN', 'TSM-uni', 'TSM-uni-s3', 'TSM'}
    for name, line in rows.items():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        accs = [float(c) for c in cells[3:]]
        assert len(accs) == 10 and all(0.0 <= a <= 100.0 for a in accs), line
    assert 'offline' in rows['TSM'] and 'online' in rows['TSM-uni'] and 'per frame' in rows['TSN']
    assert '| n/4 |' in rows['TSM-uni'] and '| 3 |' in rows['TSM-uni-s3']  # default strides

    last = setup['stdout'].strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match, last
    finals = dict(item.split('@100=') for item in match.group(1).split())
    report = json.loads((out / 'early.json').read_text())
    assert report['percents'] == PERCENTS and report['num_videos'] == setup['num_class']
    for m in report['models']:
        assert float(finals[m['name']]) == pytest.approx(m['accuracy'][-1], abs=0.006)
        assert len(m['predictions']) == report['num_videos'] and all(len(p) == 10 for p in m['predictions'])


def test_online_predictions_equal_online_recognizer(setup):
    """TSM-uni (stride n // T = 2) and TSM-uni-s3 (the checkpoint's frames_per_segment, 3), every
    fraction: the tool's predictions are those of an OnlineRecognizer fed the frames directly."""
    report = {m['name']: m for m in json.loads((setup['out'] / 'early.json').read_text())['models']}
    labels = json.loads((setup['out'] / 'early.json').read_text())['labels']
    for name, stride in (('TSM-uni', FRAMES // SEGMENTS), ('TSM-uni-s3', 3)):
        model = load(setup['ckpts'][name])
        rec = OnlineRecognizer(model, stride=stride, window=SEGMENTS)
        preds, distinct = [], set()
        with torch.no_grad():
            for clip, label in all_frames(setup['data'], model):
                rec.reset()
                after = {}
                for t in range(FRAMES):
                    scores = rec.update(clip[t:t + 1])
                    if scores is not None:
                        after[t] = int(scores.argmax())
                preds.append([after[last_processed(p, stride)] for p in PERCENTS])
                distinct.update(after.values())
        assert len(distinct) > 1, 'random model predicts one class: the comparison would be weak'
        assert report[name]['predictions'] == preds, name
        acc100 = 100.0 * sum(p[-1] == y for p, y in zip(preds, labels)) / len(labels)
        assert report[name]['accuracy'][-1] == pytest.approx(acc100)
        assert report[name]['stride'] == (None if name == 'TSM-uni' else 3)


def test_tsn_and_offline_predictions(setup):
    """TSN: the mean of its own per-frame logits over the last 4 processed frames (2, 4, 6, 8) at
    100 %; offline TSM: test_models.py's 4 segment centres of the whole video."""
    report = {m['name']: m for m in json.loads((setup['out'] / 'early.json').read_text())['models']}
    tsn, tsm = load(setup['ckpts']['TSN']), load(setup['ckpts']['TSM'])
    centres = sample_test_indices(FRAMES, SEGMENTS)
    tsn_preds, tsm_preds = [], []
    with torch.no_grad():
        for clip, _ in all_frames(setup['data'], tsn):
            logits = tsn.frame_logits(clip[[2, 4, 6, 8]])[0]  # no temporal module: frames independent
            tsn_preds.append(int(logits.mean(0).argmax()))
            tsm_preds.append(int(tsm(clip[centres].contiguous(memory_format=torch.channels_last)).argmax()))
    assert [p[-1] for p in report['TSN']['predictions']] == tsn_preds
    assert [p[-1] for p in report['TSM']['predictions']] == tsm_preds


def test_bidirectional_model_must_be_offline(setup, capsys):
    from tools import early_recognition
    assert early_recognition.main(['--root_path', str(setup['data']), '--device', 'cpu',
                                   '--model', 'TSM=' + setup['ckpts']['TSM']]) == 2
    err = capsys.readouterr().err
    assert 'error:' in err and 'bidirectional' in err and '--offline' in err
