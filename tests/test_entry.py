"""User errors exit 2 with one line; a NaN loss stops without saving; SIGINT / SIGKILL leave a
resumable checkpoint (subprocesses)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import main as train_main
from test_e2e import ARCH, ROOT, data_flags, make_color_dataset, run_dir, test_models, train_argv


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_color_dataset(str(tmp_path_factory.mktemp('entry') / 'data'))


def _one_line_error(capsys, fragment):
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err, err
    assert fragment in err, err


def test_unknown_dataset(capsys, tmp_path):
    assert train_main.main(['nosuchset', 'RGB', '--root_path', str(tmp_path)]) == 2
    _one_line_error(capsys, 'unknown dataset')


def test_missing_list(capsys, data, tmp_path):
    argv = train_argv(data, str(tmp_path))
    argv[argv.index('--train_list') + 1] = os.path.join(data, 'missing.txt')
    assert train_main.main(argv) == 2
    _one_line_error(capsys, 'missing.txt')


@pytest.mark.parametrize('flags, fragment', [
    (['--lsm'], '--lsm needs --shift'),
    (['--temporal_pool', '--num_segments', '3'], '--temporal_pool'),
    (['--resume', 'nowhere/ckpt.pth.tar'], 'nowhere'),
    (['--shift', '--shift_div', '0'], '--shift_div'),
    (['--dropout', '1.5'], '--dropout'),
    (['--momentum', '-1'], '--momentum'),
    (['--lr_steps', '-1'], '--lr_steps -1'),
])
def test_bad_flag_combinations(capsys, data, tmp_path, flags, fragment):
    argv = [a for a in train_argv(data, str(tmp_path)) if a != '--shift'] + flags
    assert train_main.main(argv) == 2
    _one_line_error(capsys, fragment)


@pytest.mark.parametrize('entry, argv, fragment', [
    (test_models.main, ['custom', '--weights', 'a.pth', '--test_crops', '7'], 'argument --test_crops: invalid choice'),
    (train_main.main, ['kinetics', 'Depth'], "argument modality: invalid choice: 'Depth'"),
    (train_main.main, ['kinetics', 'RGB', '--lr_steps', 'abc'], 'argument --lr_steps'),
    (train_main.main, ['kinetics', 'RGB', '--no_such_flag'], 'unrecognized arguments: --no_such_flag'),
])
def test_argparse_errors_are_one_line(capsys, entry, argv, fragment):
    """argparse's own errors (bad choice, type, unknown flag) end like every user error: one line, exit 2."""
    with pytest.raises(SystemExit) as e:
        entry(argv)
    assert e.value.code == 2
    _one_line_error(capsys, fragment)


def test_resume_names_every_changed_architecture_field(capsys, data, tmp_path):
    """--resume with other architecture flags: one line naming each field that differs."""
    from ops.checkpoint import make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    model = tsn(4, 2, 'RGB', arch='resnet18', pretrain='none', shift=True, shift_div=4, input_size=32)
    ours = str(tmp_path / 'ours.pth.tar')
    save_checkpoint(make_checkpoint(model, None, epoch=1), ours)
    assert train_main.main(train_argv(data, str(tmp_path), extra=['--resume', ours])) == 2
    err = capsys.readouterr().err
    assert "num_segments is 2 in the checkpoint, 4 from the flags" in err
    assert "shift_div is 4 in the checkpoint, 8 from the flags" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(str(tmp_path), 'checkpoint'))


def test_checkpoint_of_another_arch(capsys, data, tmp_path):
    from ops.checkpoint import make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    model = tsn(4, 4, 'RGB', arch='mobilenetv2', pretrain='none', shift=True, input_size=32)
    ours = str(tmp_path / 'ours.pth.tar')
    save_checkpoint(make_checkpoint(model, None, epoch=1), ours)
    assert train_main.main(train_argv(data, str(tmp_path), extra=['--resume', ours])) == 2
    _one_line_error(capsys, "arch is 'mobilenetv2' in the checkpoint")
    state = make_checkpoint(model, None, epoch=1)
    del state['config']  # official files carry no config: the name says resnet18, the weights do not
    official = str(tmp_path / 'TSM_custom_RGB_resnet18_shift8_blockres_avg_segment4_e1.pth')
    save_checkpoint(state, official)
    argv = ['custom', '--weights', official] + data_flags(data)[:2] + data_flags(data)[6:] + \
        ['--test_list', os.path.join(data, 'val.txt'), '-j', '0', '--input_size', '32']
    assert test_models.main(argv) == 2
    _one_line_error(capsys, 'does not fit the model')
    # fine-tuning tolerates missing keys, but not a backbone of another architecture
    assert train_main.main(train_argv(data, str(tmp_path), extra=['--tune_from', ours])) == 2
    _one_line_error(capsys, 'backbone tensors match')


