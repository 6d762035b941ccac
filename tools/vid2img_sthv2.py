"""Extract JPEG frames from Something-Something V2.

Input: ``SRC/<id>.webm``.  Output: ``OUT/<id>/000001.jpg ...`` (the template the somethingv2
dataset config uses).

    python tools/vid2img_sthv2.py 20bn-something-something-v2 20bn-something-something-v2-frames -j 8

Resumable: finished videos are skipped, interrupted ones redone.  Exit status 1 when some videos
failed to decode (they are listed), 2 on a usage error.
"""

import argparse
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import LSNetError  # noqa: E402
from tools.extract_frames import Job, add_common_args, check_common_args, list_videos, run_cli  # noqa: E402

FRAME_TMPL = '{:06d}.jpg'


def sthv2_jobs(src, out):
    """One :class:`Job` per video: ``src/<id>.webm`` -> ``out/<id>``."""
    return [Job(os.path.join(src, name), os.path.join(out, os.path.splitext(name)[0]))
            for name in list_videos(src)]


def build_parser():
    parser = argparse.ArgumentParser(description='Something-Something V2 videos -> frame folders '
                                                 '(<out>/<id>/000001.jpg)')
    return add_common_args(parser, default_short_side=256)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_common_args(args)
        jobs = sthv2_jobs(args.src, args.out)
        if not jobs:
            raise LSNetError('no video files in %s' % args.src)
        return run_cli(args, jobs, FRAME_TMPL)
    except LSNetError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
