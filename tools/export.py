"""Export a trained TSN / TSM / LSNet checkpoint to ``torch.export`` (and ONNX when available).

Writes an ``ExportedProgram`` (``torch.export.save``, ``.pt2``) taking one float input
``(N, T·C, H, W)`` (normalised clips) and returning ``(N, num_class)`` logits, reloads it and checks
that its outputs match the eager model within ``--atol`` (default 1e-4) on a random clip.  With the
``onnx`` package installed an ONNX file is written too (checked with onnxruntime when that is
installed); without it the ONNX step is skipped with a message.

    python tools/export.py checkpoints/.../ckpt.best.pth.tar --out model.pt2 --onnx model.onnx

``--online`` exports an online checkpoint (``--shift_direction uni``) as its step function instead
(:func:`ops.streaming.export_step`): inputs ``(frame (N, C, H, W), *state)``, outputs ``(logits
(N, num_class), *state)``, the state starting as zeros (``Streamer.initial_state``).  It prints the
state's names and shapes, and checks the reloaded program (and ONNX when available) against the eager
step over ``--frames`` consecutive frames, carrying the state from frame to frame.

    python tools/export.py checkpoints/.../ckpt.best.pth.tar --online --out step.pt2

Exit status: 0 on success, 1 when an exported model does not match the eager one, 2 on a usage
error.
"""

import importlib.util
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from ops.errors import ArgumentParser, LSNetError, make_folder  # noqa: E402
from ops.checkpoint import load_model  # noqa: E402


def example_input(model, batch_size=1, seed=0):
    """Random clip ``(N, T·C, H, W)`` for ``model`` (fixed seed, so runs are repeatable)."""
    g = torch.Generator().manual_seed(seed)
    size = model.crop_size
    return torch.randn(batch_size, model.num_segments * model.input_channels, size, size, generator=g)


def max_abs_diff(a, b):
    return float((a.float() - b.float()).abs().max())


def export_program(model, x, path, dynamic_batch=False):
    """``torch.export`` ``model`` on ``x``, save it to ``path``; returns the reloaded program."""
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = ({0: torch.export.Dim('batch', min=1, max=1024)},)
    with torch.no_grad():
        program = torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes)
    torch.export.save(program, path)
    return torch.export.load(path)


def export_onnx(model, x, path):
    """Write ONNX to ``path``; returns ``(status text, max |diff| or None)``."""
    if importlib.util.find_spec('onnx') is None:
        return 'skipped: the onnx package is not installed (pip install onnx onnxscript)', None
    with torch.no_grad():
        torch.onnx.export(model, (x,), path, input_names=['clip'], output_names=['logits'])
    import onnx
    onnx.checker.check_model(onnx.load(path))
    if importlib.util.find_spec('onnxruntime') is None:
        return 'written %s (checked with onnx.checker; onnxruntime not installed, outputs not compared)' % path, None
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    (out,) = session.run(None, {'clip': x.numpy()})
    with torch.no_grad():
        diff = max_abs_diff(torch.from_numpy(out), model(x))
    return 'written %s' % path, diff


