"""Frame-by-frame recognition of a live stream with an online (causal) TSM / LSNet checkpoint.

An online model (trained with ``main.py ... --shift --shift_direction uni``, optionally ``--lsm``)
runs one frame at a time through :class:`ops.streaming.OnlineRecognizer`: every ``--stride``-th
frame goes through the model, which keeps what it needs from the past as a small state, and the
prediction is the softmax of the mean logits of the last ``--window`` processed frames.  The source
is a video file, a folder of frames or a camera (PyAV's v4l2 input); frames are decoded as they
come, never the whole video first.  Each frame is preprocessed as in testing (short side to the model's scale size,
centre crop, normalisation with the model's mean and std).

    python tools/online_demo.py clip.mp4 --weights ckpt.best.pth.tar --out annotated.mp4
    python tools/online_demo.py --camera /dev/video0 --weights ckpt.best.pth.tar --realtime
    python tools/online_demo.py --frames frames/abc/ --weights ckpt.best.pth.tar --json

Output: one line per processed frame (``--json``: one JSON object per line with the frame index, its
time in seconds and the top-k classes), then a summary (frames read / processed / skipped by the
stride / dropped, model and wall-clock frames per second).  ``--out FILE.mp4`` re-encodes the input
with the current top-1 class and a top-5 bar chart drawn on every frame (frames skipped by the
stride or dropped show the latest prediction), at the input's frame count and frame rate.

``--realtime``: frames arrive at the source's own rate (a file at its frame rate, a frame folder at
``--fps``, a camera as it delivers them, or ``--source_fps``); a frame due for the model that is
stale by the time the model is free (the next due frame has arrived meanwhile) is dropped, as a live
system must, and counted.  Without it every due frame is processed, however long that takes.

Class names: ``--category_file``, else the checkpoint's ``categories``, else the dataset's defaults
(as ``tools/demo.py``).  Every user mistake ends with one ``error: ...`` line and exit status 2.
"""

import contextlib
import fractions
import json
import logging
import os
import re
import sys
import time
from typing import NamedTuple

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ops.errors import ArgumentParser, LSNetError  # noqa: E402
from opts import add_compile_flags  # noqa: E402

log = logging.getLogger(__name__)

# The clock and the wait of --realtime; tests replace them with a simulated clock.
_clock = time.perf_counter
_sleep = time.sleep

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
OUTPUT_EXTENSIONS = ('.mp4', '.mkv', '.avi', '.mov')
DEFAULT_CAMERA_FPS = 30
BARS = 5  # classes in the bar chart of --out


# ---------------------------------------------------------------------------- sources

class Frame(NamedTuple):
    index: int      # 0-based position in the source
    time: float     # seconds since the source's first frame
    image: np.ndarray  # uint8 (H, W, 3) RGB


def _reason(exc):
    """The useful part of an OS / FFmpeg error: its strerror when it has one, else its first line."""
    text = getattr(exc, 'strerror', None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0]


class VideoSource:
    """Frames of a video file or a camera, decoded one at a time with PyAV."""

    def __init__(self, path, camera=False, camera_size='', camera_fps=0):
        import av
        self.path, self.camera = path, camera
        if camera:
            options = {}
            if camera_size:
                options['video_size'] = camera_size
            if camera_fps:
                options['framerate'] = str(camera_fps)
            try:
                self.container = av.open(path, format='v4l2', options=options)
            except (av.error.FFmpegError, OSError, ValueError) as e:
                raise LSNetError('cannot open camera {} (--camera): {}'.format(path, _reason(e))) from None
            what = 'camera {}'.format(path)
        else:
            if not os.path.isfile(path):
                raise LSNetError('video not found: {}'.format(path))
            try:
                self.container = av.open(path)
            except (av.error.FFmpegError, OSError, ValueError) as e:
                raise LSNetError('unreadable video {}: {}'.format(path, _reason(e))) from None
            what = 'video {}'.format(path)
        self.what = what
        if not self.container.streams.video:
            self.close()
            raise LSNetError('no video stream in {}'.format(what))
        self.stream = self.container.streams.video[0]
        if not camera:
            self.stream.thread_type = 'AUTO'
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        self.rate = fractions.Fraction(rate) if rate else None
        if self.rate is None or self.rate <= 0:
            self.rate = fractions.Fraction(DEFAULT_CAMERA_FPS if camera else 25)
            log.warning('%s does not state its frame rate; assuming %s fps', what, self.rate)

    def __iter__(self):
        import av
        first = None
        n = 0
        try:
            for frame in self.container.decode(self.stream):
                t = frame.time
                if t is None:
                    t = n / float(self.rate)
                if first is None:
                    first = t
                yield Frame(n, t - first, frame.to_ndarray(format='rgb24'))
                n += 1
        except av.error.FFmpegError as e:
            raise LSNetError('unreadable {}: {}'.format(self.what, _reason(e))) from None
        if n == 0:
            raise LSNetError('no decodable frames in {}'.format(self.what))

    def close(self):
        self.container.close()


