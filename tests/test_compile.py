"""``--compile``: torch.compile (Inductor) of every model kind, and the entry points that use it.

- Every kind's forward is one graph (no graph break), in training (grad on) and at inference
  (eval, ``torch.no_grad``, where the temporal shift's in-place path steps aside while compiling).
- Compiled (Inductor, fp32) equals eager within 1e-4 relative: training outputs, parameter gradients
  and BN statistics, and inference outputs, of a whole TSM and of an LSNet block whose long-short
  module is active (random, not zero, branch weights); the lean shift's fused autograd function.
- ``main.py --compile`` trains one epoch to the weights of the eager run and saves the eager run's
  keys (no ``_orig_mod.``), ``--resume`` continues it; ``test_models.py --compile`` scores as without;
  ``tools/demo.py --compile`` gives the eager probabilities; without a C++ compiler each entry point
  stops with one line naming ``--compile``.

Inductor compiles C++ on the CPU, seconds to a minute per graph: the models are tiny, and the TSM
numerics test builds the network and batch ``main.py`` builds in the end-to-end test, whose compile
then takes most kernels from Inductor's on-disk cache.
"""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import main as train_main
import test_models
from ops.compile import COMPILE_MODES, check_compile_support, compile_model, unwrap
from ops.errors import LSNetError
from ops.utils import to_channels_last
from test_matrix import data, eval_argv, run_folder, train_argv  # noqa: F401  (data: the fixture)
from tests.fakes import tsn
from tools import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEGMENTS = 4
NUM_CLASS = 4  # test_matrix's colour classes
TINY = dict(arch='resnet18', pretrain='none', input_size=32)

