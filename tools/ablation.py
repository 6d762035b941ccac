"""LSNet ablation on the embedded synthetic dataset: TSN, TSM, LSNet and each LSNet branch alone.

Every model is trained by ``main.py`` and evaluated by ``test_models.py`` (run as subprocesses, so
the ablation exercises the real entry points) with the same seed, recipe and budget; only the
model flags differ.  The table printed at the end gives top-1 accuracy per class group
(``class_groups.json`` of the dataset, via ``test_models.py --class_groups``), overall top-1 and the
accuracy inside each temporal pair (the pair's two scores compared, where chance is 50%).

    python tools/ablation.py --out ablation --epochs 10 --jobs 2 --threads 1

Finished runs are reused unless ``--force``: a run whose evaluation JSON exists is skipped, and a
run whose checkpoint already holds the last epoch is only evaluated.  ``--models`` picks a subset.  Results: ``OUT/<model>.json`` / ``.npz`` (test_models
outputs), ``OUT/<model>.train.log``, ``OUT/table.md`` and ``OUT/summary.json``.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from ops.errors import LSNetError  # noqa: E402

# model name -> extra main.py flags
MODELS = {
    'TSN': [],
    'TSM': ['--shift', '--shift_div', '8', '--shift_place', 'blockres'],
    'LSNet': ['--shift', '--shift_div', '8', '--shift_place', 'blockres', '--lsm'],
    'LSNet-short': ['--shift', '--shift_div', '8', '--shift_place', 'blockres', '--lsm',
                    '--lsm_branches', 'short'],
    'LSNet-long': ['--shift', '--shift_div', '8', '--shift_place', 'blockres', '--lsm',
                   '--lsm_branches', 'long'],
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default=None,
                   help='synthetic dataset folder (default $LSNET_DATA_ROOT/synthetic, else ./data/synthetic); '
                        'generated when missing')
    p.add_argument('--out', default='ablation', help='folder for runs, scores and the table')
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--arch', default='resnet18')
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=32)
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--batch_size', type=int, default=16)
    p.add_argument('--lr', type=float, default=0.01)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--jobs', type=int, default=1, help='models trained at the same time')
    p.add_argument('--threads', type=int, default=1, help='torch threads per run (OMP_NUM_THREADS)')
    p.add_argument('--workers', type=int, default=1, help='data loading workers per run (-j)')
    p.add_argument('--gen_args', default='', help='extra tools/gen_synthetic.py flags, e.g. '
                                                   '"--train_per_class 8 --val_per_class 4" for a smoke run')
    p.add_argument('--force', action='store_true', help='retrain runs that already have results')
    return p


def dataset_root(args):
    if args.root:
        return os.path.abspath(args.root)
    base = os.environ.get('LSNET_DATA_ROOT')
    return os.path.abspath(os.path.join(base, 'synthetic') if base else os.path.join('data', 'synthetic'))


def train_argv(args, root, model):
    """main.py arguments of one run: the common recipe plus the model's flags."""
    out = os.path.abspath(args.out)
    return ['synthetic', 'RGB', '--root_path', root, '--arch', args.arch, '--pretrain', 'none',
            '--num_segments', str(args.num_segments), '--input_size', str(args.input_size),
            '--epochs', str(args.epochs), '-b', str(args.batch_size), '--lr', str(args.lr),
            '--lr_type', 'cos', '--warmup', '1', '--wd', '5e-4', '--dropout', '0.5', '--npb',
            '--gd', '20', '--seed', str(args.seed), '-j', str(args.workers),
            '--eval-freq', str(args.epochs), '--print-freq', '50',
            '--root_log', os.path.join(out, 'logs'), '--root_model', os.path.join(out, 'checkpoints'),
            '--suffix', model.replace('-', '')] + MODELS[model]


def checkpoint_path(args, root, model):
    from opts import build_train_parser
    from ops.utils import store_name
    targs = build_train_parser().parse_args(train_argv(args, root, model))
    return os.path.join(os.path.abspath(args.out), 'checkpoints', store_name(targs), 'ckpt.pth.tar')


def test_argv(args, root, model):
    out = os.path.abspath(args.out)
    return ['synthetic', '--root_path', root, '--weights', checkpoint_path(args, root, model),
            '--test_segments', str(args.num_segments), '--test_crops', '1', '--batch_size', '32',
            '-j', str(args.workers), '--class_groups', os.path.join(root, 'class_groups.json'),
            '--json_file', os.path.join(out, model + '.json'),
            '--save_scores', os.path.join(out, model + '.npz')]


