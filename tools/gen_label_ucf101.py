"""UCF101 list files from the official split files.

Reads ``classInd.txt`` (``<1-based index> <class>``), ``trainlist0N.txt``
(``<class>/v_<...>.avi <index>``) and ``testlist0N.txt`` (``<class>/v_<...>.avi``; the class comes
from the folder part), finds each video's frame folder under ``--frame_root`` as
``<class>/<video>`` or ``<video>``, and writes ``ucf101_<rgb|flow>_train_split_N.txt``,
``ucf101_<rgb|flow>_val_split_N.txt`` (the names the ucf101 dataset config uses) and
``category.txt`` into ``--out_dir``.  RGB counts ``img_*`` frames, Flow counts ``flow_x_*``.

    python tools/gen_label_ucf101.py --split_dir UCF101/ucfTrainTestlist --frame_root UCF101/jpg \\
        --out_dir UCF101/file_list --splits 1 2 3
"""

import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import LSNetError  # noqa: E402
from tools.label_common import ListBuilder, base_parser, read_lines, run, write_categories, write_list  # noqa: E402

FRAME_PREFIX = {'RGB': 'img_', 'Flow': 'flow_x_'}


def read_class_ind(path):
    """Class names in label order from ``classInd.txt`` (indices must be 1..K)."""
    pairs = []
    for line_num, text in read_lines(path, 'classInd.txt'):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise LSNetError('%s:%d: expected "<index> <class>", got %r' % (path, line_num, text))
        pairs.append((int(parts[0]), parts[1]))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(1, len(pairs) + 1)):
        raise LSNetError('%s: class indices are not 1..%d' % (path, len(pairs)))
    return [name for _, name in pairs]


def video_candidates(rel_video):
    """``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi`` -> frame folders to try."""
    rel = rel_video.replace('\\', '/')
    stem = os.path.splitext(rel)[0]
    return [stem, os.path.basename(stem)]


def read_split_list(path, lower_index, labelled):
    """``[(candidates, label)]`` from a trainlist (``labelled``: index column) or testlist file."""
    rows = []
    for line_num, text in read_lines(path, 'split list'):
        parts = text.split()
        rel = parts[0]
        folder = rel.replace('\\', '/').split('/')[0].lower()
        # The class is taken from the folder; classInd spells one class differently in case
        # ("HandstandPushups"), hence the case-insensitive lookup.
        if folder not in lower_index:
            raise LSNetError('%s:%d: class folder %r is not in classInd.txt' % (path, line_num, folder))
        label = lower_index[folder]
        if labelled and len(parts) >= 2:
            if not parts[1].isdigit() or int(parts[1]) - 1 != label:
                raise LSNetError('%s:%d: index %s does not match class %r'
                                 % (path, line_num, parts[1], rel.split('/')[0]))
        rows.append((video_candidates(rel), label))
    return rows


def generate(args):
    categories = read_class_ind(os.path.join(args.split_dir, 'classInd.txt'))
    lower_index = {c.lower(): i for i, c in enumerate(categories)}
    write_categories(args.out_dir, categories)
    mod = args.modality.lower()
    for split in args.splits:
        for src, kind, labelled in (('trainlist%02d.txt' % split, 'train', True),
                                    ('testlist%02d.txt' % split, 'val', False)):
            rows = read_split_list(os.path.join(args.split_dir, src), lower_index, labelled)
            builder = ListBuilder(args.frame_root, prefix=FRAME_PREFIX[args.modality])
            for candidates, label in rows:
                builder.add(candidates, label)
            write_list(args.out_dir, 'ucf101_%s_%s_split_%d.txt' % (mod, kind, split), builder)


def build_parser():
    parser = base_parser('UCF101 split files + frame folders -> ucf101_rgb_{train,val}_split_N.txt')
    parser.add_argument('--split_dir', required=True,
                        help='folder with classInd.txt, trainlist0N.txt, testlist0N.txt')
    parser.add_argument('--splits', type=int, nargs='+', default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument('--modality', choices=('RGB', 'Flow'), default='RGB')
    return parser


def main(argv=None):
    return run(generate, argv, build_parser())


if __name__ == '__main__':
    sys.exit(main())