# kind id -> ModelConfig fields beyond TINY (add a kind here and it is checked for graph breaks)
KINDS = {
    'TSN': dict(),
    'TSM-blockres-fast': dict(shift=True),
    'TSM-blockres-lean': dict(shift=True, shift_mode='lean'),
    'TSM-block-fast': dict(shift=True, shift_place='block'),
    'TSM-block-lean': dict(shift=True, shift_place='block', shift_mode='lean'),
    'TSM-tpool': dict(shift=True, temporal_pool=True),
    'NL-TSM': dict(shift=True, non_local=True),
    'TSM-MobileNetV2': dict(arch='mobilenetv2', shift=True),
    'LSNet': dict(shift=True, lsm=True),
    'LSNet-MobileNetV2': dict(arch='mobilenetv2', shift=True, lsm=True),
    'TSM-uni': dict(shift=True, shift_direction='uni'),
    'LSNet-uni': dict(shift=True, lsm=True, shift_direction='uni'),
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """No compiled code or recompile count carried from one test (or model) to the next."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def build(fields, dropout=0.5):
    """A tiny model as main.py builds it: partial BN on, channels_last."""
    model = tsn(NUM_CLASS, SEGMENTS, partial_bn=True, dropout=dropout, **dict(TINY, **fields))
    return to_channels_last(model)


def clips(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, SEGMENTS * 3, TINY['input_size'], TINY['input_size'], generator=g)
    return x.contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- graph breaks

@pytest.mark.parametrize('mode', ['train', 'inference'])
@pytest.mark.parametrize('kind', KINDS)
def test_forward_is_one_graph(kind, mode):
    model = build(KINDS[kind])
    x = clips()
    if mode == 'train':
        model.train()
        explained = torch._dynamo.explain(model)(x)
    else:
        model.eval()
        with torch.no_grad():
            explained = torch._dynamo.explain(model)(x)
    reasons = ['{} at {}'.format(r.reason, ' <- '.join(str(f) for f in r.user_stack[-3:]))
               for r in explained.break_reasons]
    assert explained.graph_break_count == 0 and explained.graph_count == 1, reasons


# ---------------------------------------------------------------- compiled numbers equal eager

def perturb_lsm(model):
    """Random weights in every long-short module: at their zero initialisation the branches add
    nothing and most of their gradients are zero, which would compare nothing."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'lsm.' in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def assert_close(actual, expected, what):
    """rtol 1e-4, atol 1e-5 of the tensor's largest magnitude (elements near zero carry rounding only)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1e-3), msg=lambda m: what + ': ' + m)


def compare_training_step(eager, twin, compiled, x):
    """Forward and backward through ``eager`` and ``compiled`` (the compiled copy ``twin``): outputs,
    every parameter gradient and the BN running statistics agree; returns the parameter names
    with a non-zero gradient."""
    eager.train()
    compiled.train()
    ref = eager(x)
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    (ref * weight).sum().backward()
    out = compiled(x)
    (out * weight).sum().backward()
    assert_close(out, ref, 'training output')
    live = []
    for (name, p), q in zip(eager.named_parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert_close(q.grad, p.grad, 'gradient of ' + name)
            if p.grad.abs().max() > 0:
                live.append(name)
    for (name, b), c in zip(eager.named_buffers(), twin.buffers()):
        if b.is_floating_point():
            assert_close(c, b, 'buffer ' + name)
    return live


def test_tsm_compiled_equals_eager():
    """The whole network main.py builds in the end-to-end test below (same flags, same batch)."""
    eager = build(dict(shift=True), dropout=0.0)
    twin = copy.deepcopy(eager)
    compiled = compile_model(twin, 'default')
    assert unwrap(compiled) is twin
    x = clips(batch=4)
    live = compare_training_step(eager, twin, compiled, x)
    assert counters['stats']['unique_graphs'] == 1
    assert len(live) > 20
    eager.eval()
    compiled.eval()
    with torch.no_grad():
        assert_close(compiled(x), eager(x), 'inference output')


def test_lsnet_block_compiled_equals_eager():
    """One LSNet residual block (shifted conv1, the long-short module with both branches active,
    downsampling) at an odd feature size, as ResNet-50's layer4 at 224 px (7x7). A whole LSNet
    would compile for minutes on a CPU; the rest of it is TSM, checked above."""
    model = build(dict(shift=True, lsm=True))
    eager = perturb_lsm(copy.deepcopy(model.base_model.layer2[0]))
    assert hasattr(eager, 'lsm') and eager.downsample is not None
    assert eager.lsm.short is not None and eager.lsm.long is not None
    twin = copy.deepcopy(eager)
    compiled = compile_model(twin)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2 * SEGMENTS, 64, 9, 9, generator=g).contiguous(memory_format=torch.channels_last)
    live = compare_training_step(eager, twin, compiled, x)
    assert any(n.startswith('lsm.short.') for n in live) and any(n.startswith('lsm.long.') for n in live)
    eager.eval()
    compiled.eval()
    with torch.no_grad():
        assert_close(compiled(x), eager(x), 'inference output')


@pytest.mark.parametrize('direction', ['bi', 'uni'])
def test_frozen_inference_equals_eager(direction):
    """``compile_model(..., inference=True)`` (Inductor freezing: weights as constants, batch norm
    folded into the convolutions), as test_models.py and the demos compile: TSM of either shift and
    an LSNet block with both branches active."""
    tsm = build(dict(shift=True, shift_direction=direction), dropout=0.0).eval()
    block = perturb_lsm(build(dict(shift=True, lsm=True, shift_direction=direction)).base_model.layer2[0]).eval()
    g = torch.Generator().manual_seed(6)
    block_x = torch.randn(2 * SEGMENTS, 64, 9, 9, generator=g).contiguous(memory_format=torch.channels_last)
    for eager, x in ((tsm, clips(batch=2)), (block, block_x)):
        compiled = compile_model(copy.deepcopy(eager), inference=True)
        with torch.inference_mode():
            out = compiled(x)
            assert_close(out, eager(x), 'frozen inference output')
            if eager is tsm:  # freezing is in effect: TSM's weights are constants of the compiled code
                for p in unwrap(compiled).parameters():
                    p.mul_(0.5)
                assert torch.equal(compiled(x), out)
                assert not torch.allclose(unwrap(compiled)(x), out)


def test_compiled_stream_step_equals_eager():
    """A causal TSM streamed frame by frame through the frozen compiled step, as the online demo
    runs it with --compile: every frame's logits and the state equal the eager streamer's (the
    compiled shift replaces the leading channels by an element-wise selection, not a concatenation)."""
    from ops.streaming import CompiledStep, Streamer
    model = build(dict(shift=True, shift_direction='uni'), dropout=0.0).eval()
    eager = Streamer(copy.deepcopy(model))
    streamer = Streamer(model)
    stepper = CompiledStep(streamer, compile_model(streamer, inference=True))
    g = torch.Generator().manual_seed(8)
    size = TINY['input_size']
    frames = [torch.randn(1, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
              for _ in range(SEGMENTS + 2)]
    state_e = state_c = None
    with torch.inference_mode():
        for frame in frames:
            out_e, state_e = eager.step(frame, state_e)
            out_c, state_c = stepper.step(frame, state_c)
            assert_close(out_c, out_e, 'streamed logits')
            for a, b in zip(state_c, state_e):
                assert_close(a, b, 'stream state')


def test_compiled_lsm_stream_step_equals_eager():
    """One causal long-short module's frame step compiled (its groups joined by a channel selection
    instead of written into one buffer) equals the eager step, frame by frame, output and state,
    through the first frames where the taps read the present; the state maps leave it dense."""
    block = perturb_lsm(build(dict(shift=True, lsm=True, shift_direction='uni')).base_model.layer1[0]).eval()
    lsm = block.lsm
    assert lsm.causal and lsm.short is not None and lsm.long is not None

    def step(h, seen, *state):
        out, new = lsm.stream_step(h, state or None, seen, lsm.step_constants())
        return (out,) + new

    compiled = torch.compile(step, fullgraph=True)
    g = torch.Generator().manual_seed(9)
    state_e = state_c = ()
    with torch.inference_mode():
        for t in range(max(lsm.long.dilations) + 2):
            h = torch.randn(1, 64, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
            seen = torch.full((1,), float(t))
            out_e, *state_e = step(h, t, *state_e)  # eager: the frame count as an int
            out_c, *state_c = compiled(h, seen, *state_c)
            assert_close(out_c, out_e, 'streamed module output')
            assert out_c.is_contiguous(memory_format=torch.channels_last)
            for a, b in zip(state_c, state_e):
                assert_close(a, b, 'module state')
                # dense maps, not views of a wider one: the streamer would copy a view every frame
                assert a.dim() != 4 or a.is_contiguous(memory_format=torch.channels_last)


def test_lean_shift_compiled_equals_eager():
    """The fused shift + conv1 autograd function of ``--shift_mode lean``, forward and backward."""
    from ops.temporal_shift import TemporalShift
    conv = torch.nn.Conv2d(16, 8, 3, padding=1)
    eager = TemporalShift(conv, num_segments=SEGMENTS, shift_div=4, mode='lean')
    twin = copy.deepcopy(eager)
    compiled = compile_model(twin)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2 * SEGMENTS, 16, 6, 6, generator=g)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    w = torch.randn(2 * SEGMENTS, 8, 6, 6, generator=g)
    (eager(xa) * w).sum().backward()
    out = compiled(xb)
    (out * w).sum().backward()
    assert_close(out, eager(x), 'output')
    assert_close(xb.grad, xa.grad, 'input gradient')
    for (name, p), q in zip(eager.named_parameters(), twin.parameters()):
        assert_close(q.grad, p.grad, 'gradient of ' + name)


# ---------------------------------------------------------------- library pieces

def test_unwrap_reaches_the_eager_module_and_its_keys():
    from ops.checkpoint import make_checkpoint
    model = build(KINDS['TSM-blockres-fast'])
    compiled = torch.compile(model)
    assert any(k.startswith('_orig_mod.') for k in compiled.state_dict())
    for wrapped in (compiled, torch.nn.DataParallel(compiled), torch.compile(torch.nn.DataParallel(model))):
        assert unwrap(wrapped) is model
    assert unwrap(model) is model
    assert make_checkpoint(unwrap(compiled))['state_dict'].keys() == make_checkpoint(model)['state_dict'].keys()
    # train()/eval() through the wrapper reach the model, partial BN included
    frozen = model._partial_bn_targets()
    compiled.train()
    assert model.training and frozen and not any(m.training for m in frozen)
    compiled.eval()
    assert not model.training


def test_flags_and_modes():
    from opts import build_test_parser, build_train_parser
    train = build_train_parser().parse_args(['kinetics', 'RGB', '--compile', '--compile_mode', 'max-autotune'])
    assert train.compile and train.compile_mode == 'max-autotune'
    test = build_test_parser().parse_args(['kinetics', '--weights', 'w.pth'])
    assert not test.compile and test.compile_mode == 'default'
    assert demo.build_parser().parse_args(['c.pth', 'v.mp4', '--compile']).compile
    with pytest.raises(LSNetError, match='--compile_mode'):
        check_compile_support('cpu', 'fastest')
    assert 'default' in COMPILE_MODES


# ---------------------------------------------------------------- entry points

def missing_compiler():
    """Inductor's own configuration pointed at a compiler that does not exist (what CXX=... does)."""
    from torch._inductor import config
    return config.patch({'cpp.cxx': (None, os.path.join(ROOT, 'no-such-dir', 'g++'))})


