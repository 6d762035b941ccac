"""Extract JPEG frames from Something-Something V2.

Input: ``SRC/<id>.webm``.  Output: ``OUT/<id>/000001.jpg ...`` (the template the somethingv2
dataset config uses).

    python tools/vid2img_sthv2.py 20bn-something-something-v2 20bn-something-something-v2-frames -j 8

Frames are 256 pixels high (width proportional) at the finest JPEG quantiser, as the TSM reference
extracts them: the frames the Something-Something V2 model-zoo checkpoints were trained and tested
on.  ``--height`` / ``--short_side`` / ``--quality`` change that.

Resumable: finished videos are skipped, interrupted ones redone.  Exit status 1 when some videos
failed to decode (they are listed), 2 on a usage error.
"""

import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import ArgumentParser  # noqa: E402
from tools.extract_frames import add_common_args, extract_cli, flat_jobs  # noqa: E402

# the frame height of the TSM reference's extraction (ffmpeg -vf scale=-1:256 -q:v 0): the frames the
# model-zoo checkpoints were trained and tested on
REFERENCE_HEIGHT = 256
FRAME_TMPL = '{:06d}.jpg'


def build_parser():
    parser = ArgumentParser(description='Something-Something V2 videos -> frame folders '
                                                 '(<out>/<id>/000001.jpg)')
    return add_common_args(parser, default_height=REFERENCE_HEIGHT)


def main(argv=None):
    return extract_cli(build_parser(), argv, flat_jobs, FRAME_TMPL)  # <id>.webm -> out/<id>/


if __name__ == '__main__':
    sys.exit(main())
