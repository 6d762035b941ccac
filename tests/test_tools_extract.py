"""Frame extraction: tiny videos generated with PyAV, both dataset layouts, resumability, failures."""

import os
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from tools import extract_frames, vid2img_kinetics, vid2img_sthv2
from tools.extract_frames import ExtractOptions, Job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_video(path, num_frames=8, width=64, height=48, codec='mpeg4', fps=10):
    """Write a tiny video whose frame i is a flat grey of level 20·i."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, 'w') as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
        for i in range(num_frames):
            img = np.full((height, width, 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def frames_in(folder):
    return sorted(os.listdir(folder))


@pytest.fixture
def kinetics_videos(tmp_path):
    src = tmp_path / 'videos' / 'train'
    make_video(str(src / 'abseiling' / 'aaa_000001_000011.mp4'), num_frames=8)
    make_video(str(src / 'abseiling' / 'bbb_000005_000015.mp4'), num_frames=6)
    make_video(str(src / 'passing American football (in game)' / 'ccc_000000_000010.mp4'), num_frames=5)
    return src


def test_kinetics_layout_resize_and_order(kinetics_videos, tmp_path, capsys):
    out = tmp_path / 'frames'
    rc = vid2img_kinetics.main([str(kinetics_videos), str(out), '--short_side', '32', '-j', '1',
                                '--no_progress'])
    assert rc == 0
    a = out / 'abseiling' / 'aaa_000001_000011'
    assert frames_in(a) == ['img_%05d.jpg' % i for i in range(1, 9)]
    assert len(frames_in(out / 'abseiling' / 'bbb_000005_000015')) == 6
    # class names made folder-safe for space-separated list files
    assert frames_in(out / 'passing_American_football_in_game' / 'ccc_000000_000010')[-1] == 'img_00005.jpg'
    img = Image.open(a / 'img_00001.jpg')
    assert min(img.size) == 32 and img.size[0] > img.size[1]  # 64x48 -> 42x32
    # frames in time order: grey level rises with the frame number
    levels = [np.asarray(Image.open(a / n)).mean() for n in frames_in(a)]
    assert levels == sorted(levels) and levels[-1] - levels[0] > 100
    assert 'extracted 3 videos' in capsys.readouterr().out


def test_sthv2_layout_fps_and_parallel_jobs(tmp_path):
    src = tmp_path / 'webm'
    for vid in ('101', '102', '103'):
        make_video(str(src / (vid + '.webm')), num_frames=10, codec='libvpx', fps=10)
    out = tmp_path / 'frames'
    rc = vid2img_sthv2.main([str(src), str(out), '--fps', '5', '--short_side', '0', '-j', '2',
                             '--quality', '80', '--no_progress'])
    assert rc == 0
    for vid in ('101', '102', '103'):
        assert frames_in(out / vid) == ['%06d.jpg' % i for i in (1, 2, 3, 4, 5)]  # 10 fps -> 5 fps
    assert Image.open(out / '101' / '000001.jpg').size == (64, 48)


def test_resume_skips_finished_and_redoes_interrupted(tmp_path, capsys):
    src = tmp_path / 'webm'
    make_video(str(src / '1.webm'), num_frames=4, codec='libvpx')
    make_video(str(src / '2.webm'), num_frames=4, codec='libvpx')
    out = tmp_path / 'frames'
    # video 1 finished earlier: a marker file shows it is left untouched
    (out / '1').mkdir(parents=True)
    (out / '1' / 'keep.txt').write_text('done')
    # video 2 was interrupted: a half-written temp folder with a stale frame
    (out / '2.tmp').mkdir()
    (out / '2.tmp' / '000001.jpg').write_bytes(b'half')
    (out / '2.tmp' / '000099.jpg').write_bytes(b'stale')
    rc = vid2img_sthv2.main([str(src), str(out), '-j', '1', '--no_progress'])
    assert rc == 0
    assert frames_in(out / '1') == ['keep.txt']
    assert frames_in(out / '2') == ['%06d.jpg' % i for i in (1, 2, 3, 4)]
    assert not (out / '2.tmp').exists()
    Image.open(out / '2' / '000001.jpg').verify()
    assert 'skipped 1 already done' in capsys.readouterr().out


def test_corrupt_video_reported_others_processed(kinetics_videos, tmp_path, capsys):
    bad = kinetics_videos / 'abseiling' / 'zzz_000000_000010.mp4'
    bad.write_bytes(b'not a video' * 50)
    (kinetics_videos / 'abseiling' / 'notes.txt').write_text('ignored')
    out = tmp_path / 'frames'
    failed_list = tmp_path / 'failed.txt'
    rc = vid2img_kinetics.main([str(kinetics_videos), str(out), '-j', '2', '--no_progress',
                                '--failed_list', str(failed_list)])
    assert rc == 1
    text = capsys.readouterr().out
    assert 'failed 1' in text and 'zzz_000000_000010.mp4' in text
    assert failed_list.read_text().strip() == str(bad)
    assert not (out / 'abseiling' / 'zzz_000000_000010').exists()
    assert not (out / 'abseiling' / 'zzz_000000_000010.tmp').exists()
    assert len(frames_in(out / 'abseiling' / 'aaa_000001_000011')) == 8
    assert len(frames_in(out / 'passing_American_football_in_game' / 'ccc_000000_000010')) == 5


def test_ffmpeg_backend_command(monkeypatch, tmp_path):
    """With ffmpeg on PATH the CLI is used: short-side scale, fps and quality flags, 1-based names."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        pattern = cmd[-1]
        for i in (1, 2, 3):
            open(pattern.replace('%05d', '%05d' % i), 'wb').close()
        return subprocess.CompletedProcess(cmd, 0, '', '')

    monkeypatch.setattr(extract_frames.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(extract_frames.subprocess, 'run', fake_run)
    opts = ExtractOptions(tmpl='img_{:05d}.jpg', short_side=256, quality=95, fps=8, backend='auto')
    res = extract_frames.extract_one(Job(str(tmp_path / 'v.mp4'), str(tmp_path / 'v')), opts)
    assert res.status == 'done' and res.num_frames == 3
    cmd = calls[0]
    vf = cmd[cmd.index('-vf') + 1]
    assert vf.startswith('fps=8,scale=') and '256' in vf
    assert cmd[cmd.index('-q:v') + 1] == str(extract_frames.ffmpeg_quality(95))
    assert cmd[-1].endswith(os.path.join('v.tmp', 'img_%05d.jpg'))
    assert frames_in(tmp_path / 'v') == ['img_00001.jpg', 'img_00002.jpg', 'img_00003.jpg']


def _size_and_tables(path):
    with Image.open(path) as img:
        return img.size, {k: list(v) for k, v in img.quantization.items()}


def test_defaults_are_the_reference_frames(tmp_path):
    """No size flags: Kinetics frames 331 px high, Something V2 256 px high (width proportional, also
    for a portrait video), at the finest quantiser (the same JPEG as --quality 100, finer than 90)."""
    make_video(str(tmp_path / 'k' / 'abseiling' / 'a_000000_000010.mp4'), num_frames=3, width=64, height=48)
    make_video(str(tmp_path / 'k' / 'abseiling' / 'p_000000_000010.mp4'), num_frames=3, width=48, height=64)
    assert vid2img_kinetics.main([str(tmp_path / 'k'), str(tmp_path / 'kf'), '-j', '1', '--no_progress']) == 0
    size, tables = _size_and_tables(tmp_path / 'kf' / 'abseiling' / 'a_000000_000010' / 'img_00001.jpg')
    assert size == (441, 331)  # 64 * 331 / 48 = 441.3
    assert _size_and_tables(tmp_path / 'kf' / 'abseiling' / 'p_000000_000010' / 'img_00003.jpg')[0] == (248, 331)
    make_video(str(tmp_path / 's' / '7.webm'), num_frames=3, codec='libvpx', width=64, height=48)
    assert vid2img_sthv2.main([str(tmp_path / 's'), str(tmp_path / 'sf'), '-j', '1', '--no_progress']) == 0
    assert _size_and_tables(tmp_path / 'sf' / '7' / '000002.jpg')[0] == (341, 256)
    for quality, finest in (('100', True), ('90', False)):
        out = tmp_path / ('q' + quality)
        assert vid2img_kinetics.main([str(tmp_path / 'k'), str(out), '--quality', quality, '-j', '1',
                                      '--no_progress']) == 0
        other = _size_and_tables(out / 'abseiling' / 'a_000000_000010' / 'img_00001.jpg')[1]
        assert (other == tables) == finest
        assert finest or sum(tables[0]) < sum(other[0])


def test_defaults_with_ffmpeg_run_the_reference_command(monkeypatch, tmp_path):
    """With ffmpeg on PATH the defaults are the reference's flags: scale=-1:331 (256 for Something V2)
    and the finest quantiser (-q:v 2, what the reference's -q:v 0 is clipped to)."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        open(cmd[-1].replace('%05d', '00001').replace('%06d', '000001'), 'wb').close()
        return subprocess.CompletedProcess(cmd, 0, '', '')

    monkeypatch.setattr(extract_frames.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(extract_frames.subprocess, 'run', fake_run)
    (tmp_path / 'k' / 'abseiling').mkdir(parents=True)
    (tmp_path / 'k' / 'abseiling' / 'a_000000_000010.mp4').write_bytes(b'')
    (tmp_path / 's').mkdir()
    (tmp_path / 's' / '1.webm').write_bytes(b'')
    assert vid2img_kinetics.main([str(tmp_path / 'k'), str(tmp_path / 'kf'), '--no_progress']) == 0
    assert vid2img_sthv2.main([str(tmp_path / 's'), str(tmp_path / 'sf'), '--no_progress']) == 0
    assert vid2img_sthv2.main([str(tmp_path / 's'), str(tmp_path / 'sf2'), '--short_side', '128', '--quality', '50',
                               '--no_progress']) == 0
    (k, s, changed) = calls
    for cmd, height in ((k, 331), (s, 256)):
        assert cmd[cmd.index('-vf') + 1] == 'scale=-1:%d' % height and cmd[cmd.index('-q:v') + 1] == '2'
    assert '128' in changed[changed.index('-vf') + 1] and changed[changed.index('-q:v') + 1] == '17'


def test_height_flag_and_its_conflict_with_short_side(tmp_path, capsys):
    make_video(str(tmp_path / 'v' / '1.webm'), num_frames=2, codec='libvpx', width=64, height=48)
    assert vid2img_sthv2.main([str(tmp_path / 'v'), str(tmp_path / 'f'), '--height', '40', '--no_progress']) == 0
    assert Image.open(tmp_path / 'f' / '1' / '000001.jpg').size == (53, 40)
    capsys.readouterr()
    assert vid2img_sthv2.main([str(tmp_path / 'v'), str(tmp_path / 'g'), '--height', '40', '--short_side', '32']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: --short_side and --height')


def test_helpers():
    assert extract_frames.resized_size(64, 48, 0, 331) == (441, 331)
    assert extract_frames.resized_size(48, 64, 32, 331) == (248, 331)  # the height wins
    assert extract_frames.resized_size(64, 48, 32) == (42, 32)
    assert extract_frames.resized_size(48, 64, 32) == (32, 42)
    assert extract_frames.resized_size(320, 240, 0) == (320, 240)
    assert extract_frames.ffmpeg_quality(100) == 2 and extract_frames.ffmpeg_quality(1) == 31


@pytest.mark.parametrize('argv, msg', [
    (['{missing}', '{out}'], 'video folder not found'),
    (['{src}', '{out}', '--quality', '0'], '--quality'),
    (['{src}', '{out}', '--jobs', '0'], '--jobs'),
    (['{src}', '{out}', '--short_side', '-1'], '--short_side'),
    (['{src}', '{out}', '--height', '-1'], '--height'),
    (['{src}', '{out}', '--failed_list', '{src}'], '--failed_list'),
    (['{src}', '{out}', '--failed_list', '{missing}/failed.txt'], '--failed_list'),
])
def test_bad_input_exits_2(tmp_path, capsys, argv, msg):
    (tmp_path / 'src').mkdir()
    argv = [a.format(missing=tmp_path / 'nope', src=tmp_path / 'src', out=tmp_path / 'out') for a in argv]
    assert vid2img_sthv2.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and msg in err[0]


def test_output_folder_that_cannot_be_made(tmp_path, capsys):
    make_video(str(tmp_path / 'src' / '1.mp4'), num_frames=2)
    (tmp_path / 'a_file').write_text('')
    assert vid2img_sthv2.main([str(tmp_path / 'src'), str(tmp_path / 'a_file'), '--no_progress']) == 2
    assert capsys.readouterr().err.splitlines() == [
        'error: cannot create output folder {} (File exists)'.format(tmp_path / 'a_file')]


def test_empty_folder_is_an_error(tmp_path, capsys):
    (tmp_path / 'src').mkdir()
    assert vid2img_kinetics.main([str(tmp_path / 'src'), str(tmp_path / 'out')]) == 2
    assert capsys.readouterr().err.startswith('error: no video files')


def test_runs_as_script(tmp_path):
    """As a script, with worker processes (started from a fork server, which imports the script as
    ``__mp_main__``)."""
    for name in ('7', '8'):
        make_video(str(tmp_path / 'v' / (name + '.webm')), num_frames=3, codec='libvpx')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'vid2img_sthv2.py'),
                           str(tmp_path / 'v'), str(tmp_path / 'f'), '--no_progress', '-j', '2'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in ('7', '8'):
        assert frames_in(tmp_path / 'f' / name) == ['000001.jpg', '000002.jpg', '000003.jpg']


def test_workers_do_not_hang_after_the_parent_decoded(kinetics_videos, tmp_path):
    """A process that has decoded videos itself (decoder threads) and then extracts with -j 2: forked
    workers used to wait forever on a lock held at the fork."""
    assert vid2img_kinetics.main([str(kinetics_videos), str(tmp_path / 'a'), '-j', '1', '--no_progress']) in (0, 1)
    assert vid2img_kinetics.main([str(kinetics_videos), str(tmp_path / 'b'), '-j', '2', '--no_progress']) in (0, 1)
    assert sorted(os.listdir(tmp_path / 'a')) == sorted(os.listdir(tmp_path / 'b'))


def test_videos_to_frames_to_lists_to_dataset(kinetics_videos, tmp_path):
    """vid2img_kinetics -> gen_label_kinetics -> TSNDataSet reads the clips with the default template."""
    from ops.dataset import TSNDataSet
    from tools import gen_label_kinetics

    frames = tmp_path / 'images'
    assert vid2img_kinetics.main([str(kinetics_videos), str(frames), '--short_side', '40', '-j', '1',
                                  '--no_progress']) == 0
    (tmp_path / 'train.csv').write_text(
        'label,youtube_id,time_start,time_end,split\n'
        'abseiling,aaa,1,11,train\n'
        '"passing American football (in game)",ccc,0,10,train\n')
    labels = tmp_path / 'labels'
    assert gen_label_kinetics.main(['--train_csv', str(tmp_path / 'train.csv'), '--frame_root',
                                    str(frames), '--out_dir', str(labels)]) == 0
    ds = TSNDataSet(str(frames), str(labels / 'train_videofolder.txt'), num_segments=4,
                    random_shift=False)
    assert [(r.path, r.num_frames, r.label) for r in ds.video_list] == [
        ('abseiling/aaa_000001_000011', 8, 0), ('passing_American_football_in_game/ccc_000000_000010', 5, 1)]
    clip, label = ds[1]
    assert tuple(clip.shape) == (4, 3, 40, 54) and label == 1