def test_nan_loss_stops_without_checkpoint(capsys, data, tmp_path):
    argv = train_argv(data, str(tmp_path), extra=['--lr', '1e30', '--lr_steps', '100'])
    assert train_main.main(argv) == 2
    _one_line_error(capsys, 'at epoch 0 step')
    assert not os.path.exists(os.path.join(run_dir(str(tmp_path)), 'ckpt.pth.tar'))


def _wait_for_epoch(path, proc, epoch, timeout=240):
    from ops.checkpoint import load_checkpoint
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, 'run ended before it could be interrupted'
        if os.path.exists(path):
            try:
                if load_checkpoint(path)['epoch'] >= epoch:
                    return
            except Exception:  # noqa: BLE001 - being replaced right now; poll again
                pass
        time.sleep(0.2)
    raise AssertionError('no checkpoint of epoch {} after {} s'.format(epoch, timeout))


def test_sigint_then_sigkill_then_resume_finishes(data, tmp_path):
    from ops.checkpoint import load_checkpoint
    out = str(tmp_path)
    argv = train_argv(data, out, epochs=3, extra=['--lr_steps', '100', '--eval-freq', '3'])
    ckpt = os.path.join(run_dir(out, 3), 'ckpt.pth.tar')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    cmd = [sys.executable, os.path.join(ROOT, 'main.py')] + argv

    # SIGINT mid-epoch: clean exit (130), the last complete checkpoint intact
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_epoch(ckpt, proc, 1)
    proc.send_signal(signal.SIGINT)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, text
    assert 'interrupted' in text and 'Traceback' not in text
    first = load_checkpoint(ckpt)['epoch']
    assert 1 <= first < 3

    # resume, then SIGKILL once it has saved another epoch
    proc = subprocess.Popen(cmd + ['--resume', run_dir(out, 3)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if first < 2:
        _wait_for_epoch(ckpt, proc, 2)
    time.sleep(0.5)
    assert proc.poll() is None, 'the resumed run ended before SIGKILL: nothing was killed mid-epoch'
    proc.kill()
    proc.wait(timeout=60)
    after_kill = load_checkpoint(ckpt)['epoch']  # loads: the kill left a complete checkpoint
    assert first <= after_kill <= 3

    # in-process resume from the run folder finishes the schedule
    assert train_main.main(argv + ['--resume', run_dir(out, 3)]) == 0
    final = load_checkpoint(ckpt)
    assert final['epoch'] == 3
    assert all(torch.isfinite(v).all() for v in final['state_dict'].values() if v.is_floating_point())


def test_bf16_amp_with_warmup_trains(data, tmp_path):
    import csv
    out = str(tmp_path)
    assert train_main.main(train_argv(data, out, epochs=1, extra=['--amp', '--warmup', '0.5', '--no_channels_last'])) == 0
    log_dir = os.path.join(out, 'log', os.path.basename(run_dir(out, 1)))
    row = list(csv.DictReader(open(os.path.join(log_dir, 'log.csv'))))[0]
    assert float(row['train_loss']) > 0 and float(row['lr']) == pytest.approx(0.02)


def _copy_data(data, tmp_path):
    import shutil
    copy = str(tmp_path / 'data')
    shutil.copytree(data, copy)
    return copy


def test_error_in_a_loader_worker_is_one_line(capsys, data, tmp_path):
    """A missing frame found by a DataLoader worker process still ends in one line, not its traceback."""
    copy = _copy_data(data, tmp_path)
    os.remove(os.path.join(copy, 'frames', 'train_red_0', 'img_00005.jpg'))
    argv = train_argv(copy, str(tmp_path), extra=['-j', '1'])
    assert train_main.main(argv) == 2
    _one_line_error(capsys, 'img_00005.jpg')


def test_label_out_of_range_names_the_line(capsys, data, tmp_path):
    copy = _copy_data(data, tmp_path)
    for name in ('train.txt', 'val.txt'):
        path = os.path.join(copy, name)
        lines = open(path).read().splitlines()
        lines[2] = lines[2].rsplit(' ', 1)[0] + ' 9'
        open(path, 'w').write('\n'.join(lines) + '\n')
    assert train_main.main(train_argv(copy, str(tmp_path))) == 2
    _one_line_error(capsys, 'train.txt:3: label 9 is out of range for 4 classes')
    from ops.checkpoint import make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    ckpt = str(tmp_path / 'model.pth.tar')
    save_checkpoint(make_checkpoint(tsn(4, 4, 'RGB', arch=ARCH, pretrain='none', input_size=32)), ckpt)
    argv = ['custom', '--weights', ckpt] + data_flags(copy)[:2] + data_flags(copy)[6:] + \
        ['--test_list', os.path.join(copy, 'val.txt'), '-j', '0']
    assert test_models.main(argv) == 2
    _one_line_error(capsys, 'val.txt:3: label 9 is out of range')


@pytest.mark.parametrize('flag, kind', [('--train_list', 'list'), ('--category_file', 'category')])
def test_undecodable_list_or_category_file(capsys, data, tmp_path, flag, kind):
    """A binary file given as a list or category file is one line naming it, not a UnicodeDecodeError."""
    binary = str(tmp_path / 'binary.txt')
    open(binary, 'wb').write(b'\xff\xfe\x00 not text\n')
    argv = train_argv(data, str(tmp_path))
    argv[argv.index(flag) + 1] = binary
    assert train_main.main(argv) == 2
    _one_line_error(capsys, 'cannot read {} file {}'.format(kind, binary))


def test_empty_list_is_one_line(capsys, data, tmp_path):
    """An empty validation or test list stops before training or scoring, naming the file."""
    empty = str(tmp_path / 'empty.txt')
    open(empty, 'w').close()
    argv = train_argv(data, str(tmp_path))
    argv[argv.index('--val_list') + 1] = empty
    assert train_main.main(argv) == 2
    _one_line_error(capsys, 'list file {} names no videos'.format(empty))
    assert not os.path.exists(os.path.join(str(tmp_path), 'ckpt'))
    ckpt = str(tmp_path / 'model.pth.tar')
    from ops.checkpoint import make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    save_checkpoint(make_checkpoint(tsn(4, 4, 'RGB', arch=ARCH, pretrain='none', input_size=32)), ckpt)
    argv = ['custom', '--weights', ckpt] + data_flags(data)[:2] + data_flags(data)[6:] + \
        ['--test_list', empty, '-j', '0']
    assert test_models.main(argv) == 2
    _one_line_error(capsys, 'list file {} names no videos'.format(empty))


@pytest.mark.parametrize('flag', ['--root_model', '--root_log'])
def test_output_folder_that_cannot_be_made(capsys, data, tmp_path, flag):
    """--root_model / --root_log under a file: one line naming the flag, not a NotADirectoryError."""
    a_file = str(tmp_path / 'a_file')
    open(a_file, 'w').close()
    argv = train_argv(data, str(tmp_path), epochs=1)
    argv[argv.index(flag) + 1] = a_file
    assert train_main.main(argv) == 2
    _one_line_error(capsys, '{} {}: cannot create folder'.format(flag, a_file))


def test_resume_with_other_parameter_groups(capsys, data, tmp_path):
    out = str(tmp_path)
    assert train_main.main(train_argv(data, out, epochs=1)) == 0
    capsys.readouterr()
    argv = train_argv(data, out, epochs=2, extra=['--npb', '--resume', run_dir(out, 1)])
    assert train_main.main(argv) == 2
    _one_line_error(capsys, '--npb')


@pytest.fixture(scope='module')
def official_tsm(tmp_path_factory):
    """An official-style weight file (bare name, no stored config) for the custom dataset."""
    from ops.checkpoint import make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    folder = tmp_path_factory.mktemp('official')
    state = make_checkpoint(tsn(4, 4, 'RGB', arch=ARCH, pretrain='none', shift=True, input_size=32))
    del state['config']
    path = str(folder / 'TSM_custom_RGB_{}_shift8_blockres_avg_segment4_e1.pth'.format(ARCH))
    save_checkpoint(state, path)
    return path


@pytest.mark.parametrize('extra, fragment', [
    (['--dense_sample', '--twice_sample'], 'do not combine'),
    (['--test_segments', '0'], '--test_segments must be at least 1'),
    (['-j', '-1'], '--workers must be at least 0'),
    (['--csv_file', 'no/such/folder/pred.csv'], '--csv_file no/such/folder/pred.csv'),
    (['--save_scores', 'no/such/folder/s.npz'], 'does not exist'),
])
def test_test_models_bad_flags(capsys, data, official_tsm, extra, fragment):
    argv = ['custom', '--weights', official_tsm] + data_flags(data)[:2] + data_flags(data)[6:] + \
        ['--test_list', os.path.join(data, 'val.txt'), '-j', '0', '--input_size', '32'] + extra
    assert test_models.main(argv) == 2
    _one_line_error(capsys, fragment)


@pytest.mark.parametrize('flag, target', [('--csv_file', 'list'), ('--save_scores', 'weights'),
                                          ('--json_file', 'csv')])
def test_test_models_output_that_is_an_input_or_another_output(capsys, data, official_tsm, tmp_path, flag, target):
    """An output naming an input file (or another output) is refused before scoring; nothing is overwritten."""
    import shutil
    val = str(tmp_path / 'val.txt')
    shutil.copyfile(os.path.join(data, 'val.txt'), val)
    paths = {'list': val, 'weights': official_tsm, 'csv': str(tmp_path / 'pred.csv')}
    before = {k: open(v, 'rb').read() for k, v in paths.items() if os.path.exists(v)}
    argv = ['custom', '--weights', official_tsm] + data_flags(data)[:2] + data_flags(data)[6:] + \
        ['--test_list', val, '-j', '0', '--input_size', '32', '--csv_file', paths['csv'], flag, paths[target]]
    if flag == '--csv_file':
        argv = argv[:-4] + argv[-2:]
    assert test_models.main(argv) == 2
    _one_line_error(capsys, 'is also {}'.format({'list': '--test_list', 'weights': '--weights',
                                                  'csv': '--csv_file'}[target]))
    assert {k: open(v, 'rb').read() for k, v in paths.items() if os.path.exists(v)} == before


@pytest.mark.parametrize('content, name, fragment', [
    (b'not a checkpoint', 'TSM_custom_RGB_resnet18_shift8_blockres_avg_segment4_e1.pth', 'cannot read checkpoint'),
    (None, 'TSM_custom_RGB_resnet18_shiftX_blockres_avg_segment4_e1.pth', 'cannot read the shift'),
])
def test_test_models_bad_weight_files(capsys, data, official_tsm, tmp_path, content, name, fragment):
    path = str(tmp_path / name)
    if content is None:
        import shutil
        shutil.copyfile(official_tsm, path)
    else:
        open(path, 'wb').write(content)
    argv = ['custom', '--weights', path] + data_flags(data)[:2] + data_flags(data)[6:] + \
        ['--test_list', os.path.join(data, 'val.txt'), '-j', '0', '--input_size', '32']
    assert test_models.main(argv) == 2
    _one_line_error(capsys, fragment)


def test_skip_bad_videos_trains_around_a_broken_video(caplog, data, tmp_path):
    import shutil
    copy = _copy_data(data, tmp_path)
    shutil.rmtree(os.path.join(copy, 'frames', 'train_red_0'))
    assert train_main.main(train_argv(copy, str(tmp_path), epochs=1)) == 2  # default: stop
    with caplog.at_level('WARNING'):
        assert train_main.main(train_argv(copy, str(tmp_path), epochs=1, extra=['--skip_bad_videos'])) == 0
    assert 'skipping bad video train_red_0' in caplog.text


def test_failed_rerun_keeps_the_earlier_logs(capsys, data, tmp_path):
    """A new run under a finished run's name that fails at once leaves the earlier logs intact."""
    import shutil
    copy = _copy_data(data, tmp_path)
    out = str(tmp_path / 'out')
    argv = train_argv(copy, out, epochs=1, extra=['-j', '0'])
    assert train_main.main(argv) == 0
    log_dir = os.path.join(out, 'log', os.path.basename(run_dir(out, 1)))
    before = {n: open(os.path.join(log_dir, n)).read() for n in ('log.txt', 'log.csv', 'args.txt')}
    assert len(before['log.csv'].splitlines()) == 2  # header and epoch 0
    capsys.readouterr()
    shutil.rmtree(os.path.join(copy, 'frames', 'train_red_0'))
    assert train_main.main(argv) == 2
    _one_line_error(capsys, 'train_red_0')
    kept = os.path.join(log_dir, 'previous_runs', '1')
    assert {n: open(os.path.join(kept, n)).read() for n in before} == before
    assert any(n.startswith('events.out.tfevents.') for n in os.listdir(kept))
    assert 'moved to ' + kept in open(os.path.join(log_dir, 'log.txt')).read()


TOOLS = ('ablation', 'bench_data', 'bench_online', 'bench_shift', 'bench_train', 'demo', 'download_pretrained',
         'early_recognition', 'export', 'extract_frames', 'gen_label_hmdb51', 'gen_label_jester',
         'gen_label_kinetics', 'gen_label_sthv1', 'gen_label_sthv2', 'gen_label_ucf101', 'gen_synthetic',
         'model_stats', 'online_demo', 'vid2img_kinetics', 'vid2img_sthv2')


@pytest.mark.parametrize('tool', TOOLS)
def test_every_tool_reports_flag_mistakes_in_one_line(capsys, tool):
    import importlib
    with pytest.raises(SystemExit) as e:
        importlib.import_module('tools.' + tool).main(['--no_such_flag'])
    assert e.value.code == 2
    _one_line_error(capsys, 'argument')
