"""Clip transforms with the TSM reference's crop/flip/normalise semantics, on whole clips.

A clip is a uint8 tensor ``(F, C, H, W)``: ``F`` images in time order (RGB and RGBDiff: ``C = 3``;
Flow: ``C = 1`` with the images interleaved x, y, x, y, ...).  Every random choice (crop size,
crop position, flip) is drawn once per clip from Python's ``random`` module (which PyTorch seeds
per DataLoader worker) and applied to all of its frames.  Pixels stay uint8 through cropping,
resizing and flipping; the single conversion to float32 happens at the end, fused with the
normalisation (in :class:`ClipTransform`, or per batch with :func:`normalize_clip`).

Memory layout.  Decoders hand out channels-last pixels (``(F, C, H, W)`` views of ``H×W×C``
memory) and the uint8 resize kernel works on that layout; the model input is planar
(``C×H×W`` per image).  Each geometry makes exactly one planar copy at its end,
:func:`planar_clip`, which also applies the crop (a view until then) and the horizontal flip in
the same pass.  It goes through numpy because numpy's strided uint8 copy is about twice as fast
as torch's for this 3-channel de-interleave (0.33 vs 0.66 ms for 8×224×224×3 on one core).

Resizing uses ``torch.nn.functional.interpolate(mode='bilinear', antialias=True)`` on uint8
channels-last tensors.  This is the tensor resize that matches PIL's ``BILINEAR`` (which the
reference uses): PIL widens its filter when shrinking, which is what ``antialias=True`` does
(without it, 0.8 grey levels apart on average, max 8).  Against PIL's crop + resize of 340x256
frames (``tests/test_transforms.py``), the two differ by rounding only: at most 2 grey levels,
mean 0.003 when shrinking (256 → 224), 0.04-0.08 when enlarging (192 → 224), 0 for 168 and 224.
The uint8 channels-last kernel (AVX2) is also the fastest CPU path: about 3x faster than float
and several times faster than PIL's own resize.
"""
import math
import random

import numpy as np
import torch
import torch.nn.functional as F

from ops.errors import LSNetError

RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)
RGB_SCALES = (1, .875, .75, .66)
FLOW_SCALES = (1, .875, .75)
TEST_CROPS = (1, 3, 5, 10)
NORMALIZE_CHUNK_BYTES = 2 << 20  # float32 output normalised per chunk while it is in cache


def fixed_offsets(image_w, image_h, crop_w, crop_h, more_fix_crop=True):
    """Fixed crop corners ``(x, y)`` in quarter steps: the 5 basic positions, then 8 more."""
    w_step = (image_w - crop_w) // 4
    h_step = (image_h - crop_h) // 4
    steps = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]
    if more_fix_crop:
        steps += [(0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(a * w_step, b * h_step) for a, b in steps]


def multiscale_crop_params(image_w, image_h, input_size, scales=RGB_SCALES, max_distort=1,
                           more_fix_crop=True, rng=random):
    """One multi-scale crop draw → ``(crop_w, crop_h, x, y)`` in pixels of the given image."""
    base = min(image_w, image_h)
    sizes = [int(base * s) for s in scales]
    sizes = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    pairs = [(w, h) for i, h in enumerate(sizes) for j, w in enumerate(sizes)
             if abs(i - j) <= max_distort]
    crop_w, crop_h = rng.choice(pairs)
    x, y = rng.choice(fixed_offsets(image_w, image_h, crop_w, crop_h, more_fix_crop))
    return crop_w, crop_h, x, y


def resize_clip(clip, height, width):
    """PIL-like (antialiased) bilinear resize: uint8 ``(F, C, H, W)`` → ``(F, C, height, width)``."""
    if clip.shape[-2:] == (height, width):
        return clip
    x = clip.contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=(height, width), mode='bilinear', align_corners=False,
                         antialias=True)


def scaled_size(image_w, image_h, short_side):
    """Output ``(w, h)`` of a short-side resize, rounding the long side down like torchvision."""
    if image_w <= image_h:
        return short_side, int(short_side * image_h / image_w)
    return int(short_side * image_w / image_h), short_side


def scale_short_side(clip, short_side):
    """Resize so that ``min(H, W) == short_side``, keeping the aspect ratio."""
    w, h = scaled_size(clip.shape[-1], clip.shape[-2], short_side)
    return resize_clip(clip, h, w)