def example_frame(model, batch_size=1, seed=0):
    """Random frame ``(N, C, H, W)`` for a streamed ``model`` (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    size = model.crop_size
    return torch.randn(batch_size, model.input_channels, size, size, generator=g)


def export_onnx_step(streamer, frame, state, names, path):
    """Write the step function as ONNX to ``path``; returns ``(status text, run(frame, *state) or None)``."""
    if importlib.util.find_spec('onnx') is None:
        return 'skipped: the onnx package is not installed (pip install onnx onnxscript)', None
    inputs = ['frame'] + ['state.' + n for n in names]
    outputs = ['logits'] + ['new_state.' + n for n in names]
    with torch.no_grad():
        torch.onnx.export(streamer, (frame,) + tuple(state), path, input_names=inputs, output_names=outputs)
    import onnx
    onnx.checker.check_model(onnx.load(path))
    if importlib.util.find_spec('onnxruntime') is None:
        return 'written %s (checked with onnx.checker; onnxruntime not installed, outputs not compared)' % path, None
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    fed = [i.name for i in session.get_inputs()]  # inputs the graph does not read may be pruned

    def run(x, *s):
        feeds = {n: t.numpy() for n, t in zip(inputs, (x,) + tuple(s)) if n in fed}
        return tuple(torch.from_numpy(o) for o in session.run(None, feeds))
    return 'written %s' % path, run


def run_online(args):
    """``--online``: export the step function of an online checkpoint, reload it and compare it with the
    eager step over ``--frames`` frames; returns the exit status."""
    from ops.streaming import Streamer, export_step
    if args.dynamic_batch:
        raise LSNetError('--dynamic_batch is not supported with --online (the state tensors carry the batch size)')
    if args.frames < 1:
        raise LSNetError('--frames must be >= 1, got %d' % args.frames)
    model, _, _ = load_model(args.checkpoint, 'cpu')
    out, onnx_path = output_files(args, '.online')
    try:
        streamer = Streamer(model)
    except LSNetError as exc:
        raise LSNetError('%s: %s' % (args.checkpoint, exc)) from None
    frames = [example_frame(model, args.batch_size, seed=i) for i in range(args.frames)]
    names = streamer.state_names()
    state = streamer.initial_state(frames[0])
    print('state: %d tensors, %d values per stream' % (len(names), sum(s.numel() for s in state) // args.batch_size))
    for name, s in zip(names, state):
        print('  %-48s %s' % (name, tuple(s.shape)))
    with torch.no_grad():
        program = export_step(streamer, frames[0])
    torch.export.save(program, out)
    exported = torch.export.load(out).module()
    status, onnx_run = ('skipped (--no_onnx)', None) if args.no_onnx else export_onnx_step(
        streamer, frames[0], state, names, onnx_path)
    diffs = {'torch.export': [], 'onnx': []}
    eager_state, states = None, {'torch.export': state, 'onnx': state}
    runners = {'torch.export': exported, 'onnx': onnx_run}
    for frame in frames:
        with torch.no_grad():
            eager, eager_state = streamer.step(frame, eager_state)
        for kind, fn in runners.items():
            if fn is None:
                continue
            with torch.no_grad():
                result = fn(frame, *states[kind])
            logits, states[kind] = result[0], tuple(result[1:])
            state_diff = max(max_abs_diff(a, b) for a, b in zip(states[kind], eager_state))
            diffs[kind].append(max(max_abs_diff(logits, eager), state_diff))
    ok = True
    for kind in ('torch.export', 'onnx'):
        if not diffs[kind]:
            continue
        diff = max(diffs[kind])
        ok = ok and diff <= args.atol
        where = out if kind == 'torch.export' else status
        print('%s: %s  step (frame %s, %d state tensors) -> (logits %s, state) over %d frames  max_abs_diff=%.3g '
              '(%s, atol %g)' % (kind, where, tuple(frames[0].shape), len(names), tuple(eager.shape), len(frames),
                                 diff, _verdict(diff, args.atol), args.atol))
    if onnx_run is None:
        print('onnx: %s' % status)
    return 0 if ok else 1


def build_parser():
    p = ArgumentParser(description='Export a checkpoint to torch.export (and ONNX).')
    p.add_argument('checkpoint')
    p.add_argument('--out', default='', help='ExportedProgram file (default: <checkpoint stem>.pt2)')
    p.add_argument('--onnx', default='', help='ONNX file (default: <checkpoint stem>.onnx)')
    p.add_argument('--no_onnx', action='store_true', help='skip the ONNX export')
    p.add_argument('--batch_size', type=int, default=1, help='clips in the example input')
    p.add_argument('--dynamic_batch', action='store_true', help='export with a symbolic batch size')
    p.add_argument('--atol', type=float, default=1e-4, help='largest allowed |exported - eager|')
    p.add_argument('--online', action='store_true',
                   help='export the frame-by-frame step of an online checkpoint (--shift_direction uni), state in '
                        'and out (default file: <checkpoint stem>.online.pt2)')
    p.add_argument('--frames', type=int, default=4, help='--online: frames streamed through both models')
    return p


def _stem(path):
    base = os.path.basename(path)
    for ext in ('.pth.tar', '.pth', '.pt', '.tar', '.ckpt'):
        if base.endswith(ext):
            return os.path.join(os.path.dirname(path), base[:-len(ext)])
    return os.path.splitext(path)[0]


def output_file(path, flag, checkpoint):
    """``path``, checked before anything is exported: not the checkpoint itself, not a folder, in a
    folder that exists (made when missing) and is writable."""
    if os.path.exists(path) and os.path.samefile(path, checkpoint):
        raise LSNetError('%s %s is the checkpoint itself: give another file' % (flag, path))
    if os.path.isdir(path):
        raise LSNetError('%s %s is a folder' % (flag, path))
    folder = os.path.dirname(os.path.abspath(path))
    make_folder(folder, '%s %s: cannot create folder %s' % (flag, path, folder))
    if not os.access(folder, os.W_OK):
        raise LSNetError('%s %s: folder %s is not writable' % (flag, path, folder))
    return path


def output_files(args, kind=''):
    """``(--out, --onnx or None with --no_onnx)`` of ``args``, defaults next to the checkpoint, checked."""
    stem = _stem(args.checkpoint) + kind
    out = output_file(args.out or stem + '.pt2', '--out', args.checkpoint)
    return out, None if args.no_onnx else output_file(args.onnx or stem + '.onnx', '--onnx', args.checkpoint)


def _verdict(diff, atol):
    return 'ok' if diff <= atol else 'MISMATCH'


def run(args):
    """Export and verify; returns the exit status."""
    if args.batch_size < 1:
        raise LSNetError('--batch_size must be >= 1, got %d' % args.batch_size)
    if args.atol < 0:
        raise LSNetError('--atol must be >= 0, got %g' % args.atol)
    if args.online:
        return run_online(args)
    model, _, _ = load_model(args.checkpoint, 'cpu')
    out, onnx_path = output_files(args)
    # A symbolic batch needs an example batch of at least 2 (torch.export specialises sizes 0 and 1).
    x = example_input(model, max(2, args.batch_size) if args.dynamic_batch else args.batch_size)
    with torch.no_grad():
        eager = model(x)
    program = export_program(model, x, out, args.dynamic_batch)
    with torch.no_grad():
        diff = max_abs_diff(program.module()(x), eager)
    ok = diff <= args.atol
    print('torch.export: %s  input %s -> output %s  max_abs_diff=%.3g (%s, atol %g)' % (
        out, tuple(x.shape), tuple(eager.shape), diff, _verdict(diff, args.atol), args.atol))
    if args.dynamic_batch:
        for n in (1, x.shape[0] + 1):
            x2 = example_input(model, n, seed=n)
            with torch.no_grad():
                d2 = max_abs_diff(program.module()(x2), model(x2))
            ok = ok and d2 <= args.atol
            print('torch.export: batch %d max_abs_diff=%.3g (%s)' % (n, d2, _verdict(d2, args.atol)))
    if not args.no_onnx:
        status, onnx_diff = export_onnx(model, x, onnx_path)
        if onnx_diff is None:
            print('onnx: %s' % status)
        else:
            ok = ok and onnx_diff <= args.atol
            print('onnx: %s max_abs_diff=%.3g (%s)' % (status, onnx_diff, _verdict(onnx_diff, args.atol)))
    return 0 if ok else 1


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except LSNetError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
