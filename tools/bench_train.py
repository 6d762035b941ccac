"""CPU training throughput (clips/s) of TSM under several execution settings, side by side.

Default workload: TSM-ResNet-50, 8 segments x 224², batch 8, SGD step with the model's optimizer
groups (what ``main.py`` runs, data loading excluded).  Settings compared in one run, interleaved
round by round so background load hits them alike; the median step time of each is reported:

  plain      fp32, NCHW, eager (the baseline)
  defaults   what main.py does with no flags (its --channels_last / --amp defaults)
  cl         channels_last memory format
  bf16       bf16 autocast (--amp on CPU)
  cl+bf16    both
  lean       --shift_mode lean (memory-lean shift)

Quick run: ``python tools/bench_train.py --batch 2 --input 112 --rounds 2``.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.engine import autocast_context  # noqa: E402
from ops.config import ModelConfig  # noqa: E402
from ops.models import build_model  # noqa: E402
from ops.utils import to_channels_last  # noqa: E402
from opts import build_train_parser  # noqa: E402

SETTINGS = ('plain', 'defaults', 'cl', 'bf16', 'cl+bf16', 'lean')


def setting_flags(name):
    """(channels_last, amp, shift_mode) of a setting."""
    if name == 'defaults':
        d = build_train_parser().parse_args(['bench', 'RGB'])
        return d.channels_last, d.amp, d.shift_mode
    return {'plain': (False, False, 'fast'), 'cl': (True, False, 'fast'), 'bf16': (False, True, 'fast'),
            'cl+bf16': (True, True, 'fast'), 'lean': (False, False, 'lean')}[name]


class Runner:
    """One model + optimizer per setting, so every setting trains from the same initial weights."""

    def __init__(self, name, args):
        self.name = name
        self.channels_last, self.amp, shift_mode = setting_flags(name)
        torch.manual_seed(0)
        self.model = build_model(ModelConfig(num_class=args.classes, num_segments=args.segments, arch=args.arch,
                                             pretrain='none', shift=True, input_size=args.input,
                                             shift_mode=shift_mode))
        if self.channels_last:
            to_channels_last(self.model)
        self.model.train()
        self.model.partialBN(True)  # main.py's default (no --npb)
        self.opt = torch.optim.SGD(self.model.get_optim_policies(), 0.01, momentum=0.9, weight_decay=1e-4)
        for g in self.opt.param_groups:
            g['lr'] = 0.01 * g['lr_mult']
        self.crit = torch.nn.CrossEntropyLoss()
        self.times = []

    def step(self, x, y):
        x = x.reshape(-1, *x.shape[-3:])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = time.perf_counter()
        with autocast_context(torch.device('cpu'), self.amp):
            out = self.model(x)
        loss = self.crit(out.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 20)
        self.opt.step()
        return time.perf_counter() - t, loss.item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default='resnet50')
    p.add_argument('--segments', type=int, default=8)
    p.add_argument('--batch', type=int, default=8, help='clips per step')
    p.add_argument('--input', type=int, default=224, help='crop size')
    p.add_argument('--classes', type=int, default=400)
    p.add_argument('--rounds', type=int, default=3, help='timed steps per setting')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps per setting')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=SETTINGS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.segments, 3, args.input, args.input, generator=g)
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    print('TSM-{} {}x{}², batch {}, {} threads, torch {}; {} warm-up + {} timed steps per setting'.format(
        args.arch, args.segments, args.input, args.batch, args.threads, torch.__version__,
        args.warmup, args.rounds))
    runners = [Runner(n, args) for n in args.settings]
    for r in runners:
        for _ in range(args.warmup):
            r.step(x, y)
    for i in range(args.rounds):
        for r in runners:
            r.times.append(r.step(x, y)[0])
            print('  round {} {:<10} {:.3f} s/step'.format(i, r.name, r.times[-1]), flush=True)

    base = None
    rows = []
    for r in runners:
        med = statistics.median(r.times)
        rate = args.batch / med
        if r.name == 'plain':
            base = rate
        rows.append((r.name, med, rate))
    print('{:<10} {:>10} {:>10} {:>12}'.format('setting', 's/step', 'clips/s', 'vs plain'))
    for name, med, rate in rows:
        ratio = '{:.2f}x'.format(rate / base) if base else '-'
        print('{:<10} {:>10.3f} {:>10.2f} {:>12}'.format(name, med, rate, ratio))
    best = max(rows, key=lambda row: row[2])
    print('fastest: {} ({:.2f} clips/s{})'.format(
        best[0], best[2], ', {:.2f}x plain'.format(best[2] / base) if base else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
