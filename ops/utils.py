"""Small helpers of the entry points: meters, accuracy, run names, devices, seeds."""
import logging
import os
import random
import re
import sys

import numpy as np
import torch

from ops.errors import LSNetError, user_message

log = logging.getLogger(__name__)


class AverageMeter:
    """Running value, sum, count and average of a scalar."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.val = 0.0
        self.sum = 0.0
        self.count = 0
        self.avg = 0.0

    def update(self, val, n=1):
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0.0


def topk_correct(output, target, topk=(1,)):
    """Number of samples whose label is among the top-k scores, for each k.

    output: (N, num_class) scores; target: (N,) labels. k larger than num_class counts as num_class.
    """
    maxk = min(max(topk), output.size(1))
    pred = output.topk(maxk, 1, True, True)[1]
    hit = pred.eq(target.view(-1, 1))
    return [hit[:, :min(k, maxk)].any(dim=1).sum().item() for k in topk]


def accuracy(output, target, topk=(1,)):
    """Precision@k in percent for each k (reference semantics; k is capped at num_class)."""
    n = max(target.size(0), 1)
    return [100.0 * c / n for c in topk_correct(output, target, topk)]


# ---------------------------------------------------------------- run names

def store_name(args):
    """Run folder name, as the reference builds it (plus ``_lsm`` for LSNet models).

    e.g. ``TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50``.
    """
    arch = args.arch
    if args.shift:
        arch += '_shift{}_{}'.format(args.shift_div, args.shift_place)
    if args.temporal_pool:
        arch += '_tpool'
    if getattr(args, 'lsm', False):
        arch += '_lsm'
    name = '_'.join(['TSM', args.dataset, args.modality, arch, args.consensus_type,
                     'segment%d' % args.num_segments, 'e{}'.format(args.epochs)])
    if args.pretrain != 'imagenet':
        name += '_{}'.format(args.pretrain)
    if args.lr_type != 'step':
        name += '_{}'.format(args.lr_type)
    if args.dense_sample:
        name += '_dense'
    if args.non_local:
        name += '_nl'
    if args.suffix is not None:
        name += '_{}'.format(args.suffix)
    return name


_EXTS = ('.pth.tar', '.pth', '.tar', '.pt')


def parse_weight_name(filename):
    """TSN keyword arguments (plus ``dataset``) read off an official weight file name.

    Only the file name is parsed, never its folder.  Pattern:
    ``TSM_{dataset}_{modality}_{arch}[_shift{div}_{place}][_tpool][_lsm]_{consensus}_segment{T}_e{E}
    [_{pretrain}][_{lr_type}][_dense][_nl][_{suffix}].pth``.
    Returns keys ``dataset, modality, base_model, num_segments, consensus_type, is_shift, shift_div,
    shift_place, temporal_pool, non_local, lsm``.
    """
    base = os.path.basename(filename)
    stem = base
    for ext in _EXTS:
        if stem.endswith(ext):
            stem = stem[:-len(ext)]
            break
    expected = 'TSM_{dataset}_{modality}_{arch}[_shift{div}_{place}]_{consensus}_segment{T}_e{E}[_dense][_nl].pth'
    if 'TSM_' not in stem:
        raise LSNetError('cannot read the model configuration from file name {!r}: expected {} '
                         '(or a checkpoint saved by main.py, which stores its config)'.format(base, expected))
    tokens = stem.split('TSM_', 1)[1].split('_')
    seg_idx = next((i for i, t in enumerate(tokens) if re.fullmatch(r'segment\d+', t)), None)
    if len(tokens) < 5 or seg_idx is None or seg_idx < 4:
        raise LSNetError('cannot read the model configuration from file name {!r}: expected {}'
                         .format(base, expected))
    dataset, modality_tok, arch = tokens[0], tokens[1], tokens[2]
    if modality_tok in ('RGB', 'Flow', 'RGBDiff'):
        modality = modality_tok
    else:
        modality = 'RGB' if 'RGB' in modality_tok else 'Flow'
    head = tokens[3:seg_idx - 1]      # between arch and consensus: shift / tpool / lsm tokens
    tail = tokens[seg_idx + 1:]       # after segment{T}: e{E}, pretrain, lr type, dense, nl, suffix
    is_shift, shift_div, shift_place = False, 8, 'blockres'
    for i, t in enumerate(head):
        m = re.fullmatch(r'shift(\d+)', t)
        if m:
            is_shift, shift_div = True, int(m.group(1))
            if i + 1 < len(head):
                shift_place = head[i + 1]
            break
    if 'shift' in stem and (not is_shift or shift_div < 2):
        raise LSNetError('cannot read the shift from file name {!r}: expected a token shift<div> with div >= 2 '
                         'followed by the place, as in {}'.format(base, expected))
    return {
        'dataset': dataset,
        'modality': modality,
        'base_model': arch,
        'num_segments': int(tokens[seg_idx][len('segment'):]),
        'consensus_type': tokens[seg_idx - 1],
        'is_shift': is_shift,
        'shift_div': shift_div,
        'shift_place': shift_place,
        'temporal_pool': 'tpool' in head,
        'non_local': 'nl' in tail,
        'lsm': 'lsm' in head,
    }


# ---------------------------------------------------------------- devices and seeds

def select_device(device='auto', gpus=None, local_rank=None):
    """torch.device from ``--device`` / ``--gpus`` (and torchrun's LOCAL_RANK when distributed)."""
    has_cuda = torch.cuda.is_available()
    if device == 'cuda' and not has_cuda:
        raise LSNetError('--device cuda: no CUDA device is available on this machine (use --device cpu)')
    if device == 'cpu' or (device == 'auto' and not has_cuda):
        return torch.device('cpu')
    if local_rank is not None:
        index = local_rank
    elif gpus:
        index = gpus[0]
    else:
        index = 0
    if index >= torch.cuda.device_count():
        raise LSNetError('--gpus {}: only {} CUDA device(s) present'.format(index, torch.cuda.device_count()))
    return torch.device('cuda', index)


def to_channels_last(model):
    """Put every 4-D parameter and buffer of ``model`` in channels_last layout, in place.

    ``model.to(memory_format=torch.channels_last)`` refuses a model holding 5-D weights (the
    Conv3d of the non-local blocks); those, and every other non-4-D tensor, keep their layout.
    Parameters stay the same objects, so an optimizer built before the call still holds them.
    """
    for module in model.modules():
        for tensors in (module._parameters, module._buffers):
            for t in tensors.values():
                if t is not None and t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def seed_everything(seed):
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def draw_seed():
    """A fresh seed, for runs started without ``--seed`` (it is saved so a resume continues)."""
    return int.from_bytes(os.urandom(4), 'little') & 0x7FFFFFFF


# ---------------------------------------------------------------- console logging of the entry points

class ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at emit time (survives stream swaps, e.g. under pytest)."""

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)


def run_entry_point(run, args, cleanup=None):
    """``run(args)`` with console logging; a user error (:class:`LSNetError`) writes one
    ``error: <message>`` line to stderr and returns 2. ``cleanup()`` runs in every case."""
    undo_logging = install_console_logging()
    try:
        return run(args)
    except LSNetError as e:
        sys.stderr.write('error: {}\n'.format(user_message(e)))
        return 2
    finally:
        undo_logging()
        if cleanup is not None:
            cleanup()


def install_console_logging(level=logging.INFO):
    """Attach a message-only stdout handler to the root logger; returns a callable that undoes it."""
    root = logging.getLogger()
    handler = ConsoleHandler(sys.stdout)
    handler.setFormatter(logging.Formatter('%(message)s'))
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)

    def undo():
        root.removeHandler(handler)
        root.setLevel(previous)
    return undo
