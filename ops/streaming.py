"""Online recognition: run a causal TSM / LSNet (``--shift_direction uni``) one frame at a time.

An online model's frame ``t`` reads only frames ``<= t``, so instead of re-running a clip for every
new frame, each temporal module keeps what it will need from the past as a small state tensor:

- a shift (:class:`ops.temporal_shift.TemporalShift`) the moving channels of its previous input,
  ``(N, C/shift_div, H, W)``;
- an LSM (:class:`ops.long_short.LongShortModule`) the previous smoothed ``Z`` of its short branch
  ``(N, C_r, H, W)``, the last ``d`` inputs of each long-branch tap (``d`` tensors
  ``(N, C/groups, H, W)``, one per frame) and the running sum of its gate's pooled features ``(N, C)``.

:class:`Streamer` finds these modules in any model (ResNet or MobileNetV2, any place and
stage), so nothing is written per backbone: ``logits, state = streamer.step(frame, state)`` with a
normalised frame ``(N, C, H, W)`` gives that frame's logits ``(N, num_class)``, the same numbers as the
offline model's per-frame logits on the whole clip (:func:`offline_frame_logits`).  The state is a
flat tuple of tensors (names: :meth:`Streamer.state_names`), ``None`` to start a new video;
``Streamer.forward(frame, *state)`` is the same step in a form ``torch.export`` and ONNX accept.

:class:`OnlineRecognizer` adds what a live system needs on top: a frame stride and a window of
recent per-frame scores whose mean is the prediction.
"""
import collections
import contextlib
import logging

import torch
import torch.nn as nn

from ops.basic_ops import memory_format_of
from ops.errors import LSNetError

log = logging.getLogger(__name__)


def _is_stream_unit(module):
    """Modules that keep state between frames: causal shifts and causal long-short modules."""
    return callable(getattr(module, 'stream_step', None)) and getattr(module, 'causal', False)


class StreamContext:
    """What the stream units read and write during one :meth:`Streamer.step` (active only then)."""

    def __init__(self, units):
        self.slots = {id(m): i for i, m in enumerate(units)}
        self.active = False
        self.inputs = None       # per unit: tuple of tensors, or None at the start of a video
        self.outputs = None
        self.frames_seen = None  # (1,) float: frames of this video before the current one
        self.frames_known = None  # the same as an int when the streamer knows it without reading the tensor
        self.constants = {}      # per unit: its step_constants(), kept for a video in eager inference

    def run(self, module, x):
        i = self.slots[id(module)]
        state = None if self.inputs is None else self.inputs[i]
        constants = ()
        if hasattr(module, 'step_constants'):
            if i not in self.constants:
                self.constants[i] = module.step_constants()
            constants = (self.constants[i],)
        # an int lets an eager step branch in Python instead of selecting over whole maps
        seen = self.frames_seen if self.frames_known is None else self.frames_known
        y, self.outputs[i] = module.stream_step(x, state, seen, *constants)
        return y


def reads_future(cfg):
    """True when frame ``t`` of the model ``cfg`` describes depends on later frames: a bidirectional
    shift, a non-local block or a temporal pool.  TSN (no temporal module) and online models do not."""
    return (cfg.shift and not cfg.causal) or cfg.non_local or cfg.temporal_pool


