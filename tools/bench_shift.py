"""What the temporal shift costs: TSM ÷ TSN training-step time and inference latency, side by side.

Both models are built as ``main.py`` builds them with its default flags (``build_model`` on the
parsed defaults, ``--pretrain none``): partial BN on, the default ``--shift_mode``, the model moved
to ``channels_last`` and the clips prepared by ``ops.engine.prepare_clips`` when ``--channels_last``
is the default. TSM is the same network with ``--shift``.

- training step: forward, cross-entropy, backward, SGD step (the model's optimizer groups);
- inference: ``eval()`` under ``torch.no_grad()``.

One clip of ``--num_segments`` frames per step. The measurements alternate inside every repeat
(TSN first in even repeats, TSM first in odd ones; warm-up repetitions are not timed), so TSN and
TSM of one repeat run back to back under the same load. The reported ratio is the median over
repeats of those paired ratios: on a machine shared with other jobs, step times jump between a
fast and a several-times-slower mode, and a ratio of two medians can then compare the fast mode
of one model with the slow mode of the other. Ratios of the medians and of the minima are printed
as a check. The last line is machine-readable: ``tsm_over_tsn_train=<x> tsm_over_tsn_infer=<y>``.

Usage: ``python tools/bench_shift.py [--arch resnet50] [--num_segments 8] [--input_size 224]
[--repeats 15] [--warmup 2] [--threads 2]``
"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.config import ModelConfig  # noqa: E402
from ops.errors import ArgumentParser  # noqa: E402
from ops.models import build_model  # noqa: E402
from ops.utils import to_channels_last  # noqa: E402
from ops.engine import prepare_clips  # noqa: E402
from opts import build_train_parser  # noqa: E402

NUM_CLASS = 400


def default_args(arch, num_segments, input_size, shift):
    """``main.py``'s parsed flags with nothing but the model shape (and ``--shift``) given."""
    argv = ['kinetics', 'RGB', '--arch', arch, '--num_segments', str(num_segments),
            '--input_size', str(input_size), '--pretrain', 'none'] + (['--shift'] if shift else [])
    return build_train_parser().parse_args(argv)


class Runner:
    """One model (TSN or TSM) with its optimizer, input clip ``(1, T*3, S, S)`` and label."""

    def __init__(self, args):
        torch.manual_seed(0)
        self.model = build_model(ModelConfig.from_args(args, NUM_CLASS))
        if args.channels_last:  # the order of main.py
            to_channels_last(self.model)
        self.model.partialBN(not args.no_partialbn)
        groups = self.model.get_optim_policies(fc_lr5=True)
        for g in groups:
            g['lr'] = args.lr * g['lr_mult']
            g['weight_decay'] = args.weight_decay * g['decay_mult']
        self.opt = torch.optim.SGD(groups, args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
        clip = torch.randn(1, args.num_segments * 3, args.input_size, args.input_size)
        self.x = prepare_clips(clip, torch.device('cpu'), args.channels_last)
        self.y = torch.tensor([1])

    def train_step(self):
        self.model.train()
        loss = F.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def infer(self):
        self.model.eval()
        with torch.no_grad():
            self.model(self.x)


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(runners, repeats, warmup):
    """Seconds per call, ``{(name, 'train'|'infer'): [..]}``, the candidates alternating each repeat."""
    names = list(runners)
    times = {(n, kind): [] for n in names for kind in ('train', 'infer')}
    for r in range(warmup + repeats):
        order = names if r % 2 == 0 else names[::-1]
        for kind in ('train', 'infer'):
            for n in order:
                t = _timed(getattr(runners[n], kind + ('_step' if kind == 'train' else '')))
                if r >= warmup:
                    times[(n, kind)].append(t)
    return times


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='resnet50')
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--repeats', type=int, default=15, help='timed repetitions of each measurement')
    p.add_argument('--warmup', type=int, default=2, help='untimed repetitions first')
    p.add_argument('--threads', type=int, default=2)
    a = p.parse_args(argv)
    if a.repeats < 1 or a.warmup < 0:
        p.error('--repeats must be >= 1 and --warmup >= 0')
    torch.set_num_threads(a.threads)

    tsn_args = default_args(a.arch, a.num_segments, a.input_size, shift=False)
    runners = {'TSN': Runner(tsn_args),
               'TSM': Runner(default_args(a.arch, a.num_segments, a.input_size, shift=True))}
    print('torch {}, {} threads; {} 1 clip x {} x {}^2, channels_last={}, shift_mode={}, partial BN={}; '
          '{} repeats after {} warm-up'.format(torch.__version__, torch.get_num_threads(), a.arch,
                                               a.num_segments, a.input_size, tsn_args.channels_last,
                                               tsn_args.shift_mode, not tsn_args.no_partialbn, a.repeats,
                                               a.warmup))
    times = measure(runners, a.repeats, a.warmup)
    ratios = {}
    for kind, label in (('train', 'training step (fwd+bwd+SGD)'), ('infer', 'inference (eval, no_grad)')):
        tsn, tsm = times[('TSN', kind)], times[('TSM', kind)]
        ratios[kind] = statistics.median(b / a for a, b in zip(tsn, tsm))
        med = (statistics.median(tsn), statistics.median(tsm))
        print('{:28s} TSN {:8.1f} ms  TSM {:8.1f} ms (medians; minima {:.1f} / {:.1f} ms)  TSM/TSN {:.3f} '
              '(median of paired ratios; ratio of medians {:.3f}, of minima {:.3f})'
              .format(label, 1000 * med[0], 1000 * med[1], 1000 * min(tsn), 1000 * min(tsm), ratios[kind],
                      med[1] / med[0], min(tsm) / min(tsn)))
    print('tsm_over_tsn_train={:.4f} tsm_over_tsn_infer={:.4f}'.format(ratios['train'], ratios['infer']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
