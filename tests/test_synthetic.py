"""The embedded synthetic dataset (ops.synthetic; CLI tools/gen_synthetic.py): determinism, layout,
temporal-pair statistics, idempotence."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from ops import synthetic as syn
from ops.errors import LSNetError
from tools import gen_synthetic as gs

SMALL = dict(num_train_per_class=2, num_val_per_class=1, frames=8, size=32)


def _digest(root):
    """{relative path: sha1} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, 'rb') as fh:
                out[os.path.relpath(p, root)] = hashlib.sha1(fh.read()).hexdigest()
    return out


def _lines(root, split):
    with open(os.path.join(root, f'{split}_videofolder.txt')) as f:
        return [line.split(' ') for line in f.read().splitlines()]


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    return syn.generate(str(tmp_path_factory.mktemp('syn') / 'a'), seed=0, workers=1, **SMALL)


def test_same_seed_same_bytes_any_worker_count(small_set, tmp_path):
    again = syn.generate(str(tmp_path / 'b'), seed=0, workers=2, **SMALL)
    assert _digest(small_set) == _digest(again)


def test_other_seed_other_frames(small_set, tmp_path):
    other = syn.generate(str(tmp_path / 'c'), seed=1, workers=1, **SMALL)
    a, b = _digest(small_set), _digest(other)
    assert a.keys() == b.keys()
    frames = [k for k in a if k.startswith('frames')]
    assert sum(a[k] != b[k] for k in frames) > 0.9 * len(frames)
    assert _lines(small_set, 'train') == _lines(other, 'train')  # same layout, new pixels


def test_layout_and_class_files(small_set):
    meta = json.load(open(os.path.join(small_set, syn.META_FILE)))
    names = open(os.path.join(small_set, 'category.txt')).read().splitlines()
    assert len(names) == meta['num_class'] == len(set(names))
    groups = json.load(open(os.path.join(small_set, 'class_groups.json')))
    labels = sorted(label for ls in groups.values() for label in ls)
    assert labels == list(range(len(names)))
    assert {'direction', 'rotation', 'scale', 'order', 'speed', 'appearance'} <= set(groups)
    swap = {int(k): v for k, v in json.load(open(os.path.join(small_set, 'label_swap.json'))).items()}
    assert all(swap[swap[k]] == k and swap[k] != k for k in swap)
    for split, per_class in (('train', SMALL['num_train_per_class']),
                             ('val', SMALL['num_val_per_class'])):
        lines = _lines(small_set, split)
        assert len(lines) == per_class * len(names)
        counts = np.bincount([int(lab) for _, _, lab in lines], minlength=len(names))
        assert (counts == per_class).all()
        for video, n, _ in lines:
            folder = os.path.join(small_set, 'frames', video)
            assert sorted(os.listdir(folder)) == [syn.IMAGE_TMPL.format(i + 1) for i in range(int(n))]
        with Image.open(os.path.join(small_set, 'frames', lines[0][0], 'img_00001.jpg')) as im:
            assert im.size == (SMALL['size'], SMALL['size']) and im.mode == 'RGB'


def test_temporal_pairs_are_time_reversals(small_set):
    """A clip of one class of a pair is a clip of its partner played backwards, byte for byte,
    so the two classes have identical per-frame statistics; the clips are not palindromes."""
    meta = json.load(open(os.path.join(small_set, syn.META_FILE)))
    assert len(meta['temporal_pairs']) >= 5
    for split in ('train', 'val'):
        by_label = {}
        for video, n, lab in _lines(small_set, split):
            by_label.setdefault(int(lab), []).append(video)
        for a, b in meta['temporal_pairs']:
            assert len(by_label[a]) == len(by_label[b])
            for va, vb in zip(by_label[a], by_label[b]):
                fa = [_digest(os.path.join(small_set, 'frames', va))[syn.IMAGE_TMPL.format(i + 1)]
                      for i in range(SMALL['frames'])]
                fb = [_digest(os.path.join(small_set, 'frames', vb))[syn.IMAGE_TMPL.format(i + 1)]
                      for i in range(SMALL['frames'])]
                assert fb == fa[::-1]
                assert fa != fa[::-1]