class Streamer(nn.Module):
    """A causal :class:`ops.models.TSN` as a step function over single frames.

    ``step(frame, state=None) -> (logits, state)``: ``frame`` (N, C, H, W) normalised like the
    training input, ``logits`` (N, num_class) of that frame (average them over a clip to get the
    offline clip score).  The model is put in eval mode; it must not read future frames: an online
    model (``shift_direction='uni'``) or a plain TSN (whose only state is the frame counter).
    """

    def __init__(self, model):
        super().__init__()
        cfg = getattr(model, 'cfg', None)
        if cfg is None or reads_future(cfg):
            raise LSNetError('online recognition needs an online model (trained with --shift --shift_direction uni); '
                             'this one reads future frames')
        if cfg.modality != 'RGB':
            raise LSNetError('online recognition supports RGB models (this one is {})'.format(cfg.modality))
        self.model = model.eval()
        self.units = [m for m in model.modules() if _is_stream_unit(m)]
        names = {id(m): n for n, m in model.named_modules()}
        self._unit_names = [names[id(m)] for m in self.units]
        self._sizes = [len(m.state_names) for m in self.units]
        self.context = StreamContext(self.units)
        self._counted = None  # (frames_seen tensor the last eager step returned, its value as an int)
        for m in self.units:
            m.stream = self.context

    def state_names(self):
        """Names of the state tensors, in order: ``frames_seen`` then ``<module path>.<buffer>``."""
        return ['frames_seen'] + ['{}.{}'.format(n, s) for n, m in zip(self._unit_names, self.units)
                                  for s in m.state_names]

    def _unflatten(self, flat):
        out, i = [], 0
        for k in self._sizes:
            out.append(tuple(flat[i:i + k]))
            i += k
        return out

    def step(self, frame, state=None, keep_constants=True):
        """Logits ``(N, num_class)`` of one frame and the state after it (``state=None``: a new video).

        The weights are read at a video's first frame (``keep_constants=False``: at every frame).
        """
        if frame.dim() != 4:
            raise ValueError('a streamed frame is (N, C, H, W), got shape {}'.format(tuple(frame.shape)))
        ctx = self.context
        if state is None:
            ctx.inputs, ctx.frames_seen = None, frame.new_zeros(1)
        else:
            ctx.inputs, ctx.frames_seen = self._unflatten(state[1:]), state[0]
        # What the modules derive from the weights alone is computed at a video's first frame and
        # kept for the rest of it -- in eager inference only: a traced step (compile, export) or a
        # recorded graph computes it in every call and keeps nothing.
        keep = keep_constants and not torch.is_grad_enabled()
        if state is None or not keep:
            ctx.constants = {}
        # The frame count as an int, without reading the tensor (no device sync): known at a video's
        # start and when ``state`` is the one the previous eager step returned.
        ctx.frames_known = None
        if keep:
            if state is None:
                ctx.frames_known = 0
            elif self._counted is not None and state[0] is self._counted[0]:
                ctx.frames_known = self._counted[1]
        ctx.outputs = [None] * len(self.units)
        ctx.active = True
        try:
            logits = self.model.new_fc(self.model.base_model(frame))
        finally:
            ctx.active = False
            if not keep:
                ctx.constants = {}
        flat = [ctx.frames_seen + 1]
        for new in ctx.outputs:
            flat.extend(new)
        self._counted = None if ctx.frames_known is None else (flat[0], ctx.frames_known + 1)
        ctx.inputs = ctx.outputs = ctx.frames_known = None
        return logits, tuple(flat)

    def forward(self, frame, *state):
        """``(logits, *state)`` from ``(frame, *state)``: :meth:`step` with the state spread out (for export)."""
        logits, new = self.step(frame, state if state else None, keep_constants=False)
        return (logits,) + new

    def initial_state(self, frame):
        """The state before a video's first frame, as concrete zero tensors shaped for ``frame``, each
        in the layout the step itself returns it in (:func:`_dense_strides`), so a compiled or exported
        step sees one layout from the first frame on."""
        with torch.no_grad():
            _, state = self.step(frame)
        return tuple(torch.zeros_like(s, memory_format=memory_format_of(s)) for s in state)

    def state_shapes(self, frame):
        """``{name: shape}`` of the state for frames shaped like ``frame``."""
        return {n: tuple(s.shape) for n, s in zip(self.state_names(), self.initial_state(frame))}

    def close(self):
        """Detach from the model's modules (they run offline as before; they do anyway between steps)."""
        for m in self.units:
            m.stream = None


def _dense_strides(t):
    """``t`` with the strides of a fresh tensor in its own layout (:func:`ops.basic_ops.memory_format_of`):
    a view when only the strides of size-1 dimensions differ (slices of a batch of one), else a copy.  Dynamo
    guards on strides, so a state passed in with other strides each frame would compile the step
    again; and a channels_last state converted to channels-first would make every compiled kernel
    that reads or writes it transpose."""
    fmt = memory_format_of(t)
    strides = torch.empty(t.shape, dtype=t.dtype, device='meta', memory_format=fmt).stride()
    if t.stride() == strides:
        return t
    return t.as_strided(t.shape, strides) if t.is_contiguous(memory_format=fmt) else t.contiguous(memory_format=fmt)


