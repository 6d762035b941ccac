"""Data pipeline throughput against the pure JPEG decode of the same sampled frames.

Runs, in one process and interleaved round by round (order rotating), DataLoaders with the same
``--workers``, batch size, list, sampling mode and clip order:

* pipeline: ``TSNDataSet`` + ``build_transform`` (train: multi-scale crop + resize + flip; val:
  short side → 256 + centre crop 224) handing uint8 batches over, each batch then normalised to
  float32 in the main process (``ops.engine.prepare_clips``) -- exactly what main.py and
  test_models.py do on the CPU; ``--normalize_in_workers`` normalises inside the dataset instead;
* decode (the floor): the same videos and sampling code, each sampled frame opened and decoded at
  full size with PIL -- how the TSM reference reads frames -- and the clip's pixels handed to the
  main process like any loader must: one uint8 ``(F, H, W, 3)`` tensor per clip (the decoded
  arrays stacked), collated into batches.  The main process does nothing with them.
* decode_tv (for information): the same, decoded with the pipeline's own decoder
  (``ops.video_io.read_frames``: torchvision's libjpeg-turbo binding, one call per clip),
  which is faster than PIL on these frames; the pipeline's overhead over its own decoder is
  pipeline time / decode_tv time.

Why the floor hands over pixels: a decode-only loader that returns nothing (the first version of
this tool returned one integer per clip) skips what every loader pays with workers -- copying
each batch into shared memory in the worker and mapping it in the main process -- so with
``--workers 2`` it measured IPC against no IPC.  Handing over the decoded frames charges the floor
for its own output, which is larger than the pipeline's (340×256 vs 224×224 per frame): that is
what "open and decode the sampled frames" in a DataLoader costs.  With ``--workers 0`` it only adds
the stacking copy.

Each timed run draws ``--clips`` clips (the list repeated in order), enough batches for the
workers to reach a steady state.  Prints per-round figures, the ratios pipeline time / decode
time (target ≤ 1.25) and pipeline / decode_tv -- over all rounds, and the median of the per-round
ratios, which a neighbour's burst in one round does not move -- the CPU time per clip of the main
process plus its workers (from ``/proc``; on a shared machine it also grows with contention, but
not with time spent waiting for a core), and as its last line
``pipeline_clips_per_s=<x> decode_clips_per_s=<y>`` (all rounds).

    python tools/bench_data.py --root_path R --list L --image_tmpl img_{:05d}.jpg \\
        --num_segments 8 --mode train --workers 2 [--generate]

``--generate`` writes Kinetics-like 340x256 JPEG frame folders and the list when ``R`` does not exist.
"""
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
from ops.errors import ArgumentParser, LSNetError  # noqa: E402
from ops.transforms import RGB_MEAN, RGB_STD, build_transform  # noqa: E402
from ops.video_io import keep_freed_memory, read_frames  # noqa: E402


class DecodeOnly(torch.utils.data.Dataset):
    """The frames ``TSNDataSet`` would sample, decoded at full size → uint8 ``(F, H, W, 3)``.

    ``decoder='pil'``: ``Image.open`` + ``np.asarray`` per frame, then stacked (the floor);
    ``decoder='tv'``: ``ops.video_io.read_frames`` (the pipeline's decoder, no transform).
    ``pixels=False`` returns the frame count instead (``--no_pixels``; with PIL exactly the
    first version's floor: ``Image.open(path).convert('RGB')`` per frame).
    """

    def __init__(self, dataset, decoder='pil', pixels=True):
        self.dataset = dataset
        self.decoder = decoder
        self.pixels = pixels

    def __len__(self):
        return len(self.dataset)

    def frame_paths(self, index):
        ds = self.dataset
        record = ds.video_list[index]
        n = ds.num_frames(record)
        return ds._frame_paths(record, segment_frame_numbers(ds.sample_offsets(n), n, ds.new_length))

    def __getitem__(self, index):
        keep_freed_memory()  # the same allocator setting as the pipeline's workers
        paths = self.frame_paths(index)
        if self.decoder == 'tv':
            clip = read_frames(paths).permute(0, 2, 3, 1)  # a contiguous (F, H, W, 3) view
            return clip if self.pixels else len(clip)
        if not self.pixels:
            for path in paths:
                with Image.open(path) as img:
                    img.convert('RGB')
            return len(paths)
        frames = []
        for path in paths:
            with Image.open(path) as img:
                frames.append(np.asarray(img if img.mode == 'RGB' else img.convert('RGB')))
        return torch.from_numpy(np.stack(frames))


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


def _proc_stat(pid):
    """``(ppid, utime + stime in clock ticks)`` of a process from ``/proc/<pid>/stat``."""
    with open('/proc/{}/stat'.format(pid)) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_cpu_seconds():
    """CPU time (user + system) used so far by this process and its live descendants (the loader
    workers), read from ``/proc``; None where there is no ``/proc``."""
    if not os.path.isdir('/proc/self'):
        return None
    stats = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                stats[int(name)] = _proc_stat(name)
            except (OSError, ValueError, IndexError):
                pass  # the process ended meanwhile
    family, total = {os.getpid()}, 0
    changed = True
    while changed:
        grown = {pid for pid, (ppid, _) in stats.items() if ppid in family} - family
        family |= grown
        changed = bool(grown)
    for pid in family:
        total += stats.get(pid, (0, 0))[1]
    return total / os.sysconf('SC_CLK_TCK')


