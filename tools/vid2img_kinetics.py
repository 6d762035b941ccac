"""Extract JPEG frames from a Kinetics split.

Input: ``SRC/<class name>/<youtube_id>_<start>_<end>.mp4`` (one split, e.g. ``kinetics/train``;
videos lying directly in ``SRC``, like the unlabelled test split, are handled too).
Output: ``OUT/<class>/<video>/img_00001.jpg ...`` where ``<class>`` is the class name with spaces
turned into underscores and quotes/brackets dropped (list files are split on spaces), the names
``gen_label_kinetics.py`` looks for.

    python tools/vid2img_kinetics.py kinetics/videos/train kinetics/images/train --short_side 320 -j 8

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
from tools.label_common import kinetics_class_name  # noqa: E402

FRAME_TMPL = 'img_{:05d}.jpg'


def kinetics_jobs(src, out):
    """One :class:`Job` per video: ``src/<class>/<v>.mp4`` -> ``out/<clean class>/<v>``."""
    jobs = [Job(os.path.join(src, name), os.path.join(out, os.path.splitext(name)[0]))
            for name in list_videos(src)]
    for cls in sorted(os.listdir(src)):
        cls_dir = os.path.join(src, cls)
        if not os.path.isdir(cls_dir):
            continue
        dst_cls = os.path.join(out, kinetics_class_name(cls))
        jobs += [Job(os.path.join(cls_dir, name), os.path.join(dst_cls, os.path.splitext(name)[0]))
                 for name in list_videos(cls_dir)]
    return jobs


def build_parser():
    parser = argparse.ArgumentParser(description='Kinetics videos -> frame folders '
                                                 '(<out>/<class>/<video>/img_00001.jpg)')
    return add_common_args(parser, default_short_side=320)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_common_args(args)
        jobs = kinetics_jobs(args.src, args.out)
        if not jobs:
            raise LSNetError('no video files in %s or its class folders (pass one split folder, '
                             'e.g. kinetics/videos/train)' % args.src)
        return run_cli(args, jobs, FRAME_TMPL)
    except LSNetError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
