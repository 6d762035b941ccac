"""Video list files, TSN/TSM segment sampling and clip loading.

List lines are ``path num_frames label`` (whitespace separated, extra columns ignored; paths
relative to ``root_path``).  For video files (``.mp4``, ``.webm``, ``.avi``, ``.mkv``) the line may
also be ``path label`` or carry ``num_frames`` 0: the count then comes from the container.

Sampling follows the TSM reference index for index (docs/reference_semantics.md).  The samplers return
0-based offsets; the frame file numbers are ``offset + 1``; a segment's ``L`` images are frames
``offset+1, offset+2, ...`` never past frame ``n``.  Randomness comes from Python's ``random``
module, which PyTorch seeds differently in every DataLoader worker.
"""
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch.utils.data as data

from ops.errors import LSNetError
from ops.video_io import (count_video_frames, is_video_file, keep_freed_memory, read_frames,
                          read_video_frames)

log = logging.getLogger(__name__)

DENSE_WINDOW = 64
DENSE_TEST_CLIPS = 10
MIN_FRAMES = 3  # training/validation lists drop shorter videos, like the reference


@dataclass
class VideoRecord:
    """One list line: ``path`` (relative to the root), ``num_frames`` (0 = ask the container), ``label``."""
    path: str
    num_frames: int
    label: int
    line: int = 0


def parse_list(list_file, min_frames=0):
    """Read a list file → ``[VideoRecord]``, dropping records with fewer than ``min_frames`` frames.

    A malformed line raises :class:`LSNetError` naming ``file:line``.
    """
    if not os.path.isfile(list_file):
        raise LSNetError('list file not found: {} (check --root_path / --train_list / --val_list)'
                         .format(list_file))
    try:
        with open(list_file) as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LSNetError('cannot read list file {}: {}'.format(list_file, e)) from None
    records = []
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) == 2 and is_video_file(fields[0]):
                rec = VideoRecord(fields[0], 0, int(fields[1]), lineno)
            elif len(fields) >= 3:
                rec = VideoRecord(fields[0], int(fields[1]), int(fields[2]), lineno)
            else:
                raise ValueError
        except ValueError:
            raise LSNetError("{}:{}: expected 'path num_frames label', got {!r}".format(
                list_file, lineno, line.rstrip('\n'))) from None
        if rec.num_frames < 0 or rec.label < 0:
            raise LSNetError('{}:{}: negative frame count or label in {!r}'.format(
                list_file, lineno, line.rstrip('\n')))
        if rec.num_frames == 0 and not is_video_file(rec.path):
            raise LSNetError('{}:{}: frame folder {} has 0 frames'.format(
                list_file, lineno, rec.path))
        if min_frames and 0 < rec.num_frames < min_frames:
            continue
        records.append(rec)
    return records


# ---- segment sampling (0-based offsets) -------------------------------------------------------

def sample_train_indices(n, num_segments, new_length=1, rng=random):
    """TSN training: a random offset inside each of ``num_segments`` equal segments."""
    d = (n - new_length + 1) // num_segments
    if d > 0:
        return [i * d + rng.randrange(d) for i in range(num_segments)]
    if n > num_segments:
        return sorted(rng.randrange(n - new_length + 1) for _ in range(num_segments))
    return [0] * num_segments


def sample_val_indices(n, num_segments, new_length=1):
    """Validation: segment centres (all zeros when the video is too short)."""
    if n > num_segments + new_length - 1:
        tick = (n - new_length + 1) / float(num_segments)
        return [int(tick / 2.0 + tick * i) for i in range(num_segments)]
    return [0] * num_segments


def sample_test_indices(n, num_segments, new_length=1, twice_sample=False):
    """Test: segment centres with no short-video guard; ``twice_sample`` appends the segment starts.

    Offsets that would be negative (``n < new_length - 1``) are clamped to 0.
    """
    tick = (n - new_length + 1) / float(num_segments)
    offsets = [int(tick / 2.0 + tick * i) for i in range(num_segments)]
    if twice_sample:
        offsets += [int(tick * i) for i in range(num_segments)]
    return [max(0, o) for o in offsets]


def _dense_clip(n, num_segments, start):
    stride = DENSE_WINDOW // num_segments
    return [(start + i * stride) % n for i in range(num_segments)]


def sample_dense_indices(n, num_segments, rng=random):
    """Dense (I3D-style) training/validation: stride 64 // T from a random start in [0, n - 65]."""
    p = max(1, n - DENSE_WINDOW + 1)
    start = 0 if p == 1 else rng.randrange(p - 1)
    return _dense_clip(n, num_segments, start)


