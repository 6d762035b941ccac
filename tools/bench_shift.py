"""Benchmark the temporal shift against its baselines; every ratio is measured side by side.

1. shift forward+backward time ÷ ``clone()`` forward+backward time, same tensor (8×256×56×56);
   ``LSNET_NATIVE_SHIFT=0`` measures the ATen slice copies instead of the compiled C loop.
2. TSM-ResNet-50 ÷ TSN-ResNet-50 inference latency, 1 clip × 8 segments × 224².
3. peak memory of one training step (forward, loss, backward, SGD step), TSM ÷ TSN, same batch.

Timings alternate the candidates inside each repeat (A B, B A, …) and report medians (and, for
the latency, the best times and the median of the per-repeat ratios), so a busy neighbour slows
both sides alike.

Memory: one ``torch.profiler`` session (``profile_memory=True``) records every allocation and free
of the CPU tensor allocator with its size, for all models' steps (so each free is matched with its
allocation). The running sum of those events is the live tensor memory; its
maximum inside a measured step minus its level when the step starts (after a warm step, so the
parameter gradients already exist) is the extra memory the step needs; the peak reported adds what
is resident between steps (parameters, gradients, buffers, input). Its growth during the forward
pass is the activation memory kept for backward. Tensors only (not Python or allocator overhead),
which is what the shift changes.

Usage: ``python tools/bench_shift.py [--threads 2] [--repeats 15] [--only shift,latency,memory]``
"""
import argparse
import os
import statistics
import sys
import time

# Kineto (the profiler of the memory measurement) otherwise prints its start/stop trace and a
# failed GPU probe on CPU-only machines; set before torch loads it.
os.environ.setdefault('KINETO_LOG_LEVEL', '6')

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops import native_shift  # noqa: E402
from ops.models import TSN  # noqa: E402
from ops.temporal_shift import ShiftFunction, shift_slicing  # noqa: E402


def _median_ms(samples):
    return 1000 * statistics.median(samples)


def _interleaved(fns, repeats, warmup=2):
    """Time each callable ``repeats`` times, alternating the order every round."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def bench_shift(repeats, shape=(8, 256, 56, 56), n_segment=8, fold_div=8):
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape)
    fold = shape[1] // fold_div

    def step(op):
        def run():
            y = op(x)
            y.backward(g)
            x.grad = None
        return run

    times = _interleaved({
        'clone': step(lambda v: v.clone()),
        'shift': step(lambda v: ShiftFunction.apply(v, n_segment, fold)),
        'slicing': step(lambda v: shift_slicing(v, n_segment, fold_div)),
    }, repeats)
    ms = {k: _median_ms(v) for k, v in times.items()}
    pair = statistics.median(a / b for a, b in zip(times['shift'], times['clone']))
    kernel = 'compiled C loop' if native_shift.kernel() is not None else 'ATen slice copies'
    print('[1] shift fwd+bwd, {} float32: clone {:.2f} ms, fast shift ({}) {:.2f} ms, slicing formula {:.2f} ms'
          .format('x'.join(map(str, shape)), ms['clone'], kernel, ms['shift'], ms['slicing']))
    print('    fast shift / clone = {:.3f} (ratio of medians), {:.3f} (median of paired ratios)'
          '   (target <= 1.0; slicing / clone = {:.3f})'
          .format(ms['shift'] / ms['clone'], pair, ms['slicing'] / ms['clone']))
    return ms['shift'] / ms['clone']


def _r50(is_shift, shift_mode='fast'):
    return TSN(400, 8, 'RGB', base_model='resnet50', pretrain='none', dropout=0.5, partial_bn=False,
               is_shift=is_shift, shift_div=8, shift_place='blockres', shift_mode=shift_mode)


def bench_latency(repeats, size=224):
    tsn, tsm = _r50(False).eval(), _r50(True).eval()
    x = torch.randn(1, 8 * 3, size, size)

    def infer(model):
        def run():
            with torch.inference_mode():
                model(x)
        return run

    times = _interleaved({'TSN': infer(tsn), 'TSM': infer(tsm)}, repeats)
    ms = {k: _median_ms(v) for k, v in times.items()}
    pair = [a / b for a, b in zip(times['TSM'], times['TSN'])]
    best = {k: 1000 * min(v) for k, v in times.items()}
    print('[2] R50 inference, 1 clip x 8 x {}^2: TSN {:.1f} ms, TSM {:.1f} ms (medians; best {:.1f} / {:.1f} ms)'
          .format(size, ms['TSN'], ms['TSM'], best['TSN'], best['TSM']))
    print('    TSM / TSN = {:.3f} (ratio of medians), {:.3f} (median of paired ratios), {:.3f} (ratio of best)'
          '   (target <= 1.03)'.format(ms['TSM'] / ms['TSN'], statistics.median(pair), best['TSM'] / best['TSN']))
    return ms['TSM'] / ms['TSN']


def _window_stats(allocs, start, end, fwd):
    """(peak over [start, end] minus the level at ``start``, growth during the ``fwd`` window)."""
    def level_at(when):
        return sum(nb for t, nb in allocs if t < when)
    level = level_at(start)
    live = peak = level
    for t, nb in allocs:
        if start <= t <= end:
            live += nb
            peak = max(peak, live)
    return peak - level, level_at(fwd[1]) - level_at(fwd[0])


def _resident_bytes(model, *inputs):
    """Bytes alive between steps: parameters, their gradients, buffers and the inputs."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return params + grads + buffers + sum(t.numel() * t.element_size() for t in inputs)