class CompiledStep:
    """:meth:`Streamer.step` through ``compiled``, a ``torch.compile`` of the streamer (its
    :meth:`Streamer.forward`): the state starts as :meth:`Streamer.initial_state` (the same numbers
    as no state) and always goes in with the strides of a fresh tensor in its layout, so one graph
    serves every frame."""

    def __init__(self, streamer, compiled):
        self.streamer, self.compiled, self.model = streamer, compiled, streamer.model

    def step(self, frame, state=None):
        if state is None:
            state = self.streamer.initial_state(frame)
        out = self.compiled(frame, *(_dense_strides(s) for s in state))
        return out[0], tuple(out[1:])


@contextlib.contextmanager
def clip_segments(model, num_segments):
    """Run ``model`` on clips of ``num_segments`` frames (the modules' structure is kept: an LSM's
    dilations stay those it was built with), restoring the trained number on exit."""
    saved = [(m, m.num_segments) for m in model.modules() if isinstance(getattr(m, 'num_segments', None), int)]
    try:
        for m, _ in saved:
            m.num_segments = num_segments
        yield model
    finally:
        for m, t in saved:
            m.num_segments = t


@torch.no_grad()
def offline_frame_logits(model, clip):
    """Per-frame logits ``(N, T, num_class)`` of ``model`` on whole clips ``(N, T, C, H, W)`` of any length."""
    with clip_segments(model, clip.shape[1]):
        return model.frame_logits(clip)


def export_step(streamer, frame):
    """``torch.export`` program of ``streamer.forward(frame, *state)`` (state in and out), for deployment."""
    state = streamer.initial_state(frame)
    return torch.export.export(streamer, (frame,) + state, strict=False)


class OnlineRecognizer:
    """Frame-by-frame recognition of one stream: stride, state and a smoothing window.

    ``update(frame)`` takes every frame of the source (normalised, (C, H, W) or (1, C, H, W)); every
    ``stride``-th one goes through the model.  Returns the class scores ``(num_class,)`` after a
    processed frame, or None for a skipped one: the softmax of the mean logits of the last
    ``window`` processed frames -- the consensus the model was trained with (``avg`` of its
    segments' logits), so a whole video streamed at the segment spacing scores as the offline model
    scores it.  :meth:`reset` starts a new video.  ``model``: a model, a :class:`Streamer`, or
    anything with the Streamer's ``step`` and ``model`` (e.g. a compiled step).
    """

    def __init__(self, model, stride=1, window=None):
        if stride < 1:
            raise LSNetError('--stride must be at least 1 (got {})'.format(stride))
        self.streamer = model if callable(getattr(model, 'step', None)) else Streamer(model)
        self.stride = int(stride)
        self.window = int(window or self.streamer.model.num_segments)
        if self.window < 1:
            raise LSNetError('--window must be at least 1 (got {})'.format(window))
        self.reset()

    def reset(self):
        self.state = None
        self.recent = collections.deque(maxlen=self.window)
        self.frame_index = 0
        self.processed = 0

    @torch.no_grad()
    def update(self, frame):
        index = self.frame_index
        self.frame_index += 1
        if index % self.stride:
            return None
        if frame.dim() == 3:
            frame = frame.unsqueeze(0)
        logits, self.state = self.streamer.step(frame, self.state)
        self.processed += 1
        self.recent.append(logits.float()[0])
        return torch.softmax(torch.stack(tuple(self.recent)).mean(dim=0), dim=0)


def default_stride(ckpt):
    """Frame stride that matches a checkpoint's training sampling: the mean segment length of its
    training videos when stored (``ckpt['frames_per_segment']``), else 1."""
    value = ckpt.get('frames_per_segment') if isinstance(ckpt, dict) else None
    try:
        return max(1, int(round(float(value)))) if value else 1
    except (TypeError, ValueError):
        return 1
