"""Jester list files from the official CSVs.

Same format as Something-Something V1: ``jester-v1-labels.csv`` (one class per line; sorted by
name), ``jester-v1-train.csv`` / ``jester-v1-validation.csv`` with ``<id>;<class>`` lines, frames in
``<frame_root>/<id>/00001.jpg ...``.  Writes ``category.txt``, ``train_videofolder.txt`` and
``val_videofolder.txt`` into ``--out_dir``.

    python tools/gen_label_jester.py --anno_dir jester --frame_root jester/20bn-jester-v1 --out_dir jester
"""

import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.gen_label_sthv1 import build_parser, generate_id_label  # noqa: E402
from tools.label_common import run  # noqa: E402


def main(argv=None):
    prefix = 'jester-v1'
    return run(lambda args: generate_id_label(args, prefix), argv, build_parser('Jester', prefix))


if __name__ == '__main__':
    sys.exit(main())