def crop_clip(clip, x, y, crop_w, crop_h):
    """Crop ``(F, C, H, W)`` → ``(F, C, crop_h, crop_w)`` (a view)."""
    if x < 0 or y < 0 or x + crop_w > clip.shape[-1] or y + crop_h > clip.shape[-2]:
        raise LSNetError('crop {}x{} does not fit a {}x{} frame; use a smaller --input_size'.format(
            crop_w, crop_h, clip.shape[-1], clip.shape[-2]))
    return clip[..., y:y + crop_h, x:x + crop_w]


def center_offset(image_w, image_h, crop_w, crop_h):
    """Centre-crop corner, rounded like torchvision's CenterCrop."""
    return int(round((image_w - crop_w) / 2.0)), int(round((image_h - crop_h) / 2.0))


def flip_clip(clip, is_flow=False):
    """Horizontal flip of the whole clip; for Flow the x images (even indices) are inverted."""
    out = clip.flip(-1)
    if is_flow:
        out[0::2] = 255 - out[0::2]
    return out


def planar_clip(clip, flip=False, out=None):
    """One planar copy of ``clip (F, C, H, W)`` (any strides: a crop view, channels-last pixels).

    Returns a contiguous ``(F, C, H, W)`` tensor of the same dtype (``out`` when given), mirrored
    horizontally when ``flip`` -- crop, flip and the channels-last → planar reordering in one pass.
    A contiguous clip with no flip and no ``out`` is returned as it is.
    """
    if out is None:
        if not flip and clip.is_contiguous():
            return clip
        out = torch.empty(clip.shape, dtype=clip.dtype, device=clip.device)
    if clip.device.type != 'cpu' or not out.is_contiguous():
        out.copy_(clip.flip(-1) if flip else clip)
        return out
    src = clip.numpy()
    np.copyto(out.numpy(), src[..., ::-1] if flip else src)
    return out


def invert_flow_x(clip):
    """In place: ``255 - v`` on the x images (even indices) of a flipped Flow clip ``(F, 1, H, W)``."""
    x_images = clip[0::2]
    if x_images.dtype == torch.uint8:
        x_images.bitwise_not_()  # ~v == 255 - v for uint8
    else:
        x_images.neg_().add_(255)
    return clip


class MultiScaleCropFlip:
    """Training augmentation: multi-scale crop (13 fixed positions), resize, optional random flip.

    ``clip (F, C, H, W) uint8`` → ``(F, C, crop_size, crop_size) uint8``.  One draw per clip.
    """

    def __init__(self, crop_size, scales=RGB_SCALES, flip=True, is_flow=False, max_distort=1,
                 more_fix_crop=True):
        self.crop_size = int(crop_size)
        self.scales = tuple(scales)
        self.flip = flip
        self.is_flow = is_flow
        self.max_distort = max_distort
        self.more_fix_crop = more_fix_crop
        # Frames may be JPEG-decoded at reduced size as long as the smallest crop keeps this many
        # pixels (the crop is then still shrunk, never enlarged, to crop_size).
        self.min_short_side = int(math.ceil(self.crop_size / min(self.scales)))

    def forward_with_flip(self, clip):
        """Return ``(augmented clip, flipped)``."""
        h, w = clip.shape[-2:]
        cw, ch, x, y = multiscale_crop_params(w, h, self.crop_size, self.scales, self.max_distort,
                                              self.more_fix_crop)
        resized = resize_clip(crop_clip(clip, x, y, cw, ch), self.crop_size, self.crop_size)
        flipped = self.flip and random.random() < 0.5
        out = planar_clip(resized, flip=flipped)
        if flipped and self.is_flow:
            invert_flow_x(out)
        return out, flipped

    def __call__(self, clip):
        return self.forward_with_flip(clip)[0]

    def __repr__(self):
        return '{}(crop_size={}, scales={}, flip={}, is_flow={})'.format(
            type(self).__name__, self.crop_size, self.scales, self.flip, self.is_flow)


def train_augmentation(crop_size, modality='RGB', flip=True):
    """The model's training augmentation (what ``TSN.get_augmentation`` returns).

    RGB: scales (1, .875, .75, .66); Flow and RGBDiff: (1, .875, .75); Flow flips invert x.
    """
    scales = RGB_SCALES if modality == 'RGB' else FLOW_SCALES
    return MultiScaleCropFlip(crop_size, scales=scales, flip=flip, is_flow=(modality == 'Flow'))


