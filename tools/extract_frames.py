"""Decode videos into JPEG frame folders (shared by ``vid2img_kinetics.py`` and ``vid2img_sthv2.py``).

Each video becomes one folder of numbered JPEGs (``img_00001.jpg``, ``000001.jpg``, ...; frame 1
first).  Frames are written into ``<folder>.tmp`` and the folder is renamed into place only when
the video decoded completely, so:

- a folder that exists is a finished video and is skipped on the next run;
- a ``.tmp`` folder is a run that was interrupted: it is deleted and the video redone.

Decoding uses the ``ffmpeg`` command line when it is on ``PATH`` and PyAV otherwise (PyAV wheels
bundle FFmpeg, so no system package is needed).  Both write the same kind of JPEG: FFmpeg's MJPEG
encoder at a fixed quantiser ``-q:v`` (PyAV runs that encoder in-process), after a bicubic resize.
Videos are processed in parallel processes (``jobs``); a video that fails to decode is reported in
the summary and does not stop the others.

Size: ``--height H`` scales every frame to height ``H`` (width proportional), as the TSM
reference's scripts do (``ffmpeg -vf scale=-1:H -q:v 0``: Kinetics at 331, Something-Something V2
at 256), which is what the model-zoo checkpoints were trained and tested on; ``--short_side S``
scales the shorter side instead.  Quality 100 (the default) is FFmpeg's finest default quantiser,
``-q:v 2``, the one the reference's ``-q:v 0`` is clipped to.
"""

import dataclasses
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import ArgumentParser, LSNetError, make_folder  # noqa: E402

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov', '.flv', '.m4v')
TMP_SUFFIX = '.tmp'


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
    """How to turn one video into frames.

    ``short_side``: resize so the shorter image side has this many pixels (0 keeps the size).
    ``height``: resize so the height is this many pixels, width proportional (0: see short_side).
    ``quality``: JPEG quality 1-100, mapped onto ffmpeg's ``-q:v`` 31..2 (100: ``-q:v 2``, the best).
    ``fps``: resample to this frame rate (0 keeps every decoded frame).
    ``tmpl``: file-name template with one integer field, numbered from 1.
    ``backend``: ``'auto'`` (ffmpeg if on PATH, else PyAV), ``'ffmpeg'`` or ``'pyav'``.
    """
    tmpl: str = 'img_{:05d}.jpg'
    short_side: int = 0
    quality: int = 100
    height: int = 0
    fps: float = 0.0
    backend: str = 'auto'


@dataclasses.dataclass(frozen=True)
class Job:
    """One video to extract into ``dst`` (the final frame folder)."""
    src: str
    dst: str


@dataclasses.dataclass
class Result:
    """Outcome of one job: ``status`` is ``'done'``, ``'skipped'`` or ``'failed'``."""
    src: str
    dst: str
    status: str
    num_frames: int = 0
    error: str = ''


def resolve_backend(backend):
    """``'auto'`` -> ``'ffmpeg'`` when the ffmpeg binary is on PATH, else ``'pyav'``."""
    if backend == 'auto':
        return 'ffmpeg' if shutil.which('ffmpeg') else 'pyav'
    if backend == 'ffmpeg' and not shutil.which('ffmpeg'):
        raise LSNetError('--backend ffmpeg: no ffmpeg executable on PATH (use --backend pyav)')
    if backend not in ('ffmpeg', 'pyav'):
        raise LSNetError('--backend must be auto, ffmpeg or pyav, not %r' % backend)
    return backend


