"""Temporal shift, temporal pool and non-local: exact equality with the reference formulas."""
import pytest
import torch
import torch.nn as nn
import torchvision

from archs.mobilenet_v2 import MobileNetV2
from ops.errors import LSNetError
from ops.non_local import NL3DWrapper, NonLocalBlock3D, make_non_local
from ops.temporal_shift import (ShiftConv2dFunction, ShiftFunction, TemporalPool, TemporalShift,
                                make_temporal_shift, shift_select, shift_slicing, shift_tensor,
                                temporal_shift)

# (N, T, C, shift_div): even/odd channels, T = 1, fold 0
SHAPES = [(2, 4, 16, 8), (2, 3, 13, 4), (3, 1, 8, 4), (1, 4, 7, 8), (2, 8, 24, 8)]


def _pair(n, t, c, h=5, w=4, dtype=torch.float32):
    x = torch.randn(n * t, c, h, w, dtype=dtype)
    return x.clone().requires_grad_(), x.clone().requires_grad_()


@pytest.mark.parametrize('n,t,c,div', SHAPES)
def test_fast_shift_bit_exact_forward_backward(n, t, c, div):
    xa, xb = _pair(n, t, c)
    ya, yb = temporal_shift(xa, t, div), shift_slicing(xb, t, div)
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(xa.grad, xb.grad)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float64])
def test_fast_shift_other_dtypes(dtype):
    """Other dtypes (bfloat16, float64) shift exactly like float32."""
    xa, xb = _pair(2, 4, 12, dtype=dtype)
    ya, yb = temporal_shift(xa, 4, 4), shift_slicing(xb, 4, 4)
    assert ya.dtype == dtype and torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(xa.grad, xb.grad)


def test_shift_direction_and_zero_fill():
    x = torch.arange(1, 4, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 4, 1, 1).contiguous()
    y = temporal_shift(x, 3, shift_div=4).view(3, 4)  # fold 1: channel 0 ← t+1, channel 1 ← t-1
    assert y[:, 0].tolist() == [2, 3, 0]
    assert y[:, 1].tolist() == [0, 1, 2]
    assert y[:, 2].tolist() == [1, 2, 3]


def test_fast_shift_channels_last_and_noncontiguous_grad():
    x = torch.randn(8, 16, 6, 6).to(memory_format=torch.channels_last).requires_grad_()
    y = temporal_shift(x, 4, 8)
    assert torch.equal(y, shift_slicing(x.detach(), 4, 8))
    y.sum().backward()  # expanded (stride-0) gradient
    ref = torch.autograd.grad(shift_slicing(x, 4, 8).sum(), x)[0]
    assert torch.equal(x.grad, ref)


def _frame_by_frame(x, num_segments, fold, direction=1):
    """The shift written out one frame at a time: a reference for any fold and both directions."""
    first, second = (slice(0, fold), slice(fold, 2 * fold))[::direction]
    out = torch.zeros_like(x)
    for i in range(x.size(0)):
        t = i % num_segments
        out[i, 2 * fold:] = x[i, 2 * fold:]
        if t + 1 < num_segments:
            out[i, first] = x[i + 1, first]
        if t > 0:
            out[i, second] = x[i - 1, second]
    return out


# (N, T, C, H, W, fold): even/odd channels, T = 1, fold 0, fold = C (shift_div 1), 1x1 and odd planes
CASES = [(2, 4, 16, 5, 4, 2), (2, 3, 13, 3, 3, 3), (3, 1, 8, 2, 2, 1), (1, 4, 7, 5, 5, 0),
         (2, 8, 24, 7, 7, 3), (1, 4, 6, 1, 1, 1), (2, 2, 5, 3, 1, 5), (1, 8, 256, 14, 14, 32)]


@pytest.mark.parametrize('n,t,c,h,w,fold', CASES)
@pytest.mark.parametrize('direction', [1, -1])
def test_shift_tensor_matches_frame_by_frame(n, t, c, h, w, fold, direction):
    x = torch.randn(n * t, c, h, w)
    out = shift_tensor(x, t, fold, direction)
    assert torch.equal(out, _frame_by_frame(x, t, fold, direction))
    if direction == 1 and fold == c // 8:
        assert torch.equal(out, shift_slicing(x, t, 8))