def sample_dense_test_indices(n, num_segments, num_clips=DENSE_TEST_CLIPS):
    """Dense test: ``num_clips`` clips with evenly spaced starts in [0, p - 1], concatenated."""
    p = max(1, n - DENSE_WINDOW + 1)
    starts = np.linspace(0, p - 1, num=num_clips, dtype=int).tolist()
    out = []
    for s in starts:
        out += _dense_clip(n, num_segments, s)
    return out


def segment_frame_numbers(offsets, n, new_length):
    """1-based frame numbers of each segment's ``new_length`` images, never past frame ``n``."""
    frames = []
    for off in offsets:
        p = int(off) + 1
        for _ in range(new_length):
            frames.append(p)
            if p < n:
                p += 1
    return frames


# ---- dataset ----------------------------------------------------------------------------------

class TSNDataSet(data.Dataset):
    """Clips of ``num_segments`` segments from a list file; ``__getitem__`` → ``(clip, label)``.

    ``clip`` is what ``transform`` returns (see ``ops.transforms.build_transform``) or, with no
    transform, the raw uint8 ``(F, C, H, W)`` images in time order (Flow: x, y interleaved).
    Sampling: ``test_mode`` → test indices; else ``random_shift`` → training, otherwise validation
    indices; ``dense_sample`` / ``twice_sample`` as in the reference.

    ``label_swap`` (``{label: label}``) is applied when the transform reports a horizontal flip
    (transforms built by ``ops.transforms`` do), e.g. Something-Something's "left to right" ↔
    "right to left" classes.  ``skip_bad=True`` replaces a video whose frames are missing or
    unreadable by another one (logged; ``bad_videos`` lists them in this process) instead of
    raising :class:`LSNetError`.  ``remove_missing`` applies the short-video filter in test mode too.

    The first item loaded in a process calls ``ops.video_io.keep_freed_memory`` (glibc keeps
    freed clip-sized buffers for reuse; measured 2x faster training transforms on our VM).
    """

    def __init__(self, root_path, list_file, num_segments=3, new_length=1, modality='RGB',
                 image_tmpl='img_{:05d}.jpg', transform=None, random_shift=True, test_mode=False,
                 remove_missing=False, dense_sample=False, twice_sample=False, skip_bad=False,
                 label_swap=None):
        if modality not in ('RGB', 'Flow', 'RGBDiff'):
            raise LSNetError('unknown modality {!r} (use RGB, Flow or RGBDiff)'.format(modality))
        self.root_path = root_path
        self.list_file = list_file
        self.num_segments = int(num_segments)
        self.modality = modality
        # images loaded per segment (RGBDiff needs one more to take differences)
        self.new_length = int(new_length) + (1 if modality == 'RGBDiff' else 0)
        self.image_tmpl = image_tmpl
        self.transform = transform
        self.random_shift = random_shift
        self.test_mode = test_mode
        self.remove_missing = remove_missing
        self.dense_sample = dense_sample
        self.twice_sample = twice_sample
        self.skip_bad = skip_bad
        self.label_swap = dict(label_swap) if label_swap else None
        if self.label_swap and transform is not None and not hasattr(transform, 'forward_with_flip'):
            raise ValueError('label_swap needs a transform that reports flips (ops.transforms)')
        self._check_template()
        min_frames = MIN_FRAMES if (not test_mode or remove_missing) else 0
        self.video_list = parse_list(list_file, min_frames)
        if not self.video_list:
            raise LSNetError('list file {} names no videos{}'.format(
                list_file, ' (videos of fewer than {} frames are skipped)'.format(min_frames) if min_frames else ''))
        if self._flow_fields() == 3:  # Something-Something V1 flow lists count x and y images
            for rec in self.video_list:
                rec.num_frames //= 2
        self.bad_videos = []
        self._frame_counts = {}
        log.info('%s: %d videos', list_file, len(self.video_list))
        self._warn_short_validation_videos()

    def _warn_short_validation_videos(self):
        """Validation (reference rule) samples a video of at most T + L - 1 frames as its first frame
        repeated: say so, since such scores say nothing about the model (test_models.py samples them)."""
        if self.test_mode or self.random_shift or self.dense_sample:
            return
        limit = self.num_segments + self.new_length - 1
        short = sum(1 for rec in self.video_list if rec.num_frames <= limit)
        if short:
            log.warning('%s: %d of %d videos have %d frames or fewer: validation samples them as their '
                        'first frame repeated (the reference\'s rule for videos no longer than the '
                        'segments); test_models.py samples every segment', self.list_file, short,
                        len(self.video_list), limit)

    # -- templates and paths
    def _flow_fields(self):
        return self.image_tmpl.count('{') if self.modality == 'Flow' else 0

    def _check_template(self):
        try:
            fields = self._flow_fields()
            if fields == 3:
                self.image_tmpl.format(1, 'x', 1)
            elif fields == 2:
                self.image_tmpl.format('x', 1)
            else:
                self.image_tmpl.format(1)
        except (IndexError, KeyError, ValueError, TypeError) as e:
            raise LSNetError('bad --image_tmpl {!r} for {}: {}'.format(
                self.image_tmpl, self.modality, e)) from None

    def _frame_paths(self, record, frame_numbers):
        folder = os.path.join(self.root_path, record.path)
        if self.modality != 'Flow':
            return [os.path.join(folder, self.image_tmpl.format(i)) for i in frame_numbers]
        fields = self._flow_fields()
        paths = []
        for i in frame_numbers:
            if fields == 1:  # one RGB image holds both components; listed once per component
                paths += [os.path.join(folder, self.image_tmpl.format(i))] * 2
                continue
            for axis in ('x', 'y'):
                if fields == 3:
                    name = self.image_tmpl.format(int(os.path.basename(record.path)), axis, i)
                else:
                    name = self.image_tmpl.format(axis, i)
                paths.append(os.path.join(folder, name))
        return paths

    # -- sampling
    def num_frames(self, record):
        """The record's frame count, asking the video container when the list says 0."""
        if record.num_frames:
            return record.num_frames
        path = os.path.join(self.root_path, record.path)
        if path not in self._frame_counts:
            self._frame_counts[path] = count_video_frames(path)
        return self._frame_counts[path]

    def sample_offsets(self, n):
        """0-based segment offsets for a video of ``n`` frames in this dataset's mode."""
        T, L = self.num_segments, self.new_length
        if self.test_mode:
            if self.dense_sample:
                return sample_dense_test_indices(n, T)
            return sample_test_indices(n, T, L, self.twice_sample)
        if self.dense_sample:
            return sample_dense_indices(n, T)
        if self.random_shift:
            return sample_train_indices(n, T, L)
        return sample_val_indices(n, T, L)

    # -- loading
    def load_clip(self, record, frame_numbers):
        """Decode the given 1-based frames → uint8 ``(F, C, H, W)``."""
        min_short = getattr(self.transform, 'min_short_side', None)
        if is_video_file(record.path):
            if self.modality == 'Flow':
                raise LSNetError('{}: Flow needs x/y flow images, not a video file'.format(record.path))
            return read_video_frames(os.path.join(self.root_path, record.path), frame_numbers)
        paths = self._frame_paths(record, frame_numbers)
        if self.modality == 'Flow' and self._flow_fields() == 1:
            # one RGB image per frame holding (flow_x, flow_y, unused) in its channels
            rgb = read_frames(paths[0::2], gray=False, min_short_side=min_short)
            return rgb[:, :2].reshape(-1, 1, *rgb.shape[-2:])
        return read_frames(paths, gray=(self.modality == 'Flow'), min_short_side=min_short)

    def get(self, record):
        n = self.num_frames(record)
        offsets = self.sample_offsets(n)
        clip = self.load_clip(record, segment_frame_numbers(offsets, n, self.new_length))
        label = record.label
        if self.transform is None:
            return clip, label
        if self.label_swap:
            clip, flipped = self.transform.forward_with_flip(clip)
            if flipped:
                label = self.label_swap.get(label, label)
            return clip, label
        return self.transform(clip), label

    def __getitem__(self, index):
        keep_freed_memory()  # once per loading process (see ops.video_io)
        record = self.video_list[index]
        if not self.skip_bad:
            return self.get(record)
        for _ in range(min(len(self.video_list), 100)):
            try:
                return self.get(record)
            except LSNetError as e:
                self.bad_videos.append(record.path)
                log.warning('skipping bad video %s (%s); %d skipped so far in this process',
                            record.path, e, len(self.bad_videos))
                record = self.video_list[random.randrange(len(self.video_list))]
        raise LSNetError('too many bad videos in {} (last: {})'.format(self.list_file, record.path))

    def __len__(self):
        return len(self.video_list)
