"""Parameters, FLOPs and CPU latency of a TSN / TSM / LSNet model configuration.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (one multiply-accumulate = 2
FLOPs; the "33G FLOPs" quoted for TSM-ResNet-50 at 8x224^2 are multiply-accumulates, our
``gmacs``).  Latency is the fastest of ``--runs`` timed forward passes of one clip (batch 1) on the
CPU, after ``--warmup`` untimed ones; the minimum is the figure least disturbed by other load on
the machine.  The table times its models round-robin (one pass of each model per round), so a
slow spell of the machine hits every model alike and the ratios stay fair.
Models are built with random weights (``pretrain='none'``).

One configuration, with the training flags; the last line is machine-readable:

    python tools/model_stats.py --arch resnet50 --num_segments 8 --shift --shift_div 8 --lsm
    ...
    params_m=<millions> gmacs=<G multiply-accumulates> gflops=<2 x gmacs> latency_ms=<fastest pass>

The comparison table (TSN / TSM / NL-TSM / LSNet on ResNet-50 and MobileNetV2, 8x224^2) with the
LSNet/TSM ratios measured in the same run:

    python tools/model_stats.py --table
"""

import os
import sys
import time

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from ops.errors import ArgumentParser, LSNetError  # noqa: E402

TABLE_VARIANTS = (
    ('TSN', dict(shift=False)),
    ('TSM', dict(shift=True)),
    ('NL-TSM', dict(shift=True, non_local=True)),
    ('LSNet', dict(shift=True, lsm=True)),
)
TABLE_ARCHS = ('resnet50', 'mobilenetv2')


def model_config(args):
    """The ModelConfig of the parsed flags (random weights, no dropout at inference)."""
    from ops.config import ModelConfig
    return ModelConfig(num_class=args.num_class, num_segments=args.num_segments, modality=args.modality,
                       arch=args.arch, consensus_type=args.consensus_type, dropout=0.0, pretrain='none',
                       shift=args.shift, shift_div=args.shift_div, shift_place=args.shift_place,
                       temporal_pool=args.temporal_pool, non_local=args.non_local, input_size=args.input_size,
                       shift_mode=args.shift_mode, lsm=args.lsm, lsm_reduction=args.lsm_reduction,
                       lsm_groups=args.lsm_groups, lsm_branches=args.lsm_branches,
                       lsm_short_stages=args.lsm_short_stages, lsm_long_stages=args.lsm_long_stages)


def build_model(cfg):
    """The model of ``cfg`` in eval mode."""
    from ops.models import build_model as build
    return build(cfg).eval()