class CenterCrop:
    """Validation / 1-crop test: short side → ``scale_size``, centre crop ``crop_size``."""

    def __init__(self, crop_size, scale_size):
        self.crop_size = int(crop_size)
        self.scale_size = int(scale_size)
        self.min_short_side = self.scale_size

    def __call__(self, clip):
        """``clip (F, C, H, W)`` → contiguous ``(F, C, crop_size, crop_size)``."""
        clip = scale_short_side(clip, self.scale_size)
        h, w = clip.shape[-2:]
        x, y = center_offset(w, h, self.crop_size, self.crop_size)
        return planar_clip(crop_clip(clip, x, y, self.crop_size, self.crop_size))


class MultiCrop:
    """Test-time 3-crop (full-res: left, right, centre) or 5/10-crop oversampling.

    ``clip (F, C, H, W)`` → ``(K·F, C, crop, crop)`` in crop-major order; with ``flip`` each
    position is followed by its horizontally flipped copy (Flow: x inverted).
    """

    def __init__(self, crop_size, scale_size, positions, flip, is_flow=False):
        self.crop_size = int(crop_size)
        self.scale_size = int(scale_size)
        self.positions = positions  # '3' (left/right/centre) or '5' (corners + centre)
        self.flip = flip
        self.is_flow = is_flow
        self.min_short_side = self.scale_size

    @property
    def num_crops(self):
        return (3 if self.positions == '3' else 5) * (2 if self.flip else 1)

    def offsets(self, image_w, image_h):
        c = self.crop_size
        if self.positions == '3':
            w_step = (image_w - c) // 4
            h_step = (image_h - c) // 4
            return [(0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 2 * h_step)]
        return fixed_offsets(image_w, image_h, c, c, more_fix_crop=False)

    def __call__(self, clip):
        """``clip (F, C, H, W)`` → contiguous ``(num_crops·F, C, crop, crop)``, crop-major."""
        clip = scale_short_side(clip, self.scale_size)
        f, c, h, w = clip.shape
        out = torch.empty((self.num_crops * f, c, self.crop_size, self.crop_size), dtype=clip.dtype,
                          device=clip.device)
        blocks = iter(out.split(f))
        for x, y in self.offsets(w, h):
            crop = crop_clip(clip, x, y, self.crop_size, self.crop_size)
            planar_clip(crop, out=next(blocks))
            if self.flip:
                flipped = planar_clip(crop, flip=True, out=next(blocks))
                if self.is_flow:
                    invert_flow_x(flipped)
        return out


def _channels(modality):
    if modality == 'Flow':
        return 2
    if modality in ('RGB', 'RGBDiff'):
        return 3
    raise LSNetError('unknown modality {!r} (use RGB, Flow or RGBDiff)'.format(modality))


