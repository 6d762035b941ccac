"""Something-Something V1 list files from the official CSVs.

Reads ``something-something-v1-labels.csv`` (one class per line; classes are sorted by name, as
the reference does), ``-train.csv`` and ``-validation.csv`` (``<id>;<class>`` per line), counts the
frames of ``<frame_root>/<id>/`` (``00001.jpg ...``) and writes ``category.txt``,
``train_videofolder.txt`` and ``val_videofolder.txt`` into ``--out_dir``.

    python tools/gen_label_sthv1.py --anno_dir something/v1 \\
        --frame_root something/v1/20bn-something-something-v1 --out_dir something/v1
"""

import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import LSNetError  # noqa: E402
from tools.label_common import (ListBuilder, base_parser, category_index, read_lines, run,  # noqa: E402
                                write_categories, write_list)


def read_id_label_csv(path, index):
    """``[(video_id, label)]`` from ``<id>;<class>`` lines; LSNetError naming file:line if bad."""
    rows = []
    for line_num, text in read_lines(path, 'annotation CSV'):
        parts = text.split(';')
        if len(parts) != 2 or not parts[0].strip():
            raise LSNetError('%s:%d: expected "<id>;<class>", got %r' % (path, line_num, text))
        vid, cls = parts[0].strip(), parts[1].strip()
        if cls not in index:
            raise LSNetError('%s:%d: class %r is not in the labels file' % (path, line_num, cls))
        rows.append((vid, index[cls]))
    return rows


def generate_id_label(args, prefix):
    """Shared by Something V1 and Jester: official ``<prefix>-{labels,train,validation}.csv``."""
    labels = args.labels or os.path.join(args.anno_dir, '%s-labels.csv' % prefix)
    categories = sorted(t for _, t in read_lines(labels, 'labels file'))
    index = category_index(categories, labels)
    splits = [(args.train or os.path.join(args.anno_dir, '%s-train.csv' % prefix), 'train_videofolder.txt'),
              (args.val or os.path.join(args.anno_dir, '%s-validation.csv' % prefix), 'val_videofolder.txt')]
    rows = [read_id_label_csv(path, index) for path, _ in splits]
    write_categories(args.out_dir, categories)
    for (_, out_name), split_rows in zip(splits, rows):
        builder = ListBuilder(args.frame_root)
        for vid, label in split_rows:
            builder.add([vid], label)
        write_list(args.out_dir, out_name, builder)


def build_parser(name, prefix):
    parser = base_parser('%s CSVs + frame folders -> train/val_videofolder.txt, category.txt' % name)
    parser.add_argument('--anno_dir', default='.',
                        help='folder holding %s-{labels,train,validation}.csv' % prefix)
    parser.add_argument('--labels', default='', help='class list (default: <anno_dir>/%s-labels.csv)' % prefix)
    parser.add_argument('--train', default='', help='default: <anno_dir>/%s-train.csv' % prefix)
    parser.add_argument('--val', default='', help='default: <anno_dir>/%s-validation.csv' % prefix)
    return parser


def main(argv=None):
    prefix = 'something-something-v1'
    return run(lambda args: generate_id_label(args, prefix), argv,
               build_parser('Something-Something V1', prefix))


if __name__ == '__main__':
    sys.exit(main())
