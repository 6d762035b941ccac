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
from ops.models import TSN, build_model_from_config


def tiny(**kw):
    args = dict(num_class=5, num_segments=4, base_model='resnet18', pretrain='none', dropout=0.5)
    args.update(kw)
    return TSN(**args)


def test_forward_layouts_and_consensus():
    m = tiny(is_shift=True).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        a = m(x)
        b = m(x.view(2, 12, 32, 32))
    assert a.shape == (2, 5) and torch.equal(a, b)
    ident = tiny(is_shift=True, consensus_type='identity')
    ident.load_state_dict(m.state_dict())
    ident.eval()
    with torch.no_grad():
        per_seg = ident(x)
    assert per_seg.shape == (2, 4, 5)
    assert torch.allclose(per_seg.mean(1), a, atol=1e-6)
    with pytest.raises(ValueError):
        m(torch.randn(1, 10, 32, 32))


def test_softmax_before_consensus():
    m = tiny(before_softmax=False).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 12, 32, 32))
    assert torch.allclose(out.sum(1), torch.ones(2), atol=1e-5)
    with pytest.raises(LSNetError):
        tiny(before_softmax=False, consensus_type='identity')


def test_fold_zero_makes_tsm_equal_tsn():
    tsn = tiny().eval()
    tsm = tiny(is_shift=True, shift_div=10 ** 6).eval()  # fold = C // div = 0 everywhere
    report = load_weights(tsm, tsn.state_dict(), source='tsn')
    assert len(report.renamed) == 8 and not report.missing
    x = torch.randn(2, 12, 32, 32)
    with torch.no_grad():
        assert torch.equal(tsm(x), tsn(x))


def test_temporal_pool_model_sees_half_the_segments():
    m = tiny(is_shift=True, temporal_pool=True, consensus_type='identity')
    assert m.output_segments == 2
    assert 'base_model.layer2.net.0.conv1.net.weight' in m.state_dict()
    assert m(torch.randn(2, 12, 32, 32)).shape == (2, 2, 5)


def test_lean_and_fast_models_agree():
    fast = tiny(is_shift=True)
    lean = tiny(is_shift=True, shift_mode='lean')
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
    mb_flow = tiny(modality='Flow', base_model='mobilenetv2', new_length=2)
    assert mb_flow.base_model.features[0][0].weight.shape == (32, 4, 3, 3)

    diff = tiny(modality='RGBDiff', new_length=2).eval()
    assert diff.base_model.conv1.weight.shape == (64, 6, 7, 7)
    assert len(diff.input_mean) == 3 + 6 and len(diff.input_std) == 3 + 6
    x = torch.randn(1, 4, 3, 3, 32, 32)  # (N, T, L+1, C, H, W)
    with torch.no_grad():
        out = diff(x)
        manual = diff.consensus(diff.new_fc(diff.base_model((x[:, :, 1:] - x[:, :, :-1]).reshape(4, 6, 32, 32)))
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


def _check_policies_cover_once(model):
    groups = model.get_optim_policies()
    ids = [id(p) for g in groups for p in g['params']]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    return {g['name']: g for g in groups}


@pytest.mark.parametrize('kw', [dict(), dict(partial_bn=False, fc_lr5=True), dict(is_shift=True, non_local=True),
                                dict(base_model='mobilenetv2', is_shift=True, modality='Flow')])
def test_optim_policies_cover_every_parameter_once(kw):
    m = tiny(**kw)
    m.train()
    groups = _check_policies_cover_once(m)
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
    m = tiny(is_shift=True)
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
    m = tiny(is_shift=True, lsm=True, partial_bn=True)
    assert any('.lsm.' in k for k in m.state_dict())
    m.train()
    _check_policies_cover_once(m)
    assert m(torch.randn(2, 12, 32, 32)).shape == (2, 5)
    with pytest.raises(LSNetError):
        tiny(lsm=True)


def test_config_round_trip():
    m = tiny(is_shift=True, shift_div=4, shift_mode='lean', temporal_pool=True, input_size=64)
    cfg = json.loads(json.dumps(m.config()))
    assert cfg['shift_mode'] == 'lean' and cfg['input_size'] == 64
    again = build_model_from_config(cfg, pretrain='none')
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    assert again.crop_size == 64 and again.scale_size == 64 * 256 // 224
    assert again.config() == dict(cfg, pretrain='none')


def test_user_errors():
    for kw in (dict(base_model='vgg16'), dict(modality='Depth'), dict(pretrain='kinetics'),
               dict(consensus_type='max'), dict(is_shift=True, shift_place='conv'),
               dict(base_model='mobilenetv2', non_local=True), dict(shift_mode='inplace')):
        with pytest.raises(LSNetError):
            tiny(**kw)


def test_imagenet_pretrain_offline_gives_clear_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, 'load_state_dict_from_url', offline)
    with pytest.raises(LSNetError, match='--pretrain none') as info:
        tiny(pretrain='imagenet')
    assert '\n' not in str(info.value) and 'resnet18' in str(info.value)


def test_mobilenet_v2_loads_torchvision_weights_by_mapping():
    tv = torchvision.models.mobilenet_v2().eval()
    ours = MobileNetV2().eval()
    ours.load_state_dict(from_torchvision_keys(tv.state_dict()))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-5)


def test_get_augmentation_calls_data_transforms():
    transforms = pytest.importorskip('ops.transforms')
    if not hasattr(transforms, 'train_augmentation'):
        pytest.skip('ops.transforms.train_augmentation not written yet')
    assert callable(tiny().get_augmentation(flip=False))
