"""Temporal Shift Module (TSM): shift part of the channels along time, at zero extra FLOPs.

Layout: a batch of ``N`` clips with ``T`` segments each is ``(N*T, C, H, W)``, clip-major.
With ``fold = C // shift_div``: channels ``[0, fold)`` take the value of frame ``t+1`` ("shift left"),
channels ``[fold, 2*fold)`` that of frame ``t-1`` ("shift right"), the rest stay; a frame with
nothing to take gets zeros.  The online (causal) shift, ``direction='uni'``, moves only channels
``[0, fold)``, from frame ``t-1`` (zero at the first frame), so frame ``t`` never reads a later
frame and the model can run one frame at a time (:mod:`ops.streaming`): each shift then keeps the
moving channels of its previous input as its state.

One shift (:func:`shift_tensor`: five ATen slice operations that write each output element once,
in any dtype, device and memory format) used three ways, all bit-identical to the plain formula
:func:`shift_slicing` (the reference of the tests):
- :class:`ShiftFunction` (mode ``'fast'``, the default) — the shift as one autograd node whose
  backward is the opposite shift, instead of the formula's zero fill and three copies.
- :class:`ShiftConv2dFunction` (mode ``'lean'``) — shift fused with the wrapped ``conv1`` of a
  residual branch; only the *unshifted* input is kept for backward and the shift is recomputed
  there, so TSM keeps no more activations alive than TSN.
- :func:`shifted_in_place` (used by :class:`TemporalShift` whenever no graph is recorded, i.e. at
  inference) — shifts the input tensor itself for the duration of the wrapped module's call and
  restores it afterwards, so no full-size shifted copy is allocated.
"""
import contextlib
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ops.basic_ops import concat_channels, is_channels_last
from ops.errors import LSNetError

log = logging.getLogger(__name__)

SHIFT_MODES = ('fast', 'lean')
SHIFT_PLACES = ('block', 'blockres')
SHIFT_DIRECTIONS = ('bi', 'uni')


