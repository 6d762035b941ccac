"""tools/online_demo.py (frame-by-frame recognition of a video, frame folder or camera) and
tools/export.py --online, on a tiny online LSNet (ResNet-18 at 32 px) and a 20-frame generated video."""
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ops.checkpoint import make_checkpoint, save_checkpoint
from ops.config import ModelConfig
from ops.models import build_model
from ops.streaming import OnlineRecognizer, Streamer
from ops.transforms import build_transform
from tests.fakes import make_lively
from tools import export, online_demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ['wave', 'clap', 'jump', 'sit']
FRAMES, WIDTH, HEIGHT, FPS = 20, 160, 120, 10


def online_model(direction='uni'):
    """A tiny online LSNet whose temporal modules all act and whose scores vary with the input."""
    torch.manual_seed(0)
    cfg = ModelConfig(num_class=len(CLASSES), num_segments=4, arch='resnet18', pretrain='none', shift=True,
                      shift_direction=direction, lsm=True, input_size=32, dropout=0.0)
    return make_lively(build_model(cfg), 32, fc_scale=3.0)


def video_frames():
    """Smooth frames (a gradient and a moving bright square), so re-encoding changes them little."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    out = []
    for i in range(FRAMES):
        img = np.stack([x * 255 // WIDTH, y * 255 // HEIGHT, np.full_like(x, 80)], axis=-1).astype(np.uint8)
        cx, cy = 20 + 6 * i, 30 + 3 * i
        img[cy:cy + 24, cx:cx + 24] = (250, 240, 40)
        out.append(img)
    return out


def write_video(path, frames, fps=FPS):
    codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
    with av.open(path, 'w') as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], 'yuv420p'
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def decode(path):
    with av.open(path) as c:
        stream = c.streams.video[0]
        rate = stream.average_rate
        return [f.to_ndarray(format='rgb24') for f in c.decode(stream)], rate


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('online')
    uni, bi = str(root / 'uni.pth.tar'), str(root / 'bi.pth.tar')
    save_checkpoint(make_checkpoint(online_model('uni'), categories=CLASSES, frames_per_segment=2.0), uni)
    save_checkpoint(make_checkpoint(online_model('bi'), categories=CLASSES), bi)
    video = str(root / 'clip.mp4')
    write_video(video, video_frames())
    return {'uni': uni, 'bi': bi, 'video': video, 'root': root}


def run_demo(capsys, *argv):
    code = online_demo.main([str(a) for a in argv])
    out = capsys.readouterr().out
    return code, out


def json_run(capsys, *argv):
    code, out = run_demo(capsys, *argv, '--json')
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]  # stdout holds JSON lines only
    summary = records[-1]['summary']
    return records[:-1], summary


def recognizer_scores(ckpt, frames, stride, window):
    """Scores of OnlineRecognizer run directly on the test-transformed frames: {frame: (num_class,)}."""
    from ops.checkpoint import load_model
    model, _, _ = load_model(ckpt, 'cpu')
    transform = build_transform('test', modality='RGB', new_length=1, crop_size=model.crop_size,
                                scale_size=model.scale_size, mean=model.input_mean, std=model.input_std)
    recognizer = OnlineRecognizer(model, stride=stride, window=window)
    out = {}
    for i, img in enumerate(frames):
        scores = recognizer.update(transform(torch.from_numpy(img).permute(2, 0, 1)[None]))
        if scores is not None:
            out[i] = scores
    return out


def as_vector(record):
    scores = {t['label']: t['score'] for t in record['top']}
    return torch.tensor([scores[c] for c in CLASSES])


# ------------------------------------------------------------------ video input, annotated output

def test_video_json_annotated_out_and_scores_equal_the_recognizer(files, tmp_path, capsys):
    out = tmp_path / 'annotated.mp4'
    records, summary = json_run(capsys, files['video'], '--weights', files['uni'], '--out', out, '--stride', 1,
                                '--topk', 4)
    assert [r['frame'] for r in records] == list(range(FRAMES))
    assert [r['time'] for r in records] == pytest.approx([i / FPS for i in range(FRAMES)], abs=1e-3)
    assert all([t['label'] for t in r['top']] and {t['label'] for t in r['top']} == set(CLASSES) for r in records)
    assert all(r['top'][0]['score'] >= r['top'][-1]['score'] for r in records)
    assert summary['frames_read'] == FRAMES and summary['processed'] == FRAMES
    assert summary['dropped'] == 0 and summary['skipped'] == 0 and summary['window'] == 4
    assert summary['model_fps'] > 0 and summary['wall_seconds'] > 0

    # the scores are OnlineRecognizer's on the same decoded, test-transformed frames
    frames, _ = decode(files['video'])
    expected = recognizer_scores(files['uni'], frames, stride=1, window=4)
    for r in records:
        torch.testing.assert_close(as_vector(r), expected[r['frame']], rtol=0, atol=1e-5)
    tops = {r['top'][0]['label'] for r in records}
    assert len(tops) > 1 or max(r['top'][0]['score'] for r in records) - min(
        r['top'][0]['score'] for r in records) > 1e-3  # the scores follow the frames

    # the annotated video: same frame count and rate; changed where the panel is, nearly equal elsewhere
    annotated, rate = decode(str(out))
    assert len(annotated) == FRAMES and rate == FPS
    assert annotated[0].shape == frames[0].shape
    assert not [n for n in os.listdir(tmp_path) if 'partial' in n]
    for a, b in zip(annotated, frames):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)
        assert diff[:40, :80].mean() > 20  # the panel: darkened, label and bars
        assert diff[80:, 110:].mean() < 6  # far from the panel: re-encoding noise only


def test_stride_halves_the_lines_and_matches_the_recognizer_with_that_stride(files, capsys):
    records, summary = json_run(capsys, files['video'], '--weights', files['uni'], '--stride', 2, '--window', 3,
                                '--topk', 4)
    assert [r['frame'] for r in records] == list(range(0, FRAMES, 2))
    assert summary['processed'] == FRAMES // 2 and summary['skipped'] == FRAMES // 2 and summary['window'] == 3
    frames, _ = decode(files['video'])
    expected = recognizer_scores(files['uni'], frames, stride=2, window=3)
    assert sorted(expected) == [r['frame'] for r in records]
    for r in records:
        torch.testing.assert_close(as_vector(r), expected[r['frame']], rtol=0, atol=1e-5)


def test_default_stride_comes_from_the_checkpoint_and_text_output(files, capsys):
    code, out = run_demo(capsys, '--video', files['video'], '--weights', files['uni'], '--topk', 2)
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith('frame ')]
    assert len(lines) == FRAMES // 2  # frames_per_segment 2.0 in the checkpoint -> stride 2
    assert all(line.count('|') == 1 for line in lines)  # top-2
    assert any(c in lines[0] for c in CLASSES)
    summary = out.splitlines()[-1]
    assert summary.startswith('summary: 20 frames read, 10 processed, 10 skipped (stride 2), 0 dropped')


# ------------------------------------------------------------------ frame folder input

def test_frame_folder_equals_the_video_it_was_extracted_from(files, tmp_path, capsys):
    frames, _ = decode(files['video'])
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i, img in enumerate(frames, 1):  # lossless, and named so that only a natural sort orders them
        Image.fromarray(img).save(folder / 'frame_{}.png'.format(i))
    video_records, _ = json_run(capsys, files['video'], '--weights', files['uni'], '--stride', 1)
    folder_records, summary = json_run(capsys, '--frames', folder, '--weights', files['uni'], '--stride', 1,
                                       '--fps', 5)
    again, _ = json_run(capsys, '--frames', folder, '--weights', files['uni'], '--stride', 1, '--fps', 5)
    assert summary['frames_read'] == FRAMES
    assert [r['time'] for r in folder_records] == pytest.approx([i / 5 for i in range(FRAMES)])
    for v, f, g in zip(video_records, folder_records, again):
        assert [t['label'] for t in v['top']] == [t['label'] for t in f['top']]
        assert [t['score'] for t in v['top']] == pytest.approx([t['score'] for t in f['top']], abs=1e-6)
        assert f['top'] == g['top']  # deterministic


def test_frame_folder_annotated_at_fps(files, tmp_path, capsys):
    folder = tmp_path / 'jpg'
    folder.mkdir()
    for i, img in enumerate(video_frames()[:6]):
        Image.fromarray(img[:-1, :-1]).save(folder / 'img_{:05d}.jpg'.format(i + 1))  # odd size: padded
    out = tmp_path / 'a.mkv'
    code, _ = run_demo(capsys, '--frames', folder, '--weights', files['uni'], '--out', out, '--fps', 12)
    assert code == 0
    annotated, rate = decode(str(out))
    assert len(annotated) == 6 and rate == 12 and annotated[0].shape == (HEIGHT, WIDTH, 3)


# ------------------------------------------------------------------ --realtime

class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept = 0.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept += seconds
        self.now += seconds


@pytest.fixture
def slow_model(monkeypatch):
    """A simulated clock on which every model step takes ``cost[0]`` seconds."""
    fake, cost = FakeClock(), [0.33]
    monkeypatch.setattr(online_demo, '_clock', fake.clock)
    monkeypatch.setattr(online_demo, '_sleep', fake.sleep)
    update = OnlineRecognizer.update

    def timed_update(self, frame):
        fake.now += cost[0]
        return update(self, frame)
    monkeypatch.setattr(OnlineRecognizer, 'update', timed_update)
    return fake, cost


def live_schedule(cost, stride, period=1.0 / FPS):
    """Frames a live system processes when each step takes ``cost`` seconds: a due frame is dropped
    when the next due frame has arrived before the model is free."""
    free_at, processed = 0.0, []
    for i in range(0, FRAMES, stride):
        t = i * period
        if t + stride * period <= free_at:
            continue
        processed.append(i)
        free_at = max(t, free_at) + cost
    return processed


def test_realtime_drops_the_frames_that_arrive_while_the_model_is_busy(files, slow_model, capsys):
    # 10 fps source, 0.33 s per step: the model is free again after about every third frame
    records, summary = json_run(capsys, files['video'], '--weights', files['uni'], '--stride', 1, '--realtime')
    assert [r['frame'] for r in records] == live_schedule(0.33, 1) == [0, 3, 6, 9, 13, 16, 19]
    assert summary['dropped'] == FRAMES - len(records) and summary['processed'] == len(records)
    assert summary['realtime'] and summary['model_fps'] == pytest.approx(1 / 0.33, rel=1e-3)
    assert slow_model[0].slept == 0  # never ahead of the source


def test_realtime_with_stride_drops_only_due_frames(files, slow_model, capsys):
    slow_model[1][0] = 0.43  # stride 2 at 10 fps: a due frame every 0.2 s
    records, summary = json_run(capsys, files['video'], '--weights', files['uni'], '--stride', 2, '--realtime')
    assert [r['frame'] for r in records] == live_schedule(0.43, 2) == [0, 4, 8, 12, 16]
    assert summary['dropped'] == 5 and summary['skipped'] == 10


def test_realtime_with_a_fast_model_is_paced_by_the_source_and_drops_nothing(files, slow_model, capsys):
    fake, cost = slow_model
    cost[0] = 0.01
    records, summary = json_run(capsys, files['video'], '--weights', files['uni'], '--stride', 1, '--realtime')
    assert len(records) == FRAMES and summary['dropped'] == 0
    assert summary['wall_seconds'] == pytest.approx((FRAMES - 1) / FPS + 0.01, abs=1e-3)
    assert fake.slept > 1.5


def test_realtime_on_the_real_clock_with_a_fast_source(files, tmp_path, capsys):
    out = tmp_path / 'rt.mp4'
    records, summary = json_run(capsys, files['video'], '--weights', files['uni'], '--stride', 1, '--realtime',
                                '--source_fps', 2000, '--out', out)
    assert summary['dropped'] > 0 and summary['processed'] == len(records) >= 1
    assert summary['processed'] + summary['dropped'] == FRAMES
    assert len(decode(str(out))[0]) == FRAMES  # every frame is written, dropped ones with the latest label


# ------------------------------------------------------------------ --compile

def test_compile_runs_the_step_through_the_compiled_streamer(files, monkeypatch, capsys):
    """--compile wiring without compiling (minutes on a CPU): compile_model returns a stand-in that
    records its calls and runs Streamer.forward, which must be fed zeros and then its own state."""
    calls = []

    class FakeCompile:
        @staticmethod
        def check_compile_support(device, mode):
            calls.append(('check', mode))

        @staticmethod
        def compile_model(streamer, mode, device, inference=False):
            assert isinstance(streamer, Streamer) and inference  # weights frozen: the demo only infers

            def compiled(frame, *state):
                calls.append(tuple(s.stride() for s in state))
                return streamer(frame, *state)
            return compiled
    monkeypatch.setattr(online_demo, '_compile_module', lambda: FakeCompile)
    eager, _ = json_run(capsys, files['video'], '--weights', files['uni'], '--stride', 1, '--max_frames', 5)
    compiled, summary = json_run(capsys, files['video'], '--weights', files['uni'], '--stride', 1, '--max_frames', 5,
                                 '--compile', '--compile_mode', 'max-autotune')
    assert calls[0] == ('check', 'max-autotune') and len(calls) == 1 + 5
    assert len(set(calls[1:])) == 1  # the same strides every frame: one graph
    assert summary['frames_read'] == 5 and len(compiled) == 5
    for e, c in zip(eager, compiled):
        assert [t['label'] for t in e['top']] == [t['label'] for t in c['top']]
        assert [t['score'] for t in e['top']] == pytest.approx([t['score'] for t in c['top']], abs=1e-6)


# ------------------------------------------------------------------ errors

def one_error_line(capfd):
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    return lines[0]


@pytest.mark.parametrize('case', ['camera', 'offline', 'corrupt', 'empty_folder', 'missing_weights', 'two_inputs',
                                  'bad_device'])
def test_bad_inputs_give_one_error_line_and_no_output(files, tmp_path, capfd, case):
    out = tmp_path / 'out' / 'annotated.mp4'
    weights, source, expect = files['uni'], [files['video']], ()
    if case == 'camera':
        source, expect = ['--camera', '/dev/video_missing'], ('/dev/video_missing', '--camera')
    elif case == 'offline':
        weights, expect = files['bi'], ('--shift_direction uni',)
    elif case == 'corrupt':
        bad = tmp_path / 'broken.mp4'
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        source, expect = [bad], ('broken.mp4',)
    elif case == 'empty_folder':
        (tmp_path / 'empty').mkdir()
        source, expect = ['--frames', tmp_path / 'empty'], ('empty', 'no image files')
    elif case == 'missing_weights':
        weights, expect = str(tmp_path / 'nothing.pth'), ('nothing.pth',)
    elif case == 'two_inputs':
        source, expect = [files['video'], '--camera', '/dev/video0'], ('one input',)
    elif case == 'bad_device':
        source, expect = [files['video'], '--device', 'gpu'], ('--device gpu',)
    code = online_demo.main([str(a) for a in source] + ['--weights', weights, '--out', str(out)])
    assert code != 0
    line = one_error_line(capfd)
    assert all(e in line for e in expect), line
    assert not out.exists() and not (out.parent.exists() and os.listdir(out.parent))


def test_script_error_is_one_line_on_the_real_stderr(files):
    """Run as a script: FFmpeg or torch writing to file descriptor 2 would show up here."""
    res = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'online_demo.py'), '--camera',
                          '/dev/video_missing', '--weights', files['uni']], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        'error: cannot open camera /dev/video_missing (--camera): No such file or directory'], res.stderr


# ------------------------------------------------------------------ export --online

def test_export_online_reloads_and_matches_eager(files, tmp_path, capsys):
    path = str(tmp_path / 'step.pt2')
    assert export.main([files['uni'], '--online', '--out', path, '--frames', '3']) == 0
    out = capsys.readouterr().out
    assert 'frames_seen' in out and 'base_model.layer1.0.lsm.long.pooled_sum' in out
    assert 'ok, atol' in out and 'onnx:' in out
    program = torch.export.load(path).module()
    from ops.checkpoint import load_model
    model, _, _ = load_model(files['uni'], 'cpu')
    streamer = Streamer(model)
    frames = torch.randn(4, 1, 3, 32, 32)
    state, eager_state = streamer.initial_state(frames[0]), None
    for f in frames:
        result = program(f, *state)
        logits, state = result[0], tuple(result[1:])
        with torch.no_grad():
            eager, eager_state = streamer.step(f, eager_state)
        torch.testing.assert_close(logits, eager, rtol=1e-4, atol=1e-4 * float(eager.abs().max()))


def test_export_online_refuses_an_offline_checkpoint(files, tmp_path, capfd):
    assert export.main([files['bi'], '--online', '--out', str(tmp_path / 'x.pt2')]) == 2
    assert '--shift_direction uni' in one_error_line(capfd)
    assert not (tmp_path / 'x.pt2').exists()
