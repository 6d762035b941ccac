"""Online recognition speed: streaming a causal TSM / LSNet frame by frame, against a sliding window
and against a single-frame 2D forward, side by side in one run.

Per backbone (MobileNetV2 and ResNet-50, ``--num_segments`` 8, random weights, ``--num_class`` 400),
batch 1, one ``--size``² frame at a time, every model in ``eval()`` and the whole run under
``torch.inference_mode()`` (``--grad_mode no_grad`` for ``torch.no_grad()``; the streamer gives the
same logits, bit for bit, under either: checked), channels_last weights and frames unless
``--no_channels_last`` (the repo default for inference). Four variants each process the new frame:

  floor    the TSN floor: a 2D forward of one frame, ``new_fc(base_model(frame))`` of a model built
           with ``shift=False, num_segments=1`` and the same backbone: the least any per-frame
           recogniser can cost. It is the call ``Streamer.step`` makes, minus its state handling,
           so ``stream / floor`` is exactly what streaming adds.
  stream   ``ops.streaming.Streamer.step(frame, state)`` of a TSM with ``shift_direction='uni'``,
           the state carried over from the previous frame.
  lsnet    the same for a causal LSNet (``lsm=True``, default LSM flags).
  window   what toolkits without a streaming step do: the same TSM-uni model re-run on a clip of
           the last ``num_segments`` frames for every new frame, ``model(torch.cat(window))``
           (the concatenation is timed too; the clip's score is the average of its frame logits).

Timing. ``--warmup`` untimed frames per variant (after the window was filled with
``num_segments`` frames and the streamers ran them as well), then ``--repeats`` timed frames. Inside
each repeat every variant processes one new frame, in the order MobileNetV2 floor, stream, lsnet,
window, then ResNet-50 the same, reversed in odd repeats, so a busy neighbour slows the variants
of one repeat alike. Latency is the median per-frame time of a variant; frames/s is its inverse.
Ratios are medians over repeats of the per-repeat (paired) ratios, as ``tools/bench_shift.py``:
on a shared machine a ratio of two medians can pair a fast spell of one variant with a slow one of
the other; the ratio of the medians is printed beside it as a check.

Targets (PASS / MISS): streaming MobileNetV2 TSM >= 60 frames/s; stream / floor <= 1.10
(MobileNetV2; ResNet-50 printed too); window / stream >= 6 (MobileNetV2; ResNet-50 too); causal
LSNet / TSM-uni streaming <= 1.15 on ResNet-50, the backbone of LSNet's reported results and of
its cost figures in docs/lsnet.md (MobileNetV2 printed too: its depthwise blocks are cheap, so the
same LSM is a larger share of a MobileNetV2 frame). The last line is machine-readable::

    mbv2_stream_fps=<x> stream_over_floor=<y> window_over_stream=<z> lsnet_over_tsm=<w>

with MobileNetV2 for the first three and ResNet-50 for ``lsnet_over_tsm``. ``--json PATH`` writes
everything (settings, per-variant times, ratios, targets) as JSON.

Before timing, the streamed logits of the first ``num_segments`` frames are compared with the
offline model's per-frame logits on that clip (``ops.streaming.offline_frame_logits``) under the
same grad mode, and the largest difference relative to the largest logit is printed.

Usage: ``python tools/bench_online.py [--size 224] [--repeats 40] [--warmup 3] [--threads 2]``;
a quick run: ``--size 32 --repeats 2 --warmup 1``.
"""
import collections
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.config import ModelConfig  # noqa: E402
from ops.errors import ArgumentParser  # noqa: E402
from ops.models import build_model  # noqa: E402
from ops.streaming import CompiledStep, Streamer, offline_frame_logits  # noqa: E402
from ops.utils import to_channels_last  # noqa: E402

