"""Every command of the TSM README that LSNet promises to run unchanged, and every recipe in scripts/.

The commands are run as written, with only size-reducing flags appended (epochs, batch size,
workers, ``--max_num``, ``--input_size``, the data root and output folders), on generated data in
the official folder layouts and generated checkpoints in the official model-zoo format (random
weights, the official key layout, official file names).  ``--pretrain imagenet`` (the default)
reads stand-in ImageNet files from a private torch hub cache, as it would after a download.
"""
import os
import shlex
import subprocess
import sys

import pytest

import main as train_main
import test_models
from tests.fakes import imagenet_cache, manifests, official_checkpoint, write_frames, write_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The TSM README's commands, verbatim (the command-line contract).
TEST_COMMANDS = {
    'test-tsn-kinetics': """python test_models.py kinetics \\
    --weights=pretrained/TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth \\
    --test_segments=8 --test_crops=1 \\
    --batch_size=64""",
    'test-tsm-kinetics': """python test_models.py kinetics \\
    --weights=pretrained/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth \\
    --test_segments=8 --test_crops=1 \\
    --batch_size=64""",
    'test-tsn-kinetics-nl-protocol': """python test_models.py kinetics \\
    --weights=pretrained/TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth \\
    --test_segments=8 --test_crops=3 \\
    --batch_size=8 --dense_sample --full_res""",
    'test-tsm-kinetics-dense': """python test_models.py kinetics \\
    --weights=pretrained/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense.pth \\
    --test_segments=8 --test_crops=3 \\
    --batch_size=8 --dense_sample --full_res""",
    'test-nl-tsm-kinetics-dense': """python test_models.py kinetics \\
    --weights=pretrained/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense_nl.pth \\
    --test_segments=8 --test_crops=3 \\
    --batch_size=8 --dense_sample --full_res""",
    'test-tsm-something-efficient': """python test_models.py something \\
    --weights=pretrained/TSM_something_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth \\
    --test_segments=8 --batch_size=72 -j 24 --test_crops=1""",
    'test-tsm-something-accurate': """python test_models.py something \\
    --weights=pretrained/TSM_something_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth \\
    --test_segments=8 --batch_size=72 -j 24 --test_crops=3  --twice_sample""",
}
TRAIN_COMMANDS = {
    'train-tsm-kinetics': """python main.py kinetics RGB \\
     --arch resnet50 --num_segments 8 \\
     --gd 20 --lr 0.02 --wd 1e-4 --lr_steps 20 40 --epochs 50 \\
     --batch-size 128 -j 16 --dropout 0.5 --consensus_type=avg --eval-freq=1 \\
     --shift --shift_div=8 --shift_place=blockres --npb""",
    'finetune-tsm-ucf101': """python main.py ucf101 RGB \\
     --arch resnet50 --num_segments 8 \\
     --gd 20 --lr 0.001 --lr_steps 10 20 --epochs 25 \\
     --batch-size 64 -j 16 --dropout 0.8 --consensus_type=avg --eval-freq=1 \\
     --shift --shift_div=8 --shift_place=blockres \\
     --tune_from=pretrained/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth""",
    'train-tsm-something': """python main.py something RGB \\
     --arch resnet50 --num_segments 8 \\
     --gd 20 --lr 0.01 --lr_steps 20 40 --epochs 50 \\
     --batch-size 64 -j 16 --dropout 0.5 --consensus_type=avg --eval-freq=1 \\
     --shift --shift_div=8 --shift_place=blockres --npb""",
}
# official file name -> (manifest, config changes that leave the key layout alone)
OFFICIAL_FILES = {
    'TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth': ('tsn_r50_k400', {'num_segments': 5}),
    'TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth': ('tsm_r50_k400', {}),
    'TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense.pth': ('tsm_r50_k400', {}),
    'TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense_nl.pth': ('tsm_r50_nl_k400', {}),
    'TSM_something_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth': ('tsm_r50_sthv2', {}),
}
# dataset -> (frame folder, frame template, train list, val list, category file, classes)
LAYOUTS = {
    'kinetics': ('kinetics/images', 'img_{:05d}.jpg', 'kinetics/labels/train_videofolder.txt',
                 'kinetics/labels/val_videofolder.txt', 'kinetics/labels/category.txt', 400),
    'something': ('something/v1/20bn-something-something-v1', '{:05d}.jpg', 'something/v1/train_videofolder.txt',
                  'something/v1/val_videofolder.txt', 'something/v1/category.txt', 174),
    'ucf101': ('UCF101/jpg', 'img_{:05d}.jpg', 'UCF101/file_list/ucf101_rgb_train_split_1.txt',
               'UCF101/file_list/ucf101_rgb_val_split_1.txt', 'UCF101/labels/classInd.txt', 101),
}
TEST_SMALL = ['-j', '0', '--max_num', '2', '--input_size', '32']
TRAIN_SMALL = ['--epochs', '1', '--batch-size', '2', '-j', '0', '--input_size', '32']


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A working folder holding ``pretrained/`` (official-format files), a data root in the official
    layouts of Kinetics, Something V1 and UCF101, and a torch hub cache with ImageNet stand-ins."""
    base = tmp_path_factory.mktemp('seed')
    data = str(base / 'data')
    for dataset, (frames, tmpl, train, val, cats, classes) in LAYOUTS.items():
        for split, path in (('train', train), ('val', val)):
            rows = []
            for i in range(3):
                vid = '{}_{}_{}'.format(dataset, split, i)
                write_frames(os.path.join(data, frames, vid), 10, template=tmpl, seed=i)
                rows.append('{} 10 {}'.format(vid, i))
            write_lines(os.path.join(data, path), rows)
        names = ['{} {}'.format(i + 1, 'Class{}'.format(i)) if dataset == 'ucf101' else 'class {}'.format(i)
                 for i in range(classes)]
        write_lines(os.path.join(data, cats), names)
    known = manifests()
    for name, (manifest, changes) in OFFICIAL_FILES.items():
        official_checkpoint(known[manifest], str(base / 'work' / 'pretrained' / name), **changes)
    torch_home = imagenet_cache(str(base / 'torch_home'))
    return {'base': str(base), 'data': data, 'work': str(base / 'work'), 'torch_home': torch_home}


@pytest.fixture
def in_world(world, monkeypatch):
    monkeypatch.chdir(world['work'])
    monkeypatch.setenv('LSNET_DATA_ROOT', world['data'])
    monkeypatch.setenv('TORCH_HOME', world['torch_home'])
    return world


def argv_of(command, script):
    """The arguments after ``python <script>`` of a README command."""
    words = shlex.split(command.replace('\\\n', ' '))
    assert words[:2] == ['python', script]
    return words[2:]


@pytest.mark.parametrize('name', TEST_COMMANDS)
def test_readme_test_command(name, in_world, capsys):
    assert test_models.main(argv_of(TEST_COMMANDS[name], 'test_models.py') + TEST_SMALL) == 0
    out = capsys.readouterr().out
    assert 'Overall Prec@1' in out
    load_line = next(line for line in out.splitlines() if line.startswith('=> pretrained/'))
    assert 'missing' not in load_line and 'unexpected' not in load_line  # every official key loaded
    assert ('shift 8/blockres' in load_line) == ('tsn' not in name)


@pytest.mark.parametrize('name', TRAIN_COMMANDS)
def test_readme_train_command(name, in_world, tmp_path, capsys):
    argv = argv_of(TRAIN_COMMANDS[name], 'main.py') + TRAIN_SMALL + [
        '--root_log', str(tmp_path / 'log'), '--root_model', str(tmp_path / 'ckpt')]
    assert train_main.main(argv) == 0
    out = capsys.readouterr().out
    (run,) = os.listdir(tmp_path / 'ckpt')
    assert run.startswith('TSM_{}_RGB_resnet50_shift8_blockres_avg_segment8_e1'.format(argv[0]))
    assert os.path.isfile(tmp_path / 'ckpt' / run / 'ckpt.pth.tar')
    if name.startswith('finetune'):
        assert 'fine-tuning from pretrained/TSM_kinetics' in out and 'dropped' in out


def run_script(world, tmp_path, script, args=(), env=None):
    """Run ``scripts/<script>`` from a checkout of the repo in ``tmp_path`` (links to the code,
    the generated ``pretrained/``), as a user would; returns the completed process."""
    checkout = tmp_path / 'repo'
    checkout.mkdir()
    for name in ('main.py', 'test_models.py', 'opts.py', 'ops', 'archs', 'tools', 'scripts'):
        os.symlink(os.path.join(ROOT, name), checkout / name)
    os.symlink(os.path.join(world['work'], 'pretrained'), checkout / 'pretrained')
    full_env = dict(os.environ, LSNET_DATA_ROOT=world['data'], TORCH_HOME=world['torch_home'],
                    PYTHONPATH=str(checkout))
    full_env.update(env or {})
    proc = subprocess.run(['bash', str(checkout / 'scripts' / script)] + list(args), cwd=str(tmp_path),
                          env=full_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize('script', ['test_tsm_kinetics_rgb_8f.sh', 'test_tsm_something_rgb_8f.sh'])
def test_test_script(script, world, tmp_path):
    proc = run_script(world, tmp_path, script, TEST_SMALL)
    assert proc.stdout.count('Overall Prec@1') == 2


@pytest.mark.parametrize('script', ['train_tsm_kinetics_rgb_8f.sh', 'train_tsm_kinetics_rgb_16f.sh',
                                    'train_tsn_kinetics_rgb_5f.sh', 'train_tsm_something_rgb_8f.sh',
                                    'finetune_tsm_ucf101_rgb_8f.sh'])
def test_train_script(script, world, tmp_path):
    out = tmp_path / 'out'
    proc = run_script(world, tmp_path, script, TRAIN_SMALL + ['--root_log', str(out / 'log'),
                                                             '--root_model', str(out / 'ckpt')])
    (run,) = os.listdir(out / 'ckpt')
    assert os.path.isfile(out / 'ckpt' / run / 'ckpt.pth.tar'), proc.stdout[-2000:]


SMOKE_GEN = '--train_per_class 2 --val_per_class 1'


def test_quickstart_script(world, tmp_path):
    proc = run_script(world, tmp_path, 'quickstart.sh', env={
        'LSNET_DATA_ROOT': str(tmp_path / 'data'), 'QUICKSTART_OUT': str(tmp_path / 'qs'),
        'QUICKSTART_EPOCHS': '1', 'QUICKSTART_GEN_ARGS': SMOKE_GEN})
    assert os.path.isfile(tmp_path / 'qs' / 'TSN.json') and os.path.isfile(tmp_path / 'qs' / 'TSM.json')
    assert proc.stdout.splitlines()[-1].startswith('== quickstart done in')


def test_ablation_synthetic_script(world, tmp_path):
    run_script(world, tmp_path, 'ablation_synthetic.sh', ['--no_diagnose'], env={
        'LSNET_DATA_ROOT': str(tmp_path / 'data'), 'ABLATION_OUT': str(tmp_path / 'abl'),
        'ABLATION_EPOCHS': '3', 'ABLATION_GEN_ARGS': SMOKE_GEN})  # LSNet-start2 needs 3
    assert os.path.isfile(tmp_path / 'abl' / 'table.md')


def test_ablation_far_order_script(world, tmp_path):
    run_script(world, tmp_path, 'ablation_far_order.sh', ['--no_diagnose', '--batch_size', '2'], env={
        'LSNET_DATA_ROOT': str(tmp_path / 'data'), 'ABLATION_OUT': str(tmp_path / 'far'),
        'SOURCE_EPOCHS': '1', 'SOURCE_GEN_ARGS': SMOKE_GEN, 'FAR_EPOCHS': '1',
        'FAR_GEN_ARGS': '--train_per_class 1 --val_per_class 1 --size 32', 'ABLATION_JOBS': '1'})
    assert os.path.isfile(tmp_path / 'far' / 'far-order_long-order_far-speed_far' / 'table.md')
