"""The classifier's learning rate (--fc_lr5): the reference's 5x / 10x for a new head on a
pretrained backbone, the base rate from scratch; logged, stored in the checkpoint, kept on --resume."""
import os

import pytest

import main as train_main
from test_e2e import make_color_dataset, run_dir, train_argv


@pytest.mark.parametrize('flag, pretrained, same, expected', [
    ('auto', False, False, False),   # from scratch: base rate
    ('auto', True, False, True),     # ImageNet backbone or --tune_from another dataset: x5 / x10
    ('auto', True, True, False),     # fine-tuning from the same dataset (the reference's exception)
    ('on', False, False, True),      # the reference's rule, whatever the start
    ('on', True, True, False),
    ('off', True, False, False),
])
def test_classifier_lr5_rule(flag, pretrained, same, expected):
    assert train_main.classifier_lr5(flag, pretrained, same)[0] is expected


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_color_dataset(str(tmp_path_factory.mktemp('recipe') / 'data'))


def _groups(ckpt):
    """{group name: (number of parameters, lr)} of a saved optimizer."""
    return {g['name']: (len(g['params']), g['lr']) for g in ckpt['optimizer']['param_groups']}


def test_from_scratch_trains_the_classifier_at_the_base_rate(data, tmp_path, caplog):
    from ops.checkpoint import load_checkpoint
    caplog.set_level('INFO')
    out = str(tmp_path)
    assert train_main.main(train_argv(data, out, epochs=1)) == 0  # --pretrain none
    ck = load_checkpoint(os.path.join(run_dir(out, 1), 'ckpt.pth.tar'))
    groups = _groups(ck)
    assert ck['fc_lr5'] is False and groups['lr5_weight'][0] == 0 and groups['lr10_bias'][0] == 0
    assert 'classifier learning rate: base rate (--fc_lr5 auto, backbone from scratch)' in caplog.text

    # --resume keeps what the run started with, whatever --fc_lr5 says now
    caplog.clear()
    assert train_main.main(train_argv(data, out, epochs=2, extra=['--resume', run_dir(out, 1), '--fc_lr5', 'on'])) == 0
    assert load_checkpoint(os.path.join(run_dir(out, 2), 'ckpt.pth.tar'))['fc_lr5'] is False
    assert 'base rate (kept from the resumed run)' in caplog.text


def test_fine_tuned_from_another_dataset_trains_the_classifier_at_5x_10x(data, tmp_path):
    from ops.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
    from tests.fakes import tsn
    state = make_checkpoint(tsn(7, 4, arch='resnet18', pretrain='none', shift=True, input_size=32), epoch=3)
    del state['config']  # as an official file: the configuration is in its name
    source = str(tmp_path / 'TSM_kinetics_RGB_resnet18_shift8_blockres_avg_segment4_e3.pth')
    save_checkpoint(state, source)
    out = str(tmp_path / 'runs')
    assert train_main.main(train_argv(data, out, epochs=1, extra=['--tune_from', source])) == 0
    ck = load_checkpoint(os.path.join(run_dir(out, 1), 'ckpt.pth.tar'))
    groups = _groups(ck)
    assert ck['fc_lr5'] is True and groups['lr5_weight'][0] == 1 and groups['lr10_bias'][0] == 1
    base = groups['normal_weight'][1]
    assert groups['lr5_weight'][1] == pytest.approx(5 * base) and groups['lr10_bias'][1] == pytest.approx(10 * base)