ARCHS = (('mobilenetv2', 'MobileNetV2', 'mbv2'), ('resnet50', 'ResNet-50', 'r50'))
VARIANTS = ('floor', 'stream', 'lsnet', 'window')
DESCRIPTIONS = {'floor': 'single-frame 2D forward (TSN floor)', 'stream': 'streaming TSM-uni',
                'lsnet': 'streaming causal LSNet', 'window': 'sliding window TSM-uni'}

TARGET_FPS = 60.0
TARGET_STREAM_OVER_FLOOR = 1.10
TARGET_WINDOW_OVER_STREAM = 6.0
TARGET_LSNET_OVER_TSM = 1.15


def build(arch, num_class, num_segments, shift, lsm, channels_last, seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(num_class=num_class, num_segments=num_segments, arch=arch, pretrain='none',
                                    shift=shift, shift_direction='uni' if shift else 'bi', lsm=lsm))
    if channels_last:
        to_channels_last(model)
    return model.eval()


class Frames:
    """A fixed pool of normalised-looking random frames ``(1, 3, S, S)``, handed out in turn."""

    def __init__(self, size, count, channels_last, seed=0):
        g = torch.Generator().manual_seed(seed)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.pool = [torch.randn(1, 3, size, size, generator=g).contiguous(memory_format=fmt) for _ in range(count)]

    def __getitem__(self, i):
        return self.pool[i % len(self.pool)]


def maybe_compile(module, compiled):
    if not compiled:
        return module
    from ops.compile import compile_model
    return compile_model(module, inference=True)


class FloorRunner:
    def __init__(self, model, compiled=False):
        self.model = model
        self.run = maybe_compile(torch.nn.Sequential(model.base_model, model.new_fc), compiled)

    def step(self, frame):
        return self.run(frame)


class StreamRunner:
    """``Streamer.step`` with the state carried; compiled: through ``torch.compile(streamer)``."""

    def __init__(self, model, compiled=False):
        self.streamer = Streamer(model)
        self.stepper = CompiledStep(self.streamer, maybe_compile(self.streamer, True)) if compiled else self.streamer
        self.state = None

    def step(self, frame):
        logits, self.state = self.stepper.step(frame, self.state)
        return logits


class WindowRunner:
    """``model(clip of the last T frames)`` for every new frame (T = the model's segments)."""

    def __init__(self, model, compiled=False):
        self.model = maybe_compile(model, compiled)
        self.window = collections.deque(maxlen=model.num_segments)

    def push(self, frame):
        self.window.append(frame)

    def step(self, frame):
        self.window.append(frame)
        return self.model(torch.cat(tuple(self.window)))


def stream_check(runner, model, frames, count):
    """Stream ``frames[0:count]`` through ``runner`` (state kept) and compare with the offline model's
    per-frame logits on that clip: ``max |difference| / max |logit|``."""
    streamed = torch.stack([runner.step(frames[i]) for i in range(count)], dim=1)  # (1, T, K)
    clip = torch.cat([frames[i] for i in range(count)])  # (T, 3, S, S), the frames' layout
    offline = offline_frame_logits(model, clip.unsqueeze(0))
    scale = float(offline.abs().max())
    return float((streamed - offline).abs().max()) / scale if scale > 0 else float('nan')


def setup(a):
    """``({(arch key, variant): runner}, {(arch key, variant): rel. error of the check})``."""
    frames = Frames(a.size, 2 * a.num_segments, a.channels_last)
    runners, checks = {}, {}
    for arch, _, key in ARCHS:
        tsm = build(arch, a.num_class, a.num_segments, shift=True, lsm=False, channels_last=a.channels_last)
        lsnet = build(arch, a.num_class, a.num_segments, shift=True, lsm=True, channels_last=a.channels_last)
        floor = build(arch, a.num_class, 1, shift=False, lsm=False, channels_last=a.channels_last)
        runners[key, 'floor'] = FloorRunner(floor, a.compile)
        runners[key, 'stream'] = StreamRunner(tsm, a.compile)
        runners[key, 'lsnet'] = StreamRunner(lsnet, a.compile)
        runners[key, 'window'] = WindowRunner(tsm, a.compile)  # the same TSM-uni weights, run offline
        # the first T frames: they fill the window and check the streamers against the offline model
        checks[key, 'stream'] = stream_check(runners[key, 'stream'], tsm, frames, a.num_segments)
        checks[key, 'lsnet'] = stream_check(runners[key, 'lsnet'], lsnet, frames, a.num_segments)
        for i in range(a.num_segments):
            runners[key, 'window'].push(frames[i])
            runners[key, 'floor'].step(frames[i])
    return runners, checks, frames


