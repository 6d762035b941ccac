"""Every model kind through every entry point, with the default flags (one test id per cell).

Kinds: TSN, TSM (blockres, block), TSM + temporal pool, NL-TSM, TSM MobileNetV2, LSNet (ResNet,
MobileNetV2), Flow and RGBDiff TSM.  Entry points: ``main.py`` (one short epoch, ``--resume``,
``--tune_from`` to another class count), ``test_models.py`` in each sampling / crop protocol of the
seed README, ``tools/demo.py`` and ``tools/export.py``.  The default memory format is channels_last;
each kind is also run with ``--no_channels_last`` and the numbers must agree.

Tiny on purpose: ResNet-18 / MobileNetV2 at 32 px, 4 segments, 8 training clips.
"""
import csv
import json
import os

import numpy as np
import pytest
import torch

import main as train_main
import test_models
from opts import build_train_parser
from tests.fakes import write_frames, write_lines
from tools import demo, export

SEGMENTS = 4
CLASSES = ['red', 'green', 'blue', 'grey']
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (128, 128, 128)]

# kind id -> (modality, flags beyond the common ones)
KINDS = {
    'TSN': ('RGB', []),
    'TSM-blockres': ('RGB', ['--shift', '--shift_place', 'blockres']),
    'TSM-block': ('RGB', ['--shift', '--shift_place', 'block']),
    'TSM-tpool': ('RGB', ['--shift', '--temporal_pool']),
    'NL-TSM': ('RGB', ['--shift', '--non_local']),
    'TSM-MobileNetV2': ('RGB', ['--arch', 'mobilenetv2', '--shift']),
    'LSNet': ('RGB', ['--shift', '--lsm']),
    'LSNet-MobileNetV2': ('RGB', ['--arch', 'mobilenetv2', '--shift', '--lsm']),
    'TSM-uni': ('RGB', ['--shift', '--shift_direction', 'uni']),
    'LSNet-uni': ('RGB', ['--shift', '--lsm', '--shift_direction', 'uni']),
    'LSNet-uni-MobileNetV2': ('RGB', ['--arch', 'mobilenetv2', '--shift', '--lsm', '--shift_direction', 'uni']),
    'TSM-Flow': ('Flow', ['--shift']),
    'TSM-RGBDiff': ('RGBDiff', ['--shift']),
}
# the seed README's test protocols (test_models.py flags)
PROTOCOLS = {
    '1crop': ['--test_crops', '1'],
    '3crop-fullres-dense': ['--test_crops', '3', '--full_res', '--dense_sample'],
    '10crop': ['--test_crops', '10'],
    '3crop-twice': ['--test_crops', '3', '--twice_sample'],
}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Frame folders (RGB and flow) of 4 colour classes; lists for 4 classes and for 3 (fine-tuning)."""
    root = str(tmp_path_factory.mktemp('matrix_data'))
    lines = {'train': [], 'val': []}
    for split, per_class in (('train', 2), ('val', 1)):
        for c, colour in enumerate(COLOURS):
            for k in range(per_class):
                vid = '{}_{}_{}'.format(split, CLASSES[c], k)
                write_frames(os.path.join(root, 'frames', vid), 12, colour=colour, flow=True, seed=len(lines[split]))
                lines[split].append('{} 12 {}'.format(vid, c))
    for split, rows in lines.items():
        write_lines(os.path.join(root, split + '.txt'), rows)
        write_lines(os.path.join(root, split + '3.txt'), [r for r in rows if not r.endswith(' 3')])
    write_lines(os.path.join(root, 'category.txt'), CLASSES)
    write_lines(os.path.join(root, 'category3.txt'), CLASSES[:3])
    return root


def data_flags(data, classes=4):
    tag = '3' if classes == 3 else ''
    return ['--root_path', os.path.join(data, 'frames'),
            '--train_list', os.path.join(data, 'train{}.txt'.format(tag)),
            '--val_list', os.path.join(data, 'val{}.txt'.format(tag)),
            '--category_file', os.path.join(data, 'category{}.txt'.format(tag))]


def train_argv(kind, data, out, epochs=1, extra=()):
    modality, flags = KINDS[kind]
    argv = (['custom', modality] + data_flags(data) +
            ['--arch', 'resnet18', '--num_segments', str(SEGMENTS), '--input_size', '32', '--pretrain', 'none',
             '--epochs', str(epochs), '-b', '4', '-j', '0', '--lr', '0.01', '--eval-freq', '1', '--seed', '3',
             '--root_log', os.path.join(out, 'log'), '--root_model', os.path.join(out, 'ckpt')] + flags)
    return argv + list(extra)


def run_folder(out):
    """The single run folder main.py made under ``out``."""
    (name,) = os.listdir(os.path.join(out, 'ckpt'))
    return os.path.join(out, 'ckpt', name)


def load(path):
    from ops.checkpoint import load_checkpoint
    return load_checkpoint(path)


_RUNS = {}


@pytest.fixture
def trained(data, tmp_path_factory):
    """``trained(kind)`` → run folder of a 1-epoch run with the default flags (trained once per kind)."""
    def get(kind):
        if kind not in _RUNS:
            out = str(tmp_path_factory.mktemp('run_' + kind))
            assert train_main.main(train_argv(kind, data, out)) == 0
            _RUNS[kind] = run_folder(out)
        return _RUNS[kind]
    return get


@pytest.mark.parametrize('kind', KINDS)
def test_train(kind, trained):
    folder = trained(kind)
    ck = load(os.path.join(folder, 'ckpt.pth.tar'))
    modality, flags = KINDS[kind]
    assert ck['epoch'] == 1 and ck['config']['modality'] == modality
    assert ck['config']['non_local'] == ('--non_local' in flags) and ck['config']['lsm'] == ('--lsm' in flags)
    assert all(k.startswith('module.') for k in ck['state_dict'])
    assert all(torch.isfinite(v).all() for v in ck['state_dict'].values() if v.is_floating_point())
    assert ck['config']['shift_direction'] == ('uni' if 'uni' in flags else 'bi')
    assert ck['frames_per_segment'] == 12 / SEGMENTS  # the online demo's default --stride
    log_dir = folder.replace(os.sep + 'ckpt' + os.sep, os.sep + 'log' + os.sep)
    with open(os.path.join(log_dir, 'log.csv')) as f:
        (row,) = list(csv.DictReader(f))
    assert 0 <= float(row['val_top1']) <= 100 and np.isfinite(float(row['train_loss']))


@pytest.mark.parametrize('kind', KINDS)
def test_train_no_channels_last_same_weights(kind, trained, data, tmp_path):
    """Same seed, same data: the NCHW run ends with the weights of the channels_last run."""
    a = load(os.path.join(trained(kind), 'ckpt.pth.tar'))['state_dict']
    assert train_main.main(train_argv(kind, data, str(tmp_path), extra=['--no_channels_last'])) == 0
    b = load(os.path.join(run_folder(str(tmp_path)), 'ckpt.pth.tar'))['state_dict']
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4), k


@pytest.mark.parametrize('kind', KINDS)
def test_resume(kind, trained, data, tmp_path):
    out = str(tmp_path)
    assert train_main.main(train_argv(kind, data, out, epochs=2, extra=['--resume', trained(kind)])) == 0
    ck = load(os.path.join(run_folder(out), 'ckpt.pth.tar'))
    assert ck['epoch'] == 2 and ck['optimizer']['state']
    first = load(os.path.join(trained(kind), 'ckpt.pth.tar'))
    assert ck['seed'] == first['seed'] == 3


@pytest.mark.parametrize('kind', KINDS)
def test_tune_from_other_class_count(kind, trained, data, tmp_path, caplog):
    out = str(tmp_path)
    src = os.path.join(trained(kind), 'ckpt.pth.tar')
    argv = train_argv(kind, data, out, extra=['--tune_from', src])
    argv[2:10] = data_flags(data, classes=3)
    caplog.set_level('INFO')
    assert train_main.main(argv) == 0
    ck = load(os.path.join(run_folder(out), 'ckpt.pth.tar'))
    assert ck['state_dict']['module.new_fc.weight'].shape[0] == 3
    assert 'dropped' in caplog.text and 'new_fc.weight' in caplog.text
    assert 'missing' not in caplog.text.split('fine-tuning from', 1)[1].splitlines()[0]


@pytest.mark.parametrize('target', ['TSM-uni', 'LSNet-uni'])
def test_bidirectional_run_fine_tunes_into_online_model(target, trained, data, tmp_path, caplog):
    """An offline (bidirectional) TSM checkpoint is the starting point of an online model: every
    weight loads (only LSNet's new .lsm. keys are missing), the run says it is online."""
    out = str(tmp_path)
    src = os.path.join(trained('TSM-blockres'), 'ckpt.pth.tar')
    caplog.set_level('INFO')
    assert train_main.main(train_argv(target, data, out, extra=['--tune_from', src])) == 0
    ck = load(os.path.join(run_folder(out), 'ckpt.pth.tar'))
    assert ck['config']['shift_direction'] == 'uni' and '_uni' in os.path.basename(run_folder(out))
    line = caplog.text.split('fine-tuning from', 1)[1].splitlines()[0]
    assert 'missing' not in line or (target == 'LSNet-uni' and '.lsm.' in caplog.text)


def test_online_run_with_prefix_loss(data, tmp_path, caplog):
    """``--prefix_loss`` through main.py: an online LSNet trains, validates and saves as without;
    the bare flag means weight 0.5."""
    assert build_train_parser().parse_args(['custom', 'RGB', '--prefix_loss']).prefix_loss == 0.5
    out = str(tmp_path)
    caplog.set_level('INFO')
    assert train_main.main(train_argv('LSNet-uni', data, out, extra=['--prefix_loss'])) == 0
    ck = load(os.path.join(run_folder(out), 'ckpt.pth.tar'))
    assert ck['config']['shift_direction'] == 'uni' and ck['config']['lsm']
    assert 'Testing Results' in caplog.text or 'Prec@1' in caplog.text


def eval_argv(data, weights, extra=()):
    return (['custom', '--weights', weights, '--root_path', os.path.join(data, 'frames'),
             '--category_file', os.path.join(data, 'category.txt'), '--test_list', os.path.join(data, 'val.txt'),
             '-j', '0', '--batch_size', '2'] + list(extra))


@pytest.mark.parametrize('protocol', PROTOCOLS)
@pytest.mark.parametrize('kind', KINDS)
def test_test_models(kind, protocol, trained, data, tmp_path):
    weights = os.path.join(trained(kind), 'ckpt.pth.tar')
    out = str(tmp_path / 'res.json')
    assert test_models.main(eval_argv(data, weights, PROTOCOLS[protocol] + ['--json_file', out])) == 0
    res = json.load(open(out))
    assert res['videos'] == 4 and len(res['predictions']) == 4
    assert 0 <= res['top1'] <= res['top5'] <= 100


@pytest.mark.parametrize('kind', KINDS)
def test_test_models_channels_last_equals_nchw(kind, trained, data, tmp_path):
    weights = os.path.join(trained(kind), 'ckpt.pth.tar')
    scores = {}
    for tag, extra in (('cl', []), ('nchw', ['--no_channels_last'])):
        path = str(tmp_path / (tag + '.npz'))
        assert test_models.main(eval_argv(data, weights, extra + ['--test_crops', '3', '--save_scores', path])) == 0
        scores[tag] = np.load(path)['scores']
    assert scores['cl'].shape == (4, 4)
    np.testing.assert_allclose(scores['cl'], scores['nchw'], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kind', KINDS)
def test_demo(kind, trained, data, capsys):
    weights = os.path.join(trained(kind), 'ckpt.pth.tar')
    frames = os.path.join(data, 'frames', 'val_blue_0')
    if KINDS[kind][0] == 'Flow':
        assert demo.main([weights, frames]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith('error:') and 'Flow' in err and len(err.splitlines()) == 1
        return
    results = []
    for extra in ([], ['--no_channels_last']):
        assert demo.main([weights, frames, '--json', '--test_crops', '3'] + extra) == 0
        results.append(json.loads(capsys.readouterr().out))
    top = results[0]['top']
    assert [t['class'] for t in top] == [t['class'] for t in results[1]['top']]
    assert len(top) == 4 and sorted(t['class'] for t in top) == sorted(CLASSES)
    assert sum(t['score'] for t in top) == pytest.approx(1.0, abs=1e-4)
    for a, b in zip(top, results[1]['top']):
        assert a['score'] == pytest.approx(b['score'], abs=1e-5)


@pytest.mark.parametrize('kind', KINDS)
def test_export(kind, trained, tmp_path, capsys):
    weights = os.path.join(trained(kind), 'ckpt.pth.tar')
    out = str(tmp_path / 'model.pt2')
    assert export.main([weights, '--out', out, '--no_onnx']) == 0
    line = capsys.readouterr().out
    assert '(ok,' in line and os.path.isfile(out)


@pytest.mark.parametrize('flags, names', [
    (['--arch', 'mobilenetv2', '--shift', '--non_local'], ['--non_local', '--arch']),
    (['--arch', 'mobilenetv2', '--shift', '--temporal_pool'], ['--temporal_pool', 'ResNet']),
    (['--arch', 'mobilenetv2', '--shift', '--shift_place', 'block'], ['--shift_place', 'mobilenetv2']),
    (['--lsm'], ['--lsm', '--shift']),
    (['--shift', '--temporal_pool', '--num_segments', '3'], ['--temporal_pool', '--num_segments']),
    (['--shift', '--shift_direction', 'uni', '--non_local'], ['--shift_direction uni', '--non_local']),
    (['--shift', '--shift_direction', 'uni', '--temporal_pool'], ['--shift_direction uni', '--temporal_pool']),
    (['--shift_direction', 'uni'], ['--shift_direction uni', '--shift']),
    (['--shift', '--prefix_loss'], ['--prefix_loss', '--shift_direction uni']),
    (['--non_local', '--prefix_loss'], ['--prefix_loss', '--non_local']),
    (['--shift', '--shift_direction', 'uni', '--prefix_loss', '1.5'], ['--prefix_loss', '[0, 1]']),
], ids=['nl-mobilenetv2', 'tpool-mobilenetv2', 'block-mobilenetv2', 'lsm-without-shift', 'tpool-odd-segments',
        'uni-nl', 'uni-tpool', 'uni-without-shift', 'prefix-loss-bidirectional', 'prefix-loss-non-local',
        'prefix-loss-weight'])
def test_unsupported_combination_is_one_line_error(flags, names, data, tmp_path, capsys):
    argv = train_argv('TSN', data, str(tmp_path)) + flags
    assert train_main.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error:') and len(err.splitlines()) == 1
    assert all(n in err for n in names), err
    assert not os.path.exists(os.path.join(str(tmp_path), 'ckpt'))
