"""TSNDataSet on generated frames and videos: frame selection, errors, Flow, workers, PyAV input."""
import os
import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

from ops.dataset import TSNDataSet, parse_list
from ops.errors import LSNetError
from ops.transforms import RGB_MEAN, RGB_STD, MultiScaleCropFlip, build_transform
from ops.video_io import count_video_frames, read_video_frames

H, W = 24, 32


def _gray(value, mode='RGB'):
    return Image.fromarray(np.full((H, W, 3 if mode == 'RGB' else 1), value, np.uint8).squeeze())


def _make_video(root, name, n, tmpl='img_{:05d}.jpg'):
    """Frame k has grey level 10·k, so decoded pixels tell which frame was read."""
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for k in range(1, n + 1):
        _gray(10 * k).save(os.path.join(root, name, tmpl.format(k)), quality=95)


def _write_list(path, lines):
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


def _frame_ids(clip):
    """Frame number of each image of a raw uint8 clip (grey 10·k)."""
    return [int(round(float(img.float().mean()) / 10)) for img in clip]


@pytest.fixture
def frames(tmp_path):
    root = str(tmp_path / 'frames')
    _make_video(root, 'a', 20)
    _make_video(root, 'b', 10)
    _make_video(root, 'c', 2)
    lst = _write_list(tmp_path / 'list.txt', ['a 20 0', 'b 10 1 7 9', 'c 2 2'])
    return root, lst


def test_list_parsing_and_short_video_rule(frames):
    root, lst = frames
    ds = TSNDataSet(root, lst, num_segments=4)
    assert [(r.path, r.num_frames, r.label) for r in ds.video_list] == [('a', 20, 0), ('b', 10, 1)]
    test = TSNDataSet(root, lst, num_segments=4, test_mode=True)
    assert len(test) == 3  # test mode keeps short videos unless remove_missing
    assert len(TSNDataSet(root, lst, num_segments=4, test_mode=True, remove_missing=True)) == 2


def test_val_and_test_read_the_sampled_frames(frames):
    root, lst = frames
    val = TSNDataSet(root, lst, num_segments=4, random_shift=False)
    clip, label = val[0]
    assert clip.shape == (4, 3, H, W) and clip.dtype == torch.uint8 and label == 0
    assert _frame_ids(clip) == [3, 8, 13, 18]
    twice = TSNDataSet(root, lst, num_segments=4, test_mode=True, twice_sample=True)
    assert _frame_ids(twice[0][0]) == [3, 8, 13, 18, 1, 6, 11, 16]
    dense = TSNDataSet(root, lst, num_segments=4, test_mode=True, dense_sample=True)
    ids = _frame_ids(dense[0][0])  # p = 1: every clip starts at frame 1, stride 16, wraps mod 20
    assert len(ids) == 40 and ids[:4] == [1, 17, 13, 9]
    rgbdiff = TSNDataSet(root, lst, num_segments=2, modality='RGBDiff', random_shift=False)
    assert _frame_ids(rgbdiff[1][0]) == [3, 4, 7, 8]  # new_length 1 + 1; b: tick 4.5 → 2, 6


def test_training_picks_one_frame_per_segment(frames):
    root, lst = frames
    ds = TSNDataSet(root, lst, num_segments=4)
    random.seed(0)
    for _ in range(5):
        ids = _frame_ids(ds[0][0])
        assert all(5 * i < f <= 5 * (i + 1) for i, f in enumerate(ids))


def test_malformed_list_lines(tmp_path, frames):
    root, _ = frames
    for bad, lineno in ((['a 20 0', 'b ten 1'], 2), (['a 20'], 1), (['a 20 0', '', 'x'], 3)):
        lst = _write_list(tmp_path / 'bad.txt', bad)
        with pytest.raises(LSNetError, match=r'bad\.txt:{}'.format(lineno)):
            TSNDataSet(root, lst)
    with pytest.raises(LSNetError, match='list file not found'):
        TSNDataSet(root, str(tmp_path / 'nope.txt'))


