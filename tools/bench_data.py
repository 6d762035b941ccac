"""Data pipeline throughput against the pure JPEG decode of the same sampled frames.

Runs, in one process and interleaved round by round (order alternating), two DataLoaders with the
same ``--workers`` over the same list and sampling mode:

* pipeline: ``TSNDataSet`` + ``build_transform`` (train: multi-scale crop + flip; val: short side
  → 256 + centre crop 224; then stack) handing uint8 batches over, each batch then normalised to
  float32 in the main process (``ops.engine.prepare_clips``) — exactly what main.py and
  test_models.py do; ``--normalize_in_workers`` normalises inside the dataset instead;
* decode: the same videos and the same sampling code, but each sampled frame is only opened and
  decoded at full size with PIL (``Image.open(path).convert('RGB')``): the floor any pipeline pays.

Prints per-round figures, the ratio pipeline time / decode time (target ≤ 1.25), and as its last
line ``pipeline_clips_per_s=<x> decode_clips_per_s=<y>``.

    python tools/bench_data.py --root_path R --list L --image_tmpl img_{:05d}.jpg \\
        --num_segments 8 --mode train --workers 2 [--generate]

``--generate`` writes Kinetics-like 340x256 JPEG frame folders and the list when ``R`` does not exist.
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.dataset import TSNDataSet, segment_frame_numbers  # noqa: E402
from ops.engine import prepare_clips  # noqa: E402
from ops.errors import LSNetError  # noqa: E402
from ops.transforms import RGB_MEAN, RGB_STD, build_transform  # noqa: E402


class DecodeOnly(torch.utils.data.Dataset):
    """The frames ``TSNDataSet`` would sample, opened and decoded at full size with PIL."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        ds = self.dataset
        record = ds.video_list[index]
        n = ds.num_frames(record)
        numbers = segment_frame_numbers(ds.sample_offsets(n), n, ds.new_length)
        pixels = 0
        for path in ds._frame_paths(record, numbers):
            with Image.open(path) as img:
                pixels += img.convert('RGB').size[0]
        return pixels


def generate(root, list_file, videos, frames, seed=0):
    """Write ``videos`` folders of ``frames`` 340x256 JPEGs (smooth colour fields, a moving disc, noise)."""
    rng = np.random.default_rng(seed)
    h, w = 256, 340
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lines = []
    for v in range(videos):
        name = 'video_{:03d}'.format(v)
        os.makedirs(os.path.join(root, name))
        f = rng.uniform(0.01, 0.05, size=(3, 2))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        for k in range(1, frames + 1):
            img = np.stack([128 + 70 * np.sin(xx * f[c, 0] + phase[c] + 0.05 * k) *
                            np.cos(yy * f[c, 1]) for c in range(3)], -1)
            cx, cy = (40 + 4 * k) % w, h / 2 + 60 * math.sin(0.1 * k + v)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 900] = (230, 40, 40)
            img += rng.normal(0, 6, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                os.path.join(root, name, 'img_{:05d}.jpg'.format(k)), quality=90)
        lines.append('{} {} {}'.format(name, frames, v % 10))
    with open(list_file, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')


def timed_epoch(loader):
    start = time.perf_counter()
    clips = 0
    for batch in loader:
        if isinstance(batch, (list, tuple)):
            prepare_clips(batch[0], 'cpu', norm=(RGB_MEAN, RGB_STD))
            clips += len(batch[1])
        else:
            clips += len(batch)
    return clips, time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root_path', required=True)
    p.add_argument('--list', required=True)
    p.add_argument('--image_tmpl', default='img_{:05d}.jpg')
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--mode', choices=('train', 'val'), default='train')
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--rounds', type=int, default=4, help='interleaved rounds of each loader')
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--generate', action='store_true',
                   help='write 340x256 JPEG frames and the list if --root_path does not exist')
    p.add_argument('--normalize_in_workers', action='store_true',
                   help='normalise to float32 inside the dataset (the loaders then move 4x more bytes)')
    p.add_argument('--videos', type=int, default=32)
    p.add_argument('--frames', type=int, default=48)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        if not os.path.isdir(args.root_path):
            if not args.generate:
                raise LSNetError('--root_path {} does not exist (add --generate to create frames)'
                                 .format(args.root_path))
            generate(args.root_path, args.list, args.videos, args.frames)
            print('generated {} videos x {} frames of 340x256 under {}'.format(
                args.videos, args.frames, args.root_path))
        scale = args.input_size * 256 // 224
        transform = build_transform(args.mode, modality='RGB', new_length=1,
                                    crop_size=args.input_size, scale_size=scale,
                                    mean=RGB_MEAN, std=RGB_STD, normalize=args.normalize_in_workers)
        dataset = TSNDataSet(args.root_path, args.list, num_segments=args.num_segments,
                             image_tmpl=args.image_tmpl, transform=transform,
                             random_shift=(args.mode == 'train'))
        loaders = {}
        for name, ds in (('pipeline', dataset), ('decode', DecodeOnly(dataset))):
            loaders[name] = torch.utils.data.DataLoader(
                ds, batch_size=args.batch_size, num_workers=args.workers, shuffle=False,
                persistent_workers=args.workers > 0)
        for loader in loaders.values():  # warm up workers, caches, page cache
            timed_epoch(loader)
        totals = {name: [0, 0.0] for name in loaders}
        for r in range(args.rounds):
            order = ('pipeline', 'decode') if r % 2 == 0 else ('decode', 'pipeline')
            for name in order:
                clips, seconds = timed_epoch(loaders[name])
                totals[name][0] += clips
                totals[name][1] += seconds
                print('round {} {:8s} {:4d} clips {:7.3f} s {:8.1f} clips/s'.format(
                    r, name, clips, seconds, clips / seconds))
    except LSNetError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    pipe = totals['pipeline'][0] / totals['pipeline'][1]
    dec = totals['decode'][0] / totals['decode'][1]
    print('mode={} workers={} segments={} input={} videos={} output={}: pipeline/decode time ratio'
          ' {:.3f} (target <= 1.25)'.format(args.mode, args.workers, args.num_segments,
                                            args.input_size, len(dataset),
                                            'float32 in workers' if args.normalize_in_workers else 'uint8', dec / pipe))
    print('pipeline_clips_per_s={:.1f} decode_clips_per_s={:.1f}'.format(pipe, dec))
    return 0


if __name__ == '__main__':
    sys.exit(main())