def random_clip(model, batch_size=1):
    """Random input ``(N, T·C, H, W)`` for ``model`` (C = channels per segment)."""
    size = model.crop_size
    return torch.randn(batch_size, model.num_segments * model.input_channels, size, size)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def count_flops(model, x):
    """FLOPs of one forward pass over ``x`` (multiply-accumulates count 2)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops()


def measure_latencies(pairs, runs=5, warmup=2):
    """Fastest forward time in ms of each ``(model, x)`` in ``pairs``, timed round-robin."""
    times = [[] for _ in pairs]
    with torch.inference_mode():
        for model, x in pairs:
            for _ in range(warmup):
                model(x)
        for _ in range(runs):
            for i, (model, x) in enumerate(pairs):
                t0 = time.perf_counter()
                model(x)
                times[i].append((time.perf_counter() - t0) * 1000.0)
    return [min(t) for t in times]


def measure_latency(model, x, runs=5, warmup=2):
    """Fastest wall time in ms of ``runs`` forward passes, after ``warmup`` untimed passes."""
    return measure_latencies([(model, x)], runs, warmup)[0]


def static_stats(model, x):
    """``{'params_m', 'gmacs', 'gflops'}``; GMACs/GFLOPs per clip of the batch ``x``."""
    flops = count_flops(model, x) / x.shape[0]
    return {'params_m': count_params(model) / 1e6, 'gmacs': flops / 2e9, 'gflops': flops / 1e9}


def measure(cfg, batch_size=1, runs=5, warmup=2, latency=True):
    """``{'params_m', 'gmacs', 'gflops', 'latency_ms'}`` of the model of ``cfg``.

    GMACs/GFLOPs are per clip; latency is per forward of the batch (``nan`` when ``latency`` is
    False).
    """
    model = build_model(cfg)
    x = random_clip(model, batch_size)
    stats = static_stats(model, x)
    stats['latency_ms'] = measure_latency(model, x, runs, warmup) if latency else float('nan')
    return stats


def format_line(stats):
    return 'params_m={:.2f} gmacs={:.2f} gflops={:.2f} latency_ms={:.1f}'.format(
        stats['params_m'], stats['gmacs'], stats['gflops'], stats['latency_ms'])


def describe(cfg):
    parts = [cfg.arch, '%d segments' % cfg.num_segments, '%dx%d' % (cfg.input_size, cfg.input_size), cfg.modality]
    if cfg.shift:
        parts.append('shift 1/%d %s' % (cfg.shift_div, cfg.shift_place))
    for flag in ('temporal_pool', 'non_local', 'lsm'):
        if getattr(cfg, flag):
            parts.append(flag)
    return ', '.join(parts)


def run_table(args, out=None):
    """Print the TSN/TSM/NL-TSM/LSNet comparison table and the LSNet/TSM ratios; returns rows."""
    out = out or sys.stdout
    entries = []  # (arch, name, model or None, x, stats or reason)
    for arch in args.table_archs:
        for name, variant in TABLE_VARIANTS:
            try:
                cfg = model_config(args).replace(**dict(dict(arch=arch, shift=False, non_local=False, lsm=False),
                                                        **variant))
                model = build_model(cfg)
            except LSNetError as exc:
                entries.append((arch, name, None, None, str(exc)))
                continue
            x = random_clip(model, args.batch_size)
            entries.append((arch, name, model, x, static_stats(model, x)))
    timed = [e for e in entries if e[2] is not None]
    if not timed:
        raise LSNetError('--table_archs {}: {}'.format(' '.join(args.table_archs), entries[0][4]))
    if args.no_latency:
        latencies = [float('nan')] * len(timed)
    else:
        latencies = measure_latencies([(e[2], e[3]) for e in timed], args.runs, args.warmup)
    for e, ms in zip(timed, latencies):
        e[4]['latency_ms'] = ms
    print('| backbone | model | params (M) | GMACs | GFLOPs | CPU latency (ms) |', file=out)
    print('|---|---|---:|---:|---:|---:|', file=out)
    rows = []
    for arch, name, model, _, stats in entries:
        if model is None:
            print('| %s | %s | n/a (%s) | | | |' % (arch, name, stats), file=out)
            continue
        rows.append((arch, name, stats))
        print('| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.1f} |'.format(
            arch, name, stats['params_m'], stats['gmacs'], stats['gflops'], stats['latency_ms']),
            file=out)
    by_key = {(a, n): s for a, n, s in rows}
    print('', file=out)
    for arch in args.table_archs:
        tsm, lsnet = by_key.get((arch, 'TSM')), by_key.get((arch, 'LSNet'))
        if tsm and lsnet:
            print('{} LSNet/TSM: params x{:.3f}, GMACs x{:.3f}, latency x{:.3f}'.format(
                arch, lsnet['params_m'] / tsm['params_m'], lsnet['gmacs'] / tsm['gmacs'],
                lsnet['latency_ms'] / tsm['latency_ms']), file=out)
        else:
            print('{} LSNet/TSM: not available'.format(arch), file=out)
    return rows


def build_parser():
    p = ArgumentParser(description='Parameters, FLOPs (torch.utils.flop_counter) and CPU '
                                            'latency of a model configuration.')
    p.add_argument('--arch', default='resnet50')
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--modality', choices=('RGB', 'Flow', 'RGBDiff'), default='RGB')
    p.add_argument('--num_class', type=int, default=400, help='classes of the head (default 400)')
    p.add_argument('--consensus_type', default='avg')
    p.add_argument('--shift', action='store_true', help='temporal shift (TSM)')
    p.add_argument('--shift_div', type=int, default=8)
    p.add_argument('--shift_place', default='blockres')
    p.add_argument('--shift_mode', choices=('fast', 'lean'), default='fast')
    p.add_argument('--temporal_pool', action='store_true')
    p.add_argument('--non_local', action='store_true')
    p.add_argument('--lsm', action='store_true', help='long-short module (LSNet)')
    p.add_argument('--lsm_reduction', type=int, default=16)
    p.add_argument('--lsm_groups', type=int, default=4)
    p.add_argument('--lsm_branches', nargs='+', default=['short', 'long'])
    p.add_argument('--lsm_short_stages', nargs='+', default=['1', '2', '3', '4'])
    p.add_argument('--lsm_long_stages', nargs='+', default=['1', '2', '3', '4'])
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--batch_size', type=int, default=1, help='clips per timed forward (default 1)')
    p.add_argument('--runs', type=int, default=5, help='timed forward passes (fastest reported)')
    p.add_argument('--warmup', type=int, default=2, help='untimed forward passes first')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (default: torch default)')
    p.add_argument('--no_latency', action='store_true', help='skip timing (latency_ms=nan)')
    p.add_argument('--table', action='store_true',
                   help='TSN/TSM/NL-TSM/LSNet table for --table_archs at --num_segments x --input_size^2')
    p.add_argument('--table_archs', nargs='+', default=list(TABLE_ARCHS))
    return p


def check_args(args):
    for flag in ('num_segments', 'input_size', 'batch_size', 'runs', 'num_class'):
        if getattr(args, flag) < 1:
            raise LSNetError('--%s must be >= 1, got %d' % (flag, getattr(args, flag)))
    if args.warmup < 0 or args.threads < 0:
        raise LSNetError('--warmup and --threads must be >= 0')


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        print('torch %s, %d CPU threads' % (torch.__version__, torch.get_num_threads()))
        if args.table:
            run_table(args)
            return 0
        cfg = model_config(args)
        stats = measure(cfg, args.batch_size, args.runs, args.warmup, not args.no_latency)
    except LSNetError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 2
    print(describe(cfg))
    print(format_line(stats))
    return 0


if __name__ == '__main__':
    sys.exit(main())
