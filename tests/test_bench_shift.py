"""tools/bench_shift.py at a tiny setting: it runs end to end and its last line parses (no timing checks)."""
import re

from tools import bench_shift

LAST_LINE = re.compile(r'^tsm_over_tsn_train=(\S+) tsm_over_tsn_infer=(\S+)$')


def test_bench_shift_tiny_run_prints_ratios(capsys):
    assert bench_shift.main(['--arch', 'resnet18', '--num_segments', '4', '--input_size', '32',
                             '--repeats', '1', '--warmup', '0']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    defaults = bench_shift.default_args('resnet18', 4, 32, shift=True)  # main.py's defaults
    assert 'channels_last={}'.format(defaults.channels_last) in lines[0]
    assert 'shift_mode={}'.format(defaults.shift_mode) in lines[0]
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-1]
    assert all(float(v) > 0 for v in match.groups())
