"""Online (causal) TSM / LSNet: the uni shift, the causal long-short module, and frame-by-frame streaming.

The central check: streaming a clip one frame at a time gives, frame for frame, the logits of the
offline causal model on the whole clip (float32, 1e-5 relative), for clips longer than the trained
number of segments, on ResNet and MobileNetV2.
"""
import pytest
import torch

from ops.config import ModelConfig
from ops.errors import LSNetError
from ops.long_short import LongShortModule
from ops.models import build_model
from ops.streaming import OnlineRecognizer, Streamer, clip_segments, export_step, offline_frame_logits
from ops.temporal_shift import ShiftConv2dFunction, TemporalShift, shift_tensor, temporal_shift
from tests.fakes import make_lively

SEGMENTS = 4
SIZE = 64


def shift_uni_reference(x, num_segments, shift_div=8):
    """The online shift written plainly: channels [0, fold) take frame t-1 (zero at t=0)."""
    nt, c, h, w = x.shape
    x5 = x.view(nt // num_segments, num_segments, c, h, w)
    fold = c // shift_div
    out = x5.clone()
    out[:, :, :fold] = 0
    out[:, 1:, :fold] = x5[:, :-1, :fold]
    return out.view(nt, c, h, w)


def causal_model(arch='resnet18', lsm=False, place='blockres', seed=0, **fields):
    """An online model whose temporal modules all do something (LSM parameters moved off zero), with
    O(1) logits, in eval mode."""
    torch.manual_seed(seed)
    cfg = ModelConfig(num_class=5, num_segments=SEGMENTS, arch=arch, pretrain='none', shift=True, shift_place=place,
                      shift_direction='uni', lsm=lsm, dropout=0.0, **fields)
    return make_lively(build_model(cfg), SIZE)


def stream(model, clip):
    """(N, T, num_class) logits of ``clip`` (N, T, C, H, W) streamed one frame at a time."""
    streamer = Streamer(model)
    state, out = None, []
    with torch.no_grad():
        for t in range(clip.shape[1]):
            logits, state = streamer.step(clip[:, t].contiguous(), state)
            out.append(logits)
    streamer.close()
    return torch.stack(out, dim=1)


def assert_rel_close(a, b, rtol=1e-5):
    scale = float(b.abs().max())
    assert scale > 1e-3, 'logits too small to compare meaningfully'
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale)


# ------------------------------------------------------------------ the online shift

@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_uni_shift_matches_reference_on_every_path(memory_format):
    x = torch.randn(2 * 5, 16, 6, 6).contiguous(memory_format=memory_format)
    ref = shift_uni_reference(x, 5)
    assert torch.equal(shift_tensor(x, 5, 2, 1, uni=True), ref)
    assert torch.equal(temporal_shift(x, 5, 8, uni=True), ref)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1)
    wrapped = TemporalShift(conv, 5, 8, mode='fast', direction='uni')
    expected = conv(ref)
    with torch.no_grad():  # in-place inference path
        torch.testing.assert_close(wrapped(x.clone()), expected, rtol=0, atol=1e-6)
    lean = TemporalShift(conv, 5, 8, mode='lean', direction='uni')
    torch.testing.assert_close(lean(x), expected, rtol=0, atol=1e-6)


def test_uni_shift_gradient_is_its_adjoint():
    x = torch.randn(2 * 3, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: temporal_shift(t, 3, 8, uni=True), (x,))
    conv = torch.nn.Conv2d(16, 4, 3, padding=1).double()
    assert torch.autograd.gradcheck(
        lambda t, w: ShiftConv2dFunction.apply(t, w, None, 3, 2, (1, 1), (1, 1), (1, 1), 1, True), (x, conv.weight))


# ------------------------------------------------------------------ causality

@pytest.mark.parametrize('lsm', [False, True], ids=['TSM', 'LSNet'])
def test_frame_t_does_not_read_later_frames(lsm):
    model = causal_model(lsm=lsm)
    clip = torch.randn(1, SEGMENTS, 3, SIZE, SIZE)
    changed = clip.clone()
    changed[:, 2:] = torch.randn_like(changed[:, 2:])
    a, b = offline_frame_logits(model, clip), offline_frame_logits(model, changed)
    assert torch.equal(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:], b[:, 2:])