@pytest.mark.parametrize('n,t,c,h,w,fold', CASES)
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_select_form_for_compilers_equals_the_slice_copies(n, t, c, h, w, fold, memory_format):
    """The form used while torch.compile traces: same numbers, both directions, both shifts, same layout."""
    x = torch.randn(n * t, c, h, w).contiguous(memory_format=memory_format)
    for direction in (1, -1):
        out = shift_select(x, t, fold, direction)
        assert torch.equal(out, _frame_by_frame(x, t, fold, direction))
        assert out.is_contiguous(memory_format=memory_format)
        assert torch.equal(shift_select(x, t, fold, direction, uni=True), shift_tensor(x, t, fold, direction, uni=True))


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_channel_selection_equals_the_concatenation(memory_format):
    """The compiled stream step's channel concatenation (the shift's previous channels, the long
    branch's groups): the same numbers, in the layout of the map they make up."""
    from ops.basic_ops import concat_channels
    x = torch.randn(2, 16, 5, 6).contiguous(memory_format=memory_format)
    previous = torch.randn(2, 2, 5, 6)
    out = concat_channels((previous, x[:, 2:]), like=x)
    assert torch.equal(out, torch.cat((previous, x[:, 2:]), dim=1))
    assert out.is_contiguous(memory_format=memory_format)
    groups = [torch.randn(2, 4, 5, 6).contiguous(memory_format=memory_format) for _ in range(4)]
    assert torch.equal(concat_channels(groups, like=x), torch.cat(groups, dim=1))


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8])
def test_shift_tensor_any_dtype(dtype):
    x = (torch.randn(12, 10, 3, 5) * 100).to(dtype)
    for direction in (1, -1):
        assert torch.equal(shift_tensor(x, 4, 3, direction), _frame_by_frame(x, 4, 3, direction))


def test_shift_tensor_keeps_channels_last_and_reads_offset_views():
    x = torch.randn(8, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    out = shift_tensor(x, 4, 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, shift_slicing(x.contiguous(), 4, 8))
    view = torch.randn(1 + 4 * 9 * 5 * 7)[1:].view(4, 9, 5, 7)  # starts one element into its storage
    for direction in (1, -1):
        assert torch.equal(shift_tensor(view, 4, 2, direction), _frame_by_frame(view, 4, 2, direction))


CONVS = [dict(k=1, stride=1, pad=0, bias=False), dict(k=3, stride=2, pad=1, bias=True),
         dict(k=3, stride=1, pad=1, bias=False)]


@pytest.mark.parametrize('n,t,c,div', SHAPES)
@pytest.mark.parametrize('conv', CONVS)
def test_lean_shift_conv_matches_slicing(n, t, c, div, conv):
    torch.manual_seed(1)
    layer = nn.Conv2d(c, 6, conv['k'], conv['stride'], conv['pad'], bias=conv['bias'])
    lean = TemporalShift(layer, num_segments=t, shift_div=div, mode='lean')
    xa, xb = _pair(n, t, c, 7, 6)
    ya = lean(xa)
    assert ya.grad_fn is not None and 'ShiftConv2d' in type(ya.grad_fn).__name__
    yb = layer(shift_slicing(xb, t, div))
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, [xa] + list(layer.parameters()), g)
    gb = torch.autograd.grad(yb, [xb] + list(layer.parameters()), g)
    for a, b in zip(ga, gb):
        assert torch.equal(a, b)


def test_lean_mode_without_grad_and_fast_mode_give_same_output():
    layer = nn.Conv2d(16, 8, 1, bias=False)
    x = torch.randn(8, 16, 4, 4)
    with torch.no_grad():
        a = TemporalShift(layer, 4, 8, mode='lean')(x)
    b = TemporalShift(layer, 4, 8, mode='fast')(x)
    assert torch.equal(a, b)


def _record_block_inputs(net):
    """Hook every TemporalShift: keep a copy of its input taken before the call."""
    seen = []
    for m in net.modules():
        if isinstance(m, TemporalShift):
            m.register_forward_pre_hook(lambda mod, args: seen.append((args[0], args[0].clone())))
    return seen


@pytest.mark.parametrize('arch,place,channels_last,t', [
    ('resnet18', 'blockres', False, 4), ('resnet18', 'block', True, 4),
    ('resnet18', 'blockres', True, 1), ('mobilenetv2', 'blockres', False, 3)])
def test_inference_in_place_shift_is_exact_and_restores_input(arch, place, channels_last, t):
    """Without a graph the shift runs in place on the block input and puts it back bit for bit."""
    net = MobileNetV2() if arch == 'mobilenetv2' else torchvision.models.resnet18()
    make_temporal_shift(net, t, 8, place)
    net.eval()
    x = torch.randn(2 * t, 3, 32, 32)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    expected = net(x)  # grad mode: the out-of-place fast shift
    seen = _record_block_inputs(net)
    with torch.inference_mode():
        got = net(x)
    assert torch.equal(got, expected)
    assert seen and all(torch.equal(inp, before) for inp, before in seen)
    with torch.no_grad():
        assert torch.equal(net(x), expected)


