"""Helpers shared by the ``gen_label_*.py`` tools.

Every generator turns official annotation files into list files with one line per video,
``<path> <num_frames> <label>`` (path relative to the frame root, frames counted in the extracted
folder, label a 0-based class index), plus ``category.txt`` (one class name per line, line i is
label i).  Videos whose frame folder is missing or empty are skipped, counted and listed in
``missing_<list file>``.
"""

import io
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.errors import ArgumentParser, LSNetError, make_folder  # noqa: E402

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
CATEGORY_FILE = 'category.txt'


def kinetics_class_name(name):
    """Folder-safe Kinetics class name: spaces -> ``_``, quotes and brackets dropped.

    ``"passing American football (in game)"`` -> ``passing_American_football_in_game``.
    """
    name = name.strip()
    for ch in '"()\'':
        name = name.replace(ch, '')
    return name.replace(' ', '_')


def count_frames(folder, prefix=''):
    """Number of image files in ``folder`` whose names start with ``prefix`` (0 if no folder)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    return sum(1 for n in names if n.startswith(prefix) and n.lower().endswith(IMAGE_EXTENSIONS))


def read_text(path, what):
    """The text of a UTF-8 file (a BOM dropped, line ends kept); LSNetError if missing or not UTF-8 text."""
    if not os.path.isfile(path):
        raise LSNetError('%s not found: %s' % (what, path))
    try:
        with open(path, encoding='utf-8-sig', newline='') as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise LSNetError('%s %s is not UTF-8 text (%s)' % (what, path, exc)) from None


def read_lines(path, what):
    """Stripped, non-empty lines of a text file as ``(line_number, text)``; LSNetError if missing."""
    lines = io.StringIO(read_text(path, what), newline=None)
    return [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip()]


class ListBuilder:
    """Collects ``path num_frames label`` lines for one list file.

    ``frame_root``: folder the list paths are relative to; ``prefix``: frame file-name prefix to
    count (``'img_'``, ``'flow_x_'`` or ``''`` for every image).
    """

    def __init__(self, frame_root, prefix=''):
        self.frame_root = frame_root
        self.prefix = prefix
        self.lines = []
        self.missing = []

    def add(self, candidates, label):
        """Add the first candidate folder (relative path) holding frames; else record it missing."""
        for rel in candidates:
            n = count_frames(os.path.join(self.frame_root, rel), self.prefix)
            if n > 0:
                if ' ' in rel:
                    raise LSNetError('frame folder %s has a space in its path; list files are '
                                     'space separated (rename it)' % os.path.join(self.frame_root, rel))
                self.lines.append('%s %d %d' % (rel.replace(os.sep, '/'), n, label))
                return True
        self.missing.append(candidates[0])
        return False


def write_lines(path, lines):
    """Write ``lines`` (one per line) atomically: temp file in the same folder, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.writelines(line + '\n' for line in lines)
    os.replace(tmp, path)


def write_categories(out_dir, categories, name=CATEGORY_FILE):
    """``out_dir/category.txt``: class i on line i (every generator writes it first: ``out_dir`` is made here)."""
    make_folder(out_dir, '--out_dir %s: cannot create folder' % out_dir)
    path = os.path.join(out_dir, name)
    write_lines(path, categories)
    print('%s: %d classes' % (path, len(categories)))
    return path


def write_list(out_dir, name, builder):
    """Write ``builder``'s list as ``out_dir/name`` (and ``missing_<name>`` if any were missing)."""
    path = os.path.join(out_dir, name)
    write_lines(path, builder.lines)
    missing_path = os.path.join(out_dir, 'missing_' + name)
    if builder.missing:
        write_lines(missing_path, builder.missing)
    elif os.path.exists(missing_path):
        os.remove(missing_path)
    print('%s: %d videos, %d missing%s' % (path, len(builder.lines), len(builder.missing),
                                          ' (listed in %s)' % missing_path if builder.missing else ''))
    return path


def base_parser(description):
    """Parser with the flags every generator shares: ``--frame_root`` and ``--out_dir``."""
    parser = ArgumentParser(description=description)
    parser.add_argument('--frame_root', required=True,
                        help='folder holding the extracted frame folders (list paths are relative to it)')
    parser.add_argument('--out_dir', default='.',
                        help='where the list files and category.txt go (default: current folder)')
    return parser


def check_frame_root(frame_root):
    if not os.path.isdir(frame_root):
        raise LSNetError('--frame_root folder not found: %s' % frame_root)


def run(main_body, argv, parser):
    """Parse ``argv`` and run ``main_body(args)``; LSNetError -> ``error: ...`` and exit status 2."""
    args = parser.parse_args(argv)
    try:
        check_frame_root(args.frame_root)
        main_body(args)
    except LSNetError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 2
    return 0


def category_index(categories, source):
    """``{name: index}``; LSNetError naming ``source`` on a duplicate class name."""
    index = {}
    for i, c in enumerate(categories):
        if c in index:
            raise LSNetError('%s: class %r listed twice' % (source, c))
        index[c] = i
    return index