def resized_size(width, height, short_side, target_height=0):
    """(w, h) with the height scaled to ``target_height`` (width rounded to nearest, as ffmpeg's
    ``scale=-1:H``), else the short side to ``short_side`` (even sizes, aspect kept); 0 keeps it."""
    if target_height:
        return max((2 * width * target_height + height) // (2 * height), 1), target_height
    if not short_side:
        return width, height
    if width <= height:
        new_w = short_side
        new_h = int(round(height * short_side / width / 2.0)) * 2
    else:
        new_h = short_side
        new_w = int(round(width * short_side / height / 2.0)) * 2
    return max(new_w, 2), max(new_h, 2)


def ffmpeg_quality(quality):
    """Map a PIL-style JPEG quality (1-100) onto ffmpeg's ``-q:v`` (31 worst .. 2 best)."""
    return int(round(31 - (min(max(quality, 1), 100) - 1) * 29 / 99.0))


def count_frames(folder, tmpl):
    """Number of files in ``folder`` named like ``tmpl`` (same prefix and extension)."""
    prefix, _, rest = tmpl.partition('{')
    ext = os.path.splitext(rest)[1]
    return sum(1 for name in os.listdir(folder) if name.startswith(prefix) and name.endswith(ext))


def _extract_ffmpeg(src, tmp_dir, opts):
    filters = []
    if opts.fps:
        filters.append('fps=%g' % opts.fps)
    if opts.height:
        filters.append('scale=-1:%d' % opts.height)  # the reference's filter
    elif opts.short_side:
        s = opts.short_side
        # Short side to s, other side even and proportional.
        filters.append("scale='if(gt(iw,ih),-2,%d)':'if(gt(iw,ih),%d,-2)'" % (s, s))
    pattern = os.path.join(tmp_dir, opts.tmpl.replace('{:0', '%0').replace('d}', 'd'))
    cmd = ['ffmpeg', '-nostdin', '-hide_banner', '-loglevel', 'error', '-threads', '1', '-i', src]
    if filters:
        cmd += ['-vf', ','.join(filters)]
    cmd += ['-q:v', str(ffmpeg_quality(opts.quality)), '-start_number', '1', pattern]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else 'ffmpeg exited with %d' % proc.returncode)
    return count_frames(tmp_dir, opts.tmpl)


def _jpeg_encoder(width, height, quality):
    """FFmpeg's MJPEG encoder with the fixed quantiser ``-q:v ffmpeg_quality(quality)``."""
    import av
    enc = av.CodecContext.create('mjpeg', 'w')
    enc.width, enc.height, enc.pix_fmt = width, height, 'yuvj420p'
    enc.time_base = Fraction(1, 25)
    enc.qscale = True  # fixed quantiser, as -q:v sets it
    enc.qmin = enc.qmax = ffmpeg_quality(quality)
    return enc


def _extract_pyav(src, tmp_dir, opts):
    import av  # imported here so the ffmpeg path needs no PyAV

    written = 0
    enc = None

    def write(packets):
        nonlocal written
        for packet in packets:
            written += 1
            with open(os.path.join(tmp_dir, opts.tmpl.format(written)), 'wb') as f:
                f.write(bytes(packet))

    with av.open(src) as container:
        if not container.streams.video:
            raise RuntimeError('no video stream')
        stream = container.streams.video[0]
        stream.thread_type = 'AUTO'
        stream.codec_context.thread_count = 1
        step = Fraction(1) / Fraction(opts.fps).limit_denominator(1001) if opts.fps else None
        next_time = None
        size = None
        rate = Fraction(stream.average_rate or 25)
        for index, frame in enumerate(container.decode(stream)):
            if step is not None:
                # Keep the first frame at or after each multiple of 1/fps (like ffmpeg's fps filter,
                # without its frame duplication when the target rate is higher than the source).
                if frame.pts is not None and stream.time_base is not None:
                    t = Fraction(frame.pts * stream.time_base)
                else:
                    t = index / rate
                if next_time is None:
                    next_time = t
                if t + Fraction(1, 1000000) < next_time:
                    continue
                next_time += step * max(1, math.floor((t - next_time) / step) + 1)
            if size is None:
                size = resized_size(frame.width, frame.height, opts.short_side, opts.height)
                enc = _jpeg_encoder(size[0], size[1], opts.quality)
            image = frame.reformat(width=size[0], height=size[1], format='yuvj420p', interpolation='BICUBIC')
            image.pts, image.time_base = index, enc.time_base  # encoder timestamps: frame numbers
            write(enc.encode(image))
    if enc is not None:
        write(enc.encode(None))
    return written