class ClipTransform:
    """Geometry stage, then stack + float + normalise, producing the model input.

    ``clip (F, C, H, W) uint8`` → float32 ``(K·T, L·C', h, w)``: ``K`` crops (× clips in the
    sample), ``T`` segments, ``L`` images per segment (new_length, +1 for RGBDiff), ``C'`` 3 for
    RGB/RGBDiff and 2 for Flow (an x/y pair).  ``mean``/``std`` are per input channel in [0, 1]
    units, repeated over the ``L·C'`` channels of a segment.  With ``normalize=False`` the output
    stays uint8 (4x fewer bytes through DataLoader workers) and the consumer applies
    :func:`normalize_clip` itself, e.g. on the device.
    """

    def __init__(self, geometry, *, modality, new_length, mean, std, normalize=True):
        self.geometry = geometry
        self.modality = modality
        self.normalize = normalize
        self.images_per_segment = new_length + 1 if modality == 'RGBDiff' else new_length
        self.seg_channels = self.images_per_segment * _channels(modality)
        mean, std = list(mean), list(std)
        if self.seg_channels % len(mean) or self.seg_channels % len(std):
            raise ValueError('mean/std of length {}/{} do not divide {} channels per segment'.format(
                len(mean), len(std), self.seg_channels))
        mean = torch.tensor(mean * (self.seg_channels // len(mean)), dtype=torch.float32) * 255.0
        std = torch.tensor(std * (self.seg_channels // len(std)), dtype=torch.float32) * 255.0
        self.mean = mean.view(1, -1, 1, 1)
        self.inv_std = (1.0 / std).view(1, -1, 1, 1)
        self.min_short_side = getattr(geometry, 'min_short_side', None)

    def forward_with_flip(self, clip):
        """Return ``(model input, flipped)``; ``flipped`` is False for non-random geometries."""
        if hasattr(self.geometry, 'forward_with_flip'):
            out, flipped = self.geometry.forward_with_flip(clip)
        else:
            out, flipped = self.geometry(clip), False
        h, w = out.shape[-2:]
        numel_per_segment = self.seg_channels * h * w
        if out.numel() % numel_per_segment:
            raise ValueError('clip of shape {} does not split into segments of {} channels'.format(
                tuple(out.shape), self.seg_channels))
        x = out.contiguous().view(-1, self.seg_channels, h, w)
        if not self.normalize:
            return x, flipped
        return x.float().sub_(self.mean).mul_(self.inv_std), flipped

    def __call__(self, clip):
        return self.forward_with_flip(clip)[0]

    def __repr__(self):
        return 'ClipTransform({!r}, modality={}, channels_per_segment={})'.format(
            self.geometry, self.modality, self.seg_channels)


def normalize_clip(x, mean, std):
    """uint8 clips ``(..., L·C', h, w)`` → float32 ``(x / 255 - mean) / std``, on ``x``'s device.

    ``mean``/``std`` (per input channel, [0, 1] units) repeat over the ``L·C'`` channels; this is
    what :class:`ClipTransform` does itself unless built with ``normalize=False``.  On the CPU a
    contiguous batch is converted a few images at a time (:data:`NORMALIZE_CHUNK_BYTES` of output)
    so that the three passes (convert, subtract, scale) run in cache: 0.4 instead of 0.6 ms per
    8×224² clip here, bit-identical.
    """
    channels = x.shape[-3]
    mean, std = list(mean), list(std)
    if channels % len(mean) or channels % len(std):
        raise ValueError('mean/std of length {}/{} do not divide {} channels'.format(
            len(mean), len(std), channels))
    m = torch.tensor(mean * (channels // len(mean)), dtype=torch.float32, device=x.device) * 255.0
    s = torch.tensor(std * (channels // len(std)), dtype=torch.float32, device=x.device) * 255.0
    m, inv_s = m.view(-1, 1, 1), (1.0 / s).view(-1, 1, 1)
    if x.device.type != 'cpu' or not x.is_contiguous():
        return x.float().sub_(m).mul_(inv_s)
    out = torch.empty(x.shape, dtype=torch.float32)
    images_in, images_out = x.view(-1, *x.shape[-3:]), out.view(-1, *x.shape[-3:])
    step = max(1, NORMALIZE_CHUNK_BYTES // max(1, 4 * x.shape[-3] * x.shape[-2] * x.shape[-1]))
    for i in range(0, images_in.shape[0], step):
        chunk = images_out[i:i + step]
        chunk.copy_(images_in[i:i + step])
        chunk.sub_(m).mul_(inv_s)
    return out


def build_transform(mode, *, modality, new_length, crop_size, scale_size, mean, std,
                    augmentation=None, test_crops=1, full_res=False, normalize=True):
    """Build the ``TSNDataSet`` transform for ``mode`` in ``{'train', 'val', 'test'}``.

    train: ``augmentation`` (default ``train_augmentation(crop_size, modality)``); val: short side
    → scale_size + centre crop; test: ``test_crops`` 1 (as val), 3 (left/right/centre), 5, or 10
    (5 + flips); ``full_res`` (test only) makes the crop size ``scale_size``.
    Output: float32 ``(K·T, L·C', h, w)`` (see :class:`ClipTransform`); uint8 with
    ``normalize=False`` (then apply :func:`normalize_clip` to the batch).
    """
    is_flow = modality == 'Flow'
    if mode == 'train':
        geometry = augmentation if augmentation is not None else train_augmentation(
            crop_size, modality=modality)
    elif mode == 'val':
        geometry = CenterCrop(crop_size, scale_size)
    elif mode == 'test':
        size = scale_size if full_res else crop_size
        if test_crops == 1:
            geometry = CenterCrop(size, scale_size)
        elif test_crops == 3:
            geometry = MultiCrop(size, scale_size, '3', flip=False, is_flow=is_flow)
        elif test_crops in (5, 10):
            geometry = MultiCrop(size, scale_size, '5', flip=test_crops == 10, is_flow=is_flow)
        else:
            raise LSNetError('--test_crops must be one of 1, 3, 5, 10 (got {})'.format(test_crops))
    else:
        raise ValueError("mode must be 'train', 'val' or 'test', got {!r}".format(mode))
    return ClipTransform(geometry, modality=modality, new_length=new_length, mean=mean, std=std,
                         normalize=normalize)
