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


def test_ablation_init_from_starts_every_run_from_a_checkpoint_of_another_set(tmp_path, capsys):
    """--init_from: a TSM trained on the 16-class set starts TSM and LSNet runs on the 2-class
    order_far set (64-frame clips in the README; 56 here): the classifier is dropped, LSNet's own
    keys keep their initialisation, everything else comes from the file."""
    src_out, src_root = str(tmp_path / 'src'), str(tmp_path / 'set16')
    assert ablation.main(['--root', src_root, '--out', src_out, '--models', 'TSM', '--epochs', '1',
                          '--num_segments', '4', '--batch_size', '4', '--workers', '0', '--no_diagnose',
                          '--gen_args', '--train_per_class 1 --val_per_class 1 --frames 8 --size 32']) == 0
    src_args = ablation.build_parser().parse_args(['--root', src_root, '--out', src_out, '--num_segments', '4',
                                                   '--epochs', '1', '--batch_size', '4', '--workers', '0'])
    ckpt = ablation.checkpoint_path(src_args, src_root, 'TSM')
    out, root = str(tmp_path / 'out'), str(tmp_path / 'far')
    argv = ['--root', root, '--out', out, '--models', 'TSM', 'LSNet-shiftinit', '--epochs', '1',
            '--num_segments', '56', '--batch_size', '2', '--workers', '0', '--no_diagnose', '--gen_args',
            '--families order_far --train_per_class 1 --val_per_class 1 --frames 56 --size 32']
    assert ablation.main(argv + ['--init_from', ckpt]) == 0
    for run in ('TSM', 'LSNet-shiftinit'):
        log = open(os.path.join(out, run + '.train.log')).read()
        assert 'fine-tuning from ' + ckpt in log
        assert 'dropped (another dataset or shape): new_fc.weight, new_fc.bias' in log
        missing = log.split('not in checkpoint (kept as initialised): ')
        assert (len(missing) == 1) == (run == 'TSM')
        if run != 'TSM':
            assert all('.lsm.' in k for k in missing[1].splitlines()[0].split(', '))
    assert 'from ' + ckpt in open(os.path.join(out, 'table.md')).read()
    # the two protocols exclude each other; a missing file is named
    capsys.readouterr()
    assert ablation.main(argv + ['--init_from', ckpt, '--tune_from', 'TSM']) == 2
    assert ablation.main(argv + ['--init_from', str(tmp_path / 'seed{seed}.pth')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert 'give one of them' in err[0] and str(tmp_path / 'seed0.pth') in err[1]


def test_far_order_script_points_at_the_source_run_it_trains():
    """scripts/ablation_far_order.sh hard-codes the source checkpoint's run folder: it must be the one
    tools/ablation.py writes for the TSM run the script's first step trains."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, 'scripts', 'ablation_far_order.sh')).read()
    source = text.split('SOURCE="$OUT/source/')[1].split('"')[0].replace('${SOURCE_EPOCHS}', '10')
    args = ablation.build_parser().parse_args(['--root', 'data/synthetic_ablation', '--out', 'out/source',
                                               '--models', 'TSM', '--seed', '0'])
    path = ablation.checkpoint_path(args, 'data/synthetic_ablation', 'TSM')
    assert path == os.path.abspath(os.path.join('out/source', source))


def test_diagnostic_batches_sample_clips_as_test_models_does(tmp_path):
    """Clips exactly as long as the segments (the 64-frame far-order set): the diagnostics read every
    frame, as test_models.py does, not the validation rule's first frame repeated."""
    from tests.fakes import tsn
    from tools import gen_synthetic
    root = gen_synthetic.generate(str(tmp_path / 'set'), families=['rotation'], frames=8, size=32,
                                  num_train_per_class=1, num_val_per_class=1, workers=1)
    model = tsn(2, 8, arch='resnet18', pretrain='none', shift=True, input_size=32)
    clips, labels = ablation.fixed_batch(model, root, 'val_videofolder.txt', 2)
    assert clips.shape == (2, 8, 3, 32, 32) and labels.tolist() == [0, 1]
    frames = clips[0]
    assert all((frames[t] - frames[0]).abs().max() > 0.1 for t in range(1, 8))  # the object turns