def _natural_key(name):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', name)]


class FolderSource:
    """The image files of a folder in natural order (img_2 before img_10), at ``fps`` frames per second."""

    def __init__(self, folder, fps):
        if not os.path.isdir(folder):
            raise LSNetError('--frames: folder not found: {}'.format(folder))
        names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key)
        if not names:
            raise LSNetError('--frames: no image files ({}) in {}'.format(' '.join(IMAGE_EXTENSIONS), folder))
        self.paths = [os.path.join(folder, n) for n in names]
        self.rate = fractions.Fraction(fps).limit_denominator(1001)
        self.what = 'folder {}'.format(folder)

    def __iter__(self):
        from ops.video_io import read_frames
        for i, path in enumerate(self.paths):
            clip = read_frames([path])  # (1, 3, H, W) view of H x W x 3 pixels
            yield Frame(i, i / float(self.rate), clip[0].permute(1, 2, 0).numpy())

    def close(self):
        pass


def open_source(args):
    """The source of ``args`` (exactly one of a video file, ``--frames``, ``--camera``: see :func:`check_args`)."""
    if args.frames:
        return FolderSource(args.frames, args.fps)
    if args.camera:
        return VideoSource(args.camera, camera=True, camera_size=args.camera_size, camera_fps=args.camera_fps)
    return VideoSource(args.video)


# ---------------------------------------------------------------------------- realtime pacing

class Pacer:
    """--realtime on one clock: the source's frame ``t`` (seconds) arrives at ``t`` after the first.

    A file or folder cannot deliver a frame before its time, so :meth:`wait` sleeps until then (a
    camera's frames come when they come: ``live``).  A frame due for the model is stale when the
    next due frame (``stride`` frames later) has arrived by the time the model is free: it is dropped.
    """

    def __init__(self, period, stride, live=False):
        self.period, self.stride, self.live = float(period), int(stride), live
        self.start = None

    def now(self):
        return _clock() - self.start

    def wait(self, t):
        if self.start is None:
            self.start = _clock() - t
            return
        ahead = t - self.now()
        if ahead > 0 and not self.live:
            _sleep(ahead)

    def stale(self, t):
        return t + self.stride * self.period <= self.now()


# ---------------------------------------------------------------------------- model

def _compile_module():
    import ops.compile
    return ops.compile


def build_recognizer(model, args, device, source='the model'):
    """``OnlineRecognizer`` over ``model`` (stride 1: the demo picks the frames itself)."""
    from ops.streaming import CompiledStep, OnlineRecognizer, Streamer
    try:
        streamer = Streamer(model)
    except LSNetError as e:
        raise LSNetError('{}: {}'.format(source, e)) from None
    step = streamer
    if args.compile:  # the compiled module runs Streamer.forward; the recognizer calls .step
        compiled = _compile_module().compile_model(streamer, args.compile_mode, device, inference=True)
        step = CompiledStep(streamer, compiled)
    return OnlineRecognizer(step, stride=1, window=args.window or None)


def frame_transform(model):
    """uint8 (1, 3, H, W) -> normalised (1, 3, crop, crop): the 1-crop test transform of ``model``."""
    from ops.transforms import build_transform
    return build_transform('test', modality='RGB', new_length=1, crop_size=model.crop_size,
                           scale_size=model.scale_size, mean=model.input_mean, std=model.input_std, test_crops=1)


