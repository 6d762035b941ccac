"""TSN wrapper: shapes, modalities, partial BN, optimizer groups, config, pretrained-weight errors."""
import importlib.util
import json
import urllib.error

import pytest
import torch
import torch.nn as nn
import torchvision

from archs.mobilenet_v2 import MobileNetV2, from_torchvision_keys
from ops.checkpoint import load_weights
from ops.errors import LSNetError
from ops.config import ModelConfig
from ops.models import build_model
from tests.fakes import tsn


def tiny(**kw):
    """A ResNet-18 model of 5 classes, 4 segments; partial BN on unless ``partial_bn=False``."""
    args = dict(num_class=5, num_segments=4, arch='resnet18', pretrain='none', dropout=0.5, partial_bn=True)
    args.update(kw)
    return tsn(**args)


def test_forward_layouts_and_consensus():
    m = tiny(shift=True).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        a = m(x)
        b = m(x.view(2, 12, 32, 32))
    assert a.shape == (2, 5) and torch.equal(a, b)
    ident = tiny(shift=True, consensus_type='identity')
    ident.load_state_dict(m.state_dict())
    ident.eval()
    with torch.no_grad():
        per_seg = ident(x)
    assert per_seg.shape == (2, 4, 5)
    assert torch.allclose(per_seg.mean(1), a, atol=1e-6)
    with pytest.raises(ValueError):
        m(torch.randn(1, 10, 32, 32))


def test_fold_zero_makes_tsm_equal_tsn():
    tsn = tiny().eval()
    tsm = tiny(shift=True, shift_div=10 ** 6).eval()  # fold = C // div = 0 everywhere
    report = load_weights(tsm, tsn.state_dict(), source='tsn')
    assert len(report.renamed) == 8 and not report.missing
    x = torch.randn(2, 12, 32, 32)
    with torch.no_grad():
        assert torch.equal(tsm(x), tsn(x))


def test_temporal_pool_model_sees_half_the_segments():
    m = tiny(shift=True, temporal_pool=True, consensus_type='identity')
    assert m.output_segments == 2
    assert 'base_model.layer2.net.0.conv1.net.weight' in m.state_dict()
    assert m(torch.randn(2, 12, 32, 32)).shape == (2, 2, 5)


def test_lean_and_fast_models_agree():
    fast = tiny(shift=True)
    lean = tiny(shift=True, shift_mode='lean')
    lean.load_state_dict(fast.state_dict())
    x = torch.randn(2, 12, 32, 32)
    torch.manual_seed(3)  # same dropout mask for both
    ya = fast(x)
    torch.manual_seed(3)
    yb = lean(x)
    assert torch.equal(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    for (n, pa), pb in zip(fast.named_parameters(), lean.parameters()):
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, rtol=1e-5, atol=1e-7), n


def test_flow_and_rgbdiff_first_conv():
    flow = tiny(modality='Flow')
    assert flow.base_model.conv1.weight.shape == (64, 10, 7, 7)
    assert flow.input_mean == [0.5] and len(flow.input_std) == 1
    w = flow.base_model.conv1.weight
    assert torch.equal(w[:, 0], w[:, 9])  # every input channel starts from the mean RGB kernel
    assert flow(torch.randn(1, 4, 10, 32, 32)).shape == (1, 5)
    mb_flow = tiny(modality='Flow', arch='mobilenetv2')
    assert mb_flow.base_model.features[0][0].weight.shape == (32, 10, 3, 3)

    diff = tiny(modality='RGBDiff').eval()  # 5 differences of 6 frames per segment
    assert diff.base_model.conv1.weight.shape == (64, 15, 7, 7)
    assert len(diff.input_mean) == 3 + 15 and len(diff.input_std) == 3 + 15
    x = torch.randn(1, 4, 6, 3, 32, 32)  # (N, T, L+1, C, H, W)
    with torch.no_grad():
        out = diff(x)
        manual = diff.consensus(diff.new_fc(diff.base_model((x[:, :, 1:] - x[:, :, :-1]).reshape(4, 15, 32, 32)))
                                .view(1, 4, 5)).squeeze(1)
    assert torch.equal(out, manual)


