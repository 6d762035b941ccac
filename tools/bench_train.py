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

``--compare_compile``: ``torch.compile`` (Inductor) against eager, and LSNet against TSM, with the
repo's defaults (channels_last; fp32 unless ``--amp``), all measured side by side in one run:

  train  TSM-R50 and LSNet-R50 training steps (as above), eager and compiled; the same for TSM with
         ``--amp`` (bf16 autocast on CPU) eager and compiled
  infer  one clip (batch 1) through TSM / LSNet on ResNet-50 and MobileNetV2, eager and compiled,
         under ``torch.inference_mode`` as test_models.py runs

Each model is built once and compiled once; the compile time (first calls minus an eager step) is
reported on its own and left out of the step figures.  Three phases, each freed before the next:
the fp32 training variants and the ``--amp`` ones (``--rounds`` each), then the inference ones
(``--infer_rounds``), as main.py trains one model and test_models.py runs inference alone; within a
phase rounds interleave every variant, and the ratios are medians of per-round ratios, so load
drifts on the machine hit both sides alike.
The last line:
``compile_train_speedup=<x> compile_infer_speedup=<y> lsnet_over_tsm_infer=<z> lsnet_over_tsm_train=<w>``
(the first two for TSM-R50 with the defaults; the LSNet ratios are the largest over backbones and
eager / compiled, since each must meet its target).  Targets: >= 1.3, >= 1.3, <= 1.05, <= 1.10.
"""
import gc
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.engine import autocast_context  # noqa: E402
from ops.config import ModelConfig  # noqa: E402
from ops.errors import ArgumentParser  # noqa: E402
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
        return train_step(self.model, self.model, self.opt, self.crit, x, y, self.amp, self.channels_last)


def train_step(run, model, opt, crit, x, y, amp, channels_last):
    """One timed SGD step as main.py takes it: ``run`` (the model, or its compiled form) on clips
    ``x`` (N, T, C, H, W); returns (seconds, loss)."""
    x = x.reshape(-1, *x.shape[-3:])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = time.perf_counter()
    with autocast_context(torch.device('cpu'), amp):
        out = run(x)
    loss = crit(out.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 20)
    opt.step()
    return time.perf_counter() - t, loss.item()


# ---------------------------------------------------------------- --compare_compile

def _build(arch, lsm, args, channels_last=True):
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_class=args.classes, num_segments=args.segments, arch=arch, pretrain='none',
                                    shift=True, lsm=lsm, input_size=args.input))
    return to_channels_last(model) if channels_last else model


class TrainVariant:
    """A training step of one model (eager or compiled), main.py's defaults: partial BN, SGD groups."""

    def __init__(self, key, arch, lsm, compiled, amp, args):
        from ops.compile import compile_model
        self.name, self.compiled, self.amp = ' '.join(key), compiled, amp
        self.model = _build(arch, lsm, args).train()
        self.model.partialBN(True)
        self.run = compile_model(self.model) if compiled else self.model
        self.opt = torch.optim.SGD(self.model.get_optim_policies(), 0.01, momentum=0.9, weight_decay=1e-4)
        self.crit = torch.nn.CrossEntropyLoss()
        self.times = []

    def __call__(self, x, y):
        return train_step(self.run, self.model, self.opt, self.crit, x, y, self.amp, channels_last=True)[0]


class InferVariant:
    """One clip through a model in eval mode under inference_mode (eager or compiled)."""

    def __init__(self, key, arch, lsm, compiled, args):
        from ops.compile import compile_model
        self.name, self.compiled = ' '.join(key), compiled
        self.model = _build(arch, lsm, args).eval()
        self.run = compile_model(self.model, inference=True) if compiled else self.model
        self.times = []

    def __call__(self, x, y=None):
        x = x[:1].reshape(-1, *x.shape[-3:]).contiguous(memory_format=torch.channels_last)
        t = time.perf_counter()
        with torch.inference_mode():
            self.run(x)
        return time.perf_counter() - t


def _paired(a, b):
    """Median over rounds of the times ``a`` / ``b``."""
    return statistics.median(x / y for x, y in zip(a, b))


def _run_phase(variants, x, y, warmup, rounds, compile_s, times, label):
    """Warm up the ``variants`` ({key: variant}; the compiled ones compile here, their first call
    going to ``compile_s``), then time ``rounds`` interleaved rounds into ``times[key]``."""
    for key, v in variants.items():
        t = time.perf_counter()
        v(x, y)
        first = time.perf_counter() - t
        for _ in range(warmup):
            v(x, y)
        if v.compiled:
            compile_s[key] = first
        print('  warm-up {:<32} first call {:.1f} s'.format(v.name, first), flush=True)
    order = list(variants.values())
    for i in range(rounds):
        for v in (order if i % 2 == 0 else order[::-1]):
            v.times.append(v(x, y))
        print('  {} round {} done'.format(label, i), flush=True)
    times.update({key: v.times for key, v in variants.items()})