def test_missing_and_corrupt_frames(tmp_path, frames):
    root, _ = frames
    lst = _write_list(tmp_path / 'l.txt', ['b 14 0'])  # list claims 14 frames, folder has 10
    ds = TSNDataSet(root, lst, num_segments=4, random_shift=False)
    with pytest.raises(LSNetError, match=r'missing frame: .*b.img_00013\.jpg'):
        ds[0]
    with open(os.path.join(root, 'a', 'img_00003.jpg'), 'wb') as f:
        f.write(b'not a jpeg')
    lst = _write_list(tmp_path / 'l2.txt', ['a 20 0'])
    with pytest.raises(LSNetError, match=r'unreadable frame .*a.img_00003\.jpg'):
        TSNDataSet(root, lst, num_segments=4, random_shift=False)[0]


def test_skip_bad_replaces_and_counts(tmp_path, frames):
    root, _ = frames
    lst = _write_list(tmp_path / 'l.txt', ['missing 20 5', 'a 20 0'])
    ds = TSNDataSet(root, lst, num_segments=4, random_shift=False, skip_bad=True)
    random.seed(0)
    clip, label = ds[0]
    assert label == 0 and clip.shape[0] == 4
    assert 'missing' in ds.bad_videos


def test_flow_pairs_and_templates(tmp_path):
    root = str(tmp_path / 'flow')
    os.makedirs(os.path.join(root, 'v'))
    for k in range(1, 11):  # x images grey 10·k, y images grey 10·k + 5
        _gray(10 * k, 'L').save(os.path.join(root, 'v', 'flow_x_{:05d}.jpg'.format(k)), quality=95)
        _gray(10 * k + 5, 'L').save(os.path.join(root, 'v', 'flow_y_{:05d}.jpg'.format(k)), quality=95)
    lst = _write_list(tmp_path / 'l.txt', ['v 10 3'])
    ds = TSNDataSet(root, lst, num_segments=2, new_length=3, modality='Flow',
                    image_tmpl='flow_{}_{:05d}.jpg', random_shift=False)
    clip, label = ds[0]
    assert clip.shape == (2 * 3 * 2, 1, H, W)
    means = [float(img.float().mean()) for img in clip]
    # tick = (10 - 3 + 1) / 2 = 4: offsets 2, 6 → frames 3,4,5 and 7,8,9; x then y
    expected = [v for k in (3, 4, 5, 7, 8, 9) for v in (10 * k, 10 * k + 5)]
    assert np.allclose(means, expected, atol=1.5)
    t = build_transform('train', modality='Flow', new_length=3, crop_size=16, scale_size=18,
                        mean=[0.5], std=[0.226])
    ds.transform = t
    assert ds[0][0].shape == (2, 6, 16, 16)


def test_label_swap_follows_the_flip(frames):
    root, lst = frames
    aug = MultiScaleCropFlip(H, scales=(1,), flip=True)  # full-frame crops: only the flip varies
    t = build_transform('train', modality='RGB', new_length=1, crop_size=H, scale_size=H,
                        mean=RGB_MEAN, std=RGB_STD, augmentation=aug)
    ds = TSNDataSet(root, lst, num_segments=2, transform=t, label_swap={0: 5, 5: 0})
    random.seed(0)
    labels = {ds[0][1] for _ in range(30)}
    assert labels == {0, 5}
    assert {ds[1][1] for _ in range(10)} == {1}  # not in the map: unchanged


def test_dataloader_two_workers(frames):
    root, lst = frames
    t = build_transform('train', modality='RGB', new_length=1, crop_size=16, scale_size=18,
                        mean=RGB_MEAN, std=RGB_STD)
    ds = TSNDataSet(root, lst, num_segments=3, transform=t)
    pickle.dumps(ds)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=True)
    batches = [(x.shape, y.tolist()) for x, y in loader]
    assert len(batches) == 1 and batches[0][0] == (2, 3, 3, 16, 16)
    assert sorted(batches[0][1]) == [0, 1]


