"""End to end through ``main.main(argv)`` and ``test_models.main(argv)`` on a tiny colour dataset.

One module-scoped chain: train 2 epochs; train 1 epoch and resume to 2 from the run folder (must
match the straight run exactly); fine-tune to fewer classes; evaluate with 1/3/10 crops, dense and
twice sampling, an ensemble, and an official-style TSN file scored frame by frame.
"""
import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import main as train_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


import test_models  # noqa: E402  (the repo's entry point, not a test module)

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (128, 128, 128)]
NAMES = ['red', 'green', 'blue', 'grey']
ARCH = 'resnet18'


def make_color_dataset(root, classes=4, train_per_class=4, val_per_class=2, frames=8, size=40, seed=0):
    """Frame folders of noisy solid-colour clips (class = colour) + list and category files."""
    rng = np.random.RandomState(seed)
    os.makedirs(os.path.join(root, 'frames'), exist_ok=True)
    lists = {'train': [], 'val': []}
    for split, per in (('train', train_per_class), ('val', val_per_class)):
        for c in range(classes):
            for k in range(per):
                vid = '{}_{}_{}'.format(split, NAMES[c], k)
                folder = os.path.join(root, 'frames', vid)
                os.makedirs(folder, exist_ok=True)
                for f in range(frames):
                    img = np.clip(np.array(COLOURS[c], np.float32) + rng.randn(size, size, 3) * 30, 0, 255)
                    Image.fromarray(img.astype(np.uint8)).save(os.path.join(folder, 'img_{:05d}.jpg'.format(f + 1)))
                lists[split].append('{} {} {}'.format(vid, frames, c))
    for split, lines in lists.items():
        with open(os.path.join(root, split + '.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    with open(os.path.join(root, 'category.txt'), 'w') as f:
        f.write('\n'.join(NAMES[:classes]) + '\n')
    return root


def data_flags(data, categories=None):
    return ['--root_path', os.path.join(data, 'frames'), '--train_list', os.path.join(data, 'train.txt'),
            '--val_list', os.path.join(data, 'val.txt'),
            '--category_file', categories or os.path.join(data, 'category.txt')]


def train_argv(data, out, epochs=2, extra=()):
    return (['custom', 'RGB'] + data_flags(data) +
            ['--arch', ARCH, '--num_segments', '4', '--input_size', '32', '--pretrain', 'none',
             '--epochs', str(epochs), '-b', '4', '-j', '0', '--lr', '0.02', '--lr_steps', '1', '--eval-freq', '1',
             '--dropout', '0.5', '--shift', '--seed', '7', '--print-freq', '100',
             '--root_log', os.path.join(out, 'log'), '--root_model', os.path.join(out, 'ckpt')] + list(extra))


def eval_argv(data, weights, extra=()):
    return (['custom', '--weights'] + list(weights) + data_flags(data)[:2] + data_flags(data)[6:] +
            ['--test_list', os.path.join(data, 'val.txt'), '-j', '0', '--batch_size', '2'] + list(extra))


def run_dir(out, epochs=2):
    return os.path.join(out, 'ckpt', 'TSM_custom_RGB_{}_shift8_blockres_avg_segment4_e{}_none'.format(ARCH, epochs))


def load(path):
    from ops.checkpoint import load_checkpoint
    return load_checkpoint(path)


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp('e2e')
    data = make_color_dataset(str(root / 'data'))
    out = str(root / 'runs')
    assert train_main.main(train_argv(data, out, epochs=2)) == 0
    return data, out, root


def test_train_writes_logs_and_checkpoints(chain):
    data, out, _ = chain
    ck = load(os.path.join(run_dir(out), 'ckpt.pth.tar'))
    assert ck['epoch'] == 2 and ck['arch'] == ARCH
    assert all(k.startswith('module.') for k in ck['state_dict'])
    assert ck['config']['arch'] == ARCH and ck['config']['num_segments'] == 4 and ck['config']['input_size'] == 32
    assert ck['categories'] == NAMES and ck['seed'] == 7 and ck['fc_lr5'] is False  # from scratch
    assert ck['scheduler']['last_epoch'] == 1 and ck['optimizer']['state']
    assert os.path.isfile(os.path.join(run_dir(out), 'ckpt.best.pth.tar'))
    log_dir = os.path.join(out, 'log', os.path.basename(run_dir(out)))
    with open(os.path.join(log_dir, 'log.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [r['epoch'] for r in rows] == ['0', '1']
    assert float(rows[1]['lr']) == pytest.approx(0.002)  # --lr_steps 1: x0.1 from epoch 1
    assert json.load(open(os.path.join(log_dir, 'args.txt')))['seed'] == 7
    assert any(n.startswith('events.out.tfevents') for n in os.listdir(log_dir))
    assert os.path.getsize(os.path.join(log_dir, 'log.txt')) > 0


def test_resume_from_run_folder_matches_straight_run(chain):
    data, out, root = chain
    other = str(root / 'resumed')
    assert train_main.main(train_argv(data, other, epochs=1)) == 0
    assert load(os.path.join(run_dir(other, 1), 'ckpt.pth.tar'))['epoch'] == 1
    assert train_main.main(train_argv(data, other, epochs=2, extra=['--resume', run_dir(other, 1)])) == 0
    a = load(os.path.join(run_dir(out), 'ckpt.pth.tar'))
    b = load(os.path.join(run_dir(other), 'ckpt.pth.tar'))
    assert b['epoch'] == 2
    for k, v in a['state_dict'].items():
        assert torch.allclose(v.float(), b['state_dict'][k].float(), atol=1e-6), k


def test_evaluate_only(chain, capsys):
    data, out, root = chain
    capsys.readouterr()
    argv = train_argv(data, str(root / 'eval'), extra=['--evaluate', '--resume', run_dir(out)])
    assert train_main.main(argv) == 0
    assert 'Testing Results: Prec@1' in capsys.readouterr().out
    assert not os.path.exists(str(root / 'eval' / 'ckpt'))  # evaluation writes no checkpoint


def test_finetune_to_fewer_classes(chain, capsys):
    data, out, root = chain
    two = os.path.join(data, 'two')
    os.makedirs(two, exist_ok=True)
    for split in ('train', 'val'):
        lines = [l for l in open(os.path.join(data, split + '.txt')) if int(l.split()[2]) < 2]
        open(os.path.join(two, split + '.txt'), 'w').writelines(lines)
    open(os.path.join(two, 'category.txt'), 'w').write('red\ngreen\n')
    argv = (['custom', 'RGB', '--root_path', os.path.join(data, 'frames'),
             '--train_list', os.path.join(two, 'train.txt'), '--val_list', os.path.join(two, 'val.txt'),
             '--category_file', os.path.join(two, 'category.txt')] +
            train_argv(data, str(root / 'ft'), epochs=1)[10:] +
            ['--tune_from', os.path.join(run_dir(out), 'ckpt.pth.tar')])
    capsys.readouterr()
    assert train_main.main(argv) == 0
    text = capsys.readouterr().out
    assert 'fine-tuning from' in text and 'new_fc.weight' in text  # the dropped classifier is named
    ck = load(os.path.join(run_dir(str(root / 'ft'), 1), 'ckpt.pth.tar'))
    assert list(ck['state_dict']['module.new_fc.weight'].shape)[0] == 2


_SCORES = {}


def _scores(data, weights, tmp, name, extra=()):
    """test_models --save_scores result (cached: the same evaluation is run once per session)."""
    key = (data, tuple(weights), tuple(extra))
    if key not in _SCORES:
        path = os.path.join(tmp, name + '.npz')
        assert test_models.main(eval_argv(data, weights, list(extra) + ['--save_scores', path])) == 0
        _SCORES[key] = dict(np.load(path))
    return _SCORES[key]


@pytest.mark.parametrize('crops', [1, 3, 10])
def test_test_models_crops_match_manual_mean(chain, crops):
    """Video score = plain mean of the crop clips' raw logits (checked against the model by hand)."""
    from ops.checkpoint import load_model
    from ops.dataset import TSNDataSet
    from ops.transforms import build_transform
    data, out, root = chain
    ckpt = os.path.join(run_dir(out), 'ckpt.pth.tar')
    res = _scores(data, [ckpt], str(root), 'crops{}'.format(crops), ['--test_crops', str(crops)])
    assert res['scores'].shape == (8, 4) and list(res['labels']) == [0, 0, 1, 1, 2, 2, 3, 3]
    model = load_model(ckpt)[0]
    tf = build_transform('test', modality='RGB', new_length=1, crop_size=32, scale_size=36,
                         mean=model.input_mean, std=model.input_std, test_crops=crops)
    ds = TSNDataSet(os.path.join(data, 'frames'), os.path.join(data, 'val.txt'), num_segments=4,
                    transform=tf, random_shift=False, test_mode=True)
    clip = ds[5][0]
    assert clip.shape[0] == crops * 4
    with torch.no_grad():
        manual = model(clip.view(crops, 4, 3, 32, 32)).mean(0)
    np.testing.assert_allclose(res['scores'][5], manual.numpy(), rtol=1e-4, atol=1e-5)


def test_dense_twice_softmax_json_csv(chain, capsys):
    data, out, root = chain
    ckpt = os.path.join(run_dir(out), 'ckpt.pth.tar')
    dense = _scores(data, [ckpt], str(root), 'dense', ['--dense_sample', '--full_res', '--test_crops', '3'])
    twice = _scores(data, [ckpt], str(root), 'twice', ['--twice_sample', '--test_crops', '3', '--softmax'])
    assert dense['scores'].shape == twice['scores'].shape == (8, 4)
    np.testing.assert_allclose(twice['scores'].sum(1), 1.0, rtol=1e-5)  # softmax after the mean
    groups = os.path.join(str(root), 'groups.json')
    json.dump({'warm': [0, 3], 'cold': [1, 2]}, open(groups, 'w'))
    js, cs = os.path.join(str(root), 'pred.json'), os.path.join(str(root), 'pred.csv')
    capsys.readouterr()
    assert test_models.main(eval_argv(data, [ckpt], ['--class_groups', groups, '--json_file', js,
                                                     '--csv_file', cs, '--max_num', '6'])) == 0
    text = capsys.readouterr().out
    assert 'Overall Prec@1' in text and 'Class Accuracy' in text and 'warm' in text
    res = json.load(open(js))
    assert res['videos'] == 6 and len(res['predictions']) == 6 and {g['group'] for g in res['groups']} == {'warm', 'cold'}
    assert 0 <= res['mean_class_acc'] <= 100 and res['top5'] == 100.0
    rows = open(cs).read().split()
    assert len(rows) == 6 and rows[0].split(';')[1] in NAMES


def test_ensemble_is_weighted_mean(chain):
    data, out, root = chain
    a = os.path.join(run_dir(out), 'ckpt.pth.tar')
    from ops.checkpoint import save_checkpoint
    other = load(a)
    other['state_dict']['module.new_fc.weight'] += torch.randn_like(other['state_dict']['module.new_fc.weight'])
    b = os.path.join(str(root), 'other.pth.tar')
    save_checkpoint(other, b)
    sa = _scores(data, [a], str(root), 'crops1', ['--test_crops', '1'])['scores']
    sb = _scores(data, [b], str(root), 'ens_b')['scores']
    both = _scores(data, [a + ',' + b], str(root), 'ens', ['--coeff', '1', '3', '--test_segments', '4'])
    np.testing.assert_allclose(both['scores'], (sa + 3 * sb) / 2, rtol=1e-4, atol=1e-5)


def test_short_videos_skipped_by_a_single_model_kept_by_an_ensemble(chain):
    """As the reference: one model drops videos under 3 frames from the test list, an ensemble keeps them."""
    data, out, root = chain
    ckpt = os.path.join(run_dir(out), 'ckpt.pth.tar')
    lines = open(os.path.join(data, 'val.txt')).read().split('\n')
    lines[0] = lines[0].replace(' 8 ', ' 2 ')
    short = os.path.join(str(root), 'val_short.txt')
    open(short, 'w').write('\n'.join(lines))
    def count(weights):
        path = os.path.join(str(root), 'short_{}.npz'.format(len(weights)))
        argv = eval_argv(data, weights, ['--save_scores', path])
        argv[argv.index('--test_list') + 1] = short
        assert test_models.main(argv) == 0
        return len(np.load(path)['labels'])
    assert count([ckpt]) == 7
    assert count([ckpt, ckpt]) == 8


def test_official_tsn_file_is_scored_frame_by_frame(chain):
    """A TSN file named like the model zoo (no stored config) tested with more segments."""
    from ops.checkpoint import make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    data, out, root = chain
    torch.manual_seed(3)
    model = tsn(4, 3, 'RGB', arch=ARCH, pretrain='none', input_size=32)
    torch.nn.init.normal_(model.new_fc.weight, 0, 0.5)
    state = make_checkpoint(model, None, epoch=1)
    del state['config']
    path = os.path.join(str(root), 'TSM_custom_RGB_{}_avg_segment3_e1.pth'.format(ARCH))
    save_checkpoint(state, path)
    res = _scores(data, [path], str(root), 'tsn', ['--test_segments', '6', '--input_size', '32'])
    model.eval()
    from ops.dataset import TSNDataSet
    from ops.transforms import build_transform
    tf = build_transform('test', modality='RGB', new_length=1, crop_size=32, scale_size=36,
                         mean=model.input_mean, std=model.input_std, test_crops=1)
    ds = TSNDataSet(os.path.join(data, 'frames'), os.path.join(data, 'val.txt'), num_segments=6,
                    transform=tf, random_shift=False, test_mode=True)
    frames = ds[2][0]  # (6, 3, 32, 32)
    single = tsn(4, 1, 'RGB', arch=ARCH, pretrain='none', input_size=32)
    single.load_state_dict(model.state_dict())
    single.eval()
    with torch.no_grad():
        per_frame = torch.stack([single(f[None]) for f in frames]).squeeze(1)
    np.testing.assert_allclose(res['scores'][2], per_frame.mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_loss_decreases_on_learnable_task(tmp_path):
    data = make_color_dataset(str(tmp_path / 'data'), classes=2, train_per_class=8, val_per_class=2, seed=1)
    out = str(tmp_path / 'runs')
    argv = train_argv(data, out, epochs=4, extra=['--lr_steps', '100', '--eval-freq', '4',
                                                   '--arch', 'resnet18', '--npb'])
    assert train_main.main(argv) == 0
    log_dir = os.path.join(out, 'log', 'TSM_custom_RGB_resnet18_shift8_blockres_avg_segment4_e4_none')
    rows = list(csv.DictReader(open(os.path.join(log_dir, 'log.csv'))))
    losses = [float(r['train_loss']) for r in rows]
    assert losses[-1] < 0.5 * losses[0], losses
    assert float(rows[-1]['train_top1']) > float(rows[0]['train_top1']) or float(rows[-1]['train_top1']) == 100.0