def measure(runners, frames, first, repeats, warmup):
    """Seconds per frame, ``{(arch key, variant): [..]}`` over the timed repeats, interleaved."""
    order = [(key, v) for _, _, key in ARCHS for v in VARIANTS]
    times = {k: [] for k in order}
    for r in range(warmup + repeats):
        frame = frames[first + r]
        for k in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            runners[k].step(frame)
            t = time.perf_counter() - t0
            if r >= warmup:
                times[k].append(t)
    return times


def paired_ratio(num, den):
    return statistics.median(n / d for n, d in zip(num, den))


def summarize(times):
    """Per-variant medians and the paired ratios per arch."""
    variants = {}
    for (key, v), ts in times.items():
        med = statistics.median(ts)
        variants['{}_{}'.format(key, v)] = {'arch': key, 'variant': v, 'median_ms': 1000 * med,
                                            'min_ms': 1000 * min(ts), 'fps': 1.0 / med,
                                            'times_ms': [1000 * t for t in ts]}
    ratios = {}
    for _, _, key in ARCHS:
        t = {v: times[key, v] for v in VARIANTS}
        for name, num, den in (('stream_over_floor', 'stream', 'floor'), ('window_over_stream', 'window', 'stream'),
                               ('lsnet_over_tsm', 'lsnet', 'stream')):
            ratios['{}_{}'.format(key, name)] = {
                'paired_median': paired_ratio(t[num], t[den]),
                'ratio_of_medians': statistics.median(t[num]) / statistics.median(t[den])}
    return variants, ratios


def targets(variants, ratios):
    """``[(label, value, comparison, target, counts)]``; ``counts`` False for the printed-only rows."""
    r = {k: v['paired_median'] for k, v in ratios.items()}
    floor, window, lsnet = TARGET_STREAM_OVER_FLOOR, TARGET_WINDOW_OVER_STREAM, TARGET_LSNET_OVER_TSM
    return [
        ('streaming MobileNetV2 TSM-uni, frames/s', variants['mbv2_stream']['fps'], '>=', TARGET_FPS, True),
        ('streaming / single-frame floor, MobileNetV2', r['mbv2_stream_over_floor'], '<=', floor, True),
        ('streaming / single-frame floor, ResNet-50', r['r50_stream_over_floor'], '<=', floor, False),
        ('sliding window / streaming, MobileNetV2', r['mbv2_window_over_stream'], '>=', window, True),
        ('sliding window / streaming, ResNet-50', r['r50_window_over_stream'], '>=', window, False),
        ('causal LSNet / TSM-uni streaming, ResNet-50', r['r50_lsnet_over_tsm'], '<=', lsnet, True),
        ('causal LSNet / TSM-uni streaming, MobileNetV2', r['mbv2_lsnet_over_tsm'], '<=', lsnet, False),
    ]