def compare_compile(args, x, y):
    """Compiled vs eager and LSNet vs TSM, training and inference; returns the dict of results."""
    # Three phases, each interleaved round by round and freed before the next, as main.py trains one
    # model in fp32 or with --amp and test_models.py runs inference alone in its process: the fp32
    # training variants, the --amp ones, the inference ones.  Timed in one phase, bf16 steps made
    # eager LSNet's fp32 step 1.2-1.5x slower, and an inference timed between training steps starts
    # from their cold caches and allocator state.
    compile_s, times = {}, {}
    train = {}
    for lsm in (False, True):
        for compiled in (False, True):
            key = ('LSNet' if lsm else 'TSM', args.arch, 'compiled' if compiled else 'eager', 'fp32')
            train[key] = TrainVariant(key, args.arch, lsm, compiled, False, args)
    _run_phase(train, x, y, args.warmup, args.rounds, compile_s, times, 'training (fp32)')
    train = {}
    gc.collect()
    for compiled in (False, True):
        key = ('TSM', args.arch, 'compiled' if compiled else 'eager', 'amp')
        train[key] = TrainVariant(key, args.arch, False, compiled, True, args)
    _run_phase(train, x, y, args.warmup, args.rounds, compile_s, times, 'training (--amp)')
    del train
    gc.collect()
    infer = {}
    for arch in (args.arch, 'mobilenetv2'):
        for lsm in (False, True):
            for compiled in (False, True):
                key = ('LSNet' if lsm else 'TSM', arch, 'compiled' if compiled else 'eager')
                infer[key] = InferVariant(key, arch, lsm, compiled, args)
    _run_phase(infer, x, y, args.warmup, args.infer_rounds, compile_s, times, 'inference')

    print('\n{:<34} {:>10}'.format('variant', 'median s'))
    for key, t in times.items():
        print('{:<34} {:>10.4f}'.format(' '.join(key), statistics.median(t)))
    print('\ncompile time (first call minus a median step), reported apart from the step figures:')
    for key, first in compile_s.items():
        print('  {:<32} {:.1f} s'.format(' '.join(key), first - statistics.median(times[key])))

    a = args.arch
    res = {
        'compile_train_speedup': _paired(times['TSM', a, 'eager', 'fp32'], times['TSM', a, 'compiled', 'fp32']),
        'compile_train_speedup_amp': _paired(times['TSM', a, 'eager', 'amp'], times['TSM', a, 'compiled', 'amp']),
        'compile_infer_speedup': _paired(times['TSM', a, 'eager'], times['TSM', a, 'compiled']),
    }
    for mode in ('eager', 'compiled'):
        res['lsnet_over_tsm_train_' + mode] = _paired(times['LSNet', a, mode, 'fp32'], times['TSM', a, mode, 'fp32'])
        for arch in (a, 'mobilenetv2'):
            res['lsnet_over_tsm_infer_{}_{}'.format(arch, mode)] = _paired(times['LSNet', arch, mode],
                                                                             times['TSM', arch, mode])
    res['lsnet_over_tsm_infer'] = max(v for k, v in res.items() if k.startswith('lsnet_over_tsm_infer_'))
    res['lsnet_over_tsm_train'] = max(v for k, v in res.items() if k.startswith('lsnet_over_tsm_train_'))

    targets = [('compile_train_speedup', '>=', 1.3), ('compile_train_speedup_amp', '>=', 1.3),
               ('compile_infer_speedup', '>=', 1.3)]
    targets += [(k, '<=', 1.10 if 'train' in k else 1.05) for k in res if k.startswith('lsnet_over_tsm_')
                and k.count('_') >= 4]
    print('\n{:<44} {:>8}  {}'.format('ratio (median of per-round ratios)', 'value', 'target'))
    for key, op, bound in targets:
        ok = res[key] >= bound if op == '>=' else res[key] <= bound
        print('{:<44} {:>8.3f}  {} {} {}'.format(key, res[key], op, bound, 'PASS' if ok else 'MISS'))
    print('compile_train_speedup={:.3f} compile_infer_speedup={:.3f} lsnet_over_tsm_infer={:.3f} '
          'lsnet_over_tsm_train={:.3f}'.format(res['compile_train_speedup'], res['compile_infer_speedup'],
                                               res['lsnet_over_tsm_infer'], res['lsnet_over_tsm_train']))
    return res


def main(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default='resnet50')
    p.add_argument('--segments', type=int, default=8)
    p.add_argument('--batch', type=int, default=8, help='clips per step')
    p.add_argument('--input', type=int, default=224, help='crop size')
    p.add_argument('--classes', type=int, default=400)
    p.add_argument('--rounds', type=int, default=3, help='timed steps per setting')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps per setting')
    p.add_argument('--infer_rounds', type=int, default=10,
                   help='--compare_compile: timed rounds of the inference variants (one clip each)')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=SETTINGS)
    p.add_argument('--compare_compile', action='store_true',
                   help='compiled vs eager and LSNet vs TSM, training and inference (see the module docstring)')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.segments, 3, args.input, args.input, generator=g)
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    print('TSM-{} {}x{}², batch {}, {} threads, torch {}; {} warm-up + {} timed steps per setting'.format(
        args.arch, args.segments, args.input, args.batch, args.threads, torch.__version__,
        args.warmup, args.rounds))
    if args.compare_compile:
        compare_compile(args, x, y)
        return 0
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
