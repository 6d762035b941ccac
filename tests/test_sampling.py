"""Segment sampling against hand-computed offsets (0-based) and the reference's rules."""
import random

import numpy as np

from ops.dataset import (sample_dense_indices, sample_dense_test_indices, sample_test_indices,
                         sample_train_indices, sample_val_indices, segment_frame_numbers)


class FixedRng:
    """randrange returns the lowest (``pick='low'``) or highest value of its range."""

    def __init__(self, pick):
        self.pick = pick

    def randrange(self, n):
        return 0 if self.pick == 'low' else n - 1


def test_train_sparse_segments():
    # n=20, T=4: segments of d=5 frames
    assert sample_train_indices(20, 4, 1, FixedRng('low')) == [0, 5, 10, 15]
    assert sample_train_indices(20, 4, 1, FixedRng('high')) == [4, 9, 14, 19]
    # L=5 (Flow): d = (20 - 5 + 1) // 4 = 4, so the last window starts at most at 15
    assert sample_train_indices(20, 4, 5, FixedRng('high')) == [3, 7, 11, 15]
    rng = random.Random(0)
    for _ in range(200):
        off = sample_train_indices(23, 4, 1, rng)
        assert all(i * 5 <= o < (i + 1) * 5 for i, o in enumerate(off))


def test_train_short_videos():
    # n = T + 2 with L = 3: d = 0 but n > T → sorted draws from [0, n - L]
    rng = random.Random(1)
    for _ in range(100):
        off = sample_train_indices(10, 8, 3, rng)
        assert off == sorted(off) and min(off) >= 0 and max(off) <= 7
    # T > n: all zeros
    assert sample_train_indices(6, 8, 1, FixedRng('high')) == [0] * 8
    assert sample_train_indices(8, 8, 1, FixedRng('high')) == list(range(8))  # d = 1


def test_val_centres():
    assert sample_val_indices(20, 4) == [2, 7, 12, 17]
    # tick = 9/8: int(0.5625 + 1.125 i)
    assert sample_val_indices(9, 8) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert sample_val_indices(8, 8) == [0] * 8  # n must exceed T + L - 1
    assert sample_val_indices(12, 8, 5) == [0] * 8
    assert sample_val_indices(13, 8, 5) == [0, 1, 2, 3, 5, 6, 7, 8]


def test_test_centres_no_guard_and_twice():
    # tick = 5/8: no short-video guard at test time
    assert sample_test_indices(5, 8) == [0, 0, 1, 2, 2, 3, 4, 4]
    assert sample_test_indices(20, 4, twice_sample=True) == [2, 7, 12, 17, 0, 5, 10, 15]
    assert sample_test_indices(2, 4, 5) == [0, 0, 0, 0]  # negative offsets clamp to 0


def test_dense_train_windows():
    # n = 100, T = 8: stride 8, start in [0, 35]
    assert sample_dense_indices(100, 8, FixedRng('low')) == list(range(0, 64, 8))
    assert sample_dense_indices(100, 8, FixedRng('high')) == [35 + 8 * i for i in range(8)]
    # short video: start 0, offsets wrap modulo n
    assert sample_dense_indices(30, 8, FixedRng('high')) == [0, 8, 16, 24, 2, 10, 18, 26]
    assert sample_dense_indices(64, 8, FixedRng('high')) == list(range(0, 64, 8))  # p = 1


def test_dense_test_ten_clips():
    off = sample_dense_test_indices(100, 8)
    assert len(off) == 80
    starts = [off[8 * k] for k in range(10)]
    assert starts == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert off[8:16] == [4 + 8 * i for i in range(8)]
    for n in range(1, 300, 7):  # same starts as numpy's linspace cast to int (the reference)
        got = sample_dense_test_indices(n, 4)[0::4]
        p = max(1, n - 63)
        assert got == [s % n for s in np.linspace(0, p - 1, 10, dtype=int).tolist()]


def test_segment_frames_stop_at_last_frame():
    assert segment_frame_numbers([0, 5], 20, 1) == [1, 6]
    assert segment_frame_numbers([3, 8], 10, 5) == [4, 5, 6, 7, 8, 9, 10, 10, 10, 10]
    assert segment_frame_numbers([0], 1, 3) == [1, 1, 1]