def one_line_error(err):
    err = err.strip()
    assert err.startswith('error: --compile') and len(err.splitlines()) == 1, err
    return err


def train_tsm(data, folder, extra=(), epochs=1):
    """test_matrix's TSM run with --dropout 0 (compiled and eager runs then draw no random numbers)."""
    extra = ['--dropout', '0'] + list(extra)
    return train_main.main(train_argv('TSM-blockres', data, folder, epochs=epochs, extra=extra))


@pytest.fixture(scope='module')
def eager_run(data, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('compile_eager'))
    assert train_tsm(data, folder) == 0
    return run_folder(folder)


@pytest.fixture(scope='module')
def compiled_run(data, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('compile_compiled'))
    torch._dynamo.reset()
    counters.clear()
    assert train_tsm(data, folder, ['--compile']) == 0
    assert counters['stats']['unique_graphs'] >= 2  # training and validation graphs, compiled
    return run_folder(folder)


def load(path):
    from ops.checkpoint import load_checkpoint
    return load_checkpoint(path)


def test_main_compile_saves_eager_keys_and_weights(eager_run, compiled_run):
    a = load(os.path.join(eager_run, 'ckpt.pth.tar'))
    b = load(os.path.join(compiled_run, 'ckpt.pth.tar'))
    assert not any('_orig_mod' in k for k in b['state_dict'])
    assert list(a['state_dict']) == list(b['state_dict'])
    groups = [[g['params'] for g in ck['optimizer']['param_groups']] for ck in (a, b)]
    assert groups[0] == groups[1]
    for k, v in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][k].float(), v.float(), rtol=1e-3, atol=1e-4, msg=k)
    assert b['args']['compile'] is True