def timed_epoch(loader):
    """Iterate ``loader`` once as a training loop would → ``(clips, wall seconds, CPU seconds)``.

    Pipeline batches ``(uint8 clips, labels)`` are normalised to float32 like main.py does;
    decode-only batches (a uint8 tensor) are only counted.  CPU seconds are those of the main
    process and all its workers (None without ``/proc``).
    """
    cpu0 = tree_cpu_seconds()
    start = time.perf_counter()
    clips = 0
    for batch in loader:
        if isinstance(batch, (list, tuple)):
            prepare_clips(batch[0], 'cpu', norm=(RGB_MEAN, RGB_STD))
            clips += len(batch[1])
        else:
            clips += len(batch)
    wall = time.perf_counter() - start
    cpu1 = tree_cpu_seconds()
    return clips, wall, (cpu1 - cpu0 if cpu0 is not None else None)


class RepeatedOrder(torch.utils.data.Sampler):
    """Indices ``0 .. length-1`` repeated in order until ``count`` indices have been drawn."""

    def __init__(self, length, count):
        self.length = length
        self.count = count

    def __iter__(self):
        return (i % self.length for i in range(self.count))

    def __len__(self):
        return self.count


def parse_args(argv):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root_path', required=True)
    p.add_argument('--list', required=True)
    p.add_argument('--image_tmpl', default='img_{:05d}.jpg')
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--mode', choices=('train', 'val'), default='train')
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--rounds', type=int, default=8, help='interleaved rounds of each loader')
    p.add_argument('--clips', type=int, default=128,
                   help='clips per timed run (the list repeated in order)')
    p.add_argument('--input_size', type=int, default=224)
    p.add_argument('--generate', action='store_true',
                   help='write 340x256 JPEG frames and the list if --root_path does not exist')
    p.add_argument('--normalize_in_workers', action='store_true',
                   help='normalise to float32 inside the dataset (the loaders then move 4x more bytes)')
    p.add_argument('--no_pixels', action='store_true',
                   help='decode-only loaders return a count instead of the pixels (the first '
                        "version's floor, for comparison with older figures)")
    p.add_argument('--videos', type=int, default=32)
    p.add_argument('--frames', type=int, default=48)
    return p.parse_args(argv)


def build_loaders(args, dataset):
    """``{name: DataLoader}`` for the pipeline and the decode-only datasets, same order and workers."""
    pixels = not args.no_pixels
    candidates = {'pipeline': dataset, 'decode': DecodeOnly(dataset, 'pil', pixels),
                  'decode_tv': DecodeOnly(dataset, 'tv', pixels)}
    return {name: torch.utils.data.DataLoader(
                ds, batch_size=args.batch_size, num_workers=args.workers,
                sampler=RepeatedOrder(len(ds), args.clips), persistent_workers=args.workers > 0)
            for name, ds in candidates.items()}


def run_rounds(loaders, rounds):
    """Time every loader once per round, rotating the order → ``{name: [(clips, wall s, CPU s)]}``."""
    for loader in loaders.values():  # warm up workers, caches, page cache
        timed_epoch(loader)
    names = list(loaders)
    runs = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            clips, wall, cpu = timed_epoch(loaders[name])
            runs[name].append((clips, wall, cpu))
            print('round {} {:9s} {:4d} clips {:7.3f} s {:8.1f} clips/s  CPU {}'.format(
                r, name, clips, wall, clips / wall,
                '-' if cpu is None else '{:.2f} ms/clip'.format(1e3 * cpu / clips)))
    return runs


def paired_ratio(runs, a, b):
    """Median over rounds of (time per clip of ``a``) / (time per clip of ``b``) in the same round."""
    return float(np.median([(wa / ca) / (wb / cb) for (ca, wa, _), (cb, wb, _) in zip(runs[a], runs[b])]))


def report(args, n_videos, runs):
    """Print the ratios (wall time, and CPU time of main process + workers) and the last line."""
    totals = {name: [sum(r[i] for r in rs) for i in (0, 1)] for name, rs in runs.items()}
    rate = {name: clips / wall for name, (clips, wall) in totals.items()}
    print('mode={} workers={} segments={} input={} videos={} output={} floor={}'.format(
        args.mode, args.workers, args.num_segments, args.input_size, n_videos,
        'float32 in workers' if args.normalize_in_workers else 'uint8',
        'count only' if args.no_pixels else 'pixels'))
    print('wall time ratio pipeline/decode {:.3f} (target <= 1.25), median of rounds {:.3f}; '
          'pipeline/decode_tv {:.3f}, median {:.3f}'.format(
              rate['decode'] / rate['pipeline'], paired_ratio(runs, 'pipeline', 'decode'),
              rate['decode_tv'] / rate['pipeline'], paired_ratio(runs, 'pipeline', 'decode_tv')))
    if all(cpu is not None for rs in runs.values() for _, _, cpu in rs):
        cpu = {name: sum(r[2] for r in rs) / sum(r[0] for r in rs) for name, rs in runs.items()}
        print('CPU ms per clip (main + workers): pipeline {:.2f} decode {:.2f} decode_tv {:.2f}; '
              'CPU time ratio pipeline/decode {:.3f}; pipeline/decode_tv {:.3f}'.format(
                  1e3 * cpu['pipeline'], 1e3 * cpu['decode'], 1e3 * cpu['decode_tv'],
                  cpu['pipeline'] / max(cpu['decode'], 1e-9),
                  cpu['pipeline'] / max(cpu['decode_tv'], 1e-9)))
    print('pipeline_clips_per_s={:.1f} decode_clips_per_s={:.1f}'.format(rate['pipeline'], rate['decode']))


def main(argv=None):
    args = parse_args(argv)
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
        runs = run_rounds(build_loaders(args, dataset), args.rounds)
    except LSNetError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    report(args, len(dataset), runs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