def _bn2d(model):
    return [m for m in model.base_model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_partial_bn_freezes_all_but_first_bn():
    m = tiny(partial_bn=True)
    m.train()
    bns = _bn2d(m)
    assert bns[0].training and bns[0].weight.requires_grad
    assert all(not b.training and not b.weight.requires_grad and not b.bias.requires_grad for b in bns[1:])
    before = [(b.running_mean.clone(), b.weight.clone()) for b in bns]
    opt = torch.optim.SGD([g for g in m.get_optim_policies() if g['params']], lr=0.1)
    m(torch.randn(2, 12, 32, 32)).sum().backward()
    opt.step()
    assert not torch.equal(bns[0].running_mean, before[0][0])
    for b, (mean, weight) in zip(bns[1:], before[1:]):
        assert torch.equal(b.running_mean, mean) and torch.equal(b.weight, weight) and b.weight.grad is None
    m.partialBN(False)
    m.train()
    assert all(b.training and b.weight.requires_grad for b in bns)
    m.eval()
    assert not any(b.training for b in bns)


def _attach_fake_lsm(model):
    """A module named ``lsm`` with the layer types a long-short module may use."""
    lsm = nn.Module()
    lsm.conv = nn.Conv1d(4, 4, 3)
    lsm.bn1d = nn.BatchNorm1d(4)
    lsm.conv3d = nn.Conv3d(4, 4, 1)
    lsm.bn3d = nn.BatchNorm3d(4)
    lsm.bn = nn.BatchNorm2d(4)
    lsm.scale = nn.Parameter(torch.zeros(4))
    model.base_model.layer1[0].lsm = lsm
    return lsm


def _check_policies_cover_once(model, fc_lr5=False):
    groups = model.get_optim_policies(fc_lr5=fc_lr5)
    ids = [id(p) for g in groups for p in g['params']]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    return {g['name']: g for g in groups}


@pytest.mark.parametrize('kw', [dict(), dict(partial_bn=False, fc_lr5=True), dict(shift=True, non_local=True),
                                dict(arch='mobilenetv2', shift=True, modality='Flow')])
def test_optim_policies_cover_every_parameter_once(kw):
    m = tiny(**{k: v for k, v in kw.items() if k != 'fc_lr5'})
    m.train()
    groups = _check_policies_cover_once(m, fc_lr5=kw.get('fc_lr5', False))
    assert len(groups['first_conv_weight']['params']) == 1
    flow = kw.get('modality') == 'Flow'
    assert groups['first_conv_weight']['lr_mult'] == (5 if flow else 1)
    assert groups['first_conv_bias']['lr_mult'] == (10 if flow else 2)
    fc_groups = ('lr5_weight', 'lr10_bias') if kw.get('fc_lr5') else ('normal_weight', 'normal_bias')
    fc = (groups[fc_groups[0]], groups[fc_groups[1]])
    assert any(p is m.new_fc.weight for p in fc[0]['params']) and any(p is m.new_fc.bias for p in fc[1]['params'])
    n_bn = len(groups['BN scale/shift']['params'])
    if kw.get('partial_bn', True):
        assert n_bn == 2 + (4 if kw.get("non_local") else 0)  # first BN (+ BN3d of the 2 NL blocks of R18)


def test_partial_bn_skips_lsm_and_policies_take_any_module():
    m = tiny(shift=True)
    lsm = _attach_fake_lsm(m)
    m.train()
    assert lsm.bn.training and lsm.bn.weight.requires_grad
    groups = _check_policies_cover_once(m)
    assert any(p is lsm.scale for p in groups['custom_ops']['params'])
    bn_ids = {id(p) for p in groups['BN scale/shift']['params']}
    assert {id(lsm.bn.weight), id(lsm.bn1d.weight), id(lsm.bn3d.bias)} <= bn_ids
    assert any(p is lsm.conv.weight for p in groups['normal_weight']['params'])


@pytest.mark.skipif(importlib.util.find_spec('ops.long_short') is None, reason='ops/long_short.py not written yet')
def test_lsm_model_builds_and_trains():
    m = tiny(shift=True, lsm=True, partial_bn=True)
    assert any('.lsm.' in k for k in m.state_dict())
    m.train()
    _check_policies_cover_once(m)
    assert m(torch.randn(2, 12, 32, 32)).shape == (2, 5)
    with pytest.raises(LSNetError):
        tiny(lsm=True)


@pytest.mark.parametrize('fields', [
    dict(), dict(shift=True, shift_place='block', shift_div=4, shift_mode='lean'),
    dict(shift=True, temporal_pool=True, input_size=64), dict(shift=True, non_local=True),
    dict(arch='mobilenetv2', shift=True), dict(shift=True, lsm=True, lsm_branches=['long'], lsm_long_stages='3,4'),
    dict(arch='mobilenetv2', shift=True, lsm=True), dict(modality='Flow', shift=True), dict(modality='RGBDiff'),
], ids=['TSN', 'TSM-block-lean', 'TSM-tpool', 'NL-TSM', 'TSM-MobileNetV2', 'LSNet-long34', 'LSNet-MobileNetV2',
        'Flow', 'RGBDiff'])
def test_config_round_trip(fields):
    """flags -> config -> dict (JSON) -> config -> model: the same keys and shapes as the first model."""
    from opts import build_train_parser
    argv = ['custom', fields.pop('modality', 'RGB'), '--num_segments', '4', '--pretrain', 'none', '--arch',
            fields.pop('arch', 'resnet18')]
    for k, v in fields.items():
        argv += ['--' + k] if v is True else ['--' + k] + (list(map(str, v)) if isinstance(v, list) else [str(v)])
    cfg = ModelConfig.from_args(build_train_parser().parse_args(argv), num_class=5)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.to_dict() == cfg.to_dict()
    a, b = build_model(cfg), build_model(again)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    assert a.crop_size == cfg.input_size and a.scale_size == cfg.input_size * 256 // 224


def test_old_config_dicts_convert_on_load(caplog):
    """Checkpoints written before ModelConfig stored TSN keywords; they load with one notice."""
    old = dict(num_class=5, num_segments=4, modality='RGB', base_model='resnet18', new_length=None,
               consensus_type='avg', before_softmax=True, dropout=0.5, crop_num=1, partial_bn=True,
               pretrain='none', is_shift=True, shift_div=8, shift_place='blockres', fc_lr5=True,
               temporal_pool=False, non_local=False, input_size=32, shift_mode='fast', lsm=True,
               lsm_reduction=16, lsm_groups=4, lsm_branches=['short', 'long'], lsm_short_stages=[1, 2, 3, 4],
               lsm_long_stages=[1, 2, 3, 4], lsm_tap_init='shift')
    caplog.set_level('INFO')
    cfg = ModelConfig.from_dict(old, source='old.pth')
    assert cfg.arch == 'resnet18' and cfg.shift and cfg.lsm and cfg.input_size == 32
    assert 'old.pth: read an older config' in caplog.text
    with pytest.raises(LSNetError, match='unknown model config keys n_segment'):
        ModelConfig.from_dict(dict(old, n_segment=4), source='bad.pth')
    with pytest.raises(LSNetError, match='bad.pth: model config has a value of the wrong type'):
        ModelConfig.from_dict(dict(num_class=4, num_segments='x'), source='bad.pth')


def test_config_differences_name_every_field():
    cfg = ModelConfig(num_class=5, num_segments=8, shift=True)
    other = cfg.replace(num_segments=4, shift_div=4, dropout=0.8)
    assert cfg.differences(other) == [('num_segments', 8, 4), ('shift_div', 8, 4)]  # dropout is not architecture


@pytest.mark.parametrize('fields, message', [
    (dict(arch='mobilenetv2', non_local=True), '--non_local needs a ResNet --arch'),
    (dict(shift=True, temporal_pool=True, num_segments=3), '--temporal_pool needs an even --num_segments'),
    (dict(lsm=True), '--lsm needs --shift'),
    (dict(shift=True, shift_div=1), '--shift_div must be at least 2'),
    (dict(modality='Depth'), "modality 'Depth'"),
])
def test_config_rejects_combinations_naming_the_flags(fields, message):
    with pytest.raises(LSNetError, match=message):
        ModelConfig(**dict(dict(num_class=5, num_segments=4), **fields))
