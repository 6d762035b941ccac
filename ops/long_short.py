"""The Long-Short temporal Module (LSM), LSNet's addition to TSM.

Shapes: a batch is ``(N·T, C, H, W)``, clip-major (``T`` segments per clip), as everywhere in the
model.  Inside every residual block that TSM shifts, the feature map ``h`` (after conv1-BN-ReLU
for ResNets, the residual branch's input for MobileNetV2) is replaced by::

    h' = h + S(h) + L(h)

- ``S`` (:class:`ShortTermBranch`), short-term motion: signed differences of adjacent frames of a
  reduced ``Z = BN(1x1 conv)(h)`` (reversing a clip swaps and negates them, so the direction of
  motion survives), plus pooled context, then a zero-initialised 1x1 conv ``E``:
  ``S(h) = h * tanh(E(M̄))``.
- ``L`` (:class:`LongTermBranch`), long-term aggregation: ``groups`` channel groups through a
  cascade of depthwise temporal convs (kernel 3, dilations 1, 2, 4, 8 capped at ``T // 2``), each
  group receiving the previous group's output, so the last one sees ±15 frames; scaled by a clip
  gate ``γ`` (``W2`` zero-initialised, so ``γ = 1``) and a per-channel ``α`` (zero at init).

Why: TSM mixes only neighbouring frames and reaches further only through depth; ``S`` gives each
block explicit, signed motion and ``L`` a long temporal reach in one block, for +1.7 % FLOPs.

At initialisation ``S = L = 0`` exactly, so an LSNet equals the TSM it was built from and TSM or
ImageNet checkpoints fine-tune into it.  :func:`make_long_short` puts a wrapper in the place of
every shifted block (:class:`LongShortBasicBlock`, :class:`LongShortBottleneck`,
:class:`LongShortInvertedResidual`: composition, no class is swapped or made at run time) that
adopts the block's layers under their own names and adds a ``LongShortModule`` as ``lsm``, so only
keys containing ``.lsm.`` are new.  Every parameter lives in an ordinary ``nn.Conv2d``/
``nn.BatchNorm2d``/``nn.Linear``, so the optimizer policies treat them as weights/biases/BN; partial
BN skips the BatchNorm layers inside modules named ``lsm`` (no pretrained statistics to protect).

Learning the long-term branch.  ``α`` and the tap offsets are stored divided by ``ALPHA_GAIN`` /
``TAP_GAIN`` (3): the forward pass is unchanged, but SGD moves them ``gain²`` times faster and
weight decay pulls the kernels towards the identity.  Stored plainly they barely moved in training.

Tap initialisation (``tap_init``, ``--lsm_tap_init``).  ``'shift'`` (the default) starts half of
each group's channels at the tap ``t - d`` and half at ``t + d``, so the cascade has its full reach
from the first step; ``'identity'`` (the original spec) adds no reach, which leaves ``α`` at a
saddle on tasks that only a long reach solves.  Either way ``α = 0`` keeps the network equal to TSM.

Causal LSNet (``causal=True``, ``--shift_direction uni``): every part that reads a later frame
has a causal counterpart.  ``S`` uses the backward difference ``D-`` only (``C_r`` channels instead
of ``2·C_r``); the long branch's taps read ``t - d`` and ``t`` (their ``t + d`` weight is unused;
``'shift'`` taps start with half of each group's channels at ``t - d``, half at ``t``; in the first
``d`` frames, where ``t - d`` is before the video, the past tap reads frame ``t``); the clip
gate pools over the frames seen so far (a cumulative average) instead of the whole clip.  Then
frame ``t`` depends only on frames ``<= t`` and :meth:`LongShortModule.stream_step` runs the
module one frame at a time (:mod:`ops.streaming`), keeping the previous smoothed ``Z``, the last
``d`` inputs of each tap and the running sum of the gate's pooled features.

Design details and the experiments behind these choices: ``docs/lsnet.md``.
"""
import contextlib
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck

from ops.basic_ops import concat_channels, is_channels_last, memory_format_of, running_mean
from ops.errors import LSNetError

log = logging.getLogger(__name__)

BRANCHES = ('short', 'long')
# Backbone stages, numbered as ResNet's layer1..layer4 (output stride 4, 8, 16, 32).
STAGES = (1, 2, 3, 4)
# Gains of the long branch's reparametrised α and tap offsets (see LongTermBranch).
ALPHA_GAIN = 3.0
TAP_GAIN = 3.0
# Initial temporal kernels of the long branch: 'shift' (the default): half of each group's channels
# take frame t - d, the other half frame t + d (TSM's bidirectional shift at the group's dilation),
# so the cascade starts with a reach of +-(1 + 2 + ... + d) frames; or the spec's identity tap, which
# leaves the branch at a saddle on long-range tasks (module docstring, "Tap initialisation").
TAP_INITS = ('shift', 'identity')
DEFAULT_TAP_INIT = 'shift'


