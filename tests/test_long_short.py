"""LSNet's long-short module: spec formulas, TSM equivalence at init, learning, placement, I/O."""
import ast
import importlib.util
import inspect
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ops.errors import LSNetError
from ops.long_short import (DEFAULT_TAP_INIT, LongShortModule, LongTermBranch, ShortTermBranch,
                            make_long_short, normalize_branches)

SIZE = 32


def _fixture_generator():
    """tests/fixtures/lsnet/generate.py: the fixture cases, how they are built and re-initialised."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'lsnet', 'generate.py')
    spec = importlib.util.spec_from_file_location('lsnet_fixture_generator', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _fixture_generator()


def _model(arch, T, lsm=True, **kw):
    from tests.fakes import tsn
    return tsn(5, T, arch=arch, pretrain='none', shift=True, lsm=lsm, dropout=0.0, input_size=SIZE, **kw)


def _lsm_modules(model):
    return [m for m in model.modules() if isinstance(m, LongShortModule)]


def _randomize(module, skip=()):
    """Give every parameter (and BN statistic) of ``module`` a random value, except ``skip``."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not any(name.startswith(s) for s in skip):
                p.normal_(0, 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def _clip(n, T, c, size, dtype=torch.float32):
    return torch.randn(n * T, c, size, size, dtype=dtype)


# ------------------------------------------------------------------ the formulas


def _reference_lsm(m, h):
    """The issue's formulas written out directly (a real conv for TConv, tanh, concat)."""
    T = m.num_segments
    n = h.shape[0] // T
    out = h
    if m.short is not None:
        s = m.short
        z = s.bn(s.reduce(h))
        zs = s.smooth(z)
        c_r, H, W = z.shape[1:]
        z5, zs5 = z.view(n, T, c_r, H, W), zs.view(n, T, c_r, H, W)
        d_next, d_prev = torch.zeros_like(z5), torch.zeros_like(z5)
        for t in range(T):
            if t + 1 < T:
                d_next[:, t] = zs5[:, t + 1] - z5[:, t]
            if t > 0:
                d_prev[:, t] = zs5[:, t - 1] - z5[:, t]
        mm = torch.cat((d_next, d_prev), 2).view(n * T, 2 * c_r, H, W)
        ctx = s.context(F.avg_pool2d(mm, 2, ceil_mode=True))
        mm = mm + F.interpolate(ctx, size=(H, W), mode='nearest')
        out = out + h * torch.tanh(s.expand(mm))
    if m.long is not None:
        lb = m.long
        x = h.view(n, T, *h.shape[1:]).transpose(1, 2)  # (N, C, T, H, W)
        us, prev = [], None
        for conv, d, hg in zip(lb.taps, lb.dilations, x.chunk(lb.groups, dim=1)):
            xg = hg if prev is None else hg + prev
            kernel = torch.tensor([0.0, 1.0, 0.0], dtype=h.dtype) + lb.tap_gain * conv.weight.view(-1, 3)
            prev = F.conv2d(xg.flatten(3), kernel.view(-1, 1, 3, 1), padding=(d, 0), dilation=(d, 1),
                            groups=xg.shape[1]).view_as(xg)  # temporal conv on (N, Cg, T, H·W)
            us.append(prev)
        u = torch.cat(us, 1).transpose(1, 2).reshape_as(h)
        gamma = 2 * torch.sigmoid(lb.fc2(F.relu(lb.fc1(x.mean(dim=(2, 3, 4))))))
        alpha = lb.alpha_gain * lb.scale.weight.view(1, -1)
        scale = (alpha * gamma).repeat_interleave(T, 0)
        out = out + u * scale[:, :, None, None]
    return out


@pytest.mark.parametrize('T', [1, 3, 8, 16])
@pytest.mark.parametrize('branches', [('short', 'long'), ('short',), ('long',)])
def test_module_matches_written_out_spec(T, branches):
    m = LongShortModule(32, T, reduction=8, groups=4, branches=branches).double().eval()
    _randomize(m)
    h = _clip(2, T, 32, 7, torch.float64)
    expected = _reference_lsm(m, h)
    assert torch.allclose(m(h), expected, atol=1e-10)
    # the same without autograd, in either memory layout
    with torch.no_grad():
        assert torch.allclose(m(h), expected, atol=1e-10)
        out = m.to(memory_format=torch.channels_last)(h.contiguous(memory_format=torch.channels_last))
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(out, expected, atol=1e-10)


def test_causal_taps_read_the_present_before_the_clip():
    """Causal long branch, written out: u_t = K[1]·v_t + K[0]·v_{t-d}, with v_t itself standing in
    for v_{t-d} while t < d (no zero padding); v the group input (h_g plus the previous group's u)."""
    T = 6
    lb = LongTermBranch(16, T, reduction=4, groups=4, causal=True).double()
    _randomize(lb)
    h = _clip(2, T, 16, 3, torch.float64)
    x = h.view(2, T, 16, 3, 3)
    us, prev = [], None
    for conv, d, sl in zip(lb.taps, lb.dilations, lb.group_slices()):
        v = x[:, :, sl] if prev is None else x[:, :, sl] + prev
        k = lb.kernel(conv)  # (Cg, 3): taps t - d, t, t + d
        past = torch.stack([v[:, t - d if t >= d else t] for t in range(T)], 1)
        prev = k[:, 1].view(1, 1, -1, 1, 1) * v + k[:, 0].view(1, 1, -1, 1, 1) * past
        us.append(prev)
    assert torch.allclose(lb.aggregate(h), torch.cat(us, 2), atol=1e-12)


def test_dilations_are_capped_at_half_the_segments():
    assert LongTermBranch(16, 16).dilations == (1, 2, 4, 8)
    assert LongTermBranch(16, 8).dilations == (1, 2, 4, 4)
    assert LongTermBranch(16, 3).dilations == (1, 1, 1, 1)
    assert LongTermBranch(16, 1).dilations == (1, 1, 1, 1)


@pytest.mark.parametrize('tap_init', ['shift', 'identity'])
def test_module_is_identity_at_init_and_gradcheck(tap_init):
    m = LongShortModule(16, 4, reduction=4, tap_init=tap_init).double()
    h = _clip(2, 4, 16, 5, torch.float64)
    assert torch.equal(m(h), h)
    # the initial state behind the gains: α = 0; temporal kernels t-d (first half of each group's
    # channels) and t+d (second half) for shift taps, the identity tap for identity ones
    assert torch.equal(m.long.alpha(), torch.zeros(16, dtype=torch.float64))
    if tap_init == 'shift':
        expected = torch.tensor([[1.0, 0.0, 0.0]] * 2 + [[0.0, 0.0, 1.0]] * 2, dtype=torch.float64)
    else:
        expected = torch.tensor([[0.0, 1.0, 0.0]] * 4, dtype=torch.float64)
    for conv in m.long.taps:  # float32 weights / 3 seen in float64: within 1e-7 of the shift
        torch.testing.assert_close(m.long.kernel(conv), expected, atol=1e-7, rtol=0)
    assert DEFAULT_TAP_INIT == 'shift'
    _randomize(m)
    m.eval()
    h.requires_grad_(True)
    params = [p for p in m.parameters()]
    torch.autograd.gradcheck(lambda x, *ps: m(x), (h, *params), fast_mode=True)


def test_static_clip_gives_zero_short_term_response():
    """No bias after the differences: a clip without motion has S = 0 and M = 0 exactly.

    Holds for any weights while Ẑ's depthwise conv is the identity it starts as (the spec's
    D+ = Ẑ_{t+1} - Z_t compares a smoothed frame with a raw one).
    """
    s = ShortTermBranch(24, 6, reduction=4)
    _randomize(s, skip=('smooth',))
    frame = torch.randn(2, 1, 24, 9, 9)
    h = frame.expand(2, 6, 24, 9, 9).reshape(12, 24, 9, 9)
    for mode in (True, False):
        s.train(mode)
        assert torch.equal(s.motion(h), torch.zeros(12, 2 * 8, 9, 9))
        assert torch.equal(s(h), torch.zeros_like(h))


def test_reversing_a_clip_swaps_the_signed_differences_and_flips_the_response():
    T, C = 6, 24
    s = ShortTermBranch(C, T, reduction=4).double()
    _randomize(s)
    s.eval()
    h = _clip(2, T, C, 8, torch.float64).abs()

    def rev(x):
        return x.view(2, T, *x.shape[1:]).flip(1).reshape_as(x)

    # For any weights: M(reversed clip), reversed back, is M with D+ and D- swapped.
    m, m_rev = s.differences(h), rev(s.differences(rev(h)))
    c_r = m.shape[1] // 2
    assert torch.allclose(m_rev, torch.cat((m[:, c_r:], m[:, :c_r]), 1), atol=1e-12)

    # A clip brightening linearly in time (Ẑ at identity): D+ = -D-, so reversal flips the sign
    # of S on every interior frame.
    with torch.no_grad():
        s.smooth.weight.zero_()
        s.smooth.weight[:, :, 1, 1] = 1.0
    base = torch.rand(2, 1, C, 8, 8, dtype=torch.float64) + 1
    step = torch.randn(2, 1, C, 8, 8, dtype=torch.float64)
    ramp = (base + step * torch.arange(T).view(1, T, 1, 1, 1)).reshape(2 * T, C, 8, 8)
    resp, resp_rev = s(ramp).view(2, T, -1), rev(s(rev(ramp))).view(2, T, -1)
    inner, inner_rev = resp[:, 1:-1], resp_rev[:, 1:-1]
    assert inner.abs().max() > 1e-3
    assert torch.allclose(inner_rev, -inner, atol=1e-9)
    assert not torch.equal(torch.sign(inner_rev), torch.sign(inner))


# ------------------------------------------------------------------ placement in backbones


@pytest.mark.parametrize('arch', ['resnet18', 'mobilenetv2'])
def test_shapes_and_placement(arch):
    for T in (1, 3, 8, 16):
        model = _model(arch, T).eval()
        mods = _lsm_modules(model)
        expected = {'resnet18': 8, 'mobilenetv2': 10}[arch]
        assert len(mods) == expected and all(m.num_segments == T for m in mods)
        with torch.no_grad():
            out = model(torch.randn(2 if T < 8 else 1, T * 3, SIZE, SIZE))
        assert out.shape == (2 if T < 8 else 1, 5)
    names = [n for n, m in model.named_modules() if isinstance(m, LongShortModule)]
    if arch.startswith('resnet'):
        assert names[0] == 'base_model.layer1.0.lsm'
        assert mods[0].channels == model.base_model.layer1[0].bn1.num_features
    else:
        assert all(n.startswith('base_model.features.') and n.endswith('.lsm') for n in names)
        assert mods[0].channels == model.base_model.features[3].conv[0].net.in_channels


def _branches_by_block(model):
    return {n.replace('base_model.', '').rsplit('.lsm', 1)[0]: m.branches
            for n, m in model.named_modules() if isinstance(m, LongShortModule)}


def test_stage_selection_per_branch():
    """--lsm_short_stages / --lsm_long_stages: ResNet by layerK, MobileNetV2 by output stride."""
    model = _model('resnet18', 4, lsm_short_stages=[3, 4], lsm_long_stages='2,3,4')
    got = _branches_by_block(model)
    assert got == {'layer2.0': ('long',), 'layer2.1': ('long',),
                   **{f'layer{k}.{i}': ('short', 'long') for k in (3, 4) for i in (0, 1)}}
    # blocks left without a module keep torchvision's forward and run as plain TSM blocks
    assert type(model.base_model.layer1[0]).__name__ == 'BasicBlock'
    assert model.cfg.lsm_short_stages == (3, 4) and model.cfg.lsm_long_stages == (2, 3, 4)
    # MobileNetV2's residual blocks: features 3 at stride 4, 5-6 at 8, 8-13 at 16, 15-16 at 32
    mb = _branches_by_block(_model('mobilenetv2', 4, lsm_short_stages=[1], lsm_long_stages=[4]))
    assert mb == {'features.3': ('short',), 'features.15': ('long',), 'features.16': ('long',)}
    mb = _branches_by_block(_model('mobilenetv2', 4, lsm_short_stages=[2], lsm_long_stages=[3]))
    assert sorted(mb) == ['features.{}'.format(i) for i in (10, 12, 13, 5, 6, 8, 9)]
    # late LSNet still equals TSM at initialisation
    torch.manual_seed(0)
    tsm = _model('resnet18', 4, lsm=False).eval()
    late = _model('resnet18', 4, lsm_short_stages=[3, 4], lsm_long_stages=[3, 4]).eval()
    missing = late.load_state_dict(tsm.state_dict(), strict=False).missing_keys
    assert missing and all('.lsm.' in k for k in missing)
    x = torch.randn(1, 4 * 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(late(x), tsm(x), atol=1e-6)


def test_branch_knockout_switches_off_exactly_the_named_branches():
    """branches_off: everything off gives the TSM of the same weights, nothing off the full
    LSNet; one stage's branch off changes the output; the branches come back afterwards."""
    from ops.long_short import branches_off, knockout_variants
    torch.manual_seed(0)
    lsnet = _model('resnet18', 4, lsm_short_stages=[1, 2], lsm_long_stages=[3, 4])
    for m in _lsm_modules(lsnet):
        _randomize(m)
    lsnet.eval()
    tsm = _model('resnet18', 4, lsm=False).eval()
    tsm.load_state_dict({k: v for k, v in lsnet.state_dict().items() if '.lsm.' not in k})
    variants = dict(knockout_variants(lsnet))
    assert list(variants) == ['none', 'short in stage 1', 'short in stage 2', 'long in stage 3',
                              'long in stage 4', 'short in every stage', 'long in every stage']
    x = torch.randn(2, 4 * 3, SIZE, SIZE)
    with torch.no_grad():
        full = lsnet(x)
        with branches_off(lsnet, variants['none']):
            assert torch.equal(lsnet(x), full)
        with branches_off(lsnet, variants['short in every stage'] | variants['long in every stage']):
            assert (lsnet(x) - tsm(x)).abs().max().item() <= 1e-5
        with branches_off(lsnet, variants['long in stage 3']):
            assert (lsnet(x) - full).abs().max().item() > 1e-3
            assert [(m.stage, m.long is None) for m in _lsm_modules(lsnet) if 'long' in m.branches] == [
                (3, True), (3, True), (4, False), (4, False)]
        assert torch.equal(lsnet(x), full)


def test_bottleneck_shapes_and_identity_at_init():
    """Bottleneck blocks (a one-block-per-stage ResNet, so the test stays small)."""
    import copy
    from torchvision.models.resnet import Bottleneck, ResNet
    from ops.temporal_shift import make_temporal_shift
    for T in (1, 3, 8, 16):
        tsm = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=5)
        make_temporal_shift(tsm, T, shift_div=8, place='blockres')
        for m in tsm.modules():
            if isinstance(m, nn.BatchNorm2d):
                _randomize(m)
                m.running_var.uniform_(1.0, 3.0)
        lsnet = copy.deepcopy(tsm)
        assert make_long_short(lsnet, 'resnet50', T) == 4
        assert set(lsnet.state_dict()) - set(tsm.state_dict()) == {
            k for k in lsnet.state_dict() if '.lsm.' in k}
        tsm.eval(), lsnet.eval()
        x = torch.randn(T, 3, SIZE, SIZE)
        with torch.no_grad():
            assert (lsnet(x) - tsm(x)).abs().max().item() <= 1e-6
            for m in _lsm_modules(lsnet):
                m.long.scale.weight.fill_(0.1)
                for conv in m.long.taps:  # at T = 1 shift taps read only the zero padding
                    conv.weight.add_(0.1)
            assert lsnet(x).shape == (T, 5)
            assert not torch.allclose(lsnet(x), tsm(x))


@pytest.mark.parametrize('arch,tap_init', [('resnet18', 'identity'), ('mobilenetv2', 'identity'),
                                            ('resnet18', 'shift')])
def test_tsm_checkpoint_loads_and_lsnet_equals_tsm_at_init(arch, tap_init):
    from ops.checkpoint import load_weights, make_checkpoint
    tsm = _model(arch, 3, lsm=False)
    with torch.no_grad():  # BN statistics and affine parameters away from their defaults
        for m in tsm.modules():
            if isinstance(m, nn.BatchNorm2d):
                _randomize(m)
                m.running_var.uniform_(1.0, 3.0)
        tsm.new_fc.weight.normal_(0, 1.0)
    tsm.eval()
    lsnet = _model(arch, 3, lsm_tap_init=tap_init)
    report = load_weights(lsnet, make_checkpoint(tsm), source='tsm.pth')
    lsm_keys = {k for k in lsnet.state_dict() if '.lsm.' in k}
    assert lsm_keys and set(report.missing) == lsm_keys
    assert not report.unexpected and not report.dropped
    assert set(lsnet.state_dict()) - lsm_keys == set(tsm.state_dict())
    lsnet.eval()
    x = torch.randn(2, 3 * 3, SIZE, SIZE)
    with torch.no_grad():
        frames = x.view(6, 3, SIZE, SIZE)
        assert (lsnet.base_model(frames) - tsm.base_model(frames)).abs().max().item() <= 1e-6
        assert (lsnet(x) - tsm(x)).abs().max().item() <= 1e-6
        # and the new modules are wired in: perturbed, they change the features (default init)
        fresh = _model(arch, 3, lsm_tap_init=tap_init).eval()
        before = fresh.base_model(frames)
        for m in _lsm_modules(fresh):
            m.long.scale.weight.fill_(0.1)
        assert (fresh.base_model(frames) - before).abs().max() > 1e-3 * before.abs().max()


# ------------------------------------------------------------------ wrappers, not class swapping


@pytest.mark.parametrize('case', list(GEN.CASES))
def test_layout_and_logits_match_the_fixtures(case):
    """tests/fixtures/lsnet (captured from the class-swapping insertion): the same state-dict keys,
    order and shapes, and the same logits under the fixture's seeded weights."""
    fixture = GEN.load(case)
    model = GEN.reinit(GEN.build(case))
    assert GEN.key_shapes(model) == fixture['keys']
    ref = torch.tensor(fixture['logits'])
    torch.testing.assert_close(GEN.logits(model), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_blocks_inside_non_local_wrappers_are_replaced_in_place():
    """A block already wrapped by NL3DWrapper (``.block``) gets its LSM wrapper there: same model."""
    from ops.non_local import NL3DWrapper
    fixture = GEN.load('resnet18_non_local')
    model = GEN.build('resnet18_non_local', lsm=False)
    assert isinstance(model.base_model.layer2[0], NL3DWrapper)
    assert make_long_short(model.base_model, 'resnet18', GEN.SEGMENTS) == 8
    assert type(model.base_model.layer2[0].block).__name__ == 'LongShortBasicBlock'
    GEN.reinit(model)
    assert GEN.key_shapes(model) == fixture['keys']
    ref = torch.tensor(fixture['logits'])
    torch.testing.assert_close(GEN.logits(model), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def _residual_blocks(base_model):
    """Every residual block of a ResNet (through non-local and block-shift wrappers) or MobileNetV2."""
    from ops.non_local import NL3DWrapper
    from ops.temporal_shift import TemporalShift
    if hasattr(base_model, 'features'):
        return [b for b in base_model.features if not isinstance(b, nn.Sequential)]
    blocks = []
    for k in range(1, 5):
        for b in getattr(base_model, f'layer{k}'):
            while isinstance(b, (NL3DWrapper, TemporalShift)):
                b = b.block if isinstance(b, NL3DWrapper) else b.net
            blocks.append(b)
    return blocks


@pytest.mark.parametrize('case', list(GEN.CASES))
def test_blocks_are_wrapped_not_class_swapped(case):
    import torchvision.models.resnet as tv
    import archs.mobilenet_v2 as mbv2
    import ops.long_short as ls
    names = set(vars(ls))
    model = GEN.build(case)
    assert set(vars(ls)) == names  # building an LSNet adds nothing to the module
    for m in model.modules():  # every class is defined, under its name, where it says
        cls = type(m)
        assert getattr(sys.modules[cls.__module__], cls.__qualname__, None) is cls, cls
    blocks = _residual_blocks(model.base_model)
    wrappers = {ls.LongShortBasicBlock, ls.LongShortBottleneck, ls.LongShortInvertedResidual}
    originals = {tv.BasicBlock, tv.Bottleneck, mbv2.InvertedResidual}
    assert all(type(b) in wrappers | originals for b in blocks)
    wrapped = [b for b in blocks if type(b) in wrappers]
    assert len(wrapped) == (10 if case.startswith('mobilenet') else 8 if 'resnet18' in case else 16)
    assert all(isinstance(b.lsm, LongShortModule) and b.lsm.stage in (1, 2, 3, 4) for b in wrapped)
    assert not any(hasattr(b, 'lsm') for b in blocks if type(b) in originals)
    # the wrappers are plain modules, not subclasses of the blocks they hold
    assert not any(issubclass(w, tuple(originals)) for w in wrappers)


def test_long_short_defines_no_classes_at_run_time():
    """ops/long_short.py: no type(name, bases, dict), no globals() writes, no __class__ assignment;
    its classes are exactly the ``class`` statements in the file."""
    import ops.long_short as ls
    source = inspect.getsource(ls)
    tree = ast.parse(source)
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and (n.func.id == 'globals' or (n.func.id == 'type' and len(n.args) == 3))]
    assert calls == []
    assert '__class__' not in source
    statements = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    defined = {k for k, v in vars(ls).items() if isinstance(v, type) and v.__module__ == ls.__name__}
    assert defined == statements >= {'LongShortBasicBlock', 'LongShortBottleneck', 'LongShortInvertedResidual'}


@pytest.mark.parametrize('case', list(GEN.CASES))
def test_tsm_checkpoint_finetunes_and_lsnet_checkpoint_round_trips(case, tmp_path):
    """A TSM checkpoint (``module.`` keys, as make_checkpoint writes them) of the same flags loads
    into the LSNet with only ``.lsm.`` keys missing; the LSNet's own saved checkpoint loads back
    with nothing missing or unexpected and gives the same logits."""
    from ops.checkpoint import load_checkpoint, load_weights, make_checkpoint, save_checkpoint
    tsm = GEN.reinit(GEN.build(case, lsm=False))
    ckpt = make_checkpoint(tsm)
    assert all(k.startswith('module.') for k in ckpt['state_dict'])
    lsnet = GEN.build(case)
    report = load_weights(lsnet, ckpt, finetune=True, source='x')
    lsm_keys = [k for k in lsnet.state_dict() if '.lsm.' in k]
    assert lsm_keys and report.missing == lsm_keys
    assert not report.unexpected and not report.dropped and not report.renamed
    got = lsnet.state_dict()
    assert all(torch.equal(got[k], v) for k, v in tsm.state_dict().items())

    GEN.reinit(lsnet)
    path = str(tmp_path / 'lsnet.pth.tar')
    save_checkpoint(make_checkpoint(lsnet, epoch=3), path)
    back = GEN.build(case)
    report = load_weights(back, load_checkpoint(path), finetune=False, source=path)
    assert not (report.missing or report.unexpected or report.dropped or report.renamed)
    assert report.loaded == list(lsnet.state_dict())
    torch.testing.assert_close(GEN.logits(back), GEN.logits(lsnet), rtol=0, atol=0)


def test_shift_place_block_and_temporal_pool():
    model = _model('resnet18', 4, shift_place='block').eval()
    names = [n for n, m in model.named_modules() if isinstance(m, LongShortModule)]
    assert len(names) == 8 and names[0] == 'base_model.layer1.0.net.lsm'
    model = _model('resnet18', 4, temporal_pool=True).eval()
    assert [m.num_segments for m in _lsm_modules(model)] == [4, 4] + [2] * 6
    with torch.no_grad():
        assert model(torch.randn(2, 12, SIZE, SIZE)).shape == (2, 5)


def test_channels_last_and_bf16_autocast():
    model = _model('resnet18', 3)
    for m in _lsm_modules(model):
        nn.init.constant_(m.long.scale.weight, 0.05)
    model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 9, SIZE, SIZE)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all()


def test_user_errors():
    import torchvision
    with pytest.raises(LSNetError, match='--lsm needs --shift'):
        make_long_short(torchvision.models.resnet18(), 'resnet18', 4)
    with pytest.raises(LSNetError, match='--lsm_groups'):
        _model('resnet18', 4, lsm_groups=3)
    with pytest.raises(LSNetError, match='--lsm_branches'):
        normalize_branches(['short', 'medium'])
    with pytest.raises(LSNetError, match='not a whole number of clips'):
        LongShortModule(16, 4)(torch.randn(6, 16, 4, 4))
    with pytest.raises(LSNetError, match='--lsm_short_stages 5: stages are numbered 1 to 4'):
        _model('resnet18', 4, lsm_short_stages=[5])
    with pytest.raises(LSNetError, match='--lsm_long_stages .*give stage numbers'):
        _model('resnet18', 4, lsm_long_stages=['x'])
    with pytest.raises(LSNetError, match='leave none of the 8 shifted blocks'):
        _model('resnet18', 4, lsm_branches=['long'], lsm_long_stages=[])
    assert normalize_branches('long,short') == ('short', 'long')
    assert normalize_branches(['short,long']) == ('short', 'long')


# ------------------------------------------------------------------ learning


def test_every_new_parameter_learns_under_partial_bn():
    """Zero-init chain: E and α get gradients on step 1, the rest once those moved (W1 on step 3).

    Runs with partial BN on: the LSM BatchNorms stay in training mode, are in an optimizer group
    and their affine parameters change.
    """
    T = 4
    model = _model('resnet18', T, partial_bn=True).double()  # float64: first updates are tiny
    model.train()
    lsm_params = {n: p for n, p in model.named_parameters() if '.lsm.' in n}
    grouped = [id(p) for g in model.get_optim_policies() for p in g['params']]
    assert all(grouped.count(id(p)) == 1 for p in lsm_params.values())
    lsm_bns = [m for n, m in model.named_modules() if '.lsm.' in n and isinstance(m, nn.BatchNorm2d)]
    assert lsm_bns and all(bn.training and bn.weight.requires_grad for bn in lsm_bns)
    start = {n: p.detach().clone() for n, p in lsm_params.items()}

    # the recipe's lr: α and the taps move gain² faster than plain weights, so a much larger lr
    # reshapes the features enough in two steps to switch off W1's active ReLU units
    opt = torch.optim.SGD([{'params': g['params'], 'lr': 0.01 * g['lr_mult']}
                           for g in model.get_optim_policies()], lr=0.01, momentum=0.9)
    torch.manual_seed(0)
    x = torch.randn(4, T * 3, SIZE, SIZE, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    first_grad = {}
    for step in (1, 2, 3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n, p in lsm_params.items():
            if n not in first_grad and p.grad is not None and p.grad.abs().sum() > 0:
                first_grad[n] = step
        opt.step()

    def tail(n):
        return n.split('.lsm.', 1)[1]

    assert {tail(n) for n, s in first_grad.items() if s == 1} == {'short.expand.weight', 'long.scale.weight'}
    assert {tail(n) for n, s in first_grad.items() if s == 3} == {'long.fc1.weight', 'long.fc1.bias'}
    assert set(first_grad) == set(lsm_params)
    for n, p in lsm_params.items():
        if first_grad[n] < 3:  # W1's first update (step 3) is second order in tiny W2: not checked
            assert not torch.equal(p.detach(), start[n]), n
    assert all(bn.num_batches_tracked.item() == 3 for bn in lsm_bns)


def _fit_previous_frame(alpha_gain, tap_gain, steps=200, signal=0.05):
    """Train a long-only module + linear read-out to output, at each frame, channel 0 of the frame
    before (reachable only through the temporal taps), with the loss scaled by ``signal`` so the
    gradient is as weak as one block's share in a deep network.  Returns (first loss, mean of the
    last 10 losses, largest |kernel - identity|)."""
    torch.manual_seed(0)
    T, C = 8, 8
    m = LongShortModule(C, T, reduction=4, groups=4, branches=('long',), tap_init='identity')
    if alpha_gain is not None:
        m.long.alpha_gain, m.long.tap_gain = alpha_gain, tap_gain
    head = nn.Linear(C, 1)
    opt = torch.optim.SGD(list(m.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(steps):
        x = torch.randn(32, T, C)
        out = head(m(x.reshape(32 * T, C, 1, 1)).view(32, T, C)[:, 1:]).squeeze(-1)
        loss = F.mse_loss(out, x[:, :-1, 0])
        opt.zero_grad()
        (signal * loss).backward()
        opt.step()
        losses.append(loss.item())
    identity = torch.tensor([0.0, 1.0, 0.0])
    moved = max((m.long.kernel(conv) - identity).abs().max().item() for conv in m.long.taps)
    return losses[0], sum(losses[-10:]) / 10, moved


def test_long_branch_taps_escape_the_zero_alpha_saddle():
    """α = 0 and identity taps: the temporal part of L is α times the taps' offsets, both zero.

    With the plain parametrisation (gains 1) a weak signal leaves the taps at the identity and the
    loss where it started; with the default gains the same budget learns the temporal kernel.
    """
    first, last, moved = _fit_previous_frame(1.0, 1.0)
    assert moved < 0.05 and last > 0.7 * first
    first, last, moved = _fit_previous_frame(None, None)
    assert moved > 0.5 and last < 0.1 * first


def test_checkpoint_of_the_unscaled_parametrisation_is_refused():
    """Keys of the earlier parametrisation (raw α in long.alpha, kernels in long.tconvs) do not
    load silently as gain-scaled values: --weights reports them as unexpected keys."""
    from ops.checkpoint import load_weights
    model = _model('resnet18', 3)
    old = {k.replace('.long.scale.', '.long.alpha.').replace('.long.taps.', '.long.tconvs.'): v
           for k, v in model.state_dict().items()}
    with pytest.raises(LSNetError, match='unexpected keys .*long\\.(alpha|tconvs)'):
        load_weights(_model('resnet18', 3), old, source='old_lsnet.pth')


# ------------------------------------------------------------------ names


def test_store_name_round_trip_through_weight_name_parsing():
    from opts import build_train_parser
    from ops.config import ModelConfig, parse_weight_name, store_name
    from ops.models import build_model
    args = build_train_parser().parse_args(
        ['synthetic', 'RGB', '--arch', 'resnet18', '--num_segments', '4', '--shift', '--lsm', '--epochs', '3'])
    name = store_name(ModelConfig.from_args(args, 5), 'synthetic', 3)
    assert '_lsm_' in name
    dataset, fields = parse_weight_name('/runs/shift_folder/' + name + '.pth')
    assert dataset == 'synthetic' and fields['lsm'] and fields['shift'] and fields['arch'] == 'resnet18'
    model = build_model(ModelConfig(num_class=5, pretrain='none', input_size=SIZE, **fields))
    assert len(_lsm_modules(model)) == 8
    args = build_train_parser().parse_args(
        ['synthetic', 'RGB', '--arch', 'resnet18', '--num_segments', '4', '--shift', '--lsm',
         '--lsm_short_stages', '3,4', '--lsm_long_stages', '2', '3', '4', '--pretrain', 'none'])
    assert (args.lsm_short_stages, args.lsm_long_stages) == (['3,4'], ['2', '3', '4'])
    cfg = ModelConfig.from_args(args, 5)
    assert len(_lsm_modules(build_model(ModelConfig.from_dict(cfg.to_dict())))) == 6
    tsm = ModelConfig.from_args(build_train_parser().parse_args(['synthetic', 'RGB', '--arch', 'resnet18',
                                                                  '--shift']), 5)
    assert not parse_weight_name(store_name(tsm, 'synthetic', 120) + '.pth')[1]['lsm']


def test_ablation_models_build_what_their_names_say(tmp_path):
    """tools/ablation.py's model table, parsed by main.py's parser, gives the intended LSM placement."""
    from opts import build_train_parser
    from tools import ablation
    args = ablation.build_parser().parse_args(['--out', str(tmp_path), '--num_segments', '4'])
    assert args.models == ['TSN', 'TSM', 'LSNet', 'LSNet-start2-shiftinit', 'LSNet-short', 'LSNet-long']
    expected = {'TSM': {}, 'LSNet': {f'layer{k}.{i}': ('short', 'long') for k in range(1, 5) for i in (0, 1)},
                'LSNet-late': {f'layer{k}.{i}': ('short', 'long') for k in (3, 4) for i in (0, 1)},
                'LSNet-long-late': {f'layer{k}.{i}': ('long',) for k in (3, 4) for i in (0, 1)},
                'LSNet-split': {**{f'layer{k}.{i}': ('short',) for k in (1, 2) for i in (0, 1)},
                                **{f'layer{k}.{i}': ('long',) for k in (3, 4) for i in (0, 1)}}}
    for name, placement in expected.items():
        t = build_train_parser().parse_args(ablation.train_argv(args, str(tmp_path), name))
        model = GEN.tsn(num_class=5, num_segments=t.num_segments, arch=t.arch, pretrain='none',
                        shift=t.shift, lsm=t.lsm, lsm_branches=t.lsm_branches,
                        lsm_short_stages=t.lsm_short_stages, lsm_long_stages=t.lsm_long_stages,
                        input_size=SIZE)
        assert _branches_by_block(model) == placement, name
    delayed = ablation.train_argv(args, str(tmp_path), 'LSNet-delayed')  # half of the 10 epochs as TSM
    assert delayed[delayed.index('--lsm_start') + 1] == '5' and '--lsm' in delayed
    start2 = ablation.train_argv(args, str(tmp_path), 'LSNet-start2')
    assert start2[start2.index('--lsm_start') + 1] == '2'
    # the LSNet* models keep the identity taps the README tables measured; *-shiftinit the default
    for name in ablation.MODELS:
        t = build_train_parser().parse_args(ablation.train_argv(args, str(tmp_path), name))
        if t.lsm:
            assert t.lsm_tap_init == ('shift' if name.endswith('shiftinit') else 'identity'), name


def test_resume_names_a_changed_lsm_placement():
    import main as train_main
    stored = {'config': _model('resnet18', 4, lsm_short_stages=[3, 4]).cfg.to_dict()}
    with pytest.raises(LSNetError, match=r"lsm_short_stages is \(3, 4\) in the checkpoint, \(1, 2, 3, 4\) from"):
        train_main.check_resume_config(stored, _model('resnet18', 4).cfg, 'ckpt.pth.tar')
    train_main.check_resume_config(stored, _model('resnet18', 4, lsm_short_stages='3 4').cfg, 'ckpt.pth.tar')
    # checkpoints written before the stage flags existed carry no stage keys: they had every stage
    old = {'config': {k: v for k, v in stored['config'].items() if not k.endswith('_stages')}}
    train_main.check_resume_config(old, _model('resnet18', 4).cfg, 'ckpt.pth.tar')
    with pytest.raises(LSNetError, match=r"lsm_tap_init is 'identity' in the checkpoint, 'shift' from the flags"):
        train_main.check_resume_config({'config': _model('resnet18', 4, lsm_tap_init='identity').cfg.to_dict()},
                                       _model('resnet18', 4).cfg, 'ckpt.pth.tar')


def test_lsm_start_trains_as_tsm_until_its_epoch():
    """main.py --lsm_start: before that epoch the branches are off (no gradient, unchanged, the
    TSM outputs), from it on they learn."""
    import main as train_main
    torch.manual_seed(0)
    model = _model('resnet18', 4)
    tsm = _model('resnet18', 4, lsm=False)
    tsm.load_state_dict({k: v for k, v in model.state_dict().items() if '.lsm.' not in k})
    lsm_params = {n: p for n, p in model.named_parameters() if '.lsm.' in n}
    start = {n: p.detach().clone() for n, p in lsm_params.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(2, 4 * 3, SIZE, SIZE), torch.tensor([0, 1])
    model.train()
    tsm.train()
    with train_main.lsm_phase(model, 0, 2):
        assert all(m.short is None and m.long is None for m in _lsm_modules(model))
        out = model(x)
        torch.testing.assert_close(out, tsm(x), rtol=0, atol=0)
        F.cross_entropy(out, y).backward()
    assert all(p.grad is None for p in lsm_params.values())
    opt.step()
    assert all(torch.equal(p.detach(), start[n]) for n, p in lsm_params.items())
    assert all(m.short is not None and m.long is not None for m in _lsm_modules(model))
    opt.zero_grad()
    with train_main.lsm_phase(model, 2, 2):
        F.cross_entropy(model(x), y).backward()
    opt.step()
    moved = {n.split('.lsm.', 1)[1] for n, p in lsm_params.items() if not torch.equal(p.detach(), start[n])}
    assert {'short.expand.weight', 'long.scale.weight'} <= moved


@pytest.mark.parametrize('flags, message', [
    (['--lsm_start', '2'], '--lsm_start needs --lsm'),
    (['--shift', '--lsm', '--lsm_start', '3'], r'--lsm_start must lie in \[0, --epochs\) \(got 3\)'),
    (['--shift', '--lsm', '--lsm_start', '-1'], r'--lsm_start must lie in \[0, --epochs\) \(got -1\)'),
])
def test_lsm_start_flag_errors(flags, message):
    import main as train_main
    from opts import build_train_parser
    args = build_train_parser().parse_args(['synthetic', 'RGB', '--epochs', '3'] + flags)
    with pytest.raises(LSNetError, match=message):
        train_main.check_flags(args)


def _frames_reached(model, T, t):
    """Input frames whose pixels change output frame ``t``'s scores (eval mode: no BN batch mixing)."""
    model.eval()
    x = torch.randn(1, T, 3, SIZE, SIZE, requires_grad=True)
    model(x)[0, t].sum().backward()
    return torch.nonzero(x.grad.abs().sum(dim=(0, 2, 3, 4)) > 0).flatten().tolist()


def test_temporal_reach_tsm_one_frame_per_block_lsnet_whole_clip():
    """The premise of the synthetic 'order_far' pair: a TSM ResNet-18 output frame sees exactly
    +-8 frames (one per shifted block), an LSNet one sees the whole 40-frame clip through the long
    branch's dilated taps alone (clip gate held at 1, so the reach is not its global average)."""
    T, t = 40, 20
    torch.manual_seed(0)
    tsm = _model('resnet18', T, lsm=False, consensus_type='identity')
    assert _frames_reached(tsm, T, t) == list(range(t - 8, t + 9))
    lsnet = _model('resnet18', T, consensus_type='identity', lsm_branches=('long',))
    for m in _lsm_modules(lsnet):
        _randomize(m.long, skip=('fc2',))
    assert _frames_reached(lsnet, T, t) == list(range(T))
    for m in _lsm_modules(lsnet):  # alpha = 0: the branch is off, the reach is TSM's again
        m.long.scale.weight.data.zero_()
    assert _frames_reached(lsnet, T, t) == list(range(t - 8, t + 9))


def test_shift_tap_init_starts_with_the_full_reach():
    """--lsm_tap_init shift: half of each group looks d frames back, half d frames ahead, so with α
    alone moved off zero an LSNet output frame already sees the whole clip; with identity taps the
    same α adds no reach (TSM's +-8 frames) until the taps themselves have moved."""
    lb = LongTermBranch(16, 40, groups=4, tap_init='shift')
    assert lb.dilations == (1, 2, 4, 8)
    for conv in lb.taps:
        k = lb.kernel(conv).detach()
        assert torch.allclose(k[:2], torch.tensor([[1.0, 0.0, 0.0]] * 2), atol=1e-6)
        assert torch.allclose(k[2:], torch.tensor([[0.0, 0.0, 1.0]] * 2), atol=1e-6)
    # the last group of the cascade reads frames t - 15 ... t - 8 (past half)
    h = torch.zeros(40, 16, 1, 1)
    h[10] = 1.0
    u = lb.aggregate(h)[0, :, 12:14, 0, 0]  # (T, 2): past-half channels of group 4
    assert torch.nonzero(u[:, 0].abs() > 1e-6).flatten().tolist() == [18, 22, 24, 25]
    T, t = 40, 20
    for tap_init, reach in (('shift', list(range(T))), ('identity', list(range(t - 8, t + 9)))):
        torch.manual_seed(0)
        lsnet = _model('resnet18', T, consensus_type='identity', lsm_branches=('long',),
                       lsm_tap_init=tap_init)
        for m in _lsm_modules(lsnet):
            m.long.scale.weight.data.fill_(0.1)
        assert _frames_reached(lsnet, T, t) == reach, tap_init
    with pytest.raises(LSNetError, match='--lsm_tap_init'):
        LongTermBranch(16, 8, tap_init='zeros')


def _pulses(T, start, width):
    """(n, T) float: 1 on frames start .. start + width - 1 of each clip, ``start`` (n,)."""
    t = torch.arange(T)
    return ((t >= start[:, None]) & (t < start[:, None] + width)).float()


def _far_order_batch(n, g, T=64, width=4):
    """Toy of the 'order_far' pair, (n·T, 2, 1, 1) and (n,): a red then a blue pulse 17-20 frames
    apart (class 0) or the reverse (class 1)."""
    a = torch.randint(16, 24, (n,), generator=g)
    b = a + width + torch.randint(17, 21, (n,), generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    first, second = _pulses(T, a, width), _pulses(T, b, width)
    red, blue = torch.where(y[:, None] == 0, first, second), torch.where(y[:, None] == 0, second, first)
    x = torch.stack([red, blue], 2) + 0.1 * torch.randn(n, T, 2, generator=g)
    return x.view(n * T, 2, 1, 1), y


def _far_speed_batch(n, g, T=64, width=2):
    """Toy of the 'speed_far' pair, (n·T, 1, 1, 1) and (n,): two pulses of one channel, the second
    24 (class 0, slow) or 17 (class 1, fast) blank frames after the first, which starts at 16-20."""
    a = torch.randint(16, 21, (n,), generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    b = a + width + torch.where(y == 1, 17, 24)
    on = _pulses(T, a, width) + _pulses(T, b, width)  # the pulses never overlap
    x = on[:, :, None] + 0.1 * torch.randn(n, T, 1, generator=g)
    return x.view(n * T, 1, 1, 1), y


def _fit_long_only(tap_init, batch, in_channels, steps=600, T=64, C=16):
    """Validation accuracy of 1x1 conv-BN-ReLU, one long-only module, conv-BN-ReLU, mean over time
    and a linear classifier, trained with the ablation's SGD recipe on a toy ``batch(n, generator)``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(in_channels, C, 1), nn.BatchNorm2d(C), nn.ReLU(),
                        LongShortModule(C, T, branches=('long',), tap_init=tap_init),
                        nn.Conv2d(C, C, 1), nn.BatchNorm2d(C), nn.ReLU())
    fc = nn.Linear(C, 2)
    opt = torch.optim.SGD(list(net.parameters()) + list(fc.parameters()), lr=0.01, momentum=0.9,
                          weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = batch(16, g)
        loss = F.cross_entropy(fc(net(x).view(len(y), T, C).mean(1)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = batch(256, torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (fc(net(x).view(256, T, C).mean(1)).argmax(1) == y).float().mean().item()


def test_shift_taps_learn_an_order_that_identity_taps_miss():
    """The saddle of the identity init on a long-range task (README "Long-range order"): in the same
    600 SGD steps the shift-initialised branch solves the toy, the identity-initialised one stays
    near chance (α grows, but identity taps give it no reach to grow along)."""
    assert _fit_long_only('shift', _far_order_batch, 2) > 0.95
    assert _fit_long_only('identity', _far_order_batch, 2) < 0.7


def test_shift_taps_learn_a_far_speed_that_identity_taps_miss():
    """The same on a toy of the 'speed_far' pair: only the interval between two identical pulses,
    beyond TSM's reach, tells slow from fast."""
    assert _fit_long_only('shift', _far_speed_batch, 1) > 0.95
    assert _fit_long_only('identity', _far_speed_batch, 1) < 0.7
