"""tools/ablation.py end to end on a tiny synthetic set: train, evaluate, diagnose, knock out."""
import json
import os

from tools import ablation


def test_ablation_smoke_run_writes_the_table_and_a_consistent_knockout(tmp_path):
    out, root = str(tmp_path / 'out'), str(tmp_path / 'set')
    argv = ['--root', root, '--out', out, '--models', 'LSNet-split', '--epochs', '1',
            '--num_segments', '4', '--batch_size', '4', '--workers', '0', '--diag_clips', '4',
            '--gen_args', '--train_per_class 2 --val_per_class 2 --frames 8 --size 32']
    assert ablation.main(argv) == 0
    result = json.load(open(os.path.join(out, 'LSNet-split.json')))
    diag = json.load(open(os.path.join(out, 'diagnostics.json')))['LSNet-split']
    assert [r['module'] for r in diag['modules']] == [
        'layer{}.{}.lsm'.format(k, i) for k in (1, 2, 3, 4) for i in (0, 1)]
    rows = {r['off']: r for r in diag['knockout']}
    assert list(rows) == ['none', 'short in stage 1', 'short in stage 2', 'long in stage 3',
                          'long in stage 4', 'short in every stage', 'long in every stage']
    # nothing switched off scores the validation set as test_models.py did, group by group
    assert abs(rows['none']['top1'] - result['top1']) < 1e-6
    for g in result['groups']:
        assert abs(rows['none'][g['group']] - g['acc']) < 1e-6
    table = open(os.path.join(out, 'diagnostics.md')).read()
    assert '| long in stage 3 |' in table and 'switched off at test time' in table


def test_ablation_fine_tuning_protocol_starts_every_model_from_the_source_run(tmp_path):
    out, root = str(tmp_path / 'out'), str(tmp_path / 'set')
    argv = ['--root', root, '--out', out, '--models', 'LSNet', '--tune_from', 'TSM', '--epochs', '1',
            '--tune_epochs', '2', '--num_segments', '4', '--batch_size', '4', '--workers', '0',
            '--no_diagnose', '--gen_args', '--train_per_class 1 --val_per_class 1 --frames 8 --size 32']
    assert ablation.main(argv) == 0
    args = ablation.build_parser().parse_args(argv)
    assert ablation.run_names(args) == ['TSM', 'LSNet@TSM']
    train = ablation.train_argv(args, root, 'LSNet@TSM')
    assert train[train.index('--tune_from') + 1] == ablation.checkpoint_path(args, root, 'TSM')
    assert train[train.index('--epochs') + 1] == '2' and '--lsm' in train
    from ops.checkpoint import load_checkpoint
    ckpt = load_checkpoint(ablation.checkpoint_path(args, root, 'LSNet@TSM'))
    assert ckpt['epoch'] == 2 and ckpt['config']['lsm']
    # LSNet starts as the TSM run: only the module's own keys came from elsewhere
    log = open(os.path.join(out, 'LSNet@TSM.train.log')).read()
    missing = log.split('not in checkpoint (kept as initialised): ')[1].splitlines()[0].split(', ')
    assert missing and all('.lsm.' in k for k in missing)
    table = open(os.path.join(out, 'table.md')).read()
    assert 'LSNet@TSM' in table and '2 more epochs of the same recipe from the TSM run' in table


def test_ablation_refuses_a_set_made_with_other_generator_options(tmp_path, capsys):
    out, root = str(tmp_path / 'out'), str(tmp_path / 'set')
    small = '--train_per_class 1 --val_per_class 1 --frames 8 --size 32'
    from tools import gen_synthetic
    assert gen_synthetic.main(['--out', root, '--families', *ablation.ABLATION_FAMILIES] + small.split()) == 0
    argv = ['--root', root, '--out', out, '--models', 'TSN', '--epochs', '1', '--no_diagnose',
            '--gen_args', small.replace('--train_per_class 1', '--train_per_class 2')]
    assert ablation.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and root in err[0] and 'num_train_per_class=1 (wanted 2)' in err[0]
    assert 'another folder' in err[0] and not os.path.exists(os.path.join(out, 'TSN.json'))