def reduced_channels(channels, reduction):
    """Width ``C_r = max(8, C // reduction)`` of the short branch and the clip gate."""
    return max(8, channels // reduction)


def _clip_view(h, num_segments):
    """``h`` (N·T, C, H, W) viewed per clip, without a copy, and the view's channel dimension.

    channels_last ``h`` (the default layout) -> (N, T, H, W, C), channel dim -1; otherwise
    (N, T, C, H, W), channel dim 2.  Working in the layout the memory already has keeps every
    element-wise op of the module on dense, same-layout tensors (mixed layouts cost several times
    more on CPU) and its output in ``h``'s layout.
    """
    n = _split_clips(h, num_segments)
    nt, c, height, width = h.shape
    if is_channels_last(h):
        return h.permute(0, 2, 3, 1).view(n, num_segments, height, width, c), -1
    return h.view(n, num_segments, c, height, width), 2


def _clip_unview(x, cdim):
    """Inverse of :func:`_clip_view` for a dense ``x``: (N·T, C, H, W) in the matching layout."""
    if cdim == -1:
        n, t, height, width, c = x.shape
        return x.view(n * t, height, width, c).permute(0, 3, 1, 2)
    n, t, c, height, width = x.shape
    return x.view(n * t, c, height, width)


def _per_channel(w, cdim):
    """Broadcast ``w`` (..., C) over a clip view with channel dim ``cdim``: (..., 1, 1, C) or (..., C, 1, 1)."""
    return w[..., None, None, :] if cdim == -1 else w[..., None, None]


def _dense_batch_stride(x):
    """``x`` (1, C, H, W) viewed with the batch stride of a dense tensor.  The stride of a size-1
    dimension is arbitrary and element-wise ops may leave any value there, but a convolution reads
    an odd one as "not channels_last", takes a slow path and writes its output channels-first."""
    if x.shape[0] == 1 and x.stride(0) != x.numel():
        return x.as_strided(x.shape, (x.numel(),) + x.stride()[1:])
    return x


def _split_clips(x, num_segments):
    """(N·T, ...) -> N, checking the batch holds whole clips."""
    nt = x.shape[0]
    if nt % num_segments:
        raise LSNetError(f'LongShortModule: batch of {nt} frames is not a whole number of clips '
                         f'of {num_segments} segments (check --num_segments / --test_segments)')
    return nt // num_segments


class ShortTermBranch(nn.Module):
    """S(h) = h * tanh(E(M̄)), from signed adjacent-frame differences.  (N·T, C, H, W) -> same.

    ``causal``: the backward difference ``D-`` only, so ``M`` has ``C_r`` channels, not ``2·C_r``.
    """

    def __init__(self, channels, num_segments, reduction=16, causal=False):
        super().__init__()
        self.num_segments = num_segments
        self.causal = causal
        c_r = reduced_channels(channels, reduction)
        c_m = c_r if causal else 2 * c_r
        self.reduce = nn.Conv2d(channels, c_r, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_r)
        self.smooth = nn.Conv2d(c_r, c_r, 3, padding=1, groups=c_r, bias=False)
        self.context = nn.Conv2d(c_m, c_m, 3, padding=1, groups=c_m, bias=False)
        self.expand = nn.Conv2d(c_m, channels, 1, bias=False)
        with torch.no_grad():
            self.smooth.weight.zero_()
            self.smooth.weight[:, :, 1, 1] = 1.0
            self.expand.weight.zero_()

    def differences(self, h):
        """M = [D+, D-] (N·T, 2·C_r, H, W), zero at the clip ends; causal: M = D- (N·T, C_r, H, W)."""
        t = self.num_segments
        z = self.bn(self.reduce(h))
        zs, _ = _clip_view(self.smooth(z), t)
        z, cdim = _clip_view(z, t)
        if zs.stride() != z.stride():  # the depthwise conv chose another layout: follow z's
            zs = zs.contiguous() if cdim == 2 else _clip_view(
                _clip_unview(zs.contiguous(), 2).contiguous(memory_format=torch.channels_last), t)[0]
        edge = torch.zeros_like(z[:, :1])
        d_prev = torch.cat((edge, zs[:, :-1] - z[:, 1:]), dim=1)
        if self.causal:
            return _clip_unview(d_prev, cdim)
        d_next = torch.cat((zs[:, 1:] - z[:, :-1], edge), dim=1)
        return _clip_unview(torch.cat((d_next, d_prev), dim=cdim), cdim)

    def folded_reduce(self):
        """(weight, bias) of the 1x1 reduction with the eval-mode BN folded in, so ``Z`` is one conv."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.reduce.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    def difference_step(self, h, previous, frames_seen, reduce=None):
        """Causal ``D-`` of one frame ``h`` (N, C, H, W) and the new state.

        ``previous``: the smoothed ``Ẑ`` of the previous frame (N, C_r, H, W), or None at the start;
        ``frames_seen``: frames before this one (the difference is zero at the first frame), an int
        when the streamer knows it (eager), else a (1,) tensor (a traced step);
        ``reduce``: :meth:`folded_reduce` when the caller has it (eval mode), else conv then BN.
        """
        z = self.bn(self.reduce(h)) if reduce is None else F.conv2d(h, *reduce)
        zs = self.smooth(z)
        if previous is None:
            return torch.zeros_like(z), zs
        if isinstance(frames_seen, int):
            return (previous - z if frames_seen > 0 else torch.zeros_like(z)), zs
        # a zero-filled state (an exported step's first frame) must give a zero difference too
        return (previous - z).mul_((frames_seen > 0).to(z.dtype)), zs

    def add_context(self, m):
        """M̄ = M + up(dw3x3(avgpool2(M))): differences plus pooled context, same shape as ``m``."""
        # count_include_pad=False: the same numbers in eager mode (an overhanging ceil_mode window is
        # divided by what it covers either way), and Inductor's backward then agrees (pytorch#198119)
        ctx = self.context(F.avg_pool2d(m, 2, ceil_mode=True, count_include_pad=False))
        n, c, height, width = m.shape
        if height % 2 or width % 2:
            return m + F.interpolate(ctx, size=(height, width), mode='nearest')
        # even sizes: nearest 2x upsampling is a broadcast over 2x2 cells (no upsampled map made)
        cells = m.view(n, c, height // 2, 2, width // 2, 2) + ctx[:, :, :, None, :, None]
        return _dense_batch_stride(cells.reshape(n, c, height, width))

    def motion(self, h):
        """M̄ (N·T, 2·C_r or C_r, H, W)."""
        return self.add_context(self.differences(h))

    def expand_scaled(self, m, scale=1.0):
        """scale·E(M̄) (·, C, H, W); the scale multiplies E's small weight, not the map."""
        return self.expand(m) if scale == 1.0 else F.conv2d(m, self.expand.weight * scale)

    def excitation(self, h, scale=1.0):
        """scale·E (N·T, C, H, W)."""
        return self.expand_scaled(self.motion(h), scale)

    def forward(self, h):
        """S(h) on its own (LongShortModule fuses it as h + S(h) = 2·h·σ(2E))."""
        return h * torch.tanh(self.excitation(h))


class LongTermBranch(nn.Module):
    """L(h) = α * γ * [u1 … ug], cascaded dilated depthwise temporal convs.  (N·T, C, H, W) -> same.

    Parametrisation (why: see the module docstring, "Learning the long-term branch"): the stored
    parameters are ``scale.weight = α / ALPHA_GAIN`` and ``taps[g].weight = (K_g - identity) /
    TAP_GAIN`` with ``K_g`` the (3,) temporal kernel of group ``g``.  ``α`` starts at zero; the taps
    start as bidirectional shifts (``tap_init='shift'``, the default) or as the identity tap (zero
    offsets, the original spec).  :meth:`alpha` and :meth:`kernel` give the spec's quantities.
    """

    def __init__(self, channels, num_segments, reduction=16, groups=4, alpha_gain=None, tap_gain=None,
                 tap_init=DEFAULT_TAP_INIT, causal=False):
        super().__init__()
        if tap_init not in TAP_INITS:
            raise LSNetError(f'--lsm_tap_init {tap_init!r}: choose from {", ".join(TAP_INITS)}')
        if groups < 1 or channels % groups:
            raise LSNetError(f'--lsm_groups {groups} must divide the {channels} channels of every '
                             f'block it is applied to')
        self.num_segments = num_segments
        self.groups = groups
        self.causal = causal
        self.alpha_gain = float(ALPHA_GAIN if alpha_gain is None else alpha_gain)
        self.tap_gain = float(TAP_GAIN if tap_gain is None else tap_gain)
        width = channels // groups
        cap = max(1, num_segments // 2)
        self.dilations = tuple(min(2 ** g, cap) for g in range(groups))
        # Depthwise (3, 1) kernels over (T, H·W): a 4-D weight, so model.to(channels_last) works.
        self.taps = nn.ModuleList(
            nn.Conv2d(width, width, (3, 1), padding=(d, 0), dilation=(d, 1), groups=width, bias=False)
            for d in self.dilations)
        hidden = reduced_channels(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.scale = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
        with torch.no_grad():
            for conv in self.taps:
                conv.weight.zero_()
                if tap_init == 'shift':  # stored offsets from the identity: past half, future half
                    half = width // 2  # (causal: the second half stays at the identity tap, t)
                    conv.weight[:half, 0, :, 0] = torch.tensor([1.0, -1.0, 0.0]) / self.tap_gain
                    if not causal:
                        conv.weight[half:, 0, :, 0] = torch.tensor([0.0, -1.0, 1.0]) / self.tap_gain
            self.fc2.weight.zero_()
            self.fc2.bias.zero_()
            self.scale.weight.zero_()

    def alpha(self):
        """The per-channel scale α, (C,)."""
        return self.scale.weight.view(-1) * self.alpha_gain

    def kernel(self, conv):
        """Temporal kernel of one of ``self.taps``: identity + TAP_GAIN · offset, (Cg, 3) for taps t-d, t, t+d."""
        identity = torch.tensor([0.0, 1.0, 0.0], dtype=conv.weight.dtype, device=conv.weight.device)
        return torch.add(identity, conv.weight.view(-1, 3), alpha=self.tap_gain)

    def tap_rows(self, conv):
        """:meth:`kernel` of ``conv`` as a contiguous (3, Cg): rows for the taps t-d, t, t+d.

        A map times a contiguous row is a vectorised pass, in eager and in Inductor's code; times a
        column of the (Cg, 3) kernel (stride 3) it is a gather per element, which made the taps
        several times slower.
        """
        return self.kernel(conv).t().contiguous()

    def _tconv(self, conv, x, cdim=2):
        """Depthwise temporal conv of a clip view ``x`` (time dim 1, channels ``cdim``, see
        :func:`_clip_view`) with :meth:`kernel` of ``conv``, zero padded at the clip's ends.

        Same result as a (3, 1) conv with that kernel on the (N, Cg, T, H·W) layout, without the two
        transposed copies.  Causal: the taps ``t - d`` and ``t`` only, and where ``t - d`` is before
        the clip the past tap reads frame ``t`` itself instead of zero padding (the present stands in
        for the unseen past, so an online model's first frames see features, not zeros).
        """
        d = conv.dilation[0]
        w = _per_channel(self.tap_rows(conv), cdim)  # (3, 1, 1, Cg) or (3, Cg, 1, 1)
        out = x * w[1]  # a fresh tensor, so adding the side taps in place is safe
        if d < x.shape[1]:
            out[:, d:].addcmul_(x[:, :-d], w[0])
            if not self.causal:
                out[:, :-d].addcmul_(x[:, d:], w[2])
        if self.causal:
            head = min(d, x.shape[1])
            out[:, :head].addcmul_(x[:, :head], w[0])
        return out

    def group_slices(self):
        """Channel slice of each group."""
        width = self.taps[0].in_channels
        return [slice(g * width, (g + 1) * width) for g in range(self.groups)]

    def _cascade(self, x, cdim):
        """u1 … ug of a clip view ``x`` (see :func:`_clip_view`), in that view's layout."""
        width = self.taps[0].in_channels
        prev = None
        for g, conv in enumerate(self.taps):
            xg = x.narrow(cdim, g * width, width)
            prev = self._tconv(conv, xg if prev is None else xg + prev, cdim)
            yield prev

    def scaled_aggregate(self, h):
        """L(h) = α·γ·[u1 … ug] as (N·T, C, H, W), in ``h``'s memory format."""
        x, cdim = _clip_view(h, self.num_segments)
        u = torch.cat(list(self._cascade(x, cdim)), dim=cdim)
        return _clip_unview(u * _per_channel(self.gate(h), cdim), cdim)

    def step_kernels(self):
        """Per group, the causal taps' weights as (past frame ``t - d``, current frame ``t``), each
        (1, C/groups, 1, 1): what :meth:`cascade_step` multiplies by, from the weights alone."""
        kernels = []
        for conv in self.taps:
            k = self.tap_rows(conv)
            kernels.append((k[0].view(1, -1, 1, 1), k[1].view(1, -1, 1, 1)))
        return kernels

    def cascade_step(self, h, pasts, frames_seen, kernels, out=None):
        """One frame of the causal cascade: (new pasts, [u1 … ug]), the u written into the channel
        groups of ``out`` (N, C, H, W) when given, else fresh tensors (compiled code: see
        :func:`ops.basic_ops.concat_channels`).

        ``pasts``: per group, the last ``d`` inputs of its tap, oldest first, as a tuple of ``d``
        tensors (N, C/groups, H, W), or None at a video's start (zeros: never read, see below);
        ``frames_seen``: frames before this one (an int or a (1,) tensor, as in
        :meth:`ShortTermBranch.difference_step`); ``kernels``: :meth:`step_kernels`.  While
        ``frames_seen < d`` the past tap reads the present frame, as :meth:`_tconv` does before the
        clip.  Keeping the past as separate frames makes the new state a re-arranged tuple (the
        frame ``t - d`` drops out, ``t`` comes in) instead of a copied buffer.
        """
        new_pasts, us, prev = [], [], None
        for (w_past, w_now), sl, d in zip(kernels, self.group_slices(), self.dilations):
            v = h[:, sl] if prev is None else h[:, sl] + prev
            if prev is None and out is None:  # compiled: group 1's state leaves the graph dense, not as a
                v = v.contiguous(memory_format=memory_format_of(h))  # view of h the caller would copy
            if out is None:
                prev = v * w_now
            elif torch.is_grad_enabled():  # out= records no graph: in-place ops on the view then
                prev = out[:, sl].copy_(v).mul_(w_now)
            else:
                prev = torch.mul(v, w_now, out=out[:, sl])
            us.append(prev)
            if pasts is None:
                prev.addcmul_(v, w_past)
                new_pasts.append((torch.zeros_like(v),) * (d - 1) + (v,))
            else:
                past = pasts[len(new_pasts)]
                if isinstance(frames_seen, int):  # eager: no selection pass over the map
                    prev.addcmul_(past[0] if frames_seen >= d else v, w_past)
                else:
                    prev.addcmul_(torch.where(frames_seen >= d, past[0], v), w_past)
                new_pasts.append(past[1:] + (v,))
        return new_pasts, us

    def aggregate(self, h):
        """[u1 … ug] as (N, T, C, H, W)."""
        x, cdim = _clip_view(h, self.num_segments)
        u = torch.cat(list(self._cascade(x, cdim)), dim=cdim)
        return u if cdim == 2 else u.permute(0, 1, 4, 2, 3)

    def _squeeze_excite(self, pooled):
        return 2.0 * torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))

    def clip_gate(self, h):
        """γ = 2σ(W2 ReLU(W1 GAP_{T,H,W}(h))), (N, 1, C); causal: GAP over frames <= t, (N, T, C)."""
        n = _split_clips(h, self.num_segments)
        if not self.causal:
            pooled = h.view(n, -1, h.shape[1], h.shape[2] * h.shape[3]).mean(dim=(1, 3))
            return self._squeeze_excite(pooled)[:, None]
        pooled = h.mean(dim=(2, 3)).view(n, -1, h.shape[1])  # per frame, reduced as gate_step does
        return self._squeeze_excite(running_mean(pooled, dim=1))

    def gate(self, h):
        """α * γ, (N, 1, C) or causal (N, T, C): the clip gate times the per-channel scale."""
        return self.clip_gate(h) * self.alpha().view(1, 1, -1)

    def gate_step(self, h, pooled_sum, frames_seen, alpha):
        """Causal α·γ of one frame ``h`` (N, C, H, W): (gate (N, C), new running sum (N, C)).

        ``pooled_sum``: sum of the spatially pooled frames seen so far (None at the start);
        ``alpha``: :meth:`alpha` as (1, C).
        """
        pooled = h.mean(dim=(2, 3))
        total = pooled if pooled_sum is None else pooled_sum + pooled
        return self._squeeze_excite(total / (frames_seen + 1)) * alpha, total

    def forward(self, h):
        return self.scaled_aggregate(h)


class LongShortModule(nn.Module):
    """h -> h + S(h) + L(h) on (N·T, C, H, W); equals the identity at initialisation.

    ``branches`` picks which of ``'short'``/``'long'`` are built (for ablations).
    """

    stream = None  # set by ops.streaming.Streamer while it runs the model frame by frame

    def __init__(self, channels, num_segments, reduction=16, groups=4, branches=BRANCHES,
                 tap_init=DEFAULT_TAP_INIT, causal=False):
        super().__init__()
        branches = normalize_branches(branches)
        if reduction < 1:
            raise LSNetError(f'--lsm_reduction must be >= 1, got {reduction}')
        self.channels = channels
        self.num_segments = num_segments
        self.branches = branches
        self.causal = causal
        self.short = (ShortTermBranch(channels, num_segments, reduction, causal=causal)
                      if 'short' in branches else None)
        self.long = (LongTermBranch(channels, num_segments, reduction, groups, tap_init=tap_init, causal=causal)
                     if 'long' in branches else None)

    def forward(self, h):
        if self.stream is not None and self.stream.active:
            return self.stream.run(self, h)
        long_term = self.long.scaled_aggregate(h) if self.long is not None else None
        if self.short is None:
            return h.clone() if long_term is None else h + long_term
        # h + h·tanh(E) == 2·h·σ(2E): one sigmoid instead of tanh + add (tanh is ~6x slower on CPU),
        # exactly h when E = 0; with L, one pass: L + 2·h·σ(2E).
        excitation = torch.sigmoid(self.short.excitation(h, 2.0))
        if long_term is None:
            return torch.mul(h, excitation).mul_(2.0)
        return torch.addcmul(long_term, h, excitation, value=2.0)

    def extra_repr(self):
        return (f'channels={self.channels}, num_segments={self.num_segments}, branches={self.branches}'
                + (', causal' if self.causal else ''))

    # ------------------------------------------------------------ streaming (causal modules only)
    @property
    def state_names(self):
        """Names of the tensors :meth:`stream_step` keeps between frames, in order."""
        names = ['short.previous'] if self.short is not None else []
        if self.long is not None:
            names += [f'long.tap{g}.t-{k}' for g, d in enumerate(self.long.dilations) for k in range(d, 0, -1)]
            names += ['long.pooled_sum']
        return tuple(names)

    def step_constants(self):
        """What :meth:`stream_step` derives from the weights alone: for the short branch the reduction
        with its BN folded in (eval mode) and the expansion weight times 2, for the long one α and the
        tap kernels.  :class:`ops.streaming.Streamer` computes it once per video."""
        short = long_ = None
        if self.short is not None:
            reduce = None if self.short.bn.training else self.short.folded_reduce()
            short = (reduce, self.short.expand.weight * 2.0)
        if self.long is not None:
            long_ = (self.long.alpha().view(1, -1), self.long.step_kernels())
        return short, long_

    def stream_step(self, h, state, frames_seen, constants):
        """One frame ``h`` (N, C, H, W) of a causal module -> (h', new state); see :attr:`state_names`.

        Same numbers as :meth:`forward` on the whole clip, frame for frame.  ``constants``:
        :meth:`step_constants`.
        """
        (reduce, expand), (alpha, kernels) = [c if c is not None else (None, None) for c in constants]
        state = list(state) if state is not None else None
        new, excitation = [], None
        if self.short is not None:
            diff, smoothed = self.short.difference_step(h, state.pop(0) if state else None, frames_seen, reduce)
            excitation = F.conv2d(self.short.add_context(diff), expand).sigmoid_()
            new.append(smoothed)
        if self.long is None:  # the same formula as forward()
            return torch.mul(h, excitation).mul_(2.0), tuple(new)
        pasts = None
        if state:
            pasts = []
            for d in self.long.dilations:
                pasts.append(tuple(state[:d]))
                del state[:d]
        scale, total = self.long.gate_step(h, state.pop(0) if state else None, frames_seen, alpha)
        tracing = torch.compiler.is_compiling()
        out = None if tracing else torch.empty_like(h)
        new_pasts, us = self.long.cascade_step(h, pasts, frames_seen, kernels, out)
        for past in new_pasts:
            new += past
        new.append(total)
        # forward()'s L + 2·h·σ(2E); eager: in place in the buffer that holds L, the same numbers
        scale = scale[:, :, None, None]
        out = concat_channels(us, like=h) * scale if tracing else out.mul_(scale)
        if excitation is None:
            return out.add_(h), tuple(new)
        return out.addcmul_(h, excitation, value=2.0), tuple(new)


def normalize_branches(branches):
    """'short,long' / ['long'] / ('short', 'long') -> ordered tuple of known branch names."""
    if isinstance(branches, str):
        branches = [branches]
    names = [b.strip() for item in branches for b in item.split(',') if b.strip()]
    unknown = [b for b in names if b not in BRANCHES]
    if unknown or not names:
        raise LSNetError(f'--lsm_branches {",".join(names) or "(empty)"}: choose one or more of '
                         f'{",".join(BRANCHES)}')
    return tuple(b for b in BRANCHES if b in names)


def normalize_stages(stages, flag='--lsm_stages'):
    """[3, 4] / '3,4' / ['3', '4'] -> sorted tuple of stage numbers in 1..4 (may be empty)."""
    if isinstance(stages, str):
        stages = [stages]
    stages = [part for item in stages for part in str(item).replace(',', ' ').split()]
    try:
        out = sorted({int(v) for v in stages})
    except (TypeError, ValueError):
        raise LSNetError(f'{flag} {stages!r}: give stage numbers from 1 to 4') from None
    bad = [v for v in out if v not in STAGES]
    if bad:
        raise LSNetError(f'{flag} {" ".join(map(str, bad))}: stages are numbered 1 to 4 '
                         f'(ResNet layer1..layer4, or the MobileNetV2 blocks at output stride 4..32)')
    return tuple(out)


def _block_stages(base_model):
    """{id(block): stage} for the residual blocks of a ResNet (layerK) or MobileNetV2 (by stride)."""
    stages = {}
    for k in STAGES:
        layer = getattr(base_model, f'layer{k}', None)
        if isinstance(layer, nn.Module):
            for m in layer.modules():
                stages.setdefault(id(m), k)
    features = getattr(base_model, 'features', None)
    if isinstance(features, nn.Sequential):
        stride = 1
        for block in features:
            s = getattr(block, 'stride', None)
            if s is None:  # the stem (conv-BN-ReLU with stride 2) or the last 1x1 conv
                conv = next((m for m in block.modules() if isinstance(m, nn.Conv2d)), None)
                s = conv.stride[0] if conv is not None else 1
            stride *= s
            stages[id(block)] = max(1, min(4, stride.bit_length() - 2))  # 4 -> 1, ..., 32 -> 4
    return stages


def _is_shift(module):
    """True for a TemporalShift wrapper (ops.temporal_shift), recognised by its ``.net``."""
    try:
        from ops.temporal_shift import TemporalShift
        if isinstance(module, TemporalShift):
            return True
    except ImportError:
        pass
    return isinstance(getattr(module, 'net', None), nn.Module)


def _segments_of(shift, default):
    """Segments the shift works on (T/2 after a temporal pool), else the model's."""
    return int(getattr(shift, 'num_segments', default))


def _adopt(wrapper, block, lsm, attrs):
    """Register ``block``'s children on ``wrapper`` under the same names and in the same order (so the
    state-dict keys do not change), copy the plain attributes ``attrs``, then add ``lsm`` last."""
    for name, child in block.named_children():
        setattr(wrapper, name, child)
    for name in attrs:
        setattr(wrapper, name, getattr(block, name))
    wrapper.lsm = lsm
    wrapper.training = block.training  # the children keep their own modes


class LongShortBasicBlock(nn.Module):
    """A torchvision ``BasicBlock`` with ``lsm`` after conv1-BN-ReLU.  (N·T, C, H, W) -> (N·T, C', H', W').

    Holds the block's own ``conv1``, ``bn1``, ``relu``, ``conv2``, ``bn2``, ``downsample`` (keys as
    the block's) and the :class:`LongShortModule` ``lsm``.
    """

    def __init__(self, block, lsm):
        super().__init__()
        _adopt(self, block, lsm, ('downsample', 'stride'))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.lsm(self.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision's block (a fresh map per block costs page faults)
        return self.relu(out)


class LongShortBottleneck(nn.Module):
    """A torchvision ``Bottleneck`` with ``lsm`` after conv1-BN-ReLU.  (N·T, C, H, W) -> (N·T, C', H', W').

    Holds the block's own ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``conv3``, ``bn3``, ``relu`` (shared by
    the three activations), ``downsample`` and the :class:`LongShortModule` ``lsm``.
    """

    def __init__(self, block, lsm):
        super().__init__()
        _adopt(self, block, lsm, ('downsample', 'stride'))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.lsm(self.relu(self.bn1(self.conv1(x))))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class LongShortInvertedResidual(nn.Module):
    """A MobileNetV2 inverted residual (stride 1, residual connection) whose residual branch reads
    ``lsm(x)``; the identity path keeps ``x``.  (N·T, C, H, W) -> same.

    Holds the block's own ``conv`` (keys ``conv.*``) and the :class:`LongShortModule` ``lsm``.
    """

    def __init__(self, block, lsm):
        super().__init__()
        _adopt(self, block, lsm, ('stride', 'use_res_connect'))

    def forward(self, x):
        return x + self.conv(self.lsm(x))


def _conv_in_channels(module):
    """Input channels of the first Conv2d inside ``module`` (a shift wrapper, a conv, a Sequential)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise LSNetError(f'--lsm: no Conv2d found in shifted layer {type(module).__name__}')


def _shifted_block(module, parents, num_segments):
    """(segments, channels, wrapper class) for a block TSM shifted, else None."""
    if type(module) in (BasicBlock, Bottleneck):
        parent = parents.get(id(module), (None, None))[0]
        if _is_shift(module.conv1):
            segments = _segments_of(module.conv1, num_segments)
        elif parent is not None and _is_shift(parent) and parent.net is module:
            segments = _segments_of(parent, num_segments)  # shift_place 'block'
        else:
            return None
        wrapper = LongShortBasicBlock if type(module) is BasicBlock else LongShortBottleneck
        return segments, module.bn1.num_features, wrapper
    if (isinstance(getattr(module, 'conv', None), nn.Sequential) and len(module.conv)
            and _is_shift(module.conv[0]) and getattr(module, 'use_res_connect', False)):
        return (_segments_of(module.conv[0], num_segments), _conv_in_channels(module.conv[0]),
                LongShortInvertedResidual)
    return None


def make_long_short(base_model, arch, num_segments, reduction=16, groups=4, branches=BRANCHES,
                    short_stages=STAGES, long_stages=STAGES, tap_init=DEFAULT_TAP_INIT, causal=False):
    """Replace the blocks TSM shifted by LSM wrappers (``lsm`` added); returns the count.

    ResNets (torchvision BasicBlock/Bottleneck, shift place ``blockres`` or ``block``, also inside
    non-local wrappers): after conv1-BN-ReLU, channels = conv1's output.  MobileNetV2 (blocks with
    ``.conv`` whose first layer is shifted and a residual connection): on the residual branch input.
    A block of stage ``k`` (:data:`STAGES`) gets the short branch when ``k`` is in ``short_stages``
    and the long one when it is in ``long_stages``; a block with neither gets no module.
    ``tap_init``: the long branch's initial temporal kernels (:data:`TAP_INITS`); ``causal``: the
    online module (module docstring), for models with the online shift.
    Each wrapper takes the block's place in its parent (a ``layerK``/``features`` Sequential, or the
    ``.net`` of a shift wrapping the whole block) and adopts its layers, so existing names stay.
    """
    branches = normalize_branches(branches)
    wanted = {'short': normalize_stages(short_stages, '--lsm_short_stages'),
              'long': normalize_stages(long_stages, '--lsm_long_stages')}
    arch_l = arch.lower()
    if not (arch_l.startswith('resnet') or 'mobilenet' in arch_l):
        raise LSNetError(f'--lsm supports resnet* and mobilenetv2 backbones, not --arch {arch}')
    parents = {}  # id(child) -> (parent, attribute name): a Sequential, a shift's .net, ...
    for module in base_model.modules():
        for name, child in module.named_children():
            parents[id(child)] = (module, name)

    block_stage = _block_stages(base_model)
    count = shifted = 0
    for module in list(base_model.modules()):
        found = _shifted_block(module, parents, num_segments)
        if found is None:
            continue
        shifted += 1
        here = tuple(b for b in branches if block_stage.get(id(module)) in wanted[b])
        if not here:
            continue
        segments, channels, wrapper = found
        lsm = LongShortModule(channels, segments, reduction, groups, here, tap_init, causal)
        lsm.stage = block_stage.get(id(module))  # for knock-out diagnostics; not saved
        parent, name = parents[id(module)]
        setattr(parent, name, wrapper(module, lsm))
        count += 1
    if shifted == 0:
        raise LSNetError(f'--lsm needs --shift: no temporally shifted block found in --arch {arch}')
    if count == 0:
        raise LSNetError(f'--lsm: --lsm_short_stages {" ".join(map(str, wanted["short"])) or "(none)"} '
                         f'and --lsm_long_stages {" ".join(map(str, wanted["long"])) or "(none)"} leave '
                         f'none of the {shifted} shifted blocks of --arch {arch} with a branch of '
                         f'--lsm_branches {",".join(branches)}')
    log.info('LSM (%s) added to %d of %d shifted blocks of %s (short in stages %s, long in stages %s)',
             ','.join(branches), count, shifted, arch, wanted['short'], wanted['long'])
    return count


# ------------------------------------------------------------------ diagnostics


@contextlib.contextmanager
def branches_off(model, off):
    """Within the block, the LSM branches named in ``off`` (a set of ``(stage, branch)`` pairs,
    branch ``'short'`` or ``'long'``) are switched off in every module of ``model``; a module left with
    neither branch computes ``h' = h``, as a plain TSM block.  The branches are restored on exit."""
    saved = [(m, m.short, m.long) for m in model.modules() if isinstance(m, LongShortModule)]
    try:
        for m, _, _ in saved:
            stage = getattr(m, 'stage', None)
            if (stage, 'short') in off:
                m.short = None
            if (stage, 'long') in off:
                m.long = None
        yield
    finally:
        for m, short, long_ in saved:
            m.short, m.long = short, long_


