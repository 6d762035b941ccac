"""The compiled CPU shift (ops/native_shift.py): same bytes as the ATen slice copies, and a clean
fallback whenever it cannot or must not run."""
import logging
import os
import shutil

import pytest
import torch

from ops import native_shift
from ops.temporal_shift import ShiftFunction, TemporalShift, shift_slicing, shift_tensor

needs_cc = pytest.mark.skipif(shutil.which(os.environ.get('CC') or 'cc') is None, reason='no C compiler')


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A private cache folder and a kernel state that is forgotten before and after the test."""
    monkeypatch.setenv('LSNET_CACHE_DIR', str(tmp_path / 'cache'))
    native_shift.reset()
    yield tmp_path / 'cache'
    native_shift.reset()


def _aten(x, n_segment, fold, direction):
    """The same shift through the ATen slice copies only."""
    os.environ['LSNET_NATIVE_SHIFT'] = '0'
    native_shift.reset()
    try:
        return shift_tensor(x, n_segment, fold, direction)
    finally:
        del os.environ['LSNET_NATIVE_SHIFT']
        native_shift.reset()


# (N, T, C, H, W, fold): even/odd channels, T = 1, fold 0, fold = C (n_div 1), 1x1 and odd planes
CASES = [(2, 4, 16, 5, 4, 2), (2, 3, 13, 3, 3, 3), (3, 1, 8, 2, 2, 1), (1, 4, 7, 5, 5, 0),
         (2, 8, 24, 7, 7, 3), (1, 4, 6, 1, 1, 1), (2, 2, 5, 3, 1, 5), (1, 8, 256, 14, 14, 32)]


@pytest.fixture(params=['plain', 'stream'])
def store(request, monkeypatch):
    """Run a test with plain stores and again with the non-temporal (streaming) stores forced."""
    monkeypatch.setitem(native_shift._state, 'stream_bytes', 0 if request.param == 'stream' else 1 << 62)
    return request.param


@needs_cc
@pytest.mark.parametrize('n,t,c,h,w,fold', CASES)
@pytest.mark.parametrize('direction', [1, -1])
def test_native_equals_aten_bit_for_bit(fresh, store, n, t, c, h, w, fold, direction):
    x = torch.randn(n * t, c, h, w)
    assert native_shift.kernel() is not None
    out = shift_tensor(x, t, fold, direction)
    assert torch.equal(out, _aten(x, t, fold, direction))
    if direction == 1 and fold == c // 8 and c >= 8:
        assert torch.equal(out, shift_slicing(x, t, 8))


@needs_cc
@pytest.mark.parametrize('dtype', [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8])
def test_native_any_dtype(fresh, store, dtype):
    """The loop copies bytes and zero bytes are zero in every dtype."""
    x = (torch.randn(12, 10, 3, 5) * 100).to(dtype)
    for direction in (1, -1):
        assert torch.equal(shift_tensor(x, 4, 3, direction), _aten(x, 4, 3, direction))


@needs_cc
def test_native_stream_unaligned_views(fresh, store):
    """Rows that start off a 16-byte boundary (odd planes, a tensor carved out of a bigger buffer at
    an odd element offset) take the unaligned head and tail around the streamed body."""
    base = torch.randn(1 + 4 * 9 * 5 * 7)
    x = base[1:].view(4, 9, 5, 7)
    assert x.data_ptr() % 16 != 0 and x.is_contiguous()
    for direction in (1, -1):
        assert torch.equal(shift_tensor(x, 4, 2, direction), _aten(x, 4, 2, direction))


def test_stream_threshold_from_sysfs(tmp_path, monkeypatch):
    for index, (level, size) in enumerate([(1, '48K'), (2, '2048K'), (3, '32768K'), (1, '32K')]):
        folder = tmp_path / 'index{}'.format(index)
        folder.mkdir()
        (folder / 'level').write_text('{}\n'.format(level))
        (folder / 'size').write_text(size + '\n')
    assert native_shift.last_level_cache_bytes(str(tmp_path)) == 32 << 20
    assert native_shift.last_level_cache_bytes(str(tmp_path / 'missing')) is None
    # half the last-level cache: source and output together fill it
    monkeypatch.setitem(native_shift._state, 'stream_bytes', None)
    monkeypatch.setattr(native_shift, 'last_level_cache_bytes', lambda: 32 << 20)
    assert native_shift.stream_min_bytes() == 16 << 20
    monkeypatch.setitem(native_shift._state, 'stream_bytes', None)
    monkeypatch.setattr(native_shift, 'last_level_cache_bytes', lambda: None)
    assert native_shift.stream_min_bytes() == 8 << 20


@needs_cc
def test_native_backward_and_gradcheck(fresh):
    x = torch.randn(8, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: ShiftFunction.apply(v, 4, 2), (x,))
    assert torch.autograd.gradgradcheck(lambda v: ShiftFunction.apply(v, 4, 2), (x,))
    assert native_shift.kernel() is not None


@needs_cc
def test_native_is_built_once_and_cached(fresh):
    assert native_shift.kernel() is not None
    built = sorted(fresh.iterdir())
    assert len(built) == 1 and built[0].name.startswith('temporal_shift_') and built[0].suffix == '.so'
    stamp = built[0].stat().st_mtime_ns
    native_shift.reset()
    assert native_shift.kernel() is not None
    assert sorted(fresh.iterdir()) == built and built[0].stat().st_mtime_ns == stamp


def test_disabled_by_environment(fresh, monkeypatch):
    monkeypatch.setenv('LSNET_NATIVE_SHIFT', '0')
    assert native_shift.kernel() is None
    x = torch.randn(8, 8, 2, 2)
    assert torch.equal(shift_tensor(x, 4, 1), shift_slicing(x, 4, 8))
    assert not fresh.exists()  # nothing was built


def test_failed_build_falls_back_with_one_log_line(fresh, monkeypatch, caplog):
    monkeypatch.setenv('CC', 'false')  # a "compiler" that always fails
    with caplog.at_level(logging.INFO, logger='ops.native_shift'):
        assert native_shift.kernel() is None
        x = torch.randn(8, 8, 2, 2)
        assert torch.equal(shift_tensor(x, 4, 1), shift_slicing(x, 4, 8))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and 'using ATen slice copies' in lines[0] and 'false' in lines[0]
    assert not any(p.suffix == '.so' for p in fresh.iterdir())  # no half-written library left


def test_missing_compiler_falls_back(fresh, monkeypatch):
    monkeypatch.setenv('CC', 'no-such-compiler-lsnet')
    assert native_shift.kernel() is None
    x = torch.randn(6, 9, 2, 3)
    assert torch.equal(shift_tensor(x, 3, 2), _aten(x, 3, 2, 1))


@needs_cc
def test_channels_last_uses_the_slices(fresh):
    x = torch.randn(8, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    out = shift_tensor(x, 4, 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, shift_slicing(x.contiguous(), 4, 8))


@needs_cc
def test_export_records_the_shift(fresh):
    """Under torch.export the ATen ops run (a C call would vanish from the program, and fake tensors
    have no data), so the exported program shifts new inputs too."""
    assert native_shift.kernel() is not None
    net = TemporalShift(torch.nn.Identity(), n_segment=4, n_div=4).train()
    program = torch.export.export(net, (torch.randn(8, 8, 2, 2),))
    y = torch.randn(8, 8, 2, 2)
    assert torch.equal(program.module()(y), shift_slicing(y, 4, 4))
