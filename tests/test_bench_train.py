"""tools/bench_train.py: a tiny run of the settings table, and the phase runner of --compare_compile
(interleaving, compile-time bookkeeping) with stand-in variants; no timing checks."""
import re

from tools import bench_train


def test_bench_train_tiny_run_prints_every_setting(capsys):
    settings = ['plain', 'defaults', 'lean']
    assert bench_train.main(['--arch', 'resnet18', '--batch', '1', '--input', '32', '--segments', '2',
                             '--classes', '5', '--rounds', '1', '--warmup', '0', '--settings'] + settings) == 0
    out = capsys.readouterr().out
    for name in settings:
        row = re.search(r'^{}\s+(\S+)\s+(\S+)\s+(\S+)x$'.format(name), out, re.M)
        assert row, name
        assert float(row.group(1)) > 0 and float(row.group(2)) > 0
    assert re.search(r'^plain\s+\S+\s+\S+\s+1\.00x$', out, re.M)
    assert re.search(r'^fastest: (plain|defaults|lean) ', out, re.M)


class _Stub:
    """A variant that logs its calls and 'takes' a fixed time."""

    def __init__(self, name, compiled, log):
        self.name, self.compiled, self.log, self.times = name, compiled, log, []

    def __call__(self, x, y):
        self.log.append(self.name)
        return 1.0


def test_run_phase_interleaves_rounds_and_keeps_compile_calls_apart():
    log = []
    variants = {('a',): _Stub('a', False, log), ('b',): _Stub('b', True, log)}
    compile_s, times = {}, {}
    bench_train._run_phase(variants, None, None, 1, 3, compile_s, times, 'test')
    # first call + one warm-up each, then rounds alternating in order and reversed
    assert log == ['a', 'a', 'b', 'b'] + ['a', 'b'] + ['b', 'a'] + ['a', 'b']
    assert set(compile_s) == {('b',)}  # only compiled variants have a compile time
    assert times == {('a',): [1.0] * 3, ('b',): [1.0] * 3}