def present_branches(model):
    """Sorted ``(stage, branch)`` pairs of the LSM branches in ``model`` (short ones first)."""
    return sorted({(m.stage, b) for m in model.modules() if isinstance(m, LongShortModule)
                   for b in m.branches if getattr(m, 'stage', None) is not None},
                  key=lambda sb: (BRANCHES.index(sb[1]), sb[0]))


def knockout_variants(model):
    """[(label, off)] for :func:`branches_off`: nothing off, each branch of each stage that has
    one, then each branch in every stage."""
    present = present_branches(model)
    variants = [('none', frozenset())]
    variants += [(f'{b} in stage {s}', frozenset({(s, b)})) for s, b in present]
    for b in BRANCHES:
        every = frozenset(sb for sb in present if sb[1] == b)
        if len(every) > 1:
            variants.append((f'{b} in every stage', every))
    return variants


def identity_aggregate(lb, h):
    """[u1 … ug] with every temporal kernel at the identity tap: (N·T, C, H, W) -> (N, T, C, H, W).

    The part of the long branch that is only a channel mix (h1, h1+h2, …); ``L`` minus this, gated,
    is what the learned taps add along time.
    """
    n = _split_clips(h, lb.num_segments)
    x = h.view(n, lb.num_segments, *h.shape[1:])
    parts, prev = [], None
    for sl in lb.group_slices():
        prev = x[:, :, sl] if prev is None else x[:, :, sl] + prev
        parts.append(prev)
    return torch.cat(parts, dim=2)


