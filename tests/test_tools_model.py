"""demo / export / model_stats on tiny random-weight models."""

import json
import os
import re

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ops.checkpoint import make_checkpoint, save_checkpoint
from tests.fakes import tsn
from tools import demo, export, model_stats

CLASSES = ['zero', 'one', 'two', 'three', 'four', 'five']
LAST_LINE = re.compile(r'^params_m=(\d+\.\d+) gmacs=(\d+\.\d+) gflops=(\d+\.\d+) latency_ms=(\d+\.\d+|nan)$')


def tiny_model(segments=3, size=48, **kw):
    torch.manual_seed(0)
    model = tsn(len(CLASSES), segments, arch='resnet18', pretrain='none', shift=True,
                dropout=0.5, input_size=size, **kw)
    with torch.no_grad():
        model.new_fc.bias[4] = 8.0  # class "four" wins whatever the input: shows weights are loaded
    return model.eval()


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('ckpt') / 'ckpt.best.pth.tar')
    save_checkpoint(make_checkpoint(tiny_model(), epoch=3, categories=CLASSES), path)
    return path


def write_video(path, num_frames=20, width=80, height=60):
    with av.open(path, 'w') as c:
        s = c.add_stream('mpeg4', rate=10)
        s.width, s.height, s.pix_fmt = width, height, 'yuv420p'
        rng = np.random.default_rng(0)
        for _ in range(num_frames):
            img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_demo_video_json(checkpoint, tmp_path, capsys):
    video = str(tmp_path / 'clip.mp4')
    write_video(video)
    assert demo.main([checkpoint, video, '--json', '--device', 'cpu']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['num_frames'] == 20 and res['num_segments'] == 3 and res['input_size'] == 48
    assert res['model'] == 'TSM' and res['arch'] == 'resnet18'
    top = res['top']
    assert [t['rank'] for t in top] == [1, 2, 3, 4, 5]
    assert top[0]['class'] == 'four' and top[0]['label'] == 4 and top[0]['score'] > 0.99
    scores = [t['score'] for t in top]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-6
    assert {t['class'] for t in top} <= set(CLASSES)


def test_demo_frame_folder_text_and_category_file(checkpoint, tmp_path, capsys):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i in range(1, 10):
        Image.fromarray(np.full((60, 80, 3), 20 * i, np.uint8)).save(folder / ('img_%05d.jpg' % i))
    cats = tmp_path / 'category.txt'
    cats.write_text(''.join('C%d\n' % i for i in range(6)))
    assert demo.main([checkpoint, str(folder), '--category_file', str(cats), '--test_crops', '3',
                      '--topk', '3']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert '9 frames, 3 segments x 3 crop(s) at 48x48' in lines[0]
    assert len(lines) == 4 and lines[1].split()[:2] == ['1.', 'C4']


def test_demo_errors(checkpoint, tmp_path, capsys):
    assert demo.main([str(tmp_path / 'missing.pth'), str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith('error: ')
    assert demo.main([checkpoint, str(tmp_path / 'nothing.mp4')]) == 2
    assert 'input not found' in capsys.readouterr().err
    assert demo.main([checkpoint, str(tmp_path), '--device', 'gpu']) == 2
    assert capsys.readouterr().err.startswith('error: --device gpu: choose')
    cats = tmp_path / 'c.txt'
    cats.write_text('a\nb\n')
    (tmp_path / 'f').mkdir()
    Image.new('RGB', (8, 8)).save(tmp_path / 'f' / '00001.jpg')
    assert demo.main([checkpoint, str(tmp_path / 'f'), '--category_file', str(cats)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and 'lists 2 classes but the model has 6' in err
    cats.write_bytes(b'\xff\xfe\x00 not text\n')
    assert demo.main([checkpoint, str(tmp_path / 'f'), '--category_file', str(cats)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: cannot read category file {}'.format(cats)) and '\n' not in err


def test_export_matches_eager(checkpoint, tmp_path, capsys):
    out = str(tmp_path / 'model.pt2')
    assert export.main([checkpoint, '--out', out, '--dynamic_batch']) == 0
    text = capsys.readouterr().out
    assert 'MISMATCH' not in text and text.count('(ok') == 3  # example batch 2, then batches 1 and 3
    assert 'onnx: ' in text  # written, or skipped with the reason when onnx is not installed
    program = torch.export.load(out)
    model = tiny_model()
    x = torch.randn(2, 3 * 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-4, rtol=0)


def test_export_refuses_outputs_it_cannot_or_must_not_write(checkpoint, tmp_path, capsys):
    """--out / --onnx naming the checkpoint itself, a folder or a path under a file: one line, before any
    export, and the checkpoint is left as it was."""
    import shutil
    ckpt = str(tmp_path / 'model.pth.tar')
    shutil.copyfile(checkpoint, ckpt)
    before = open(ckpt, 'rb').read()
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    for flags, fragment in ((['--out', ckpt, '--no_onnx'], 'is the checkpoint itself'),
                            (['--onnx', ckpt, '--out', str(tmp_path / 'm.pt2')], 'is the checkpoint itself'),
                            (['--online', '--out', ckpt], 'is the checkpoint itself'),
                            (['--out', str(tmp_path), '--no_onnx'], 'is a folder'),
                            (['--out', str(a_file / 'm.pt2'), '--no_onnx'], 'cannot create folder'),
                            (['--atol', '-1'], '--atol must be >= 0')):
        assert export.main([ckpt] + flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert err.startswith('error: ') and '\n' not in err and fragment in err, err
    assert open(ckpt, 'rb').read() == before
    assert not os.path.exists(str(tmp_path / 'm.pt2'))


def test_model_stats_last_line(capsys):
    argv = ['--arch', 'resnet18', '--num_segments', '2', '--input_size', '32', '--runs', '1',
            '--warmup', '0', '--num_class', '10']
    assert model_stats.main(argv) == 0
    tsn = LAST_LINE.match(capsys.readouterr().out.strip().splitlines()[-1])
    assert model_stats.main(argv + ['--shift', '--shift_div', '4']) == 0
    tsm = LAST_LINE.match(capsys.readouterr().out.strip().splitlines()[-1])
    assert tsn and tsm
    params, gmacs, gflops, latency = (float(v) for v in tsm.groups())
    assert abs(gflops - 2 * gmacs) < 0.011 and latency > 0
    # the shift moves channels and adds no parameters or multiply-accumulates
    assert tsn.group(1) == tsm.group(1) and tsn.group(2) == tsm.group(2)
    # ResNet-18 has 11.2M weights besides its head
    assert 11.0 < params < 11.5


def test_tsm_resnet50_is_33_gmacs():
    from ops.config import ModelConfig
    stats = model_stats.measure(ModelConfig(num_class=400, num_segments=8, arch='resnet50', pretrain='none',
                                            shift=True, dropout=0.0), latency=False)
    assert 32.5 < stats['gmacs'] < 33.5 and 24.0 < stats['params_m'] < 24.7


def test_model_stats_table_tiny(capsys):
    assert model_stats.main(['--table', '--table_archs', 'resnet18', '--num_segments', '2',
                             '--input_size', '32', '--no_latency', '--num_class', '10']) == 0
    out = capsys.readouterr().out
    for name in ('TSN', 'TSM', 'NL-TSM', 'LSNet'):
        assert re.search(r'\| resnet18 \| %s \| ' % name, out)
    assert 'resnet18 LSNet/TSM:' in out


def test_model_stats_bad_flag(capsys):
    assert model_stats.main(['--num_segments', '0']) == 2
    assert capsys.readouterr().err.startswith('error: --num_segments')
    assert model_stats.main(['--arch', 'vgg', '--no_latency']) == 2
    assert 'vgg' in capsys.readouterr().err
    assert model_stats.main(['--table', '--table_archs', 'vgg', '--no_latency']) == 2
    assert capsys.readouterr().err.startswith("error: --table_archs vgg: unknown --arch 'vgg'")


def test_demo_official_name_bare_state_dict(tmp_path, capsys):
    """An official-style file (bare state_dict with ``module.`` keys, no config): the model is read
    off the file name and the class count off ``new_fc.weight``."""
    model = tiny_model(segments=2, size=224)
    sd = {'module.' + k: v for k, v in model.state_dict().items()}
    path = tmp_path / 'TSM_kinetics_RGB_resnet18_shift8_blockres_avg_segment2_e1.pth'
    torch.save(sd, str(path))
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i in range(1, 7):
        Image.new('RGB', (40, 30), (30 * i, 0, 0)).save(folder / ('{:05d}.jpg'.format(i)))
    assert demo.main([str(path), str(folder), '--json']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['num_segments'] == 2 and res['input_size'] == 224 and res['num_frames'] == 6
    assert res['top'][0]['class'] == 'class_4'