def to_clip(image):
    """uint8 (H, W, 3) -> (1, 3, H, W) view (channels-last memory, as the decoders hand it out)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


# ---------------------------------------------------------------------------- annotated output

_FONTS = {}


def _font(size):
    from PIL import ImageFont
    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: one bitmap size
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def _fit(draw, text, font, width):
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + '…', font=font) > width:
        text = text[:-1]
    return text + '…'


def annotate(image, top):
    """``image`` (H, W, 3) uint8 with the top-1 class and score and a bar chart of ``top``
    (``[(name, score)]``, best first; None before the first prediction) in a panel at the top left."""
    from PIL import Image, ImageDraw
    h, w = image.shape[:2]
    big = max(8, round(min(h, w) / 18))
    small = max(7, round(big * 0.75))
    pad = max(2, big // 4)
    rows = top[:BARS] if top else []
    row_h = small + pad
    panel_w = min(w, max(big * 12, w * 2 // 5))
    panel_h = min(h, pad * 2 + big + pad + len(rows) * row_h)
    base = Image.fromarray(np.ascontiguousarray(image))
    box = (0, 0, panel_w, panel_h)
    panel = Image.blend(base.crop(box), Image.new('RGB', (panel_w, panel_h)), 0.6)
    draw = ImageDraw.Draw(panel)
    f_big, f_small = _font(big), _font(small)
    inner = panel_w - 2 * pad
    if top:
        name, score = top[0]
        draw.text((pad, pad), _fit(draw, '{} {:.0f}%'.format(name, 100 * score), f_big, inner),
                  font=f_big, fill=(255, 255, 255))
    else:
        draw.text((pad, pad), 'waiting…', font=f_big, fill=(200, 200, 200))
    y = pad + big + pad
    for i, (name, score) in enumerate(rows):
        draw.rectangle((pad, y, pad + inner, y + small), fill=(60, 60, 60))
        filled = int(round(inner * max(0.0, min(1.0, score))))
        if filled:
            draw.rectangle((pad, y, pad + filled, y + small), fill=(40, 170, 80) if i == 0 else (60, 110, 200))
        draw.text((pad + 2, y), _fit(draw, '{} {:.2f}'.format(name, score), f_small, inner - 2),
                  font=f_small, fill=(255, 255, 255))
        y += row_h
    base.paste(panel, box)
    return np.asarray(base)


class AnnotatedWriter:
    """Writes ``path`` through a hidden partial file renamed at :meth:`finish` (so a failed run leaves
    no output), H.264 when this PyAV has libx264, else MPEG-4 part 2, at ``rate`` frames per second."""

    def __init__(self, path, rate):
        self.path, self.rate = path, rate
        folder, base = os.path.split(os.path.abspath(path))
        stem, ext = os.path.splitext(base)
        self.partial = os.path.join(folder, '.{}.partial{}'.format(stem, ext))
        self.container = self.stream = None
        self.frames = 0

    def _open(self, width, height):
        import av
        os.makedirs(os.path.dirname(self.partial), exist_ok=True)
        self.container = av.open(self.partial, 'w')
        codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
        options = {'preset': 'veryfast', 'crf': '20'} if codec == 'libx264' else {}
        # rates such as 1000000/33367 (some phones) make time bases that MPEG-4 refuses; 29.97 stays 30000/1001
        rate = fractions.Fraction(self.rate).limit_denominator(1001)
        self.stream = self.container.add_stream(codec, rate=rate, options=options)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, 'yuv420p'
        if codec == 'mpeg4':
            self.stream.bit_rate = max(500000, width * height * 4)

    def write(self, image):
        import av
        h, w = image.shape[:2]
        if h % 2 or w % 2:  # yuv420p needs even sizes: repeat the last row / column
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode='edge')
        if self.container is None:
            self._open(image.shape[1], image.shape[0])
        elif (image.shape[1], image.shape[0]) != (self.stream.width, self.stream.height):
            raise LSNetError('--out: frame {} is {}x{}, the first was {}x{} (frames of one video must share a size)'
                             .format(self.frames, image.shape[1], image.shape[0], self.stream.width,
                                     self.stream.height))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')
        frame.pts = self.frames
        self.frames += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def finish(self):
        if self.container is None:
            return
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.container = None
        os.replace(self.partial, self.path)

    def abort(self):
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.close()
            self.container = None
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.partial)


# ---------------------------------------------------------------------------- the run

@contextlib.contextmanager
def _logs_to_stderr():
    """--json: stdout carries JSON lines only; the library's warnings go to stderr, its notices nowhere."""
    from ops.utils import ConsoleHandler
    root = logging.getLogger()
    consoles = [(h, h.level) for h in root.handlers if isinstance(h, ConsoleHandler)]
    for h, _ in consoles:
        h.setLevel(logging.CRITICAL + 1)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter('%(message)s'))
    root.addHandler(err)
    try:
        yield
    finally:
        root.removeHandler(err)
        for h, level in consoles:
            h.setLevel(level)