def shift_slicing(x, num_segments, shift_div=8):
    """Reference formula on ``(N*T, C, H, W)``: zero tensor, then three slice copies."""
    nt, c, h, w = x.size()
    x = x.view(nt // num_segments, num_segments, c, h, w)
    fold = c // shift_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


def moving_channels(fold, uni):
    """Channels a shift moves: ``fold`` (online, one way) or ``2*fold`` (both ways)."""
    return fold if uni else 2 * fold


def _slice_copies(src, dst, fold, direction, uni=False):
    """Fill ``dst`` (N, T, C, H, W) with ``src`` shifted (see :func:`shift_tensor`), each element once."""
    if uni:
        if fold > 0:
            if direction > 0:  # out[t] = x[t-1], zero at the first frame
                dst[:, 1:, :fold] = src[:, :-1, :fold]
                dst[:, :1, :fold] = 0
            else:  # the adjoint: out[t] = x[t+1], zero at the last frame
                dst[:, :-1, :fold] = src[:, 1:, :fold]
                dst[:, -1:, :fold] = 0
        dst[:, :, fold:] = src[:, :, fold:]
        return
    if fold > 0:
        a, b = slice(0, fold), slice(fold, 2 * fold)
        first, second = (a, b) if direction > 0 else (b, a)
        # `first` channels: out[t] = x[t+1], zero at the last frame
        dst[:, :-1, first] = src[:, 1:, first]
        dst[:, -1:, first] = 0
        # `second` channels: out[t] = x[t-1], zero at the first frame
        dst[:, 1:, second] = src[:, :-1, second]
        dst[:, :1, second] = 0
    dst[:, :, 2 * fold:] = src[:, :, 2 * fold:]


def _check_shape(x, num_segments):
    if x.dim() != 4 or x.size(0) % num_segments != 0:
        raise ValueError('temporal shift expects (N*T, C, H, W) with N*T divisible by T={}, got {}'
                         .format(num_segments, tuple(x.shape)))


def shift_tensor(x, num_segments, fold, direction=1, uni=False):
    """Non-differentiable shift of ``(N*T, C, H, W)`` into a fresh tensor of the same memory format.

    ``direction=+1`` is the forward shift (bidirectional: first fold takes t+1, second fold takes
    t-1; ``uni``: first fold takes t-1); ``direction=-1`` the opposite one, its adjoint (used for
    gradients).  While ``torch.compile`` or ``torch.export`` traces, :func:`shift_select` (same numbers).
    """
    if torch.compiler.is_compiling():
        return shift_select(x, num_segments, fold, direction, uni)
    out = torch.empty_like(x)
    nt, c, h, w = x.shape
    shape5 = (nt // num_segments, num_segments, c, h, w)
    _slice_copies(x.view(shape5), out.view(shape5), fold, direction, uni)
    return out


def shift_select(x, num_segments, fold, direction=1, uni=False):
    """:func:`shift_tensor` as one element-wise selection, the form compilers fuse well.

    Every output element picks frame ``t-1``, ``t+1`` (zero-padded clip views) or ``t`` by its
    channel.  Inductor fuses that into the kernel that produces ``x`` (the previous block's
    BN-add-ReLU) and writes it in ``x``'s memory format; the slice copies of :func:`shift_tensor`
    became nested masked loads written channels-first and transposed back, which made compiled
    ResNet-50 inference slower than eager.  In eager mode this form costs three passes instead of
    one, so it is only used while tracing.
    """
    nt, c, h, w = x.shape
    x5 = x.view(nt // num_segments, num_segments, c, h, w)
    earlier = F.pad(x5[:, :-1], (0, 0, 0, 0, 0, 0, 1, 0))  # out[t] = x[t-1], zero at the first frame
    later = F.pad(x5[:, 1:], (0, 0, 0, 0, 0, 0, 0, 1))  # out[t] = x[t+1], zero at the last frame
    channel = torch.arange(c, device=x.device).view(1, 1, c, 1, 1)
    if uni:
        out = torch.where(channel < fold, earlier if direction > 0 else later, x5)
    else:
        first, second = (later, earlier) if direction > 0 else (earlier, later)
        out = torch.where(channel < fold, first, torch.where(channel < 2 * fold, second, x5))
    out = out.view(nt, c, h, w)
    if is_channels_last(x):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


class ShiftFunction(torch.autograd.Function):
    """Temporal shift as one autograd node; backward is the opposite shift."""

    @staticmethod
    def forward(ctx, x, num_segments, fold, uni=False):
        ctx.num_segments, ctx.fold, ctx.uni = num_segments, fold, uni
        return shift_tensor(x, num_segments, fold, 1, uni)

    @staticmethod
    def backward(ctx, grad_out):
        if not torch.is_grad_enabled():  # the usual first-order backward: no node to record
            return shift_tensor(grad_out, ctx.num_segments, ctx.fold, -1, ctx.uni), None, None, None
        # the opposite shift is itself linear, so this backward is differentiable again
        return ShiftBackFunction.apply(grad_out, ctx.num_segments, ctx.fold, ctx.uni), None, None, None


class ShiftBackFunction(torch.autograd.Function):
    """The opposite shift (adjoint of :class:`ShiftFunction`)."""

    @staticmethod
    def forward(ctx, g, num_segments, fold, uni=False):
        ctx.num_segments, ctx.fold, ctx.uni = num_segments, fold, uni
        return shift_tensor(g, num_segments, fold, -1, uni)

    @staticmethod
    def backward(ctx, grad_out):
        return ShiftFunction.apply(grad_out, ctx.num_segments, ctx.fold, ctx.uni), None, None, None


def temporal_shift(x, num_segments, shift_div=8, uni=False):
    """Differentiable fast shift of ``(N*T, C, H, W)``; same values as :func:`shift_slicing`."""
    _check_shape(x, num_segments)
    return ShiftFunction.apply(x, num_segments, x.size(1) // shift_div, uni)


class ShiftConv2dFunction(torch.autograd.Function):
    """``conv2d(shift(x))`` that saves only ``x`` (not the shifted copy) for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_segments, fold, stride, padding, dilation, groups, uni=False):
        shifted = shift_tensor(x, num_segments, fold, 1, uni)
        out = F.conv2d(shifted, weight, bias, stride, padding, dilation, groups)
        del shifted
        ctx.save_for_backward(x, weight)
        ctx.conf = (num_segments, fold, stride, padding, dilation, groups, uni)
        ctx.bias_shape = None if bias is None else list(bias.shape)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        num_segments, fold, stride, padding, dilation, groups, uni = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        shifted = shift_tensor(x, num_segments, fold, 1, uni)
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad_out, shifted, weight, ctx.bias_shape, stride, padding, dilation, False, [0, 0],
            groups, [need_x, need_w, need_b and ctx.bias_shape is not None])
        del shifted
        if need_x:
            gx = shift_tensor(gx, num_segments, fold, -1, uni)
        return (gx if need_x else None, gw if need_w else None, gb if need_b else None,
                None, None, None, None, None, None, None)


@contextlib.contextmanager
def shifted_in_place(x, num_segments, fold, uni=False):
    """Temporarily shift ``x`` (N*T, C, H, W) in place; restore it bit for bit on exit.

    Only the moving channels are copied aside (a quarter of the tensor for shift_div 8, an eighth
    online), instead of allocating and writing a whole shifted tensor. Only valid when nothing
    records a graph (the input's version changes twice) and nobody else reads ``x`` meanwhile.
    """
    nt, c, h, w = x.shape
    x5 = x.view(nt // num_segments, num_segments, c, h, w)
    k = moving_channels(fold, uni)
    moving = x5[:, :, :k].clone()
    _slice_copies(moving, x5[:, :, :k], fold, 1, uni)
    try:
        yield x
    finally:
        x5[:, :, :k] = moving


def _in_place_applicable(x):
    """No autograd graph, no tracer, and a dense layout whose (N, T) view shares memory with ``x``."""
    if torch.is_grad_enabled() or x.requires_grad:
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def _lean_applicable(conv):
    return (isinstance(conv, nn.Conv2d) and type(conv).forward is nn.Conv2d.forward
            and conv.padding_mode == 'zeros' and not isinstance(conv.padding, str))


class TemporalShift(nn.Module):
    """Shift ``(N*T, C, H, W)`` along time, then run the wrapped ``net`` (kept as ``.net``).

    ``mode='lean'`` fuses the shift with ``net`` when ``net`` is a plain ``nn.Conv2d`` and a graph
    is being recorded; otherwise it behaves as ``'fast'``. When no graph is recorded (inference),
    both shift the input in place around the call to ``net`` and restore it. All give the same numbers.
    ``direction='uni'`` is the online shift; such a module can also run one frame at a time
    (:meth:`stream_step`, driven by :class:`ops.streaming.Streamer`).
    """
    stream = None  # set by ops.streaming.Streamer while it runs the model frame by frame

    def __init__(self, net, num_segments=3, shift_div=8, mode='fast', direction='bi'):
        super().__init__()
        if mode not in SHIFT_MODES:
            raise LSNetError('unknown shift mode {!r} (choose from {})'.format(mode, ', '.join(SHIFT_MODES)))
        if direction not in SHIFT_DIRECTIONS:
            raise LSNetError('--shift_direction {!r}: choose from {}'.format(direction, ', '.join(SHIFT_DIRECTIONS)))
        self.net = net
        self.num_segments = num_segments
        self.shift_div = shift_div
        self.mode = mode
        self.direction = direction

    @property
    def causal(self):
        return self.direction == 'uni'

    def extra_repr(self):
        return 'num_segments={}, shift_div={}, mode={}, direction={}'.format(
            self.num_segments, self.shift_div, self.mode, self.direction)

    def forward(self, x):
        if self.stream is not None and self.stream.active:
            return self.stream.run(self, x)
        _check_shape(x, self.num_segments)
        fold = x.size(1) // self.shift_div
        uni = self.causal
        if fold > 0 and _in_place_applicable(x):
            with shifted_in_place(x, self.num_segments, fold, uni):
                return self.net(x)
        if (self.mode == 'lean' and torch.is_grad_enabled() and _lean_applicable(self.net)):
            conv = self.net
            return ShiftConv2dFunction.apply(x, conv.weight, conv.bias, self.num_segments, fold,
                                             conv.stride, conv.padding, conv.dilation, conv.groups, uni)
        return self.net(ShiftFunction.apply(x, self.num_segments, fold, uni))

    # ------------------------------------------------------------ streaming (online shift only)
    state_names = ('previous',)

    def stream_step(self, x, state, frames_seen):
        """One frame ``x`` (N, C, H, W) -> (``net`` output, new state).

        State: ``previous``, the moving channels of the previous frame's input (N, C/shift_div, H, W),
        zeros before the first frame.  ``frames_seen`` is not needed (zeros already start the clip).
        """
        fold = x.size(1) // self.shift_div
        previous = state[0] if state is not None else torch.zeros_like(x[:, :fold])
        current = x[:, :fold].clone()
        if fold > 0 and _in_place_applicable(x):
            x[:, :fold] = previous
            try:
                out = self.net(x)
            finally:
                x[:, :fold] = current
        elif fold > 0 and torch.compiler.is_compiling():
            out = self.net(concat_channels((previous, x[:, fold:]), like=x))
        else:
            out = self.net(torch.cat((previous, x[:, fold:]), dim=1))
        return out, (current,)


class TemporalPool(nn.Module):
    """Max-pool time by 2 (kernel 3, stride 2, pad 1) before running ``net``: (N*T,...) → (N*T/2,...)."""

    def __init__(self, net, num_segments):
        super().__init__()
        self.net = net
        self.num_segments = num_segments

    @staticmethod
    def temporal_pool(x, num_segments):
        nt, c, h, w = x.size()
        x = x.view(nt // num_segments, num_segments, c, h, w).transpose(1, 2)  # N, C, T, H, W
        x = F.max_pool3d(x, kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
        return x.transpose(1, 2).contiguous().view(-1, c, h, w)

    def forward(self, x):
        return self.net(self.temporal_pool(x, self.num_segments))


def stage_segments(num_segments, temporal_pool):
    """Segments seen by ResNet stages layer1..layer4 (T/2 after layer1 with temporal pool)."""
    if temporal_pool:
        if num_segments < 2:
            raise LSNetError('--temporal_pool needs at least 2 segments (got {})'.format(num_segments))
        return [num_segments, num_segments // 2, num_segments // 2, num_segments // 2]
    return [num_segments] * 4


def _resnet_stages(net):
    return [getattr(net, 'layer{}'.format(i)) for i in range(1, 5)]


def is_resnet(net):
    import torchvision
    return isinstance(net, torchvision.models.ResNet)


def make_temporal_shift(net, num_segments, shift_div=8, place='blockres', temporal_pool=False, mode='fast',
                        direction='bi'):
    """Insert :class:`TemporalShift` into a torchvision ResNet or our MobileNetV2, in place.

    ResNet ``block`` wraps whole residual blocks, ``blockres`` wraps ``conv1`` of each residual
    branch (every second block when layer3 has >= 23 blocks, as the official ResNet-101 models).
    MobileNetV2 ``blockres`` wraps the first conv of each expanding block with a residual
    connection. ``direction``: ``'bi'`` (offline) or ``'uni'`` (online, causal). Returns the number
    of shifted modules.
    """
    from archs.mobilenet_v2 import MobileNetV2, InvertedResidual
    if place not in SHIFT_PLACES:
        raise LSNetError('unknown --shift_place {!r} (choose from {})'.format(place, ', '.join(SHIFT_PLACES)))
    count = 0
    if is_resnet(net):
        segments = stage_segments(num_segments, temporal_pool)
        n_round = 2 if len(net.layer3) >= 23 else 1
        for stage_idx, stage in enumerate(_resnet_stages(net)):
            for i, block in enumerate(stage):
                if place == 'block':
                    stage[i] = TemporalShift(block, segments[stage_idx], shift_div, mode, direction)
                    count += 1
                elif i % n_round == 0:
                    block.conv1 = TemporalShift(block.conv1, segments[stage_idx], shift_div, mode, direction)
                    count += 1
    elif isinstance(net, MobileNetV2):
        if place != 'blockres':
            raise LSNetError('mobilenetv2 supports only --shift_place blockres (got {!r})'.format(place))
        if temporal_pool:
            raise LSNetError('--temporal_pool is only supported for ResNet backbones')
        for m in net.modules():
            if isinstance(m, InvertedResidual) and len(m.conv) == 8 and m.use_res_connect:
                m.conv[0] = TemporalShift(m.conv[0], num_segments, shift_div, mode, direction)
                count += 1
    else:
        raise LSNetError('temporal shift is not supported for backbone {}'.format(type(net).__name__))
    log.info('inserted %d temporal shifts (place=%s, shift_div=%d, mode=%s, direction=%s)',
             count, place, shift_div, mode, direction)
    return count


def make_temporal_pool(net, num_segments):
    """Wrap ``layer2`` of a ResNet with :class:`TemporalPool` (keys become ``layer2.net.*``)."""
    if not is_resnet(net):
        raise LSNetError('--temporal_pool is only supported for ResNet backbones')
    net.layer2 = TemporalPool(net.layer2, num_segments)