@torch.no_grad()
def branch_responses(lsm, h):
    """Sizes of the branch outputs relative to ``h`` (N·T, C, H, W), as a dict of floats.

    ``short``: ||S(h)|| / ||h||; ``long``: ||L(h)|| / ||h||; ``long_temporal``: ||L(h) - L_id(h)|| /
    ||h|| with ``L_id`` the long branch with identity taps (what the taps add along time).
    Branches the module lacks are left out.
    """
    norm = h.norm().clamp_min(1e-12)
    out = {}
    if lsm.short is not None:
        out['short'] = float(lsm.short(h).norm() / norm)
    if lsm.long is not None:
        gate = lsm.long.gate(h)[..., None, None]
        full, ident = lsm.long.aggregate(h) * gate, identity_aggregate(lsm.long, h) * gate
        out['long'] = float(full.norm() / norm)
        out['long_temporal'] = float((full - ident).norm() / norm)
    return out


@torch.no_grad()
def long_branch_parameters(lb):
    """Summary of a trained long branch: mean / max |α|, mean |kernel - identity|, mean |W2|."""
    alpha = lb.alpha().abs()
    offsets = torch.cat([conv.weight.abs().view(-1) for conv in lb.taps]) * lb.tap_gain
    return {'alpha_mean': float(alpha.mean()), 'alpha_max': float(alpha.max()),
            'tap_offset': float(offsets.mean()), 'gate_w2': float(lb.fc2.weight.abs().mean())}


def gradient_norms(lsm):
    """L2 norms of the gradients now held by the module's parameters, per part (dict of floats).

    Parts: ``short`` (all of S), ``long_taps``, ``long_alpha`` and ``long_gate`` (W1, W2); the
    stored parameters' gradients, so the long ones include the gains.
    """
    def norm(params):
        grads = [p.grad.detach().float().view(-1) for p in params if p.grad is not None]
        return float(torch.cat(grads).norm()) if grads else 0.0

    out = {}
    if lsm.short is not None:
        out['short'] = norm(lsm.short.parameters())
    if lsm.long is not None:
        lb = lsm.long
        out['long_taps'] = norm(lb.taps.parameters())
        out['long_alpha'] = norm(lb.scale.parameters())
        out['long_gate'] = norm(list(lb.fc1.parameters()) + list(lb.fc2.parameters()))
    return out
