"""tools/bench_online.py at a tiny setting, through its command line: it runs end to end, prints every
variant and target, writes its JSON, and its last line parses (no timing checks)."""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST_LINE = re.compile(r'^mbv2_stream_fps=(\S+) stream_over_floor=(\S+) window_over_stream=(\S+) lsnet_over_tsm=(\S+)$')


def test_bench_online_tiny_run(tmp_path):
    out_json = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'bench_online.py'), '--size', '32',
                           '--repeats', '2', '--warmup', '1', '--num_class', '10', '--threads', '1',
                           '--json', str(out_json)],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert 'threads=1' in lines[0] and 'inference_mode' in lines[0] and 'channels_last=True' in lines[0]
    # the streamers were checked against the offline model's per-frame logits, 4 of them
    checks = [line for line in lines if line.startswith('check:')]
    assert len(checks) == 4 and not any('WARNING' in line for line in checks), checks
    for label in ('single-frame 2D forward', 'streaming TSM-uni', 'streaming causal LSNet', 'sliding window TSM-uni'):
        assert sum(label in line and 'ms/frame' in line for line in lines) == 2, label  # both backbones
    targets = [line for line in lines if line.rstrip().endswith(('PASS', 'MISS', '(printed for reference)'))]
    assert len(targets) == 7, targets
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-1]
    values = [float(v) for v in match.groups()]
    assert all(v > 0 for v in values)

    data = json.loads(out_json.read_text())
    assert set(data['summary']) == {'mbv2_stream_fps', 'stream_over_floor', 'window_over_stream', 'lsnet_over_tsm'}
    assert [round(data['summary'][k], 2) for k in ('mbv2_stream_fps',)] == [round(values[0], 2)]
    assert abs(data['summary']['lsnet_over_tsm'] - values[3]) < 1e-4
    assert len(data['targets']) == 7 and all(isinstance(t['pass'], bool) for t in data['targets'])
    for name, v in data['variants'].items():
        assert len(v['times_ms']) == 2 and v['median_ms'] > 0, name
    assert all(err < 1e-4 for err in data['checks'].values()), data['checks']
    assert data['settings']['size'] == 32 and data['settings']['threads'] == 1