def bench_memory(size=224, rounds=2):
    from torch.profiler import ProfilerActivity, profile, record_function
    models = {'TSN': _r50(False), 'TSM lean': _r50(True, 'lean'), 'TSM fast': _r50(True, 'fast')}
    x = torch.randn(1, 8 * 3, size, size)
    target = torch.tensor([3])

    def train_step(model):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def run():
            opt.zero_grad(set_to_none=True)
            with record_function('forward'):
                loss = torch.nn.functional.cross_entropy(model(x), target)
            loss.backward()
            opt.step()
        return run

    steps = {k: train_step(m) for k, m in models.items()}
    # one profiler session for all steps, so every free is matched with its allocation
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for r in range(rounds):
            for k in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
                steps[k]()  # warm step: parameter gradients exist from here on, as in every later step
                with record_function('measure|' + k):
                    steps[k]()
    events = prof.profiler.kineto_results.events()
    allocs = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == '[memory]')
    forwards = sorted((e.start_ns(), e.end_ns()) for e in events if e.name() == 'forward')
    peaks = {k: [] for k in models}
    saved = {k: [] for k in models}
    for e in sorted(events, key=lambda e: e.start_ns()):
        if e.name().startswith('measure|'):
            start, end, name = e.start_ns(), e.end_ns(), e.name().split('|', 1)[1]
            fwd = next(w for w in forwards if start <= w[0] <= end)
            extra, activations = _window_stats(allocs, start, end, fwd)
            peaks[name].append((_resident_bytes(models[name], x, target) + extra) / 2 ** 20)
            saved[name].append(activations / 2 ** 20)
    mb = {k: statistics.median(v) for k, v in peaks.items()}
    act = {k: statistics.median(v) for k, v in saved.items()}
    print('[3] R50 training step (fwd, loss, bwd, SGD step), 1 clip x 8 x {}^2, tensor memory in MiB'.format(size))
    for k in models:
        print('    {:9s} peak {:7.1f} (rounds: {})   activations {:7.1f}'
              .format(k, mb[k], ', '.join('{:.1f}'.format(v) for v in peaks[k]), act[k]))
    print('    peak TSM(lean) / TSN = {:.3f}   (target <= 1.03); TSM(fast) / TSN = {:.3f}'
          .format(mb['TSM lean'] / mb['TSN'], mb['TSM fast'] / mb['TSN']))
    print('    activations kept for backward TSM(lean) / TSN = {:.3f}; TSM(fast) / TSN = {:.3f}'
          .format(act['TSM lean'] / act['TSN'], act['TSM fast'] / act['TSN']))
    return mb['TSM lean'] / mb['TSN']


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--size', type=int, default=224, help='frame size for the R50 measurements')
    parser.add_argument('--only', default='shift,latency,memory')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print('torch {}, {} threads'.format(torch.__version__, torch.get_num_threads()))
    parts = set(args.only.split(','))
    if 'shift' in parts:
        bench_shift(args.repeats)
    if 'latency' in parts:
        bench_latency(args.repeats, args.size)
    if 'memory' in parts:
        bench_memory(args.size)
    return 0


if __name__ == '__main__':
    sys.exit(main())