def check_args(args):
    for flag, value, low in (('--stride', args.stride, 1), ('--window', args.window, 1), ('--topk', args.topk, 1),
                             ('--max_frames', args.max_frames, 0), ('--threads', args.threads, 0)):
        if value is not None and value < low:
            raise LSNetError('{} must be at least {} (got {})'.format(flag, low, value))
    for flag, value in (('--fps', args.fps), ('--source_fps', args.source_fps)):
        if value is not None and value <= 0:
            raise LSNetError('{} must be positive (got {})'.format(flag, value))
    if args.video and args.video_flag:
        raise LSNetError('give the video once: positional or --video')
    args.video = args.video or args.video_flag
    given = [flag for flag, value in (('a video file', args.video), ('--frames', args.frames),
                                      ('--camera', args.camera)) if value]
    if len(given) != 1:
        raise LSNetError('give one input: a video file (positional or --video), --frames DIR or --camera DEVICE'
                         + (' (got {})'.format(', '.join(given)) if given else ''))
    if args.out:
        if os.path.splitext(args.out)[1].lower() not in OUTPUT_EXTENSIONS:
            raise LSNetError('--out {}: use one of {}'.format(args.out, ' '.join(OUTPUT_EXTENSIONS)))
        if args.video and os.path.abspath(args.out) == os.path.abspath(args.video):
            raise LSNetError('--out {} is the input video'.format(args.out))
        if os.path.isdir(args.out):
            raise LSNetError('--out {} is a folder'.format(args.out))
    if args.video and not os.path.isfile(args.video):
        raise LSNetError('video not found: {}'.format(args.video))


def load(args):
    """``(recognizer, transform, names, cfg, stride, device)`` for ``--weights``."""
    from ops.checkpoint import load_model
    from ops.streaming import default_stride
    from ops.utils import select_device
    from tools.demo import checkpoint_dataset, class_names
    device = select_device(args.device)
    if args.compile:  # a missing compiler is one line before anything is loaded
        _compile_module().check_compile_support(device, args.compile_mode)
    model, cfg, ckpt = load_model(args.weights, device, consensus_type='avg')
    names = class_names(ckpt, model.num_class, args.category_file, checkpoint_dataset(ckpt, args.weights))
    recognizer = build_recognizer(model, args, device, source=args.weights)
    stride = args.stride or default_stride(ckpt)
    return recognizer, frame_transform(model), names, cfg, stride, device


def run(args):
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json:
        with _logs_to_stderr():
            return _run(args)
    return _run(args)


def _emit(args, record):
    if args.json:
        print(json.dumps(record), flush=True)
    else:
        top = ' | '.join('{} {:.3f}'.format(t['label'], t['score']) for t in record['top'])
        print('frame {:6d} {:9.3f} s  {}'.format(record['frame'], record['time'], top), flush=True)


