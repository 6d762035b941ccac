"""Checkpoint I/O: weights_only loading with numpy scalars, atomic save, key matching and errors."""
import io
import os
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn

from ops import checkpoint as ckpt_mod
from ops.checkpoint import (add_module_prefix, load_checkpoint, load_model, load_weights, make_checkpoint,
                            save_checkpoint, strip_module_prefix)
from ops.errors import LSNetError
from tests.fakes import tsn


def tiny(**kw):
    args = dict(num_class=5, num_segments=2, arch='resnet18', pretrain='none', dropout=0.5)
    args.update(kw)
    return tsn(**args)


def _reference_style_optimizer(model):
    """SGD whose lr is a numpy float64, as the reference's step schedule stores it."""
    opt = torch.optim.SGD([g for g in model.get_optim_policies() if g['params']], lr=0.01, momentum=0.9)
    decay = 0.1 ** (sum(3 >= np.array([2, 4])))
    for group in opt.param_groups:
        group['lr'] = 0.01 * decay * group['lr_mult']
    assert isinstance(opt.param_groups[0]['lr'], np.floating)
    return opt


def test_save_load_round_trip(tmp_path):
    model = tiny(shift=True)
    opt = _reference_style_optimizer(model)
    model(torch.randn(2, 6, 32, 32)).sum().backward()
    opt.step()
    path = tmp_path / 'run' / 'ckpt.pth.tar'
    save_checkpoint(make_checkpoint(model, opt, epoch=3, best_prec1=12.5, args={'lr': 0.01}), str(path))
    assert os.listdir(path.parent) == ['ckpt.pth.tar']  # no temp file left behind

    state = load_checkpoint(str(path))
    assert {'epoch', 'arch', 'state_dict', 'optimizer', 'best_prec1', 'config'} <= set(state)
    assert state['epoch'] == 3 and state['arch'] == 'resnet18' and state['best_prec1'] == 12.5
    assert all(k.startswith('module.') for k in state['state_dict'])
    assert isinstance(state['optimizer']['param_groups'][0]['lr'], np.float64)

    again, cfg, _ = load_model(str(path))
    assert cfg == model.cfg.replace(pretrain='none')
    report = load_weights(again, state, source=str(path))
    assert not report.missing and not report.unexpected and not report.dropped
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    opt2 = torch.optim.SGD([g for g in again.get_optim_policies() if g['params']], lr=0.01, momentum=0.9)
    opt2.load_state_dict(state['optimizer'])


def test_numpy1_pickles_load(tmp_path):
    """Files from numpy 1.x name the scalar rebuild function numpy.core.multiarray.scalar."""
    src = tmp_path / 'new.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'optimizer': {'lr': np.float64(0.001)}}, str(src))
    old = tmp_path / 'old.pth'
    with zipfile.ZipFile(str(src)) as zin, zipfile.ZipFile(str(old), 'w', zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith('data.pkl'):
                assert b'numpy._core.multiarray' in data
                data = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
            zout.writestr(item, data)
    state = load_checkpoint(str(old))
    assert state['optimizer']['lr'] == np.float64(0.001)


def test_other_globals_are_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'extra': io.BytesIO(b'x')}, str(path))
    with pytest.raises(LSNetError, match='evil.pth'):
        load_checkpoint(str(path))