@pytest.mark.parametrize('lsm', [False, True], ids=['TSM', 'LSNet'])
def test_reversed_clip_changes_the_output(lsm):
    model = causal_model(lsm=lsm)
    clip = torch.randn(1, SEGMENTS, 3, SIZE, SIZE)
    with torch.no_grad():
        forward, backward = model(clip), model(clip.flip(1))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_uni_at_one_frame_is_tsn_without_the_moving_channels():
    """A clip of one frame: nothing comes from the past, so every shifted conv sees zeros in its first
    C/shift_div input channels - the TSN with those input weights zeroed, on that frame."""
    model = causal_model()
    torch.manual_seed(1)
    tsn = build_model(model.cfg.replace(shift=False, shift_direction='bi')).eval()
    state = {k.replace('.net.', '.'): v for k, v in model.state_dict().items()}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, TemporalShift):
                fold = m.net.in_channels // m.shift_div
                state[name + '.weight'] = state[name + '.weight'].clone()
                state[name + '.weight'][:, :fold] = 0
    tsn.load_state_dict(state)
    frame = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad(), clip_segments(model, 1):
        torch.testing.assert_close(model(frame), tsn.new_fc(tsn.base_model(frame)), rtol=1e-5, atol=1e-6)


def test_causal_lsnet_equals_causal_tsm_at_initialisation():
    torch.manual_seed(0)
    tsm = build_model(ModelConfig(num_class=5, num_segments=SEGMENTS, arch='resnet18', pretrain='none', shift=True,
                                  shift_direction='uni', dropout=0.0)).eval()
    lsnet = build_model(tsm.cfg.replace(lsm=True)).eval()
    missing, unexpected = lsnet.load_state_dict(tsm.state_dict(), strict=False)
    assert not unexpected and all('.lsm.' in k for k in missing)
    clip = torch.randn(2, SEGMENTS, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(lsnet(clip), tsm(clip), rtol=1e-6, atol=1e-7)


def test_bidirectional_checkpoint_fine_tunes_into_online_model():
    """Same keys and shapes: an offline TSM's weights load unchanged into the online TSM."""
    torch.manual_seed(0)
    bi = build_model(ModelConfig(num_class=5, num_segments=8, arch='resnet18', pretrain='none', shift=True))
    uni = build_model(bi.cfg.replace(shift_direction='uni'))
    assert uni.load_state_dict(bi.state_dict(), strict=True)


# ------------------------------------------------------------------ streaming exactness

@pytest.mark.parametrize('arch, lsm, place', [
    ('resnet18', False, 'blockres'), ('resnet18', False, 'block'), ('resnet18', True, 'blockres'),
    ('mobilenetv2', False, 'blockres'), ('mobilenetv2', True, 'blockres'),
], ids=['TSM-R18', 'TSM-R18-block', 'LSNet-R18', 'TSM-MBv2', 'LSNet-MBv2'])
def test_streaming_equals_offline_frame_for_frame(arch, lsm, place):
    model = causal_model(arch, lsm, place)
    clip = torch.randn(2, 2 * SEGMENTS + 3, 3, SIZE, SIZE)  # longer than the trained segments
    offline = offline_frame_logits(model, clip)
    online = stream(model, clip)
    assert_rel_close(online, offline)
    assert_rel_close(online.mean(dim=1), offline.mean(dim=1))  # hence the same clip score
    # the offline model on a clip of its trained length is the ordinary forward
    with torch.no_grad():
        assert_rel_close(model(clip[:, :SEGMENTS]), online[:, :SEGMENTS].mean(dim=1))


def test_streaming_with_grad_enabled_and_channels_last_is_the_same():
    """The copy (not in-place) shift path and channels_last frames give the same numbers."""
    model = causal_model(lsm=True)
    clip = torch.randn(1, 6, 3, SIZE, SIZE)
    expected = stream(model, clip)
    streamer = Streamer(model.to(memory_format=torch.channels_last))
    state, out = None, []
    for t in range(clip.shape[1]):
        logits, state = streamer.step(clip[:, t].contiguous(memory_format=torch.channels_last), state)
        out.append(logits.detach())
    assert_rel_close(torch.stack(out, 1), expected)


def test_frame_count_known_or_read_from_the_state_gives_the_same_numbers():
    """An eager step knows the frame count as an int when it is handed back the state it returned;
    given any other state (here a copy of it) it reads the count from the tensor.  Both give the
    same logits, bit for bit, through the first frames (where the causal taps read the present)."""
    model = causal_model(lsm=True)
    clip = torch.randn(1, 6, 3, SIZE, SIZE)
    streamer = Streamer(model)
    known, copied = [], []
    with torch.no_grad():
        state = None
        for t in range(clip.shape[1]):
            logits, state = streamer.step(clip[:, t], state)
            known.append(logits)
        state = None
        for t in range(clip.shape[1]):
            logits, state = streamer.step(clip[:, t], None if state is None else tuple(s.clone() for s in state))
            assert t == 0 or streamer.context.frames_known is None and streamer._counted is None
            copied.append(logits)
    assert all(torch.equal(a, b) for a, b in zip(known, copied))


def test_single_frame_maps_keep_channels_last_through_the_short_branch():
    """A batch of one leaves element-wise results with an arbitrary batch stride; the short branch
    gives its map a dense one, else the expansion conv takes a slow path and writes channels-first."""
    model = causal_model(lsm=True).to(memory_format=torch.channels_last)
    lsm = next(m for m in model.modules() if isinstance(m, LongShortModule))
    m = torch.randn(1, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        context = lsm.short.add_context(m)
        assert context.stride(0) == context.numel()
        assert lsm.short.expand(context).is_contiguous(memory_format=torch.channels_last)


def test_state_shapes_are_the_documented_ones():
    model = causal_model(lsm=True, lsm_reduction=16, lsm_groups=4)
    streamer = Streamer(model)
    shapes = streamer.state_shapes(torch.zeros(2, 3, SIZE, SIZE))
    assert shapes['frames_seen'] == (1,)
    # ResNet-18, 64x64 input: layer1 blocks see 64 channels at 16x16
    assert shapes['base_model.layer1.0.conv1.previous'] == (2, 64 // 8, 16, 16)
    assert shapes['base_model.layer1.0.lsm.short.previous'] == (2, 8, 16, 16)  # C_r = max(8, 64/16)
    dilations = model.base_model.layer1[0].lsm.long.dilations
    for g, d in enumerate(dilations):  # each tap keeps its last d inputs, one tensor per frame
        for k in range(1, d + 1):
            assert shapes['base_model.layer1.0.lsm.long.tap{}.t-{}'.format(g, k)] == (2, 64 // 4, 16, 16)
        assert 'base_model.layer1.0.lsm.long.tap{}.t-{}'.format(g, d + 1) not in shapes
    assert shapes['base_model.layer1.0.lsm.long.pooled_sum'] == (2, 64)
    assert shapes['base_model.layer4.1.conv1.previous'] == (2, 512 // 8, 2, 2)
    # every shifted block and every LSM keeps state: 8 shifts + 8 modules x (short, taps, gate sum),
    # plus the counter
    assert len(shapes) == 1 + 8 + 8 * (1 + sum(dilations) + 1)


def test_weights_are_read_at_a_videos_first_frame():
    """In eager inference the LSM's weight-derived constants are kept for a video: a weight changed
    mid-video takes effect at the next video (state=None), and every frame of it uses the new one."""
    model = causal_model(lsm=True)
    clip = torch.randn(1, 4, 3, SIZE, SIZE)
    streamer = Streamer(model)
    with torch.no_grad():
        state, before = None, []
        for t in range(4):
            logits, state = streamer.step(clip[:, t], state)
            before.append(logits)
            if t == 1:
                for m in model.modules():
                    if isinstance(m, LongShortModule):
                        m.long.scale.weight.mul_(3.0)
        assert torch.equal(before[3], stream(causal_model(lsm=True), clip)[:, 3])  # old weights to the end
        state, after = None, []
        for t in range(4):
            logits, state = streamer.step(clip[:, t], state)
            after.append(logits)
    offline = offline_frame_logits(model, clip)
    torch.testing.assert_close(torch.stack(after, 1), offline, rtol=1e-5, atol=1e-5 * offline.abs().max().item())
    assert not torch.allclose(after[3], before[3], atol=1e-4)


def test_state_resets_between_videos():
    model = causal_model(lsm=True)
    a, b = torch.randn(1, 5, 3, SIZE, SIZE), torch.randn(1, 5, 3, SIZE, SIZE)
    fresh_b = stream(model, b)
    recognizer = OnlineRecognizer(model, stride=1, window=1)
    for t in range(5):
        recognizer.update(a[0, t])
    recognizer.reset()
    scores = [recognizer.update(b[0, t]) for t in range(5)]
    torch.testing.assert_close(torch.stack(scores), torch.softmax(fresh_b[0], dim=1), rtol=1e-5, atol=1e-6)
    # without the reset the second video's first frame would see the first video
    recognizer.reset()
    for t in range(5):
        recognizer.update(a[0, t])
    assert not torch.allclose(recognizer.update(b[0, 0]), scores[0], atol=1e-5)


def test_recognizer_stride_and_window():
    model = causal_model()
    frames = torch.randn(9, 3, SIZE, SIZE)
    recognizer = OnlineRecognizer(model, stride=3, window=2)
    outputs = [recognizer.update(f) for f in frames]
    assert [o is not None for o in outputs] == [True, False, False] * 3
    assert recognizer.processed == 3
    logits = stream(model, frames[::3].unsqueeze(0))[0]
    torch.testing.assert_close(outputs[6], torch.softmax(logits[1:3].mean(0), dim=0), rtol=1e-5, atol=1e-6)
    assert OnlineRecognizer(model).window == SEGMENTS  # default: the trained segments


def test_recognizer_on_a_whole_clip_scores_as_the_offline_model():
    """Window = segments, one frame per segment: the prediction is the offline clip score's softmax
    (the mean of the segments' logits, the consensus the model was trained with)."""
    model = causal_model(lsm=True)
    clip = torch.randn(1, SEGMENTS, 3, SIZE, SIZE)
    recognizer = OnlineRecognizer(model)
    for t in range(SEGMENTS):
        scores = recognizer.update(clip[0, t])
    with torch.no_grad():
        offline = model(clip.view(SEGMENTS, 3, SIZE, SIZE))[0]
    torch.testing.assert_close(scores, torch.softmax(offline, dim=0), rtol=1e-5, atol=1e-6)


def test_prefixes_are_what_the_recognizer_scores_along_a_clip():
    """``model(x, prefixes=True)`` (what ``--prefix_loss`` trains): after ``t`` frames of a clip the
    recogniser's prediction is the softmax of prefix ``t``; the last prefix is the clip score."""
    model = causal_model(lsm=True)
    clip = torch.randn(1, SEGMENTS, 3, SIZE, SIZE)
    with torch.no_grad():
        prefixes = model(clip.view(SEGMENTS, 3, SIZE, SIZE), prefixes=True)[0]
        whole = model(clip.view(SEGMENTS, 3, SIZE, SIZE))[0]
    assert prefixes.shape == (SEGMENTS, 5)
    torch.testing.assert_close(prefixes[-1], whole, rtol=1e-5, atol=1e-6)
    recognizer = OnlineRecognizer(model)
    for t in range(SEGMENTS):
        scores = recognizer.update(clip[0, t])
        torch.testing.assert_close(scores, torch.softmax(prefixes[t], dim=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('weight', [1.0, 0.5])
def test_prefix_loss_trains_every_prefix(weight):
    """One training step with ``prefix_loss`` ``W``: the loss reported is ``W`` x the cross-entropy
    averaged over the clip's prefixes + ``(1 - W)`` x the whole clip's, the accuracy the clip's."""
    from ops.engine import LRSchedule, train_one_epoch
    model = causal_model()
    clips = torch.randn(2, SEGMENTS * 3, SIZE, SIZE)
    target = torch.tensor([1, 3])
    with torch.no_grad():
        prefixes = model.train()(clips, prefixes=True)
    ce = torch.nn.functional.cross_entropy
    mean_prefix = float(sum(ce(prefixes[:, t], target) for t in range(SEGMENTS))) / SEGMENTS
    clip = float(ce(prefixes[:, -1], target))
    assert abs(mean_prefix - clip) > 1e-3  # the two losses differ here
    expected = weight * mean_prefix + (1 - weight) * clip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    res = train_one_epoch(model, [(clips, target)], torch.nn.CrossEntropyLoss(), optimizer, LRSchedule(0.0, 0.0),
                          0, device=torch.device('cpu'), prefix_loss=weight)
    assert res['loss'] == pytest.approx(expected, rel=1e-5)
    hits = int((prefixes[:, -1].argmax(1) == target).sum())
    assert res['top1'] == pytest.approx(100.0 * hits / 2)


def test_offline_model_is_refused_by_the_streamer():
    cfg = ModelConfig(num_class=5, num_segments=SEGMENTS, arch='resnet18', pretrain='none', shift=True)
    with pytest.raises(LSNetError, match='shift_direction uni'):
        Streamer(build_model(cfg))


def test_offline_forward_is_untouched_after_streaming():
    model = causal_model(lsm=True)
    clip = torch.randn(1, SEGMENTS, 3, SIZE, SIZE)
    with torch.no_grad():
        before = model(clip)
    stream(model, clip)
    Streamer(model)  # attached but idle: the modules run offline outside step()
    with torch.no_grad():
        assert torch.equal(model(clip), before)
    assert all(not m.stream.active for m in model.modules() if isinstance(m, LongShortModule))


# ------------------------------------------------------------------ export

@pytest.mark.parametrize('lsm', [False, True], ids=['TSM', 'LSNet'])
def test_exported_step_matches_eager(lsm):
    model = causal_model(lsm=lsm)
    streamer = Streamer(model)
    frames = torch.randn(3, 1, 3, SIZE, SIZE)
    program = export_step(streamer, frames[0])
    exported = program.module()
    state = streamer.initial_state(frames[0])
    eager_state = None
    for f in frames:
        out = exported(f, *state)
        logits, state = out[0], tuple(out[1:])
        with torch.no_grad():
            eager, eager_state = streamer.step(f, eager_state)
        assert_rel_close(logits, eager, rtol=1e-4)


def test_store_name_and_saved_config_say_online():
    from ops.config import parse_weight_name, store_name
    cfg = ModelConfig(num_class=5, num_segments=8, arch='resnet50', shift=True, shift_direction='uni', lsm=True)
    name = store_name(cfg, 'jester', 25)
    assert '_shift8_blockres_uni_lsm_' in name
    dataset, fields = parse_weight_name(name + '.pth')
    assert dataset == 'jester' and fields['shift_direction'] == 'uni' and fields['lsm']
    assert ModelConfig.from_dict(cfg.to_dict()).shift_direction == 'uni'
    assert parse_weight_name(store_name(cfg.replace(shift_direction='bi'), 'jester', 25) + '.pth')[1][
        'shift_direction'] == 'bi'


def test_tsn_streams_frame_by_frame_without_state():
    """A TSN reads no other frame, so it streams too: only the frame counter is kept."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_class=5, num_segments=SEGMENTS, arch='resnet18', pretrain='none',
                                    dropout=0.0)).eval()
    streamer = Streamer(model)
    assert streamer.state_names() == ['frames_seen']
    clip = torch.randn(1, 3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model.new_fc(model.base_model(clip[0]))
    torch.testing.assert_close(stream(model, clip)[0], expected, rtol=1e-6, atol=1e-6)
    for flags in (dict(shift=True), dict(shift=True, non_local=True)):
        with pytest.raises(LSNetError):
            Streamer(build_model(model.cfg.replace(**flags)))