def _run(args):
    recognizer, transform, names, cfg, stride, device = load(args)
    source = open_source(args)
    writer = AnnotatedWriter(args.out, source.rate) if args.out else None
    period = 1.0 / args.source_fps if args.source_fps else 1.0 / float(source.rate)
    pacer = Pacer(period, stride, live=bool(args.camera)) if args.realtime else None
    if args.camera and not args.realtime:
        log.info('--camera without --realtime: every due frame is processed in order, so a slow model lags '
                 'behind the camera; --realtime drops stale frames instead')
    k = min(args.topk, len(names))
    bars = min(BARS, len(names))
    if not args.json:
        kind = 'LSNet' if cfg.lsm else 'TSM'
        print('{} {} online ({} classes, {}px) on {}: {:.3g} fps, stride {}, window {}{}{}'.format(
            kind, cfg.arch, cfg.num_class, cfg.input_size, source.what, float(source.rate), stride,
            recognizer.window, ', realtime' if args.realtime else '', ', compiled' if args.compile else ''),
            flush=True)
    read = processed = dropped = 0
    model_seconds = 0.0
    latest = None  # [(name, score)] of the bar chart
    interrupted = False
    start = _clock()
    try:
        try:
            for frame in source:
                if args.max_frames and read >= args.max_frames:
                    break
                read += 1
                t = frame.index * period if args.source_fps else frame.time
                due = frame.index % stride == 0
                if pacer is not None:
                    pacer.wait(t)
                    if due and pacer.stale(t):
                        due = False
                        dropped += 1
                if due:
                    x = transform(to_clip(frame.image)).to(device)
                    t0 = _clock()
                    scores = recognizer.update(x)
                    model_ms = (_clock() - t0) * 1000.0
                    model_seconds += model_ms / 1000.0
                    processed += 1
                    values, labels = scores.float().cpu().topk(max(k, bars))
                    ranked = [(names[int(c)], float(s)) for s, c in zip(values, labels)]
                    latest = ranked[:bars]
                    _emit(args, {'frame': frame.index, 'time': round(t, 6), 'model_ms': round(model_ms, 3),
                                 'top': [{'label': n, 'score': s} for n, s in ranked[:k]]})
                if writer is not None:
                    writer.write(annotate(frame.image, latest))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            source.close()
        if writer is not None:
            writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    wall = _clock() - start
    summary = {'frames_read': read, 'processed': processed, 'skipped': read - processed - dropped,
               'dropped': dropped, 'stride': stride, 'window': recognizer.window, 'realtime': bool(args.realtime),
               'model_seconds': round(model_seconds, 4), 'wall_seconds': round(wall, 4),
               'model_fps': round(processed / model_seconds, 2) if model_seconds > 0 else None,
               'processed_fps': round(processed / wall, 2) if wall > 0 else None,
               'read_fps': round(read / wall, 2) if wall > 0 else None,
               'interrupted': interrupted}
    if args.out:
        summary['out'] = args.out
    if args.json:
        print(json.dumps({'summary': summary}), flush=True)
    else:
        def fps(v):
            return 'n/a' if v is None else '{:.1f}'.format(v)
        print('summary: {} frames read, {} processed, {} skipped (stride {}), {} dropped{}; model {:.2f} s = {} fps; '
              'wall {:.2f} s = {} frames/s read, {} processed/s{}{}'.format(
                  read, processed, summary['skipped'], stride, dropped, ' (realtime)' if args.realtime else '',
                  model_seconds, fps(summary['model_fps']), wall, fps(summary['read_fps']),
                  fps(summary['processed_fps']), '; wrote ' + args.out if args.out else '',
                  '; interrupted' if interrupted else ''), flush=True)
    return 0


def build_parser():
    p = ArgumentParser(description='Frame-by-frame recognition of a video, frame folder or camera with an '
                                            'online (--shift_direction uni) checkpoint.')
    p.add_argument('video', nargs='?', default='', help='video file (or --video, --frames, --camera)')
    p.add_argument('--video', dest='video_flag', default='', help='video file')
    p.add_argument('--frames', default='', help='folder of frames (image files in natural sort order)')
    p.add_argument('--camera', default='', help='camera device opened with PyAV\'s v4l2 input, e.g. /dev/video0')
    p.add_argument('--camera_size', default='', help='camera frame size, e.g. 640x480 (default: the device\'s)')
    p.add_argument('--camera_fps', type=int, default=0, help='camera frame rate to ask for (default: the device\'s)')
    p.add_argument('--weights', required=True, help='online checkpoint (main.py --shift --shift_direction uni)')
    p.add_argument('--device', default='auto', help='auto (CUDA when present), cpu, cuda')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (default: torch default)')
    p.add_argument('--stride', type=int, default=None,
                   help='run the model on every N-th frame (default: the checkpoint\'s training frames per segment, '
                        'else 1)')
    p.add_argument('--window', type=int, default=None,
                   help='average the logits of the last N processed frames (default: the trained num_segments)')
    p.add_argument('--topk', type=int, default=5)
    p.add_argument('--category_file', default='', help='class names, one per line (default: the checkpoint\'s)')
    p.add_argument('--json', action='store_true', help='one JSON line per processed frame, then a summary line')
    p.add_argument('--out', default='', help='annotated copy of the input (.mp4 .mkv .avi .mov)')
    p.add_argument('--fps', type=float, default=25.0, help='frame rate of a --frames folder (default 25)')
    p.add_argument('--realtime', action='store_true',
                   help='consume the source at its own frame rate and drop frames that arrive while the model is '
                        'busy')
    p.add_argument('--source_fps', type=float, default=None,
                   help='treat the source as delivering this many frames per second (pacing of --realtime and the '
                        'times reported; the --out frame rate stays the input\'s)')
    p.add_argument('--max_frames', type=int, default=0, help='stop after N frames (0: the whole source)')
    add_compile_flags(p)  # --compile / --compile_mode, as main.py, test_models.py and demo.py
    return p


def main(argv=None):
    from ops.utils import run_entry_point
    return run_entry_point(run, build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
