"""Extract JPEG frames from a Kinetics split.

Input: ``SRC/<class name>/<youtube_id>_<start>_<end>.mp4`` (one split, e.g. ``kinetics/train``;
videos lying directly in ``SRC``, like the unlabelled test split, are handled too).
Output: ``OUT/<class>/<video>/img_00001.jpg ...`` where ``<class>`` is the class name with spaces
turned into underscores and quotes/brackets dropped (list files are split on spaces), the names
``gen_label_kinetics.py`` looks for.

    python tools/vid2img_kinetics.py kinetics/videos/train kinetics/images/train -j 8

Frames are 331 pixels high (width proportional) at the finest JPEG quantiser, as the TSM
reference extracts them: the frames the Kinetics model-zoo checkpoints were trained and tested on
(frames of another size score lower with them).  ``--height`` / ``--short_side`` / ``--quality``
change that.

Resumable: finished videos are skipped, interrupted ones redone.  Exit status 1 when some videos
failed to decode (they are listed), 2 on a usage error.
"""

import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import ArgumentParser  # noqa: E402
from tools.extract_frames import add_common_args, extract_cli, flat_jobs  # noqa: E402
from tools.label_common import kinetics_class_name  # noqa: E402

# the frame height of the TSM reference's extraction (ffmpeg -vf scale=-1:331 -q:v 0): the frames the
# model-zoo checkpoints were trained and tested on
REFERENCE_HEIGHT = 331
FRAME_TMPL = 'img_{:05d}.jpg'


def kinetics_jobs(src, out):
    """One :class:`Job` per video: ``src/<class>/<v>.mp4`` -> ``out/<clean class>/<v>``."""
    jobs = flat_jobs(src, out)
    for cls in sorted(os.listdir(src)):
        cls_dir = os.path.join(src, cls)
        if os.path.isdir(cls_dir):
            jobs += flat_jobs(cls_dir, os.path.join(out, kinetics_class_name(cls)))
    return jobs


def build_parser():
    parser = ArgumentParser(description='Kinetics videos -> frame folders '
                                                 '(<out>/<class>/<video>/img_00001.jpg)')
    return add_common_args(parser, default_height=REFERENCE_HEIGHT)


def main(argv=None):
    return extract_cli(build_parser(), argv, kinetics_jobs, FRAME_TMPL,
                       hint=' or its class folders (pass one split folder, e.g. kinetics/videos/train)')


if __name__ == '__main__':
    sys.exit(main())