def test_speed_pair_same_mean_frame(tmp_path):
    """Slow and fast orbits show the object on the same ring: the mean frame over the set matches."""
    root = syn.generate(str(tmp_path / 's'), seed=3, workers=1, num_train_per_class=24,
                       num_val_per_class=1, frames=8, size=32, families=('speed',))
    mean = {0: [], 1: []}
    for video, n, lab in _lines(root, 'train'):
        clip = np.stack([np.asarray(Image.open(os.path.join(root, 'frames', video,
                                                            syn.IMAGE_TMPL.format(i + 1))))
                         for i in range(int(n))]).astype(np.float32)
        # object-vs-background contrast map, radially averaged over the clip's frames
        mean[int(lab)].append(np.abs(clip - np.median(clip, axis=(0, 1, 2))).mean(axis=(0, 3)))
    slow, fast = np.mean(mean[0], axis=0), np.mean(mean[1], axis=0)
    assert np.abs(slow - fast).mean() < 0.25 * slow.mean()  # other motions: > 0.45


def test_ensure_synthetic_idempotent_and_atomic(tmp_path):
    root = str(tmp_path / 'data' / 'synthetic')
    assert syn.ensure_synthetic(root, **SMALL) == root
    meta = os.path.join(root, syn.META_FILE)
    stamp = os.stat(meta).st_mtime_ns
    before = _digest(root)
    assert syn.ensure_synthetic(root, **SMALL) == root
    assert os.stat(meta).st_mtime_ns == stamp and _digest(root) == before
    assert os.listdir(tmp_path / 'data') == ['synthetic']  # no temp folder left behind
    # a complete set is used as it is, whatever settings it was made with
    assert syn.ensure_synthetic(root) == root and _digest(root) == before
    assert syn.describe_mismatch(root, **SMALL) is None
    assert 'seed=0' in syn.describe_mismatch(root, seed=5, **SMALL)
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'x.txt').write_text('x')
    with pytest.raises(LSNetError, match='foreign'):
        syn.ensure_synthetic(str(foreign), **SMALL)
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert syn.ensure_synthetic(str(empty), **SMALL) == str(empty)
    assert os.path.isfile(empty / syn.META_FILE)


def test_cli_force(tmp_path, capsys):
    out = str(tmp_path / 'cli')
    args = ['--out', out, '--train_per_class', '1', '--val_per_class', '1', '--frames', '8',
            '--size', '32', '--families', 'horizontal', 'appearance']
    assert gs.main(args) == 0
    assert open(os.path.join(out, 'category.txt')).read().split() == [
        'move_left_to_right', 'move_right_to_left', 'ring_shape', 'cross_shape']
    assert gs.main(args) == 0
    assert 'already' in capsys.readouterr().out
    assert gs.main(args + ['--seed', '2']) == 2
    assert 'error:' in capsys.readouterr().err
    assert gs.main(args + ['--seed', '2', '--force']) == 0
    # options it cannot render are refused before --force removes the dataset already there
    for bad, fragment in ((['--workers', '0'], '--workers must be at least 1'), (['--frames', '1'], 'frames >= 2')):
        assert gs.main(args + ['--seed', '3', '--force'] + bad) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith('error: ') and '\n' not in err and fragment in err, err
        assert syn.read_meta(out)['seed'] == 2