def extract_one(job, opts):
    """Extract ``job.src`` into ``job.dst`` via ``job.dst + '.tmp'``; returns a :class:`Result`.

    Never raises for a bad video: the error text goes into the result.
    """
    if os.path.isdir(job.dst):
        return Result(job.src, job.dst, 'skipped', count_frames(job.dst, opts.tmpl))
    tmp_dir = job.dst + TMP_SUFFIX
    if os.path.exists(tmp_dir):
        shutil.rmtree(tmp_dir)  # left by an interrupted run
    os.makedirs(tmp_dir)
    try:
        backend = resolve_backend(opts.backend)
        extract = _extract_ffmpeg if backend == 'ffmpeg' else _extract_pyav
        n = extract(job.src, tmp_dir, opts)
        if n == 0:
            raise RuntimeError('no frames decoded')
    except Exception as exc:  # any decoder error: report this video, keep going with the others
        shutil.rmtree(tmp_dir, ignore_errors=True)
        msg = str(exc).strip().splitlines()
        return Result(job.src, job.dst, 'failed', 0,
                      '%s: %s' % (type(exc).__name__, msg[0] if msg else ''))
    os.rename(tmp_dir, job.dst)
    return Result(job.src, job.dst, 'done', n)


def _worker(args):
    job, opts = args
    return extract_one(job, opts)


def run_jobs(jobs, opts, num_workers=1, progress=True):
    """Extract every job (``num_workers`` processes; the output folders exist); returns the results in job order."""
    from tqdm import tqdm

    jobs = list(jobs)
    bar = tqdm(total=len(jobs), unit='video', disable=not progress, file=sys.stderr)
    results = {}
    try:
        if num_workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                results[job] = extract_one(job, opts)
                bar.update(1)
        else:
            # Not 'fork': a process that has already decoded (PyAV's decoder threads) or run torch can
            # hold a lock at the fork, and a forked worker then waits on it forever. A fork server
            # starts clean, once, and forks the workers from there.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context('forkserver' if 'forkserver' in methods else 'spawn')
            with ctx.Pool(min(num_workers, len(jobs))) as pool:
                for res in pool.imap_unordered(_worker, [(j, opts) for j in jobs], chunksize=1):
                    results[Job(res.src, res.dst)] = res
                    bar.update(1)
    finally:
        bar.close()
    return [results[j] for j in jobs]


def summarize(results, out=None):
    """Print counts and every failure (to ``out``, default stdout); returns the number failed."""
    out = out or sys.stdout
    done = sum(r.status == 'done' for r in results)
    skipped = sum(r.status == 'skipped' for r in results)
    failed = [r for r in results if r.status == 'failed']
    frames = sum(r.num_frames for r in results if r.status == 'done')
    print('extracted %d videos (%d frames), skipped %d already done, failed %d'
          % (done, frames, skipped, len(failed)), file=out)
    for r in failed:
        print('failed: %s (%s)' % (r.src, r.error), file=out)
    return len(failed)


def list_videos(folder):
    """Sorted video file names directly inside ``folder``."""
    return sorted(n for n in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, n)) and n.lower().endswith(VIDEO_EXTENSIONS))


def add_common_args(parser, default_short_side=0, default_height=0):
    """The extraction flags every vid2img tool shares; a tool's default size is a height
    (``default_height``, the reference's) or a short side."""
    parser.add_argument('src', help='folder of videos')
    parser.add_argument('out', help='folder for the frame folders')
    parser.add_argument('--height', type=int, default=None,
                        help='resize every frame to this height, width proportional, as the TSM reference '
                             'does; 0 keeps the size (default %s)' % (default_height or 'none: see --short_side'))
    parser.add_argument('--short_side', type=int, default=None,
                        help='resize the short side to this many pixels instead of --height; 0 keeps the size '
                             '(default %s)' % (default_short_side if not default_height else 'none: see --height'))
    parser.set_defaults(default_height=default_height, default_short_side=default_short_side)
    parser.add_argument('--quality', type=int, default=100,
                        help='JPEG quality 1-100, mapped onto ffmpeg -q:v 31..2; 100 is -q:v 2, the finest '
                             'and the reference\'s (default %(default)s)')
    parser.add_argument('--fps', type=float, default=0.0,
                        help='resample to this frame rate; 0 keeps every frame (default)')
    parser.add_argument('--jobs', '-j', type=int, default=max(1, (os.cpu_count() or 1)),
                        help='parallel processes (default: number of CPUs)')
    parser.add_argument('--backend', choices=('auto', 'ffmpeg', 'pyav'), default='auto',
                        help='auto: ffmpeg when on PATH, else PyAV (default)')
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    parser.add_argument('--failed_list', default='',
                        help='also write the failed video paths to this file')
    return parser


