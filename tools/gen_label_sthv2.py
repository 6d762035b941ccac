"""Something-Something V2 list files from the official JSON annotations.

Reads ``something-something-v2-labels.json`` (``{"<class>": "<index>"}``), ``-train.json`` and
``-validation.json`` (lists of ``{"id", "template", ...}``; the class is the template with the
brackets of its ``[something]`` placeholders removed), and ``-test.json`` when present (ids only;
label 0).  Frames are counted in ``<frame_root>/<id>/`` (``000001.jpg ...``, as
``vid2img_sthv2.py`` writes them).  Writes ``category.txt``, ``train_videofolder.txt``,
``val_videofolder.txt`` (and ``test_videofolder.txt``) into ``--out_dir``.

    python tools/gen_label_sthv2.py --anno_dir something/v2 \\
        --frame_root something/v2/20bn-something-something-v2-frames --out_dir something/v2
"""

import json
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import LSNetError  # noqa: E402
from tools.label_common import (ListBuilder, base_parser, category_index, read_text, run,  # noqa: E402
                                write_categories, write_list)

PREFIX = 'something-something-v2'


def load_json(path, what):
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise LSNetError('%s: not valid JSON (%s)' % (path, exc))


def template_class(template):
    """``"Putting [something] on [something]"`` -> ``"Putting something on something"``."""
    return template.replace('[', '').replace(']', '')


def read_categories(path):
    """Class names ordered by their index in the labels JSON (indices must be 0..K-1)."""
    data = load_json(path, 'labels JSON')
    if not isinstance(data, dict):
        raise LSNetError('%s: expected an object {"class": "index"}' % path)
    try:
        by_index = sorted((int(idx), name) for name, idx in data.items())
    except (TypeError, ValueError):
        raise LSNetError('%s: every value must be an integer class index' % path)
    if [i for i, _ in by_index] != list(range(len(by_index))):
        raise LSNetError('%s: class indices are not 0..%d' % (path, len(by_index) - 1))
    return [name for _, name in by_index]


def read_split(path, index, labelled):
    """``[(video_id, label)]`` of a train/validation (``labelled``) or test JSON."""
    data = load_json(path, 'annotation JSON')
    if not isinstance(data, list):
        raise LSNetError('%s: expected a list of {"id": ..., "template": ...}' % path)
    rows = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or 'id' not in item:
            raise LSNetError('%s: entry %d has no "id"' % (path, i))
        if not labelled:
            rows.append((str(item['id']), 0))
            continue
        if 'template' not in item:
            raise LSNetError('%s: entry %d (id %s) has no "template"' % (path, i, item['id']))
        cls = template_class(item['template'])
        if cls not in index:
            raise LSNetError('%s: entry %d (id %s): class %r is not in the labels JSON'
                             % (path, i, item['id'], cls))
        rows.append((str(item['id']), index[cls]))
    return rows


def generate(args):
    labels = args.labels or os.path.join(args.anno_dir, PREFIX + '-labels.json')
    categories = read_categories(labels)
    index = category_index(categories, labels)
    splits = [(args.train or os.path.join(args.anno_dir, PREFIX + '-train.json'), 'train_videofolder.txt', True),
              (args.val or os.path.join(args.anno_dir, PREFIX + '-validation.json'), 'val_videofolder.txt', True)]
    test = args.test or os.path.join(args.anno_dir, PREFIX + '-test.json')
    if args.test or os.path.isfile(test):
        splits.append((test, 'test_videofolder.txt', False))
    rows = [read_split(path, index, labelled) for path, _, labelled in splits]
    write_categories(args.out_dir, categories)
    for (_, out_name, _), split_rows in zip(splits, rows):
        builder = ListBuilder(args.frame_root)
        for vid, label in split_rows:
            builder.add([vid], label)
        write_list(args.out_dir, out_name, builder)


def build_parser():
    parser = base_parser('Something-Something V2 JSONs + frame folders -> '
                         'train/val(/test)_videofolder.txt, category.txt')
    parser.add_argument('--anno_dir', default='.', help='folder holding %s-*.json' % PREFIX)
    parser.add_argument('--labels', default='', help='default: <anno_dir>/%s-labels.json' % PREFIX)
    parser.add_argument('--train', default='', help='default: <anno_dir>/%s-train.json' % PREFIX)
    parser.add_argument('--val', default='', help='default: <anno_dir>/%s-validation.json' % PREFIX)
    parser.add_argument('--test', default='',
                        help='default: <anno_dir>/%s-test.json, used when it exists' % PREFIX)
    return parser


def main(argv=None):
    return run(generate, argv, build_parser())


if __name__ == '__main__':
    sys.exit(main())