def test_bare_state_dict_missing_and_corrupt_files(tmp_path):
    model = tiny()
    bare = tmp_path / 'bare.pth'
    torch.save(model.state_dict(), str(bare))
    state = load_checkpoint(str(bare))
    assert set(state) == {'state_dict'}
    with pytest.raises(LSNetError, match='nothere.pth'):
        load_checkpoint(str(tmp_path / 'nothere.pth'))
    bad = tmp_path / 'corrupt.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(LSNetError, match='corrupt.pth'):
        load_checkpoint(str(bad))


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth.tar'
    save_checkpoint({'state_dict': {'w': torch.zeros(1)}}, str(path))

    def broken_save(obj, f):
        f.write(b'half')
        raise KeyboardInterrupt
    monkeypatch.setattr(ckpt_mod.torch, 'save', broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({'state_dict': {'w': torch.ones(1)}}, str(path))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ['ckpt.pth.tar']
    assert torch.equal(load_checkpoint(str(path))['state_dict']['w'], torch.zeros(1))


def test_prefix_helpers():
    sd = {'module.a': 1, 'b': 2}
    assert strip_module_prefix(sd) == {'a': 1, 'b': 2}
    assert add_module_prefix(sd) == {'module.a': 1, 'module.b': 2}


def test_wrong_class_count_error_and_finetune_drop(tmp_path):
    src = tiny(num_class=7, shift=True)
    path = tmp_path / 'TSM_other_RGB_resnet18_shift8_blockres_avg_segment2_e1.pth'
    save_checkpoint(make_checkpoint(src), str(path))
    state = load_checkpoint(str(path))
    target = tiny(num_class=5, shift=True)
    with pytest.raises(LSNetError) as info:
        load_weights(target, state, source=str(path))
    msg = str(info.value)
    assert str(path) in msg and 'new_fc.weight' in msg and '\n' not in msg

    fc_before = target.new_fc.weight.clone()
    report = load_weights(target, state, finetune=True, source=str(path))
    assert report.dropped == ['new_fc.weight', 'new_fc.bias']
    assert 'dropped 2' in report.summary()
    assert torch.equal(target.new_fc.weight, fc_before)
    assert torch.equal(target.base_model.conv1.weight, src.base_model.conv1.weight)


def test_finetune_from_another_dataset_drops_classifier_of_same_shape():
    """Fine-tuning on another dataset re-initialises the classifier even when the class counts agree."""
    src, target = tiny(), tiny()
    fc_before = target.new_fc.weight.clone()
    report = load_weights(target, src.state_dict(), finetune=True, source='src.pth', drop_classifier=True)
    assert report.dropped == ['new_fc.weight', 'new_fc.bias']
    assert torch.equal(target.new_fc.weight, fc_before)
    assert torch.equal(target.base_model.conv1.weight, src.base_model.conv1.weight)


def test_same_dataset_reads_stored_dataset_before_file_name():
    from main import same_dataset
    assert same_dataset({'dataset': 'ucf101'}, 'TSM_kinetics_RGB_x.pth', 'ucf101')
    assert not same_dataset({'dataset': 'kinetics'}, 'runs/ucf101/ckpt.pth.tar', 'ucf101')
    assert same_dataset({}, 'pretrained/TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth', 'kinetics')
    assert not same_dataset({}, 'pretrained/TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth', 'ucf101')


def test_finetune_flow_from_rgb_drops_first_conv():
    rgb = tiny(num_class=7)
    flow = tiny(modality='Flow')
    with pytest.raises(LSNetError, match='conv1.weight'):
        load_weights(flow, rgb.state_dict(), source='rgb.pth')
    report = load_weights(flow, rgb.state_dict(), finetune=True, source='rgb.pth')
    assert report.dropped == ['base_model.conv1.weight', 'new_fc.weight', 'new_fc.bias']
    assert flow.base_model.conv1.weight.shape[1] == 10
    assert torch.equal(flow.base_model.layer1[0].conv1.weight, rgb.base_model.layer1[0].conv1.weight)


def test_tsn_tsm_renames_and_classifier_rename():
    tsn = tiny()
    tsm = tiny(shift=True)
    report = load_weights(tsm, add_module_prefix(tsn.state_dict()), source='tsn')
    assert ('base_model.layer1.0.conv1.weight', 'base_model.layer1.0.conv1.net.weight') in report.renamed
    assert torch.equal(tsm.base_model.layer1[0].conv1.net.weight, tsn.base_model.layer1[0].conv1.weight)
    back = load_weights(tiny(), tsm.state_dict(), source='tsm')
    assert len(back.renamed) == 8 and not back.missing

    mb = tiny(arch='mobilenetv2', shift=True)
    sd = {(k.replace('new_fc.', 'base_model.classifier.')): v for k, v in mb.state_dict().items()}
    report = load_weights(tiny(arch='mobilenetv2', shift=True), sd, source='mbv2')
    assert 'new_fc.weight' in report.loaded and not report.unexpected


def test_missing_and_unexpected_keys():
    model = tiny(shift=True)
    sd = model.state_dict()
    lsm = nn.Module()
    lsm.conv = nn.Conv2d(2, 2, 1)
    with_lsm = tiny(shift=True)
    with_lsm.base_model.layer1[0].lsm = lsm
    report = load_weights(with_lsm, sd, source='plain')  # LSM keys may be missing: new branches
    assert report.missing == ['base_model.layer1.0.lsm.conv.weight', 'base_model.layer1.0.lsm.conv.bias']

    partial = {k: v for k, v in sd.items() if 'layer4' not in k}
    with pytest.raises(LSNetError, match='missing keys base_model.layer4'):
        load_weights(tiny(shift=True), partial, source='partial.pth')
    extra = dict(sd, **{'base_model.extra.weight': torch.zeros(1)})
    with pytest.raises(LSNetError, match='unexpected keys base_model.extra.weight'):
        load_weights(tiny(shift=True), extra, source='extra.pth')
    report = load_weights(tiny(shift=True), extra, finetune=True, source='extra.pth')
    assert report.unexpected == ['base_model.extra.weight']


def test_data_parallel_wrapped_model():
    model = tiny()
    wrapped = nn.DataParallel(tiny())
    load_weights(wrapped, make_checkpoint(model), source='x')
    state = make_checkpoint(wrapped)
    assert not any(k.startswith('module.module.') for k in state['state_dict'])
    assert state['config']['num_class'] == 5


def test_load_model_official_name_and_own_checkpoint(tmp_path):
    """One path from a file to a model: an official file (config from its name, classes from its
    classifier) and our own checkpoint (stored config) give the model with every weight loaded."""
    from tests.fakes import manifests, official_checkpoint
    path = str(tmp_path / 'TSM_kinetics_RGB_resnet18_shift8_blockres_avg_segment8_e50.pth')
    official_checkpoint(manifests()['tsm_r18_k400'], path)
    model, cfg, ckpt = load_model(path, num_segments=4)
    assert (cfg.arch, cfg.num_class, cfg.num_segments, cfg.shift, cfg.shift_div) == ('resnet18', 400, 4, True, 8)
    assert not model.training and 'config' not in ckpt
    sd = strip_module_prefix(ckpt['state_dict'])
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())

    ours = str(tmp_path / 'ours.pth.tar')
    save_checkpoint(make_checkpoint(tiny(shift=True, lsm=True, input_size=48), None, epoch=2), ours)
    model, cfg, ckpt = load_model(ours)
    assert cfg.lsm and cfg.input_size == 48 and cfg.num_class == 5 and model.crop_size == 48
    assert ckpt['epoch'] == 2