def _launch(cmd, log_path, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = open(log_path, 'w')
    log.write('$ ' + ' '.join(cmd) + '\n')
    log.flush()
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log


def trained(args, root, model):
    """True when the run's checkpoint holds its last epoch (training finished earlier)."""
    path = checkpoint_path(args, root, model)
    if args.force or not os.path.exists(path):
        return False
    from ops.checkpoint import load_checkpoint
    return int(load_checkpoint(path).get('epoch', 0)) >= args.epochs


def run_all(args, root, models):
    """Train (unless finished) then evaluate each model, ``args.jobs`` at a time.

    Returns {model: training seconds} for the runs trained now.
    """
    out = os.path.abspath(args.out)
    pending = list(models)
    running = {}
    took = {}

    def evaluate(model, start):
        cmd = [sys.executable, 'test_models.py'] + test_argv(args, root, model)
        running[model] = ('test', start) + _launch(cmd, os.path.join(out, model + '.test.log'), args.threads)

    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                model = pending.pop(0)
                if trained(args, root, model):
                    print('[ablation] {} already trained, evaluating'.format(model), flush=True)
                    evaluate(model, time.time())
                    continue
                log_path = os.path.join(out, model + '.train.log')
                cmd = [sys.executable, 'main.py'] + train_argv(args, root, model)
                running[model] = ('train', time.time()) + _launch(cmd, log_path, args.threads)
                print('[ablation] training {} (log {})'.format(model, log_path), flush=True)
            time.sleep(2)
            for model, (stage, start, proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                if proc.returncode != 0:
                    del running[model]
                    raise RuntimeError('{} of {} failed (exit {}); see {}'.format(
                        stage, model, proc.returncode, log.name))
                if stage == 'train':
                    took[model] = time.time() - start
                    evaluate(model, start)
                    print('[ablation] {} trained in {:.0f} s, evaluating'.format(model, took[model]), flush=True)
                else:
                    del running[model]
                    print('[ablation] {} done'.format(model), flush=True)
    finally:
        for stage, start, proc, log in running.values():  # only after a failure: stop our own runs
            proc.terminate()
            proc.wait()
            log.close()
    return took


def pair_accuracy(npz, a, b):
    """Accuracy on the videos of classes a and b when only those two scores compete."""
    s, y = npz['scores'], npz['labels']
    keep = (y == a) | (y == b)
    if not keep.any():
        return float('nan')
    pred = np.where(s[keep, a] >= s[keep, b], a, b)
    return 100.0 * float((pred == y[keep]).mean())


def make_table(args, root, models):
    """Markdown table (groups x models) and the numbers behind it."""
    out = os.path.abspath(args.out)
    res = {m: json.load(open(os.path.join(out, m + '.json'))) for m in models}
    npz = {m: np.load(os.path.join(out, m + '.npz')) for m in models}
    names = open(os.path.join(root, 'category.txt')).read().splitlines()
    meta_path = os.path.join(root, 'synthetic_meta.json')
    pairs = json.load(open(meta_path)).get('temporal_pairs', []) if os.path.exists(meta_path) else []
    rows = []
    for g in res[models[0]]['groups']:
        accs = [next(x['acc'] for x in res[m]['groups'] if x['group'] == g['group']) for m in models]
        rows.append(('{} ({} videos)'.format(g['group'], g['count']), accs))
    rows.append(('all (top-1)', [res[m]['top1'] for m in models]))
    rows.append(('mean class acc', [res[m]['mean_class_acc'] for m in models]))
    for a, b in pairs:
        rows.append(('pair {} / {}'.format(names[a], names[b]), [pair_accuracy(npz[m], a, b) for m in models]))
    width = max(len(r[0]) for r in rows)
    lines = ['| {} | {} |'.format('group'.ljust(width), ' | '.join('{:>11}'.format(m) for m in models)),
             '|{}|{}|'.format('-' * (width + 2), '|'.join('-' * 13 for _ in models))]
    for label, accs in rows:
        lines.append('| {} | {} |'.format(label.ljust(width), ' | '.join('{:>11.1f}'.format(a) for a in accs)))
    return '\n'.join(lines), {label: dict(zip(models, accs)) for label, accs in rows}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.jobs < 1 or args.threads < 1:
            raise LSNetError('--jobs and --threads must be >= 1')
        root = dataset_root(args)
        os.makedirs(args.out, exist_ok=True)
        if not os.path.exists(os.path.join(root, 'synthetic_meta.json')):
            subprocess.run([sys.executable, 'tools/gen_synthetic.py', '--out', root] + args.gen_args.split(),
                           cwd=ROOT, check=True)
        todo = [m for m in args.models
                if args.force or not os.path.exists(os.path.join(args.out, m + '.json'))]
        t0 = time.time()
        took = run_all(args, root, todo)
        table, numbers = make_table(args, root, args.models)
    except LSNetError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    budget = ('{} epochs, {} {}x{}px segments, batch {}, lr {} cos (1 warm-up epoch), wd 5e-4, seed {}, '
              'from scratch'.format(args.epochs, args.arch, args.num_segments, args.input_size,
                                    args.batch_size, args.lr, args.seed))
    header = 'Synthetic ablation, top-1 % on the validation set ({}).'.format(budget)
    text = header + '\n\n' + table + '\n'
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(args.out, 'summary.json'), 'w') as f:
        json.dump({'budget': budget, 'train_seconds': took, 'accuracy': numbers}, f, indent=1)
    print('\n' + text)
    if took:
        print('training wall time: ' + ', '.join('{} {:.0f} s'.format(m, s) for m, s in took.items()))
        print('total {:.0f} s'.format(time.time() - t0))
    return 0


if __name__ == '__main__':
    sys.exit(main())