def test_main_resume_with_compile(eager_run, compiled_run, data, tmp_path):
    out = str(tmp_path)
    assert train_tsm(data, out, ['--compile', '--resume', compiled_run], epochs=2) == 0
    ck = load(os.path.join(run_folder(out), 'ckpt.pth.tar'))
    assert ck['epoch'] == 2 and ck['optimizer']['state']
    assert list(ck['state_dict']) == list(load(os.path.join(eager_run, 'ckpt.pth.tar'))['state_dict'])


def test_test_models_compile_scores_as_eager(compiled_run, data, tmp_path):
    weights = os.path.join(compiled_run, 'ckpt.pth.tar')
    scores = {}
    for tag, extra in (('eager', []), ('compiled', ['--compile'])):
        path = str(tmp_path / (tag + '.npz'))
        assert test_models.main(eval_argv(data, weights, extra + ['--save_scores', path])) == 0
        scores[tag] = np.load(path)['scores']
    assert scores['eager'].shape == (4, NUM_CLASS)
    np.testing.assert_allclose(scores['compiled'], scores['eager'], rtol=1e-4, atol=1e-5)


def test_demo_compile(compiled_run, data, capsys):
    weights = os.path.join(compiled_run, 'ckpt.pth.tar')
    frames = os.path.join(data, 'frames', 'val_blue_0')
    results = []
    for extra in ([], ['--compile']):
        assert demo.main([weights, frames, '--json'] + extra) == 0
        results.append(json.loads(capsys.readouterr().out))
    for a, b in zip(results[0]['top'], results[1]['top']):
        assert a['class'] == b['class'] and b['score'] == pytest.approx(a['score'], rel=1e-4, abs=1e-6)


def test_missing_compiler_is_one_line_error(eager_run, data, tmp_path, capsys):
    weights = os.path.join(eager_run, 'ckpt.pth.tar')
    with missing_compiler():
        assert train_main.main(train_argv('TSM-blockres', data, str(tmp_path), extra=['--compile'])) == 2
        assert 'C++ compiler' in one_line_error(capsys.readouterr().err)
        assert not os.path.exists(os.path.join(str(tmp_path), 'ckpt'))
        assert test_models.main(eval_argv(data, weights, ['--compile'])) == 2
        one_line_error(capsys.readouterr().err)
        assert demo.main([weights, os.path.join(data, 'frames', 'val_blue_0'), '--compile']) == 2
        one_line_error(capsys.readouterr().err)


def test_missing_compiler_exit_status_of_the_process(data, tmp_path):
    """The real thing: ``CXX`` names no compiler, so Inductor itself would find none."""
    env = dict(os.environ, CXX=os.path.join(str(tmp_path), 'no-such-g++'))
    cmd = [sys.executable, os.path.join(ROOT, 'main.py')] + train_argv('TSM-blockres', data, str(tmp_path),
                                                                        extra=['--compile'])
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'no-such-g++' in one_line_error(proc.stderr)