@pytest.mark.parametrize('codec,ext', [('mpeg4', 'mp4'), ('libvpx', 'webm')])
def test_video_file_input(tmp_path, codec, ext):
    import av
    path = str(tmp_path / ('clip.' + ext))
    n = 12
    with av.open(path, 'w') as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, 'yuv420p'
        stream.options = {'qscale': '1'} if codec == 'mpeg4' else {'crf': '4', 'b': '0'}
        for k in range(1, n + 1):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), 15 * k, np.uint8), format='rgb24')
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert count_video_frames(path) == n  # webm: no count in the container, packets are counted
    assert read_video_frames(path, list(range(1, n + 1))).shape == (n, 3, H, W)
    name = 'clip.' + ext
    lst = _write_list(tmp_path / 'l.txt', [name + ' 0 4', name + ' 2', name + ' 12 1'])
    ds = TSNDataSet(str(tmp_path), lst, num_segments=4, random_shift=False)
    assert [r.label for r in ds.video_list] == [4, 2, 1]
    for i in range(3):
        clip, _ = ds[i]
        levels = [float(img.float().mean()) / 15 for img in clip]
        assert np.allclose(levels, [2, 5, 8, 11], atol=0.3)  # tick 3: offsets 1, 4, 7, 10


def test_parse_list_extra_columns(tmp_path):
    lst = _write_list(tmp_path / 'l.txt', ['x 5 1 2 3', 'y 4 0'])
    assert [(r.path, r.num_frames, r.label) for r in parse_list(lst)] == [('x', 5, 1), ('y', 4, 0)]


def test_reduced_size_jpeg_decoding(tmp_path):
    from ops.video_io import read_frames
    path = str(tmp_path / 'big.jpg')
    Image.fromarray(np.full((128, 160, 3), 90, np.uint8)).save(path)
    assert read_frames([path]).shape == (1, 3, 128, 160)
    assert read_frames([path, path], min_short_side=32).shape == (2, 3, 32, 40)  # 1/4 size
    assert read_frames([path], min_short_side=65).shape == (1, 3, 128, 160)
    png = str(tmp_path / 'f.png')
    Image.fromarray(np.full((8, 10, 3), 7, np.uint8)).save(png)
    assert int(read_frames([png], min_short_side=2)[0, 0, 0, 0]) == 7  # non-JPEG: PIL, full size


def test_bench_data_smoke(tmp_path, capsys):
    """tools/bench_data.py end to end on two tiny generated videos: both floors, the required last line."""
    from tools import bench_data
    root, lst = str(tmp_path / 'frames'), str(tmp_path / 'list.txt')
    common = ['--root_path', root, '--list', lst, '--num_segments', '2', '--batch_size', '2',
              '--clips', '4', '--rounds', '1']
    threads = torch.get_num_threads()
    try:  # the tool runs on one thread
        assert bench_data.main(common + ['--generate', '--videos', '2', '--frames', '4']) == 0
        assert bench_data.main(common + ['--mode', 'val', '--no_pixels']) == 0
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith('pipeline_clips_per_s=') and ' decode_clips_per_s=' in lines[-1]
    assert any(line.startswith('wall time ratio pipeline/decode') for line in lines)
    pixels = bench_data.DecodeOnly(TSNDataSet(root, lst, num_segments=2, random_shift=False))[0]
    assert pixels.shape == (2, 256, 340, 3) and pixels.dtype == torch.uint8


def test_validation_warns_about_videos_no_longer_than_the_segments(frames, caplog):
    """The reference's validation rule reads a video of <= T + L - 1 frames as frame 1 repeated
    (kept, as docs/reference_semantics.md states); the loader says how many such videos a list holds."""
    root, lst = frames
    with caplog.at_level('WARNING', logger='ops.dataset'):
        val = TSNDataSet(root, lst, num_segments=10, random_shift=False)
    assert _frame_ids(val[1][0]) == [1] * 10  # b: 10 frames at 10 segments
    assert '1 of 2 videos have 10 frames or fewer' in caplog.text
    caplog.clear()
    with caplog.at_level('WARNING', logger='ops.dataset'):
        TSNDataSet(root, lst, num_segments=4, random_shift=False)  # both longer than 4
        test = TSNDataSet(root, lst, num_segments=10, test_mode=True)
    assert 'frames or fewer' not in caplog.text
    assert _frame_ids(test[1][0]) == list(range(1, 11))  # test sampling reads every frame