def met(value, comparison, target):
    return value >= target if comparison == '>=' else value <= target


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=224, help='frame size (square)')
    p.add_argument('--num_segments', type=int, default=8, help='trained segments: the window length')
    p.add_argument('--num_class', type=int, default=400)
    p.add_argument('--repeats', type=int, default=40, help='timed frames per variant')
    p.add_argument('--warmup', type=int, default=3, help='untimed frames per variant first')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--grad_mode', choices=('inference_mode', 'no_grad'), default='inference_mode')
    p.add_argument('--channels_last', dest='channels_last', default=True, action='store_true',
                   help='channels_last weights and frames (default, as test_models.py and the demo)')
    p.add_argument('--no_channels_last', dest='channels_last', action='store_false')
    p.add_argument('--json', metavar='PATH', help='also write the results as JSON to PATH')
    p.add_argument('--compile', action='store_true',
                   help='every variant through torch.compile (Inductor); compiling happens in the untimed setup')
    a = p.parse_args(argv)
    if a.repeats < 1 or a.warmup < 0 or a.num_segments < 1 or a.size < 16 or a.threads < 1:
        p.error('--repeats, --num_segments, --threads must be >= 1, --warmup >= 0, --size >= 16')
    torch.set_num_threads(a.threads)

    print('torch {}, threads={}, {}; batch 1, {}x{} frames, {} segments, {} classes, channels_last={}{}; '
          '{} timed frames per variant after {} warm-up'.format(
              torch.__version__, torch.get_num_threads(), a.grad_mode, a.size, a.size, a.num_segments, a.num_class,
              a.channels_last, ', compiled' if a.compile else '', a.repeats, a.warmup), flush=True)
    mode = torch.inference_mode() if a.grad_mode == 'inference_mode' else torch.no_grad()
    with mode:
        runners, checks, frames = setup(a)
        for (key, v), err in checks.items():
            print('check: {} {} streamed = offline per-frame logits on the first {} frames (max rel. diff {:.1e}){}'
                  .format(key, v, a.num_segments, err, '' if err <= 1e-4 else '  WARNING: differ'))
        times = measure(runners, frames, a.num_segments, a.repeats, a.warmup)
    variants, ratios = summarize(times)

    for _, label, key in ARCHS:
        print('{} ({}x{})'.format(label, a.size, a.size))
        for v in VARIANTS:
            s = variants['{}_{}'.format(key, v)]
            print('  {:38s} {:9.2f} ms/frame  {:8.2f} frames/s  (min {:.2f} ms)'.format(
                DESCRIPTIONS[v], s['median_ms'], s['fps'], s['min_ms']))
        for name, label2 in (('stream_over_floor', 'streaming / floor'), ('window_over_stream', 'window / streaming'),
                             ('lsnet_over_tsm', 'LSNet / TSM streaming')):
            r = ratios['{}_{}'.format(key, name)]
            print('  {:38s} {:9.3f} (median of paired ratios; ratio of medians {:.3f})'.format(
                label2, r['paired_median'], r['ratio_of_medians']))
    rows = targets(variants, ratios)
    print('targets')
    for label, value, cmp, target, counts in rows:
        print('  {:46s} {:9.3f}  {} {:<5g} {}{}'.format(label, value, cmp, target,
                                                       'PASS' if met(value, cmp, target) else 'MISS',
                                                       '' if counts else ' (printed for reference)'))
    summary = {'mbv2_stream_fps': variants['mbv2_stream']['fps'],
               'stream_over_floor': ratios['mbv2_stream_over_floor']['paired_median'],
               'window_over_stream': ratios['mbv2_window_over_stream']['paired_median'],
               'lsnet_over_tsm': ratios['r50_lsnet_over_tsm']['paired_median']}
    if a.json:
        out = {'settings': dict(vars(a), torch=torch.__version__, threads=torch.get_num_threads()),
               'checks': {'{}_{}'.format(k, v): e for (k, v), e in checks.items()},
               'variants': variants, 'ratios': ratios,
               'targets': [{'name': label, 'value': value, 'comparison': cmp, 'target': target,
                            'pass': met(value, cmp, target), 'counts': counts}
                           for label, value, cmp, target, counts in rows],
               'summary': summary}
        with open(a.json, 'w') as f:
            json.dump(out, f, indent=1, allow_nan=True)
    print('mbv2_stream_fps={:.2f} stream_over_floor={:.4f} window_over_stream={:.4f} lsnet_over_tsm={:.4f}'.format(
        summary['mbv2_stream_fps'], summary['stream_over_floor'], summary['window_over_stream'],
        summary['lsnet_over_tsm']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
