"""Download model-zoo checkpoints into pretrained/, verified, then print the command that tests them.

    python tools/download_pretrained.py --list
    python tools/download_pretrained.py TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth
    python tools/download_pretrained.py --all --dir /data/tsm --base_url https://mirror.example/tsm

A transfer goes to ``NAME.part`` and is renamed to ``NAME`` only once the file loads with
``weights_only=True`` into the model its name describes, every key matched; a file that fails
is deleted. A cut transfer from a server that supports HTTP Range keeps its ``.part`` and the same
command resumes it; otherwise nothing is left. Files already present are skipped. The table and
the download live in ``ops/model_zoo.py``.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops import model_zoo  # noqa: E402
from ops.errors import ArgumentParser, LSNetError  # noqa: E402
from ops.utils import run_entry_point  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(REPO, 'pretrained')


def build_parser():
    p = ArgumentParser(description='Download and verify model-zoo checkpoints.')
    p.add_argument('names', nargs='*', metavar='NAME', help='file names from --list (.pth optional)')
    p.add_argument('--list', action='store_true', help='print the zoo: names, datasets, reported top-1')
    p.add_argument('--all', action='store_true', help='download every file of the zoo')
    p.add_argument('--dir', default=DEFAULT_DIR, help='target folder (default: pretrained/ of the repo)')
    p.add_argument('--base_url', default=None,
                   help='mirror to download from: the URL is BASE_URL/NAME (default: {})'.format(
                       model_zoo.OFFICIAL_BASE_URL))
    p.add_argument('--timeout', type=float, default=60.0, help='seconds without data before giving up')
    p.add_argument('--markdown', action='store_true', help='print the tables of pretrained/README.md')
    return p


def shown(path):
    """``path`` relative to the working directory when inside it (as test_models.py is run), else absolute."""
    rel = os.path.relpath(os.path.abspath(path))
    return os.path.abspath(path) if rel.startswith(os.pardir) else rel


def run(args):
    if args.list or args.markdown:
        print(model_zoo.format_table() if args.list else model_zoo.markdown_tables(), end='\n' if args.list else '')
        return 0
    if args.all and args.names:
        raise LSNetError('--all downloads every file: give it without names ({})'.format(' '.join(args.names)))
    if not args.all and not args.names:
        raise LSNetError('name the files to download, or pass --all (see the names with: {})'
                         .format(model_zoo.LIST_HINT))
    todo = model_zoo.entries() if args.all else [model_zoo.find(n) for n in args.names]
    if args.timeout <= 0:
        raise LSNetError('--timeout must be positive (got {})'.format(args.timeout))
    for entry in todo:
        path, cfg = model_zoo.download(entry, args.dir, base_url=args.base_url, timeout=args.timeout)
        if cfg is None:
            print('{}: already there (not downloaded again)'.format(shown(path)))
        else:
            print('{}: verified ({}: {} segments, {} classes, every key matched)'.format(
                shown(path), entry.model, cfg.num_segments, cfg.num_class))
        print('next: {}'.format(entry.test_command(shown(path))))
    return 0


def main(argv=None):
    return run_entry_point(run, build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
