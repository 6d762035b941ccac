"""Kinetics list files from the official CSVs.

Reads ``label,youtube_id,time_start,time_end,split[,is_cc]`` CSVs (header line first), finds each
video's frame folder as extracted by ``vid2img_kinetics.py`` (``<class>/<youtube_id>_<start>_<end>``
under ``--frame_root``, or under a ``<split>/`` sub-folder such as ``train/`` or ``val/``; times
zero-padded or not), and writes ``train_videofolder.txt``, ``val_videofolder.txt`` and
``category.txt`` into ``--out_dir``.

    python tools/gen_label_kinetics.py --train_csv kinetics_train.csv --val_csv kinetics_val.csv \\
        --frame_root kinetics/images --out_dir kinetics/labels

Classes: the lines of ``--label_map`` (e.g. ``kinetics_label_map.txt``) when given; else, for
Kinetics-400 classes, the model zoo's label order (``ops/kinetics400.txt``); else the sorted class
names of both CSVs. Names are made folder-safe (spaces -> ``_``).
"""

import csv
import io
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import LSNetError  # noqa: E402
from tools.label_common import (ListBuilder, base_parser, category_index, kinetics_class_name,  # noqa: E402
                                read_lines, read_text, run, write_categories, write_list)

REQUIRED_COLUMNS = ('label', 'youtube_id', 'time_start', 'time_end')
# The CSVs of different Kinetics releases spell the validation split differently.
VAL_SPLIT_NAMES = ('val', 'validate', 'valid', 'validation')


def read_kinetics_csv(path):
    """Rows ``(line_number, class_name, youtube_id, start, end, split)`` of an official CSV."""
    with io.StringIO(read_text(path, 'Kinetics CSV'), newline='') as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LSNetError('%s: header lacks column(s) %s (expected label,youtube_id,time_start,'
                             'time_end,split)' % (path, ','.join(missing)))
        rows = []
        for row in reader:
            if not any((v or '').strip() for v in row.values() if isinstance(v, str)):
                continue
            try:
                start, end = int(float(row['time_start'])), int(float(row['time_end']))
            except (TypeError, ValueError):
                raise LSNetError('%s:%d: time_start/time_end must be numbers, got %r, %r'
                                 % (path, reader.line_num, row['time_start'], row['time_end']))
            rows.append((reader.line_num, kinetics_class_name(row['label'] or ''),
                         row['youtube_id'].strip(), start, end, (row.get('split') or '').strip()))
    return rows


class FolderIndex:
    """Finds a video's frame folder, caching one directory listing per class folder."""

    def __init__(self, frame_root):
        self.frame_root = frame_root
        self._cache = {}

    def _by_id(self, rel_dir):
        if rel_dir not in self._cache:
            by_id = {}
            folder = os.path.join(self.frame_root, rel_dir)
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            for name in names:
                parts = name.rsplit('_', 2)
                if len(parts) == 3:
                    by_id.setdefault(parts[0], []).append(name)
            self._cache[rel_dir] = by_id
        return self._cache[rel_dir]

    def candidates(self, cls, ytid, start, end, split):
        """Relative folder paths to try, most likely first."""
        dirs = [cls]
        if split:
            names = VAL_SPLIT_NAMES if split in VAL_SPLIT_NAMES else (split,)
            dirs += [os.path.join(name, cls) for name in names]
        names = ['%s_%06d_%06d' % (ytid, start, end), '%s_%d_%d' % (ytid, start, end)]
        out = [os.path.join(d, n) for d in dirs for n in names]
        for d in dirs:  # any <ytid>_<a>_<b> folder whose times parse to the same segment
            for name in self._by_id(d).get(ytid, []):
                try:
                    a, b = (int(float(x)) for x in name.rsplit('_', 2)[1:])
                except ValueError:
                    continue
                if (a, b) == (start, end):
                    out.append(os.path.join(d, name))
        return out


def build_categories(args, split_rows):
    """Class names in label order: ``--label_map``; else, when every class is a Kinetics-400 class,
    the model zoo's order (``ops/kinetics400.txt``: sorted on the original names, which sorting the
    folder-safe names would not reproduce); else the sorted folder-safe names."""
    if args.label_map:
        return [kinetics_class_name(t) for _, t in read_lines(args.label_map, 'label map')]
    found = {row[1] for rows in split_rows for row in rows}
    from ops.dataset_config import kinetics400_names
    zoo = [kinetics_class_name(n) for n in kinetics400_names()]
    if found <= set(zoo):
        return [n for n in zoo if n in found]
    return sorted(found)


def generate(args):
    splits = [('train', args.train_csv, 'train_videofolder.txt'),
              ('val', args.val_csv, 'val_videofolder.txt')]
    splits = [s for s in splits if s[1]]
    if not splits:
        raise LSNetError('give --train_csv and/or --val_csv')
    split_rows = [read_kinetics_csv(path) for _, path, _ in splits]
    categories = build_categories(args, split_rows)
    index = category_index(categories, args.label_map or 'CSV labels')
    folders = FolderIndex(args.frame_root)
    write_categories(args.out_dir, categories)
    for (_, path, out_name), rows in zip(splits, split_rows):
        builder = ListBuilder(args.frame_root, prefix='img_')
        for line_num, cls, ytid, start, end, split in rows:
            if cls not in index:
                raise LSNetError('%s:%d: class %r is not in %s' % (path, line_num, cls,
                                                                  args.label_map or 'the class list'))
            builder.add(folders.candidates(cls, ytid, start, end, split), index[cls])
        write_list(args.out_dir, out_name, builder)


def build_parser():
    parser = base_parser('Kinetics CSVs + frame folders -> train/val_videofolder.txt, category.txt')
    parser.add_argument('--train_csv', default='', help='official training CSV')
    parser.add_argument('--val_csv', default='', help='official validation CSV')
    parser.add_argument('--label_map', default='',
                        help='class names, one per line, in label order (default: the model zoo order for Kinetics-400 '
                             'classes, else sorted CSV labels)')
    return parser


def main(argv=None):
    return run(generate, argv, build_parser())


if __name__ == '__main__':
    sys.exit(main())
