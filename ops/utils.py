"""Small helpers of the entry points: devices, memory format, seeds, console logging, error exit."""
import logging
import os
import random
import sys

import numpy as np
import torch

from ops.errors import LSNetError, user_message

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- devices and seeds

def select_device(device='auto', gpus=None, local_rank=None):
    """torch.device from ``--device`` / ``--gpus`` (and torchrun's LOCAL_RANK when distributed)."""
    if device not in ('auto', 'cpu', 'cuda'):
        raise LSNetError('--device {}: choose auto, cpu or cuda'.format(device))
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
