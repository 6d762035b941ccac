"""Dataset registry: roots, reference layouts, category files, flip policy and label swaps."""
import json
import os

import pytest
import torch

from ops import dataset_config
from ops.dataset_config import (DATA_ROOT_ENV, build_label_swap, get_dataset_config, read_categories,
                                synthetic_root)
from ops.errors import LSNetError


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def test_root_from_flag_then_env_else_error(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    with pytest.raises(LSNetError) as err:
        get_dataset_config('kinetics', 'RGB')
    assert '--root_path' in str(err.value) and DATA_ROOT_ENV in str(err.value)
    _write(str(tmp_path / 'kinetics/labels/category.txt'), ['abseiling', 'air drumming'])
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    cfg = get_dataset_config('kinetics', 'RGB')
    assert cfg.num_class == 2 and cfg.categories == ['abseiling', 'air drumming']
    assert cfg.root_path == os.path.join(str(tmp_path), 'kinetics/images')
    assert cfg.train_list == os.path.join(str(tmp_path), 'kinetics/labels/train_videofolder.txt')
    assert cfg.image_tmpl == 'img_{:05d}.jpg' and cfg.flip and cfg.label_swap is None
    other = tmp_path / 'other'
    other.mkdir()
    cfg = get_dataset_config('kinetics', 'RGB', root_path=str(other))  # the flag wins over the env
    assert cfg.num_class == 400 and cfg.category_file is None


def test_reference_layouts_and_templates(tmp_path):
    root = str(tmp_path)
    _write(os.path.join(root, 'something/v1/category.txt'), ['Holding something'])
    _write(os.path.join(root, 'something/v2/category.txt'), ['Holding something'])
    _write(os.path.join(root, 'jester/category.txt'), ['Doing other things'])
    _write(os.path.join(root, 'UCF101/labels/classInd.txt'), ['1 ApplyEyeMakeup', '2 ApplyLipstick'])
    v1 = get_dataset_config('something', 'RGB', root_path=root)
    assert v1.image_tmpl == '{:05d}.jpg' and not v1.flip
    assert v1.root_path.endswith('something/v1/20bn-something-something-v1')
    assert v1.val_list.endswith('something/v1/val_videofolder.txt')
    assert get_dataset_config('something', 'Flow', root_path=root).image_tmpl == '{:06d}-{}_{:05d}.jpg'
    v2 = get_dataset_config('somethingv2', 'RGB', root_path=root)
    assert v2.image_tmpl == '{:06d}.jpg' and not v2.flip
    assert v2.root_path.endswith('something/v2/20bn-something-something-v2-frames')
    jester = get_dataset_config('jester', 'RGB', root_path=root)
    assert jester.image_tmpl == '{:05d}.jpg' and not jester.flip
    ucf = get_dataset_config('ucf101', 'Flow', root_path=root)
    assert ucf.categories == ['ApplyEyeMakeup', 'ApplyLipstick'] and ucf.flip
    assert ucf.image_tmpl == 'flow_{}_{:05d}.jpg'
    assert ucf.train_list.endswith('UCF101/file_list/ucf101_flow_train_split_1.txt')
    hmdb = get_dataset_config('hmdb51', 'RGB', root_path=root)  # no category file: 51 classes
    assert hmdb.num_class == 51 and hmdb.train_list.endswith('HMDB51/splits/hmdb51_rgb_train_split_1.txt')
    assert not get_dataset_config('kinetics', 'RGB', root_path=root, no_flip=True,
                                  category_file=os.path.join(root, 'jester/category.txt')).flip


def test_overrides_and_unknowns(tmp_path):
    root = str(tmp_path)
    _write(os.path.join(root, 'jester/category.txt'), ['a', 'b'])
    _write(os.path.join(root, 'my_train.txt'), ['x 3 0'])
    cfg = get_dataset_config('jester', 'RGB', root_path=root, train_list='my_train.txt',
                             image_tmpl='img_{:05d}.jpg')
    assert cfg.train_list == os.path.join(root, 'my_train.txt') and cfg.image_tmpl == 'img_{:05d}.jpg'
    with pytest.raises(LSNetError, match='unknown dataset'):
        get_dataset_config('imagenet', 'RGB', root_path=root)
    with pytest.raises(LSNetError, match='unknown modality'):
        get_dataset_config('jester', 'Depth', root_path=root)
    with pytest.raises(LSNetError, match='not a folder'):
        get_dataset_config('jester', 'RGB', root_path=os.path.join(root, 'missing'))


def test_custom_needs_its_flags(tmp_path):
    with pytest.raises(LSNetError) as err:
        get_dataset_config('custom', 'RGB', root_path=str(tmp_path))
    msg = str(err.value)
    assert '--train_list' in msg and '--val_list' in msg and '--category_file' in msg
    _write(str(tmp_path / 'classes.txt'), ['move left', 'move right', 'stay'])
    _write(str(tmp_path / 'train.txt'), ['v 3 0'])
    cfg = get_dataset_config('custom', 'RGB', root_path=str(tmp_path), train_list='train.txt',
                             val_list='train.txt', category_file='classes.txt')
    assert cfg.num_class == 3 and cfg.root_path == str(tmp_path) and cfg.flip
    assert cfg.train_list == str(tmp_path / 'train.txt')
    assert cfg.label_swap == {0: 1, 1: 0}
    with pytest.raises(LSNetError, match='--category_file'):
        get_dataset_config('custom', 'RGB', root_path=str(tmp_path), train_list='train.txt',
                           val_list='train.txt', category_file='nope.txt')


def test_label_swap_from_category_names(tmp_path):
    names = ['Pushing something from left to right', 'Pushing something from right to left',
             'Turning the camera left while filming something', 'Holding something',
             'Turning the camera right while filming something', 'Swiping Left', 'Swiping Right']
    swap = build_label_swap(names)
    assert swap == {0: 1, 1: 0, 2: 4, 4: 2, 5: 6, 6: 5}
    assert build_label_swap(['Holding something', 'Moving something left']) is None
    assert build_label_swap(['move_left_to_right', 'leftover', 'move_right_to_left']) == {0: 2, 2: 0}
    _write(str(tmp_path / 'something/v2/category.txt'), names)
    cfg = get_dataset_config('somethingv2', 'RGB', root_path=str(tmp_path))
    assert cfg.label_swap == swap and not cfg.flip  # map available, flipping still off


def test_read_categories_keeps_plain_names(tmp_path):
    _write(str(tmp_path / 'c.txt'), ['7 up', 'dancing', ''])
    assert read_categories(str(tmp_path / 'c.txt')) == ['7 up', 'dancing']


def _fake_synthetic(root):
    """The files of a rendered synthetic set (no frames), as ops.synthetic writes them."""
    _write(os.path.join(root, 'category.txt'), ['spin cw', 'spin ccw', 'square'])
    _write(os.path.join(root, 'train_videofolder.txt'), ['v0 8 0'])
    with open(os.path.join(root, 'class_groups.json'), 'w') as f:
        json.dump({'rotation': [0, 1], 'appearance': [2]}, f)
    with open(os.path.join(root, 'label_swap.json'), 'w') as f:
        json.dump({'0': 1, '1': 0}, f)
    with open(os.path.join(root, 'synthetic_meta.json'), 'w') as f:
        json.dump({'num_class': 3}, f)


def test_synthetic_root_flag_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert synthetic_root(None) == os.path.join('data', 'synthetic')
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert synthetic_root(None) == os.path.join(str(tmp_path), 'synthetic')
    assert synthetic_root(str(tmp_path / 'mine')) == str(tmp_path / 'mine')


def test_synthetic_resolves_paths_and_never_renders(tmp_path, monkeypatch):
    from ops import synthetic

    def no_render(*args, **kwargs):
        raise AssertionError('get_dataset_config rendered the synthetic set')

    monkeypatch.setattr(synthetic, 'ensure_synthetic', no_render)
    monkeypatch.setattr(synthetic, 'generate', no_render)
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    root = os.path.join(str(tmp_path), 'synthetic')
    # not rendered yet: an error naming the folder and the command, and nothing created
    with pytest.raises(LSNetError, match='synthetic dataset not found') as err:
        get_dataset_config('synthetic', 'RGB')
    assert 'tools/gen_synthetic.py --out {}'.format(root) in str(err.value)
    assert os.listdir(str(tmp_path)) == []
    # a half-written folder (no synthetic_meta.json, written last) is not a dataset either
    _fake_synthetic(root)
    os.remove(os.path.join(root, 'synthetic_meta.json'))
    with pytest.raises(LSNetError, match='synthetic_meta.json missing'):
        get_dataset_config('synthetic', 'RGB')
    _fake_synthetic(root)
    cfg = get_dataset_config('synthetic', 'RGB')
    assert cfg.root_path == os.path.join(root, 'frames') and cfg.num_class == 3
    assert cfg.train_list == os.path.join(root, 'train_videofolder.txt')
    assert cfg.class_groups == {'rotation': [0, 1], 'appearance': [2]}
    assert cfg.label_swap == {0: 1, 1: 0} and cfg.flip
    assert not get_dataset_config('synthetic', 'RGB', no_flip=True).flip
    explicit = str(tmp_path / 'elsewhere')
    with pytest.raises(LSNetError, match='not found at ' + explicit):
        get_dataset_config('synthetic', 'RGB', root_path=explicit)
    assert not os.path.exists(explicit)
    _fake_synthetic(explicit)
    assert get_dataset_config('synthetic', 'RGB', root_path=explicit).root_path == \
        os.path.join(explicit, 'frames')
    with pytest.raises(LSNetError, match='Flow'):
        get_dataset_config('synthetic', 'Flow')
    assert dataset_config.DATA_ROOT_ENV == 'LSNET_DATA_ROOT'


def test_synthetic_rendered_explicitly_then_resolved(tmp_path):
    """What the entry points do: ensure_synthetic(synthetic_root(root_path)), then resolve."""
    from ops.synthetic import ensure_synthetic
    root = synthetic_root(str(tmp_path / 'syn'))
    ensure_synthetic(root, num_train_per_class=1, num_val_per_class=1, frames=8, size=32,
                     families=('horizontal', 'appearance'), workers=1)
    cfg = get_dataset_config('synthetic', 'RGB', root_path=root)
    assert cfg.categories == ['move_left_to_right', 'move_right_to_left', 'ring_shape', 'cross_shape']
    assert cfg.label_swap == {0: 1, 1: 0} and cfg.flip
    assert os.path.isdir(os.path.join(cfg.root_path, 't00000'))


# ---------------------------------------------------------------- reference-prepared data (issue 21)

# the reference's dataset config gives a count for kinetics and hmdb51; the others are the datasets'
# published class counts (the reference reads a category file there)
REGISTERED_COUNTS = {'kinetics': 400, 'hmdb51': 51, 'ucf101': 101, 'something': 174, 'somethingv2': 174,
                     'jester': 27}


@pytest.mark.parametrize('dataset', sorted(REGISTERED_COUNTS))
def test_registered_dataset_without_category_file_runs_with_one_notice(dataset, tmp_path, caplog):
    caplog.set_level('INFO', logger='ops.dataset_config')
    for _ in range(2):
        cfg = get_dataset_config(dataset, 'RGB', root_path=str(tmp_path))
    n = REGISTERED_COUNTS[dataset]
    assert cfg.num_class == n and len(cfg.categories) == n and cfg.category_file is None
    if dataset == 'kinetics':
        assert cfg.categories == dataset_config.kinetics400_names()
    else:
        assert cfg.categories == ['class_{}'.format(i) for i in range(n)]
    notices = [r for r in caplog.records if 'no category file' in r.getMessage()]
    assert len(notices) == 1 and notices[0].levelname in ('INFO', 'WARNING')
    assert dataset in notices[0].getMessage() and str(n) in notices[0].getMessage()


def test_kinetics400_names_are_the_zoo_label_order():
    """400 distinct names, sorted (the reference's kinetics_label_map.txt order, which its
    gen_label_kinetics.py numbers the classes by)."""
    names = dataset_config.kinetics400_names()
    assert len(names) == len(set(names)) == 400 and names == sorted(names)
    assert names[0] == 'abseiling' and names[-1] == 'zumba'
    assert names[166] == 'javelin throw' and names[168] == 'jogging'
    assert names[308:310] == ['skiing (not slalom or crosscountry)', 'skiing crosscountry']
    assert dataset_config.default_categories('kinetics', 400) == names
    assert dataset_config.default_categories('kinetics', 200)[:2] == ['class_0', 'class_1']
    assert dataset_config.default_categories('hmdb51', 51)[-1] == 'class_50'


def test_category_file_still_wins(tmp_path):
    _write(str(tmp_path / 'kinetics/labels/category.txt'), ['a', 'b'])
    cfg = get_dataset_config('kinetics', 'RGB', root_path=str(tmp_path))
    assert cfg.categories == ['a', 'b'] and cfg.category_file.endswith('category.txt')
    with pytest.raises(LSNetError, match='--category_file nope.txt not found'):
        get_dataset_config('kinetics', 'RGB', root_path=str(tmp_path), category_file='nope.txt')


def test_custom_with_a_checkpoint_class_count_needs_no_category_file(tmp_path):
    _write(str(tmp_path / 'val.txt'), ['v 3 0'])
    cfg = get_dataset_config('custom', 'RGB', root_path=str(tmp_path), train_list='val.txt', val_list='val.txt',
                             num_class=3)
    assert cfg.categories == ['class_0', 'class_1', 'class_2'] and cfg.category_file is None
    with pytest.raises(LSNetError, match='needs --category_file'):
        get_dataset_config('custom', 'RGB', root_path=str(tmp_path), train_list='val.txt', val_list='val.txt')


@pytest.mark.parametrize('modality, tmpl, example', [
    ('RGB', 'frame.jpg', 'img_{:05d}.jpg'),
    ('RGB', 'img_{:05d.jpg', 'img_{:05d}.jpg'),
    ('RGBDiff', '', 'img_{:05d}.jpg'),
    ('Flow', 'flow_x.jpg', 'flow_{}_{:05d}.jpg'),
])
def test_image_tmpl_without_a_field_names_the_flag(tmp_path, modality, tmpl, example):
    _write(str(tmp_path / 'jester/category.txt'), ['a'])
    with pytest.raises(LSNetError) as err:
        get_dataset_config('ucf101', modality, root_path=str(tmp_path), image_tmpl=tmpl)
    msg = str(err.value)
    assert msg.startswith('--image_tmpl {!r}'.format(tmpl)) and example in msg and '\n' not in msg
    for ok in ('{:06d}.jpg', 'img_{:05d}.jpg'):
        assert get_dataset_config('ucf101', 'RGB', root_path=str(tmp_path), image_tmpl=ok).image_tmpl == ok


def _tiny_checkpoint(path, num_class, official=False, **extra):
    """A ResNet-18 TSM checkpoint (4 segments, 32 px): ours (config) or official (bare layout, file name)."""
    from ops.checkpoint import add_module_prefix, make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    model = tsn(num_class, 4, arch='resnet18', pretrain='none', shift=True, input_size=32)
    if official:
        torch.save({'epoch': 50, 'arch': 'resnet18', 'state_dict': add_module_prefix(model.state_dict()),
                    'optimizer': {'state': {}, 'param_groups': []}, 'best_prec1': 70.0}, path)
    else:
        save_checkpoint(make_checkpoint(model, epoch=1, **extra), path)
    return path


def test_image_tmpl_error_in_both_entry_points(tmp_path, capsys):
    import main as train_main
    import test_models
    _write(str(tmp_path / 'val.txt'), ['v 3 0'])
    _write(str(tmp_path / 'cats.txt'), ['a', 'b'])
    common = ['--root_path', str(tmp_path), '--category_file', str(tmp_path / 'cats.txt'), '--image_tmpl', 'frame.jpg']
    assert train_main.main(['custom', 'RGB', '--train_list', 'val.txt', '--val_list', 'val.txt', '--arch', 'resnet18',
                            '--pretrain', 'none', '--root_log', str(tmp_path / 'log'),
                            '--root_model', str(tmp_path / 'ckpt')] + common) == 2
    ckpt = _tiny_checkpoint(str(tmp_path / 'ckpt.pth.tar'), 2)
    assert test_models.main(['custom', '--weights', ckpt, '--test_list', 'val.txt', '-j', '0'] + common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: --image_tmpl 'frame.jpg'") and 'img_{:05d}.jpg' in e for e in err)
    assert not os.path.exists(str(tmp_path / 'ckpt' / 'TSM_custom'))


def _reference_kinetics(root, classes=(168, 3)):
    """Frames and lists as the reference's tools leave them: no category.txt."""
    from tests.fakes import write_frames
    names = dataset_config.kinetics400_names()
    lines = []
    for k, c in enumerate(classes):
        rel = '{}/vid{}_000000_000010'.format(names[c].replace(' ', '_'), k)
        write_frames(os.path.join(root, 'kinetics', 'images', rel), 6, seed=k)
        lines.append('{} 6 {}'.format(rel, c))
    _write(os.path.join(root, 'kinetics', 'labels', 'val_videofolder.txt'), lines)
    return root


def test_reference_prepared_kinetics_and_official_checkpoint_run_with_names(tmp_path, capsys):
    """The seed's test command on reference-prepared Kinetics frames (no category file) with an
    official-format 400-class file: runs, and reports and the demo name classes in zoo order."""
    import test_models
    from tools import demo
    root = _reference_kinetics(str(tmp_path / 'data'))
    ckpt = _tiny_checkpoint(str(tmp_path / 'TSM_kinetics_RGB_resnet18_shift8_blockres_avg_segment4_e50.pth'), 400,
                            official=True)
    csv_file, json_file = str(tmp_path / 'pred.csv'), str(tmp_path / 'res.json')
    assert test_models.main(['kinetics', '--weights', ckpt, '--root_path', root, '--test_segments', '4',
                             '--input_size', '32', '--batch_size', '2', '-j', '0', '--csv_file', csv_file,
                             '--json_file', json_file]) == 0
    out = capsys.readouterr().out
    assert out.count('no category file') == 1 and 'Kinetics-400' in out
    names = dataset_config.kinetics400_names()
    with open(json_file) as f:
        res = json.load(f)
    assert [r['name'] for r in res['per_class']] == [names[3], names[168]]
    with open(csv_file) as f:
        assert all(line.split(';')[1].strip() in names for line in f)
    assert demo.main([ckpt, os.path.join(root, 'kinetics', 'images', 'jogging', 'vid0_000000_000010'),
                      '--json']) == 0
    top = json.loads(capsys.readouterr().out)['top']
    assert all(t['class'] == names[t['label']] for t in top)


def test_checkpoint_class_count_and_names_without_category_file(tmp_path, capsys):
    """Our checkpoint stores its class count and names: custom data without --category_file runs."""
    import test_models
    from tests.fakes import write_frames
    write_frames(str(tmp_path / 'frames' / 'v0'), 6)
    _write(str(tmp_path / 'val.txt'), ['v0 6 1'])
    ckpt = _tiny_checkpoint(str(tmp_path / 'ck.pth.tar'), 3, categories=['cat', 'dog', 'eel'])
    json_file = str(tmp_path / 'res.json')
    assert test_models.main(['custom', '--weights', ckpt, '--root_path', str(tmp_path / 'frames'), '--test_list',
                             str(tmp_path / 'val.txt'), '-j', '0', '--json_file', json_file]) == 0
    with open(json_file) as f:
        assert [r['name'] for r in json.load(f)['per_class']] == ['dog']
    assert capsys.readouterr().out.count('no category file') == 1