@pytest.mark.parametrize('under, fragment', [('', 'is a file'), ('sub', 'cannot create the folder')])
def test_cli_out_that_is_or_is_under_a_file(tmp_path, capsys, under, fragment):
    a_file = tmp_path / 'a_file'
    a_file.write_text('keep me')
    out = str(a_file / under) if under else str(a_file)
    args = ['--out', out, '--train_per_class', '1', '--val_per_class', '1', '--frames', '8', '--size', '32',
            '--families', 'horizontal']
    for extra in ([], ['--force']):
        assert gs.main(args + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith('error: ') and '\n' not in err and fragment in err, err
    assert a_file.read_text() == 'keep me' and os.listdir(tmp_path) == ['a_file']


def test_long_order_flashes_are_far_apart():
    """order_long: a red flash of >= 5 of 24 frames, then, >= 1/4 of the clip later, a blue one
    (the partner class is the same clip reversed, checked above for every pair)."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        clip = syn._draw_clip('order_long', 0, rng, 24, 64).astype(int)
        red = np.flatnonzero(((clip[..., 0] - clip[..., 2]) > 120).reshape(24, -1).any(1))
        blue = np.flatnonzero(((clip[..., 2] - clip[..., 0]) > 120).reshape(24, -1).any(1))
        assert len(red) >= 5 and len(blue) >= 5
        assert red[-1] - red[0] == len(red) - 1 and blue[-1] - blue[0] == len(blue) - 1  # one flash each
        assert blue[0] - red[-1] >= 24 // 4


def _flash_frames(clip):
    """Frames where a red / a blue object is visible, from the pixels of a (T, H, W, 3) clip."""
    c = clip.astype(int)
    T = c.shape[0]
    red = np.flatnonzero(((c[..., 0] - c[..., 2]) > 120).reshape(T, -1).any(1))
    blue = np.flatnonzero(((c[..., 2] - c[..., 0]) > 120).reshape(T, -1).any(1))
    return red, blue


@pytest.mark.parametrize('frames', [56, 64, 96])
def test_far_order_flashes_out_of_a_shift_networks_reach(frames):
    """order_far: with R = frames // 8, each flash is >= 2R frames from either end and the two are
    more than 2R apart, so no frame within R shifts of one flash is within R shifts of the other or
    of a clip end (the partner class is the same clip reversed, as for every pair)."""
    reach = frames // 8
    rng = np.random.default_rng(2)
    starts = set()
    for _ in range(40):
        red, blue = _flash_frames(syn._draw_clip('order_far', 0, rng, frames, 32))
        assert len(red) == len(blue) == max(2, frames // 16)
        assert red[-1] - red[0] == len(red) - 1 and blue[-1] - blue[0] == len(blue) - 1
        assert red[0] >= 2 * reach and blue[-1] <= frames - 1 - 2 * reach
        assert blue[0] - red[-1] > 2 * reach
        starts.add(int(red[0]))
    assert len(starts) > 3  # the flashes move from clip to clip


@pytest.mark.parametrize('family,short,shorter', [('order_far', 24, 48), ('speed_far', 48, 40)])
def test_far_families_need_long_clips(tmp_path, family, short, shorter):
    with pytest.raises(LSNetError, match=f'{family} needs --frames >= 56'):
        syn.generate(str(tmp_path / 'x'), families=[family], frames=short, size=32,
                    num_train_per_class=1, num_val_per_class=1, workers=1)
    assert not os.path.exists(tmp_path / 'x')
    assert gs.main(['--out', str(tmp_path / 'y'), '--families', family, '--frames', str(shorter)]) == 2
    assert not os.path.exists(tmp_path / 'y')


def _sighting_frames(clip):
    """Frames of a (T, H, W, 3) clip that differ from its static background (the median frame)."""
    c = clip.astype(int)
    bg = np.median(c, axis=0)
    return np.flatnonzero((np.abs(c - bg).max(-1) > 40).reshape(c.shape[0], -1).any(1))


@pytest.mark.parametrize('frames', [56, 64, 96])
def test_far_speed_sightings_out_of_a_shift_networks_reach(frames):
    """speed_far: two sightings of w frames each, >= 2R frames from either end and more than 2R
    apart (R = frames // 8), the first starting in the same range for both classes; only the gap
    (longer for the slow class) separates them."""
    reach = frames // 8
    margin, slow_gap, fast_gap, w, jitter = syn.far_hop_geometry(frames)
    assert slow_gap > fast_gap > 2 * reach and margin == 2 * reach
    rng = np.random.default_rng(3)
    for k, gap in ((0, slow_gap), (1, fast_gap)):
        starts = set()
        for _ in range(30):
            seen = _sighting_frames(syn._draw_clip('speed_far', k, rng, frames, 32))
            first = seen[seen < seen[0] + w]
            second = seen[seen >= seen[0] + w]
            assert len(first) == len(second) == w
            assert first[-1] - first[0] == w - 1 and second[-1] - second[0] == w - 1
            assert second[0] - first[-1] - 1 == gap
            assert first[0] >= 2 * reach and second[-1] <= frames - 1 - 2 * reach
            starts.add(int(first[0]))
        assert starts == set(range(margin, margin + jitter + 1))  # same onset range for both classes


def test_cli_is_a_thin_wrapper_of_the_library():
    """tools/gen_synthetic.py re-exports the renderer's public names (the same objects)."""
    for name in ('generate', 'ensure_synthetic', 'describe_mismatch', 'read_meta', 'class_table',
                 'FAMILIES', 'DEFAULTS', 'DEFAULT_FAMILIES', 'META_FILE', 'IMAGE_TMPL'):
        assert getattr(gs, name) is getattr(syn, name)
