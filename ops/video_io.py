"""Decoding frames into uint8 clip tensors: JPEG/PNG frame files and video files (PyAV).

Frame files: JPEGs are decoded by libjpeg-turbo through ``torchvision.io.decode_jpeg`` (one call
per clip, straight into tensors, no PIL object or extra copy); when frames are at least twice as
large as the transform needs (``min_short_side``), PIL's ``Image.draft`` makes libjpeg-turbo
decode them at 1/2, 1/4 or 1/8 size directly, several times cheaper than a full decode.  Other formats
go through PIL.  Video files (``.mp4``, ``.webm``, ``.avi``, ``.mkv``) are decoded with PyAV.
No file stays open between calls, so datasets using these functions pickle into DataLoader workers.
"""
import ctypes
import io
import logging
import os
import sys
import warnings

import numpy as np
import torch
from PIL import Image

from ops.errors import LSNetError

log = logging.getLogger(__name__)

try:
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:
    decode_jpeg = None

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.avi', '.mkv')
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def is_video_file(path):
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _read_bytes(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise LSNetError('missing frame: {}'.format(path)) from None
    except OSError as e:
        raise LSNetError('cannot read frame {}: {}'.format(path, e)) from None


def jpeg_size(data):
    """``(w, h)`` from a JPEG's start-of-frame header, or None when there is none."""
    if data[:2] != b'\xff\xd8':
        return None
    pos, n = 2, len(data)
    while pos + 9 < n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            return (data[pos + 7] << 8) | data[pos + 8], (data[pos + 5] << 8) | data[pos + 6]
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def draft_scale(image_w, image_h, min_short_side):
    """Largest JPEG reduction (1, 2, 4 or 8) keeping the short side ≥ ``min_short_side``."""
    if not min_short_side:
        return 1
    short = min(image_w, image_h)
    scale = 1
    while scale < 8 and short // (scale * 2) >= min_short_side:
        scale *= 2
    return scale


def _decode_pil(path, data, gray, scale):
    """One frame (its file bytes) with PIL, ``scale`` times smaller via ``draft`` → uint8 ``(H, W, C)``.

    The array is PIL's read-only export of the pixels (one copy); the caller stacks the frames.
    """
    mode = 'L' if gray else 'RGB'
    try:
        with Image.open(io.BytesIO(data)) as img:
            if scale > 1:
                w, h = img.size
                img.draft(mode, ((w + scale - 1) // scale, (h + scale - 1) // scale))
            arr = np.asarray(img if img.mode == mode else img.convert(mode))
    except (OSError, SyntaxError, ValueError) as e:
        raise LSNetError('unreadable frame {}: {}'.format(path, e)) from None
    return arr[:, :, None] if gray else arr


def _decode_jpegs(paths, datas, gray):
    """JPEG file bytes → uint8 ``(C, H, W)`` frames (channels-last views) with one ``decode_jpeg`` call."""
    mode = ImageReadMode.GRAY if gray else ImageReadMode.RGB
    buffers = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with warnings.catch_warnings():
        # torchvision 0.29 announces that its codecs move to TorchCodec; until then this is the
        # fastest libjpeg-turbo binding installed, and PIL takes over where it is missing.
        warnings.simplefilter('ignore', DeprecationWarning)
        try:
            return decode_jpeg(buffers, mode=mode)
        except (RuntimeError, ValueError):
            pass
        for p, buf in zip(paths, buffers):  # find the file at fault
            try:
                decode_jpeg(buf, mode=mode)
            except (RuntimeError, ValueError) as e:
                raise LSNetError('unreadable frame {}: {}'.format(p, str(e).splitlines()[0])) from None
    raise LSNetError('unreadable frames in {}'.format(os.path.dirname(paths[0])))


_malloc_pid = None


def keep_freed_memory(limit=128 << 20):
    """Let glibc reuse freed blocks (up to ``limit`` bytes) instead of unmapping them (once per process).

    A clip passes through several short-lived buffers of 1-5 MB (stacked frames, crop, resized
    clip, float output).  glibc serves blocks that large with fresh ``mmap`` pages and gives them
    back on free, so every clip pays first-touch page faults again: about 1 ms per 5 MB here,
    which made the training transform cost twice the JPEG decode.  Raising ``M_MMAP_THRESHOLD``
    and ``M_TRIM_THRESHOLD`` keeps those blocks in the heap for the next clip; the cost is that
    the process keeps its peak heap size.  No-op off Linux or without ``mallopt``.
    """
    global _malloc_pid
    if _malloc_pid == os.getpid():
        return
    _malloc_pid = os.getpid()
    if not sys.platform.startswith('linux'):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, int(limit))
    mallopt(m_trim_threshold, int(2 * limit))
    log.debug('malloc: keeping freed blocks up to %d bytes for reuse', limit)


def read_frames(paths, gray=False, min_short_side=None):
    """Decode image files into one uint8 clip ``(F, C, H, W)`` (C = 1 if ``gray`` else 3).

    Repeated paths are decoded once.  ``min_short_side`` allows reduced-size JPEG decoding (the
    reduction is chosen from the first frame's header and used for the whole clip).  A missing
    or undecodable file raises :class:`LSNetError` naming it.
    """
    if not paths:
        raise ValueError('read_frames needs at least one path')
    unique = list(dict.fromkeys(paths))
    datas = [_read_bytes(p) for p in unique]
    size = jpeg_size(datas[0])
    scale = draft_scale(*size, min_short_side) if size and min_short_side else 1
    if size and scale == 1 and decode_jpeg is not None:
        decoded = [f.permute(1, 2, 0) for f in _decode_jpegs(unique, datas, gray)]  # (H, W, C) views
    else:
        decoded = [_decode_pil(p, d, gray, scale) for p, d in zip(unique, datas)]  # (H, W, C) arrays
    shapes = {tuple(f.shape) for f in decoded}
    if len(shapes) > 1:
        raise LSNetError('frames of different sizes {} in {}'.format(
            sorted((w, h) for h, w, _ in shapes), os.path.dirname(paths[0])))
    by_path = dict(zip(unique, decoded))
    frames = [by_path[p] for p in paths]
    # Stack in channels-last memory (how decoders return pixels) and hand out a (F, C, H, W) view.
    if isinstance(frames[0], np.ndarray):
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    return torch.stack(frames).permute(0, 3, 1, 2)


def _open_video(path):
    import av
    if not os.path.exists(path):
        raise LSNetError('missing video: {}'.format(path))
    try:
        return av.open(path)
    except (av.error.FFmpegError, OSError) as e:
        raise LSNetError('unreadable video {}: {}'.format(path, e)) from None


def count_video_frames(path):
    """Number of video frames: the container's count when it has one, else by demuxing packets."""
    import av
    container = _open_video(path)
    try:
        if not container.streams.video:
            raise LSNetError('no video stream in {}'.format(path))
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as e:
        raise LSNetError('unreadable video {}: {}'.format(path, e)) from None
    finally:
        container.close()


def read_video_frames(path, frame_numbers):
    """Decode the 1-based ``frame_numbers`` of a video file → uint8 ``(F, 3, H, W)``, in the given order.

    Decodes sequentially up to the largest requested frame.  Numbers past the real end of the
    stream (container frame counts can be off by a frame or two) get the last decoded frame.
    """
    import av
    wanted = set(int(i) for i in frame_numbers)
    last_wanted = max(wanted)
    got = {}
    last = None
    n = 0
    container = _open_video(path)
    try:
        if not container.streams.video:
            raise LSNetError('no video stream in {}'.format(path))
        stream = container.streams.video[0]
        stream.thread_type = 'AUTO'
        for frame in container.decode(stream):
            n += 1
            if n in wanted:
                last = torch.from_numpy(frame.to_ndarray(format='rgb24'))
                got[n] = last
            if n >= last_wanted:
                break
        if n < last_wanted and n > 0 and n not in got:
            # the stream ended early: keep its final frame for the numbers past the end
            last = torch.from_numpy(frame.to_ndarray(format='rgb24'))
    except av.error.FFmpegError as e:
        raise LSNetError('unreadable video {}: {}'.format(path, e)) from None
    finally:
        container.close()
    if n == 0:
        raise LSNetError('no decodable frames in video {}'.format(path))
    if n < last_wanted:
        log.warning('%s: asked for frame %d, the stream has %d; using its last frame',
                    path, last_wanted, n)
    frames = [got.get(i, last) if i <= n else last for i in (int(j) for j in frame_numbers)]
    return torch.stack(frames).permute(0, 3, 1, 2)