def test_in_place_shift_only_without_graph():
    """While recording a graph the input is never written (its version stays put)."""
    x = torch.randn(8, 16, 4, 4)
    shift = TemporalShift(nn.Conv2d(16, 8, 1), 4, 8)
    version = x._version
    shift(x).sum().backward()
    assert x._version == version
    with torch.no_grad():
        shift(x)
    assert x._version > version


def test_gradcheck_float64(one_thread):
    x = torch.randn(6, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: ShiftFunction.apply(v, 3, 2), (x,))
    assert torch.autograd.gradgradcheck(lambda v: ShiftFunction.apply(v, 3, 2), (x[:, :4],))
    w = torch.randn(3, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda v, wt, bs: ShiftConv2dFunction.apply(v, wt, bs, 3, 2, (2, 2), (1, 1), (1, 1), 1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    grouped = torch.randn(8, 2, 1, 1, dtype=torch.float64, requires_grad=True)
    fn = lambda v, wt: ShiftConv2dFunction.apply(v, wt, None, 3, 1, (1, 1), (0, 0), (1, 1), 4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, grouped))


def test_shift_rejects_partial_clips():
    with pytest.raises(ValueError):
        temporal_shift(torch.randn(5, 8, 2, 2), 4)
    with pytest.raises(LSNetError):
        TemporalShift(nn.Identity(), 4, 8, mode='inplace')


def _shifted_names(net):
    return [name for name, m in net.named_modules() if isinstance(m, TemporalShift)]


def test_make_temporal_shift_places():
    net = torchvision.models.resnet18()
    assert make_temporal_shift(net, 4, 8, 'blockres') == 8
    assert all(n.endswith('conv1') for n in _shifted_names(net))
    net = torchvision.models.resnet18()
    make_temporal_shift(net, 4, 8, 'block')
    assert _shifted_names(net)[:2] == ['layer1.0', 'layer1.1']
    mb = MobileNetV2()
    assert make_temporal_shift(mb, 4, 8, 'blockres') == 10
    assert _shifted_names(mb)[0] == 'features.3.conv.0'
    with pytest.raises(LSNetError):
        make_temporal_shift(torchvision.models.resnet18(), 4, 8, 'conv')


def test_resnet101_shifts_every_second_block():
    net = torchvision.models.resnet101()
    make_temporal_shift(net, 8, 8, 'blockres')
    names = set(_shifted_names(net))
    for stage, blocks in (('layer1', 3), ('layer2', 4), ('layer3', 23), ('layer4', 3)):
        for i in range(blocks):
            assert ('{}.{}.conv1'.format(stage, i) in names) == (i % 2 == 0)


def test_temporal_pool_halves_time():
    x = torch.randn(2 * 8, 3, 2, 2)
    pool = TemporalPool(nn.Identity(), 8)
    y = pool(x)
    assert y.shape == (2 * 4, 3, 2, 2)
    x5 = x.view(2, 8, 3, 2, 2)
    expected = torch.stack([x5[:, max(2 * i - 1, 0):2 * i + 2].amax(1) for i in range(4)], 1)
    assert torch.equal(y.view(2, 4, 3, 2, 2), expected)


def test_non_local_starts_as_identity_and_wraps_every_second_block():
    nl = NonLocalBlock3D(8)
    x = torch.randn(2, 8, 4, 4, 4)
    assert torch.equal(nl(x), x)  # W's BN is zero-initialised
    net = torchvision.models.resnet50()  # the official placement (manifest test checks the names)
    make_non_local(net, 4)
    assert [isinstance(b, NL3DWrapper) for b in net.layer2] == [True, False, True, False]
    assert [isinstance(b, NL3DWrapper) for b in net.layer3] == [True, False] * 3
    small = torchvision.models.resnet18()
    make_non_local(small, 2)
    nn.init.normal_(small.layer2[0].nl.W[1].weight)
    small.eval()
    assert small(torch.randn(4, 3, 32, 32)).shape == (4, 1000)


@pytest.mark.parametrize('mode', ['fast', 'lean'])
def test_shift_traces_with_torch_export(mode):
    """The shift traces under torch.export with the same values."""
    net = nn.Sequential(TemporalShift(nn.Conv2d(8, 4, 1), num_segments=2, shift_div=4, mode=mode), nn.ReLU()).eval()
    x = torch.randn(4, 8, 3, 3)
    program = torch.export.export(net, (x,))
    assert torch.equal(program.module()(x), net(x))


def test_export_in_training_mode_records_the_shift():
    """Exported while recording a graph (ShiftFunction, not the in-place path), the program shifts new inputs."""
    net = TemporalShift(nn.Identity(), num_segments=4, shift_div=4).train()
    program = torch.export.export(net, (torch.randn(8, 8, 2, 2),))
    y = torch.randn(8, 8, 2, 2)
    assert torch.equal(program.module()(y), shift_slicing(y, 4, 4))