def check_common_args(args):
    """Raise LSNetError naming the flag for an out-of-range value."""
    if not os.path.isdir(args.src):
        raise LSNetError('video folder not found: %s' % args.src)
    for flag, value in (('--short_side', args.short_side), ('--height', args.height)):
        if value is not None and value < 0:
            raise LSNetError('%s must be >= 0, got %d' % (flag, value))
    if args.short_side is not None and args.height is not None:
        raise LSNetError('--short_side and --height do not combine: give one')
    if not 1 <= args.quality <= 100:
        raise LSNetError('--quality must be in 1..100, got %d' % args.quality)
    if args.fps < 0:
        raise LSNetError('--fps must be >= 0, got %g' % args.fps)
    if args.jobs < 1:
        raise LSNetError('--jobs must be >= 1, got %d' % args.jobs)
    if args.failed_list and (os.path.isdir(args.failed_list) or
                             not os.path.isdir(os.path.dirname(os.path.abspath(args.failed_list)))):
        raise LSNetError('--failed_list %s: give a file in an existing folder' % args.failed_list)
    resolve_backend(args.backend)


def check_template(tmpl):
    """A template must hold exactly one zero-padded integer field such as ``{:05d}``."""
    if not re.fullmatch(r'[^{}]*\{:0\d+d\}[^{}]*', tmpl):
        raise LSNetError('--tmpl must contain one field like {:05d}, got %r' % tmpl)


def frame_size_flags(args):
    """``(short_side, height)`` from ``--short_side`` / ``--height``, else the tool's default."""
    if args.height is not None:
        return 0, args.height
    if args.short_side is not None:
        return args.short_side, 0
    return (0, args.default_height) if args.default_height else (args.default_short_side, 0)


def run_cli(args, jobs, tmpl):
    """Run ``jobs`` with the parsed common flags; returns the exit status (1 if any video failed)."""
    short_side, height = frame_size_flags(args)
    opts = ExtractOptions(tmpl=tmpl, short_side=short_side, height=height, quality=args.quality,
                          fps=args.fps, backend=args.backend)
    for parent in sorted({os.path.dirname(j.dst) for j in jobs}):
        make_folder(parent, 'cannot create output folder %s' % parent)
    size = 'height %d' % height if height else 'short side %d' % short_side if short_side else 'original size'
    print('%d videos, backend %s, %d jobs, %s, quality %d (-q:v %d)' % (
        len(jobs), resolve_backend(args.backend), args.jobs, size, args.quality, ffmpeg_quality(args.quality)),
        file=sys.stderr)
    results = run_jobs(jobs, opts, num_workers=args.jobs, progress=not args.no_progress)
    n_failed = summarize(results)
    if args.failed_list:
        with open(args.failed_list, 'w') as f:
            f.writelines(r.src + '\n' for r in results if r.status == 'failed')
    return 1 if n_failed else 0


def flat_jobs(src, out):
    """One :class:`Job` per video directly inside ``src``: ``src/<v>.<ext>`` -> ``out/<v>``."""
    return [Job(os.path.join(src, n), os.path.join(out, os.path.splitext(n)[0])) for n in list_videos(src)]


def extract_cli(parser, argv, make_jobs, tmpl=None, hint=''):
    """Parse ``argv``, list the jobs with ``make_jobs(src, out)`` and run them.

    ``tmpl`` is the frame template (``None``: the ``--tmpl`` flag). Returns the exit status; a usage
    error prints one ``error:`` line and returns 2.
    """
    args = parser.parse_args(argv)
    try:
        check_common_args(args)
        tmpl = tmpl or args.tmpl
        check_template(tmpl)
        jobs = make_jobs(args.src, args.out)
        if not jobs:
            raise LSNetError('no video files in %s%s' % (args.src, hint))
        return run_cli(args, jobs, tmpl)
    except LSNetError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 2


def main(argv=None):
    """Generic CLI: every video directly inside ``src`` -> ``out/<name>/`` with ``--tmpl``."""
    parser = add_common_args(ArgumentParser(description=__doc__.splitlines()[0]), 0)
    parser.add_argument('--tmpl', default='img_{:05d}.jpg', help='frame file template')
    return extract_cli(parser, argv, flat_jobs)


if __name__ == '__main__':
    sys.exit(main())
