"""LSNet ablation on the embedded synthetic dataset: TSN, TSM, LSNet and each LSNet branch alone.

Default models: TSN, TSM, LSNet (identity taps, branches from step 1, as the README tables measured
it), LSNet-start2-shiftinit (the recommended configuration from scratch: the default shift taps,
the first 2 epochs as TSM) and each branch alone.

Every model is trained by ``main.py`` and evaluated by ``test_models.py`` (run as subprocesses, so
the ablation exercises the real entry points) with the same seed, recipe and budget; only the
model flags differ.  The table printed at the end gives top-1 accuracy per class group
(``class_groups.json`` of the dataset, via ``test_models.py --class_groups``), overall top-1 and the
accuracy inside each temporal pair (the pair's two scores compared, where chance is 50%).

    python tools/ablation.py --out ablation --epochs 10 --jobs 2 --threads 1
    python tools/ablation.py --out ablation --seeds 0 1 2   # OUT/seed<N> each, plus a mean table

Fine-tuning protocol (``--tune_from TSM --models TSM LSNet``): the source model is trained with the
recipe first, then each of ``--models`` trains ``--tune_epochs`` more epochs from its checkpoint
(runs ``TSM@TSM``, ``LSNet@TSM``: the same extra budget for both), as LSNet is used in practice.
``LSNet-start2`` / ``LSNet-delayed`` are the from-scratch counterpart inside one run: ``main.py
--lsm_start`` keeps the branches off (the network is TSM) for the first 2 epochs / half the epochs.
``--init_from CKPT`` starts every run from one checkpoint instead (e.g. a TSM trained on the 16-class
set, for the 64-frame long-range order set of ``scripts/ablation_far_order.sh``).

Finished runs are reused unless ``--force``: a run whose evaluation JSON exists is skipped, and a
run whose checkpoint already holds the last epoch is only evaluated.  ``--models`` picks a subset.
Results: ``OUT/<model>.json`` / ``.npz`` (test_models outputs), ``OUT/<model>.train.log``,
``OUT/<model>.provenance.json`` (git commit and uncommitted files when the run was trained; the
table's header names the commits), ``OUT/table.md`` and ``OUT/summary.json``.

For the runs with the long-short module the script then prints, per module, the learned α and
temporal kernels, the size of each branch's output and the gradient norms of its parameters next to
the rest of the block: the evidence that both branches learn rather than stay at their zero
initialisation.  Then a knock-out table: validation top-1 and per-group accuracy with each branch of
each stage switched off at test time (``h' = h`` there, as in TSM), which shows what the trained
network relies on.  Both go to ``OUT/diagnostics.md`` / ``.json``; ``--no_diagnose`` skips them.
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

from ops.errors import ArgumentParser, LSNetError  # noqa: E402

# the quick start's classes plus the long-range order pair (after "order", as in the table)
ABLATION_FAMILIES = ('horizontal', 'vertical', 'rotation', 'scale', 'order', 'order_long', 'speed',
                     'appearance')

# model name -> extra main.py flags
_TSM = ['--shift', '--shift_div', '8', '--shift_place', 'blockres']
# The LSNet models keep the identity taps (--lsm_tap_init identity, the default until shift taps
# replaced it) that the README tables measured them with; the '-shiftinit' models use shift taps.
_LSNET = _TSM + ['--lsm', '--lsm_tap_init', 'identity']
_LSNET_SHIFT = _TSM + ['--lsm', '--lsm_tap_init', 'shift']
MODELS = {
    'TSN': [],
    'TSM': _TSM,
    'LSNet': _LSNET,
    'LSNet-short': _LSNET + ['--lsm_branches', 'short'],
    'LSNet-long': _LSNET + ['--lsm_branches', 'long'],
    # placement variants (not in the default set): branches only in layer3-layer4, or the short
    # branch in layer1-layer2 and the long one in layer3-layer4
    'LSNet-late': _LSNET + ['--lsm_short_stages', '3', '4', '--lsm_long_stages', '3', '4'],
    'LSNet-split': _LSNET + ['--lsm_short_stages', '1', '2', '--lsm_long_stages', '3', '4'],
    'LSNet-long-late': _LSNET + ['--lsm_branches', 'long', '--lsm_long_stages', '3', '4'],
    # training-recipe variants (--lsm_start): the first 2 epochs, or the first half, as TSM
    'LSNet-start2': _LSNET + ['--lsm_start', '2'],
    'LSNet-delayed': _LSNET + ['--lsm_start', '{half}'],
    # the long branch's taps start as bidirectional dilated shifts (main.py's default)
    'LSNet-shiftinit': _LSNET_SHIFT,
    'LSNet-start2-shiftinit': _LSNET_SHIFT + ['--lsm_start', '2'],
}
DEFAULT_MODELS = ['TSN', 'TSM', 'LSNet', 'LSNet-start2-shiftinit', 'LSNet-short', 'LSNet-long']


def build_parser():
    p = ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default=None,
                   help='synthetic dataset folder (default $LSNET_DATA_ROOT/synthetic_ablation, else '
                        './data/synthetic_ablation); generated when missing, with the quick start\'s '
                        'classes plus the long-range order pair (order_long)')
    p.add_argument('--out', default='ablation', help='folder for runs, scores and the table')
    p.add_argument('--models', nargs='+', default=DEFAULT_MODELS, choices=list(MODELS),
                   help='models to train (default: %(default)s)')
    p.add_argument('--arch', default='resnet18')
    p.add_argument('--num_segments', type=int, default=8)
    p.add_argument('--input_size', type=int, default=32)
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--batch_size', type=int, default=16)
    p.add_argument('--lr', type=float, default=0.01)
    p.add_argument('--fc_lr5', choices=('auto', 'on', 'off'), default='auto',
                   help="main.py's --fc_lr5 for every run ('on': the reference's rule, as the tables before "
                        "the from-scratch fix were measured; runs other than auto get an fclr5<value> suffix)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--seeds', type=int, nargs='+', default=None,
                   help='repeat the ablation with each seed (runs in OUT/seed<N>) and print the '
                        'mean (min-max) table over them; overrides --seed')
    p.add_argument('--jobs', type=int, default=1, help='models trained at the same time')
    p.add_argument('--threads', type=int, default=1, help='torch threads per run (OMP_NUM_THREADS)')
    p.add_argument('--workers', type=int, default=1, help='data loading workers per run (-j)')
    p.add_argument('--gen_args', default='', help='extra tools/gen_synthetic.py flags, e.g. '
                                                   '"--train_per_class 8 --val_per_class 4" for a smoke run '
                                                   '(--families here replaces the default families)')
    p.add_argument('--tune_from', default=None, choices=list(MODELS),
                   help='fine-tuning protocol: train each of --models for --tune_epochs epochs starting '
                        'from this model\'s run of the same seed (trained first, with the recipe above, '
                        'when missing), as LSNet is used in practice: from a TSM checkpoint. Runs are '
                        'named <model>@<this model>')
    p.add_argument('--tune_epochs', type=int, default=5, help='epochs of each --tune_from run')
    p.add_argument('--init_from', default=None, metavar='CKPT',
                   help='start every run from this checkpoint instead of random weights (main.py '
                        '--tune_from: a classifier of another shape is dropped, LSNet keys it lacks '
                        'keep their initialisation), e.g. a TSM trained on another synthetic set or an '
                        'official TSM file; "{seed}" in the path is replaced by the run\'s seed')
    p.add_argument('--force', action='store_true', help='retrain runs that already have results')
    p.add_argument('--no_diagnose', dest='diagnose', action='store_false',
                   help='skip the long-short diagnostics of the LSNet runs (α, taps, branch '
                        'responses, gradient norms and the branch knock-out table, written to '
                        'OUT/diagnostics.md)')
    p.add_argument('--diag_clips', type=int, default=64, help='clips per diagnostic batch')
    return p


def dataset_root(args):
    if args.root:
        return os.path.abspath(args.root)
    base = os.environ.get('LSNET_DATA_ROOT')
    return os.path.abspath(os.path.join(base or 'data', 'synthetic_ablation'))


def generator_argv(args):
    """tools/gen_synthetic.py flags: the default families plus order_long, unless --gen_args names
    its own --families."""
    extra = args.gen_args.split()
    if '--families' in extra:
        return extra
    return ['--families', *ABLATION_FAMILIES] + extra


def split_run(run):
    """'LSNet@TSM' -> ('LSNet', 'TSM'): the model and the run it is fine-tuned from (None: from scratch)."""
    model, _, source = run.partition('@')
    return model, source or None


def run_names(args):
    """The runs of one seed, in table order: --models, or with --tune_from its source then <model>@<source>."""
    if not args.tune_from:
        return list(args.models)
    return [args.tune_from] + ['{}@{}'.format(m, args.tune_from) for m in args.models]


def run_epochs(args, run):
    return args.tune_epochs if split_run(run)[1] else args.epochs


def is_lsnet(run):
    return '--lsm' in MODELS[split_run(run)[0]]


def train_argv(args, root, run):
    """main.py arguments of one run: the common recipe plus the model's flags (and ``--tune_from``
    the source run's checkpoint for a fine-tuning run)."""
    out = os.path.abspath(args.out)
    model, source = split_run(run)
    epochs = run_epochs(args, run)
    suffix = model.replace('-', '') + ('' if args.fc_lr5 == 'auto' else 'fclr5' + args.fc_lr5)
    tune = []
    if source:
        suffix += 'from' + source.replace('-', '')
        tune = ['--tune_from', checkpoint_path(args, root, source)]
    elif args.init_from:
        tune = ['--tune_from', init_checkpoint(args.init_from, args.seed)]
    return ['synthetic', 'RGB', '--root_path', root, '--arch', args.arch, '--pretrain', 'none',
            '--num_segments', str(args.num_segments), '--input_size', str(args.input_size),
            '--epochs', str(epochs), '-b', str(args.batch_size), '--lr', str(args.lr),
            '--lr_type', 'cos', '--warmup', '1', '--wd', '5e-4', '--dropout', '0.5', '--npb',
            '--gd', '20', '--seed', str(args.seed), '-j', str(args.workers),
            '--eval-freq', str(epochs), '--print-freq', '50',
            '--root_log', os.path.join(out, 'logs'), '--root_model', os.path.join(out, 'checkpoints'),
            '--fc_lr5', args.fc_lr5, '--suffix', suffix] + tune + \
        [f.format(half=epochs // 2) for f in MODELS[model]]


def init_checkpoint(path, seed):
    """``--init_from`` for one seed, as an absolute path."""
    return os.path.abspath(path.replace('{seed}', str(seed)))


def checkpoint_path(args, root, model):
    """Where main.py saves ``model``'s run: the run name of the config its command line builds."""
    from opts import build_train_parser
    from ops.config import ModelConfig, store_name
    targs = build_train_parser().parse_args(train_argv(args, root, model))
    cfg = ModelConfig.from_args(targs, num_class=1)  # the class count is not part of a run name
    name = store_name(cfg, targs.dataset, targs.epochs, targs.lr_type, targs.dense_sample, targs.suffix)
    return os.path.join(os.path.abspath(args.out), 'checkpoints', name, 'ckpt.pth.tar')


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


def _reap(proc):
    """(exit code, CPU seconds) of a finished child, (None, None) while it runs; never blocks.

    ``os.wait4`` also gives the child's user + system CPU time (its loader workers included), a cost
    figure that other load on a shared machine barely changes, unlike wall time.
    """
    if not hasattr(os, 'wait4'):
        return proc.poll(), None
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid == 0:
        return None, None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def record_cost(args, model, wall, cpu):
    """Add the training wall / CPU seconds to the run's provenance file."""
    info = read_provenance(args, model)
    info.update(train_wall_seconds=round(wall, 1), train_cpu_seconds=None if cpu is None else round(cpu, 1))
    with open(provenance_path(args, model), 'w') as f:
        json.dump(info, f, indent=1)


def trained(args, root, model):
    """True when the run's checkpoint holds its last epoch (training finished earlier)."""
    path = checkpoint_path(args, root, model)
    if args.force or not os.path.exists(path):
        return False
    from ops.checkpoint import load_checkpoint
    return int(load_checkpoint(path).get('epoch', 0)) >= run_epochs(args, model)


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
                with open(provenance_path(args, model), 'w') as f:
                    json.dump(dict(git_state(), argv=train_argv(args, root, model), threads=args.threads),
                              f, indent=1)
                log_path = os.path.join(out, model + '.train.log')
                cmd = [sys.executable, 'main.py'] + train_argv(args, root, model)
                running[model] = ('train', time.time()) + _launch(cmd, log_path, args.threads)
                print('[ablation] training {} (log {})'.format(model, log_path), flush=True)
            time.sleep(2)
            for model, (stage, start, proc, log) in list(running.items()):
                code, cpu = _reap(proc)
                if code is None:
                    continue
                log.close()
                if proc.returncode != 0:
                    del running[model]
                    raise LSNetError('{} of {} failed (exit {}); see {}'.format(
                        stage, model, proc.returncode, log.name))
                if stage == 'train':
                    took[model] = time.time() - start
                    record_cost(args, model, took[model], cpu)
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
    cols = [max(11, len(m)) for m in models]
    lines = ['| {} | {} |'.format('group'.ljust(width), ' | '.join(m.rjust(c) for m, c in zip(models, cols))),
             '|{}|{}|'.format('-' * (width + 2), '|'.join('-' * (c + 2) for c in cols))]
    for label, accs in rows:
        lines.append('| {} | {} |'.format(label.ljust(width), ' | '.join(
            '{:.1f}'.format(a).rjust(c) for a, c in zip(accs, cols))))
    return '\n'.join(lines), {label: dict(zip(models, accs)) for label, accs in rows}


def write_diagnostics(args, root, models):
    """Print :func:`diagnose` and :func:`knockout` tables of ``models``; write OUT/diagnostics.md / .json."""
    import torch
    torch.set_num_threads(args.threads)
    tables, data = [], {}
    for m in models:
        data[m] = {'modules': diagnose(args, root, m), 'knockout': knockout(args, root, m)}
        tables.append(diagnostics_table(m, data[m]['modules'], args.diag_clips))
        tables.append(knockout_table(m, data[m]['knockout']))
    text = '\n\n'.join(tables) + '\n'
    with open(os.path.join(args.out, 'diagnostics.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(args.out, 'diagnostics.json'), 'w') as f:
        json.dump(data, f, indent=1)
    print('\n' + text)


def git_state():
    """{'commit': HEAD of the checkout, 'dirty': tracked files with uncommitted changes}."""
    def git(*cmd):
        try:
            return subprocess.run(['git', '-C', ROOT] + list(cmd), capture_output=True, text=True,
                                  check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ''
    dirty = [line[3:] for line in git('status', '--porcelain', '--untracked-files=no').splitlines()]
    return {'commit': git('rev-parse', 'HEAD').strip() or 'unknown', 'dirty': dirty}


def code_changes(info):
    """Uncommitted Python files a run was trained with, tests excluded."""
    return [f for f in info.get('dirty', []) if f.endswith('.py') and not f.startswith('tests/')]


def provenance_path(args, model):
    return os.path.join(os.path.abspath(args.out), model + '.provenance.json')


def read_provenance(args, model):
    """The code state a run was trained with ({} for runs from before it was recorded)."""
    path = provenance_path(args, model)
    return json.load(open(path)) if os.path.exists(path) else {}


def fixed_batch(model, root, list_name, count):
    """``count`` clips spread evenly over a list, centre-cropped and normalised: (clips, labels).

    Frames are chosen as test_models.py chooses them (segment centres, test mode): the validation
    rule would read a clip no longer than the segments as its first frame repeated.
    """
    import torch
    from ops.dataset import TSNDataSet
    from ops.transforms import build_transform
    tf = build_transform('val', modality=model.modality, new_length=model.new_length,
                         crop_size=model.crop_size, scale_size=model.scale_size,
                         mean=model.input_mean, std=model.input_std)
    ds = TSNDataSet(os.path.join(root, 'frames'), os.path.join(root, list_name),
                    num_segments=model.num_segments, transform=tf, random_shift=False, test_mode=True)
    picks = np.linspace(0, len(ds) - 1, min(count, len(ds))).round().astype(int)
    items = [ds[int(i)] for i in picks]
    return torch.stack([c for c, _ in items]), torch.tensor([y for _, y in items])


def load_run(args, root, model_name):
    """The trained model of one run (eval mode, CPU), built from its checkpoint."""
    from ops.checkpoint import load_model
    return load_model(checkpoint_path(args, root, model_name))[0]


def knockout(args, root, model_name):
    """Validation accuracy of one trained LSNet with LSM branches switched off at test time.

    One row per :func:`ops.long_short.knockout_variants` entry: the label, top-1 and the accuracy
    of each class group, on every validation clip (1 clip, centre crop, eval mode: the protocol of
    the ablation's test_models.py run, so the ``none`` row repeats its top-1).
    """
    import torch
    from ops.long_short import branches_off, knockout_variants
    from ops.metrics import summarize
    model = load_run(args, root, model_name).eval()
    clips, labels = fixed_batch(model, root, 'val_videofolder.txt', sys.maxsize)
    groups = json.load(open(os.path.join(root, 'class_groups.json')))
    names = open(os.path.join(root, 'category.txt')).read().splitlines()
    rows = []
    for label, off in knockout_variants(model):
        with torch.no_grad(), branches_off(model, off):
            scores = torch.cat([model(c) for c in clips.split(32)]).float().numpy()
        res = summarize(scores, labels.numpy(), names, groups)
        rows.append({'off': label, 'top1': res['top1'],
                     **{g['group']: g['acc'] for g in res['groups']}})
    return rows


def knockout_table(model_name, rows):
    """Markdown table of :func:`knockout` rows."""
    cols = [k for k in rows[0] if k != 'off']
    lines = ['{}, branches switched off at test time: top-1 % and per class group, every validation '
             'clip'.format(model_name), '',
             '| switched off | ' + ' | '.join('all' if c == 'top1' else c for c in cols) + ' |',
             '|---|' + '---:|' * len(cols)]
    for r in rows:
        lines.append('| {} | {} |'.format(r['off'], ' | '.join('{:.1f}'.format(r[c]) for c in cols)))
    return '\n'.join(lines)


def diagnose(args, root, model_name):
    """Long-short diagnostics of one trained run, one dict per LSM module.

    Parameters (mean/max |α|, mean |kernel - identity| of the long branch's taps), branch responses
    relative to the module input on validation clips (eval mode), and gradient norms of the
    module's parts and of the rest of its block on training clips (train mode, the run's loss).
    """
    import torch
    import torch.nn.functional as F
    from ops.long_short import (LongShortModule, branch_responses, gradient_norms,
                                long_branch_parameters)
    model = load_run(args, root, model_name)
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, LongShortModule)]
    rows = {n: {'module': n.replace('base_model.', '')} for n, _ in mods}
    hooks = [m.register_forward_hook(lambda m, inp, out, n=n: rows[n].update(branch_responses(m, inp[0])))
             for n, m in mods]
    model.eval()
    with torch.no_grad():
        model(fixed_batch(model, root, 'val_videofolder.txt', args.diag_clips)[0])
    for h in hooks:
        h.remove()
    clips, labels = fixed_batch(model, root, 'train_videofolder.txt', args.diag_clips)
    model.train()
    torch.manual_seed(args.seed)
    F.cross_entropy(model(clips), labels).backward()
    blocks = dict(model.named_modules())
    for n, m in mods:
        if m.long is not None:
            rows[n].update(long_branch_parameters(m.long))
        rows[n].update({'grad_' + k: v for k, v in gradient_norms(m).items()})
        block = blocks[n.rsplit('.', 1)[0]]
        grads = [p.grad.view(-1) for k, p in block.named_parameters()
                 if not k.startswith('lsm.') and p.grad is not None]
        rows[n]['grad_block'] = float(torch.cat(grads).norm())
    return list(rows.values())


DIAG_COLUMNS = (('alpha_mean', 'α mean'), ('alpha_max', 'α max'), ('tap_offset', 'K − id'),
                ('short', 'S / h'), ('long', 'L / h'), ('long_temporal', '(L − L_id) / h'),
                ('grad_short', '∇S'), ('grad_long_taps', '∇taps'), ('grad_long_alpha', '∇α'),
                ('grad_long_gate', '∇gate'), ('grad_block', '∇block'))


def diagnostics_table(model_name, rows, clips):
    """Markdown table of :func:`diagnose` rows (a column only when some row has it)."""
    cols = [(k, title) for k, title in DIAG_COLUMNS if any(k in r for r in rows)]
    lines = ['{}, per LSM module: mean / max absolute α, mean absolute offset of the temporal '
             'kernels from the identity, L2 norms of the branch outputs relative to the module input '
             '(eval mode, {} validation clips; L_id = the long branch with identity taps) and of the '
             'gradients of the stored parameters (train mode, as many training clips; ∇block = the '
             'rest of the block)'.format(model_name, clips), '',
             '| module | ' + ' | '.join(t for _, t in cols) + ' |',
             '|---|' + '---:|' * len(cols)]
    for r in rows:
        lines.append('| {} | {} |'.format(r['module'], ' | '.join(
            '{:.3g}'.format(r[k]) if k in r else '' for k, _ in cols)))
    return '\n'.join(lines)


def recipe(args, seeds, runs):
    """One line naming the training recipe shared by ``runs`` (their recorded thread counts)."""
    threads = sorted({r.get('threads', args.threads) for r in runs.values()})
    tune = ''
    if args.tune_from:
        tune = ('; <model>@{0}: {1} more epochs of the same recipe from the {0} run, '
                'classifier kept'.format(args.tune_from, args.tune_epochs))
    start = 'from ' + args.init_from if args.init_from else 'from scratch'
    return ('{} epochs, {} {}x{}px segments, batch {}, lr {} cos (1 warm-up epoch), wd 5e-4, {}, '
            '{}{}, {} torch thread(s) per run'.format(
                args.epochs, args.arch, args.num_segments, args.input_size, args.batch_size, args.lr,
                'seed {}'.format(seeds[0]) if len(seeds) == 1 else 'seeds ' + ', '.join(map(str, seeds)),
                start, tune, '/'.join(map(str, threads))))


def commits_of(runs):
    """'abc1234, def5678+uncommitted': the code the runs were trained with."""
    return ', '.join(sorted({r.get('commit', '?')[:7] + ('+uncommitted' if code_changes(r) else '')
                             for r in runs.values()}))


def write_results(out, text, summary):
    """OUT/table.md (``text``, also printed) and OUT/summary.json."""
    with open(os.path.join(out, 'table.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print('\n' + text)


def ablate(args, root):
    """Train, evaluate and tabulate ``args.models`` for ``args.seed`` in ``args.out``; returns the summary."""
    os.makedirs(args.out, exist_ok=True)
    names = run_names(args)
    todo = [m for m in names if args.force or not os.path.exists(os.path.join(args.out, m + '.json'))]
    t0 = time.time()
    took = {}
    if args.tune_from in todo:  # the fine-tuning runs start from its checkpoint
        todo.remove(args.tune_from)
        took.update(run_all(args, root, [args.tune_from]))
    took.update(run_all(args, root, todo))
    table, numbers = make_table(args, root, names)
    runs = {m: read_provenance(args, m) for m in names}
    budget = recipe(args, [args.seed], runs)
    text = 'Synthetic ablation, top-1 % on the validation set ({}). Code: commit {}.\n\n{}\n'.format(
        budget, commits_of(runs), table)
    summary = {'budget': budget, 'train_seconds': took, 'accuracy': numbers, 'runs': runs}
    write_results(args.out, text, summary)
    if args.diagnose:
        write_diagnostics(args, root, [m for m in names if is_lsnet(m)])
    if took:
        print('training wall time: ' + ', '.join('{} {:.0f} s'.format(m, s) for m, s in took.items()))
        print('total {:.0f} s'.format(time.time() - t0))
    cpu = {m: r['train_cpu_seconds'] for m, r in runs.items() if r.get('train_cpu_seconds')}
    if cpu:
        print('training CPU time (user + system, loader workers included): ' +
              ', '.join('{} {:.0f} s'.format(m, s) for m, s in cpu.items()))
    return summary


def seed_args(args, seed, first):
    """``args`` for one seed of ``--seeds``: its own folder OUT/seed<N>; diagnostics for the first only."""
    sargs = argparse.Namespace(**vars(args))
    sargs.seed, sargs.out = seed, os.path.join(args.out, 'seed{}'.format(seed))
    sargs.diagnose = args.diagnose and first
    return sargs


def mean_table(summaries, models):
    """Markdown table of 'mean (min-max)' over seeds for every row of the per-seed tables."""
    labels = list(next(iter(summaries.values()))['accuracy'])
    width = max(len(label) for label in labels)
    lines = ['| {} | {} |'.format('group'.ljust(width), ' | '.join('{:>17}'.format(m) for m in models)),
             '|{}|{}|'.format('-' * (width + 2), '|'.join('-' * 19 for _ in models))]
    numbers = {}
    for label in labels:
        cells = []
        for m in models:
            accs = [s['accuracy'][label][m] for s in summaries.values()]
            numbers.setdefault(label, {})[m] = {'mean': float(np.mean(accs)), 'min': min(accs), 'max': max(accs)}
            cells.append('{:>17}'.format('{:.1f} ({:.1f}-{:.1f})'.format(np.mean(accs), min(accs), max(accs))))
        lines.append('| {} | {} |'.format(label.ljust(width), ' | '.join(cells)))
    return '\n'.join(lines), numbers


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.jobs < 1 or args.threads < 1 or args.tune_epochs < 1:
            raise LSNetError('--jobs, --threads and --tune_epochs must be >= 1')
        if args.init_from and args.tune_from:
            raise LSNetError('--init_from and --tune_from are two protocols: give one of them')
        for seed in (args.seeds or [args.seed]) if args.init_from else []:
            if not os.path.isfile(init_checkpoint(args.init_from, seed)):
                raise LSNetError('--init_from {}: no such checkpoint file'.format(init_checkpoint(args.init_from, seed)))
        root = dataset_root(args)
        os.makedirs(args.out, exist_ok=True)
        # always through the generator: it renders a missing set and refuses an existing one made
        # with other options (e.g. a different --train_per_class), which would skew every table
        gen = subprocess.run([sys.executable, 'tools/gen_synthetic.py', '--out', root] + generator_argv(args),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if gen.returncode != 0:
            last = (gen.stderr.strip().splitlines() or ['exit {}'.format(gen.returncode)])[-1]
            raise LSNetError(last.replace('error: ', '', 1))
        if gen.stdout.strip():
            print(gen.stdout.strip())
        if not args.seeds:
            ablate(args, root)
            return 0
        summaries = {s: ablate(seed_args(args, s, i == 0), root) for i, s in enumerate(args.seeds)}
    except LSNetError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    table, numbers = mean_table(summaries, run_names(args))
    runs = {'seed{}/{}'.format(s, m): r for s, summ in summaries.items() for m, r in summ['runs'].items()}
    budget = recipe(args, args.seeds, runs)
    text = ('Synthetic ablation, top-1 % on the validation set, mean (min-max) over {} seeds ({}). '
            'Code: commit {}.\n\n{}\n'.format(len(args.seeds), budget, commits_of(runs), table))
    write_results(args.out, text, {'budget': budget, 'accuracy': numbers, 'runs': runs})
    return 0


if __name__ == '__main__':
    sys.exit(main())
