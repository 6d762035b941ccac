"""Render the embedded synthetic dataset: a small Something-Something-like set in the TSN layout.

The command line of :mod:`ops.synthetic` (the renderer: classes, layout and determinism are
described there)::

    python tools/gen_synthetic.py --out DIR [--seed S] [--force] [--train_per_class N]
        [--val_per_class N] [--frames T] [--size PX] [--families F ...] [--workers W]

e.g. ``--train_per_class 8 --val_per_class 4 --frames 8 --size 32`` for tests.  A complete set
already at ``--out`` made with the same options is kept; one made with other options is an error
unless ``--force`` replaces it.  Errors print one line ``error: ...`` and exit with status 2.
"""

import logging
import os
import shutil
import sys
import time

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ops.errors import ArgumentParser, LSNetError  # noqa: E402
# the renderer's public names, re-exported for callers of tools.gen_synthetic
from ops.synthetic import (DEFAULT_FAMILIES, DEFAULTS, FAMILIES, FORMAT_VERSION,  # noqa: E402,F401
                           IMAGE_TMPL, META_FILE, check_options, class_table, describe_mismatch,
                           ensure_synthetic, generate, read_meta)


def main(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='dataset root to create')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--force', action='store_true', help='replace an existing dataset at --out')
    p.add_argument('--train_per_class', type=int, default=DEFAULTS['num_train_per_class'])
    p.add_argument('--val_per_class', type=int, default=DEFAULTS['num_val_per_class'])
    p.add_argument('--frames', type=int, default=DEFAULTS['frames'])
    p.add_argument('--size', type=int, default=DEFAULTS['size'])
    p.add_argument('--families', nargs='+', default=list(DEFAULTS['families']),
                   choices=list(FAMILIES))
    p.add_argument('--workers', type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    opts = dict(num_train_per_class=args.train_per_class, num_val_per_class=args.val_per_class,
                frames=args.frames, size=args.size, families=args.families)
    try:
        out = os.path.abspath(args.out)
        check_options(workers=args.workers, **opts)  # before --force removes anything
        if args.force and os.path.isdir(out):
            shutil.rmtree(out)
        t0 = time.time()
        if read_meta(out) is not None:
            diff = describe_mismatch(out, seed=args.seed, **opts)
            if diff:
                raise LSNetError(f'{out} holds a synthetic dataset made with {diff}; '
                                 f'use another folder, or regenerate it with tools/gen_synthetic.py --force')
            print(f'{out} already holds this dataset (use --force to regenerate)')
            return 0
        ensure_synthetic(out, seed=args.seed, workers=args.workers, **opts)
        meta = read_meta(out)
        print(f'wrote {meta["num_class"]} classes to {out} in {time.time() - t0:.1f}s')
    except LSNetError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
