"""HMDB51 list files from the official split files.

Reads ``<class>_test_split<N>.txt`` files (``<video>.avi <flag>`` per line: 1 = train, 2 = test,
0 = unused); classes are the sorted class names of those files.  Each video's frame folder is
``<class>/<video>`` or ``<video>`` under ``--frame_root``.  Writes
``hmdb51_<rgb|flow>_train_split_N.txt``, ``hmdb51_<rgb|flow>_val_split_N.txt`` (the names the
hmdb51 dataset config uses) and ``category.txt`` into ``--out_dir``.

    python tools/gen_label_hmdb51.py --split_dir HMDB51/testTrainMulti_7030_splits \\
        --frame_root HMDB51/images --out_dir HMDB51/splits --splits 1 2 3
"""

import os
import re
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import LSNetError  # noqa: E402
from tools.label_common import ListBuilder, base_parser, read_lines, run, write_categories, write_list  # noqa: E402

FRAME_PREFIX = {'RGB': 'img_', 'Flow': 'flow_x_'}
SPLIT_FILE = re.compile(r'^(.+)_test_split(\d)\.txt$')


def find_split_files(split_dir):
    """``{split number: {class: path}}`` of every ``<class>_test_split<N>.txt`` in ``split_dir``."""
    if not os.path.isdir(split_dir):
        raise LSNetError('--split_dir folder not found: %s' % split_dir)
    found = {}
    for name in sorted(os.listdir(split_dir)):
        m = SPLIT_FILE.match(name)
        if m:
            found.setdefault(int(m.group(2)), {})[m.group(1)] = os.path.join(split_dir, name)
    if not found:
        raise LSNetError('no <class>_test_split<N>.txt files in %s' % split_dir)
    return found


def read_split_file(path):
    """``[(video_file, flag)]`` with flag 0 (unused), 1 (train) or 2 (test)."""
    rows = []
    for line_num, text in read_lines(path, 'split file'):
        parts = text.split()
        if len(parts) != 2 or parts[1] not in ('0', '1', '2'):
            raise LSNetError('%s:%d: expected "<video> <0|1|2>", got %r' % (path, line_num, text))
        rows.append((parts[0], int(parts[1])))
    return rows


def generate(args):
    found = find_split_files(args.split_dir)
    categories = sorted(found[min(found)])
    write_categories(args.out_dir, categories)
    mod = args.modality.lower()
    for split in args.splits:
        files = found.get(split, {})
        if sorted(files) != categories:
            raise LSNetError('%s: split %d files do not cover the same %d classes'
                             % (args.split_dir, split, len(categories)))
        builders = {1: ListBuilder(args.frame_root, FRAME_PREFIX[args.modality]),
                    2: ListBuilder(args.frame_root, FRAME_PREFIX[args.modality])}
        for label, cls in enumerate(categories):
            for video, flag in read_split_file(files[cls]):
                if flag in builders:
                    stem = os.path.splitext(video)[0]
                    builders[flag].add([os.path.join(cls, stem), stem], label)
        write_list(args.out_dir, 'hmdb51_%s_train_split_%d.txt' % (mod, split), builders[1])
        write_list(args.out_dir, 'hmdb51_%s_val_split_%d.txt' % (mod, split), builders[2])


def build_parser():
    parser = base_parser('HMDB51 split files + frame folders -> hmdb51_rgb_{train,val}_split_N.txt')
    parser.add_argument('--split_dir', required=True, help='folder with <class>_test_split<N>.txt files')
    parser.add_argument('--splits', type=int, nargs='+', default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument('--modality', choices=('RGB', 'Flow'), default='RGB')
    return parser


def main(argv=None):
    return run(generate, argv, build_parser())


if __name__ == '__main__':
    sys.exit(main())
