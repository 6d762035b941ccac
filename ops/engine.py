"""Training and validation loops, learning-rate schedule, and reproducible data order.

The loops take everything explicitly (model, loader, optimizer, device, world); they know nothing
about argparse.  Distributed runs reduce per-step statistics across processes, so every process
agrees on the logged numbers, on a non-finite loss, and on an interrupt request.
"""
import contextlib
import logging
import math
import os
import random
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from ops.errors import LSNetError
from ops.metrics import EpochMeter, topk_correct

log = logging.getLogger(__name__)


class NonFiniteLoss(LSNetError):
    """The training loss became NaN or infinite; the run stops without saving."""


# ---------------------------------------------------------------- learning rate

class LRSchedule:
    """Step or cosine decay per epoch (reference semantics), with an optional linear warm-up.

    Each optimizer group gets ``lr = base * factor * lr_mult`` and ``weight_decay = wd * decay_mult``.
    The warm-up ramps the factor linearly per step over the first ``warmup`` epochs.
    """

    def __init__(self, base_lr, weight_decay, lr_type='step', lr_steps=(), epochs=1, warmup=0.0):
        if lr_type not in ('step', 'cos'):
            raise LSNetError('--lr_type {!r}: expected step or cos'.format(lr_type))
        self.base_lr = float(base_lr)
        self.weight_decay = float(weight_decay)
        self.lr_type = lr_type
        self.lr_steps = [float(s) for s in lr_steps]
        if any(s < 0 for s in self.lr_steps):
            raise LSNetError('--lr_steps {}: epochs at which the rate drops cannot be negative'.format(
                ' '.join('{:g}'.format(s) for s in self.lr_steps)))
        self.epochs = int(epochs)
        self.warmup = float(warmup)
        self.last_epoch = 0
        self.last_step = 0
        self.last_factor = 1.0

    def factor(self, epoch, step=0, steps_per_epoch=1):
        if self.lr_type == 'step':
            f = 0.1 ** sum(epoch >= s for s in self.lr_steps)
        else:
            f = 0.5 * (1 + math.cos(math.pi * epoch / max(self.epochs, 1)))
        if self.warmup > 0:
            progress = epoch + (step + 1) / max(steps_per_epoch, 1)
            if progress < self.warmup:
                f *= progress / self.warmup
        return f

    def apply(self, optimizer, epoch, step=0, steps_per_epoch=1):
        """Set every group's lr / weight decay for this step; returns the base lr in force."""
        f = self.factor(epoch, step, steps_per_epoch)
        for g in optimizer.param_groups:
            g['lr'] = self.base_lr * f * g.get('lr_mult', 1)
            g['weight_decay'] = self.weight_decay * g.get('decay_mult', 1)
        self.last_epoch, self.last_step, self.last_factor = epoch, step, f
        return self.base_lr * f

    def state_dict(self):
        return {'base_lr': self.base_lr, 'weight_decay': self.weight_decay, 'lr_type': self.lr_type,
                'lr_steps': list(self.lr_steps), 'epochs': self.epochs, 'warmup': self.warmup,
                'last_epoch': self.last_epoch, 'last_step': self.last_step,
                'last_factor': self.last_factor}

    def load_state_dict(self, state):
        """Restore the position only; the schedule's shape comes from the command line."""
        self.last_epoch = int(state.get('last_epoch', 0))
        self.last_step = int(state.get('last_step', 0))
        self.last_factor = float(state.get('last_factor', 1.0))


# ---------------------------------------------------------------- reproducible data order

def derive_seed(*parts):
    """A 31-bit seed mixing integers (run seed, epoch, index, rank, ...)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0]) & 0x7FFFFFFF


class EpochSeededDataset(Dataset):
    """Wraps a dataset so item ``i`` of epoch ``e`` is drawn with its own seed (run seed, e, i).

    Random crops, flips and segment offsets then do not depend on the number of loader workers
    or processes, so a resumed or distributed run sees exactly the clips a single run would.
    The global generators are restored after each item.  The epoch lives in shared memory, so
    persistent loader workers (which keep their copy of the dataset) see :meth:`set_epoch` too.
    """

    def __init__(self, dataset, seed):
        self.dataset = dataset
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self):
        return int(self._epoch)

    def set_epoch(self, epoch):
        self._epoch.fill_(int(epoch))

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):
        if name in ('dataset', '_epoch'):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index):
        s = derive_seed(self.seed, self.epoch, index)
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        try:
            return self.dataset[index]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` in order, without padding (exact distributed validation)."""

    def __init__(self, length, world_size=1, rank=0):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


# ---------------------------------------------------------------- loops

class World:
    """Process-group facts the loops need (a single process is ``World()``)."""

    def __init__(self, rank=0, size=1):
        self.rank = rank
        self.size = size

    @property
    def distributed(self):
        return self.size > 1 and dist.is_available() and dist.is_initialized()

    @property
    def is_main(self):
        return self.rank == 0

    def all_sum(self, t):
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self):
        if self.distributed:
            dist.barrier()


def init_distributed(device='auto'):
    """Join the torchrun process group when RANK / WORLD_SIZE are set; returns (World, local rank or None).

    ``device`` is the ``--device`` flag: nccl when it resolves to CUDA, else gloo (CPU processes).
    """
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return World(), None
    rank, size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ.get('LOCAL_RANK', rank))
    use_cuda = device == 'cuda' or (device == 'auto' and torch.cuda.is_available())
    if size > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend='nccl' if use_cuda else 'gloo')
    return World(rank, size), local_rank


def leave_distributed():
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def autocast_context(device, amp):
    """bf16 autocast on CPU, fp16 on CUDA, nothing when ``amp`` is off."""
    if not amp:
        return contextlib.nullcontext()
    if device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.float16)
    return torch.autocast('cpu', dtype=torch.bfloat16)


class Progress:
    """tqdm over a loader (on a terminal, main process only) plus the reference's periodic log line."""

    def __init__(self, loader, desc, world, print_freq=0):
        from tqdm import tqdm
        quiet = not (world.is_main and sys.stderr.isatty())
        self.bar = tqdm(loader, desc=desc, disable=quiet, leave=False, dynamic_ncols=True)
        self.desc, self.world, self.print_freq, self.steps = desc, world, print_freq, len(loader)

    def __iter__(self):
        return iter(self.bar)

    def report(self, step, lr, meter, step_loss):
        if not self.world.is_main:
            return
        self.bar.set_postfix(loss='{:.4f}'.format(meter.loss), top1='{:.1f}'.format(meter.top1),
                             clips_s='{:.1f}'.format(meter.clips_per_s), lr='{:.2g}'.format(lr))
        if self.print_freq and step % self.print_freq == 0:
            log.info('%s[%d/%d], lr: %.5f\tLoss %.4f (%.4f)\tPrec@1 %.3f\tPrec@5 %.3f\t%.1f clips/s',
                     self.desc, step, self.steps, lr, step_loss, meter.loss, meter.top1, meter.top5,
                     meter.clips_per_s)

    def close(self):
        self.bar.close()


def prepare_clips(x, device, channels_last=False, norm=None):
    """Move a batch of clips to ``device``; uint8 clips are normalised there with ``norm = (mean, std)``.

    Loaders hand over uint8 clips (4x fewer bytes through worker processes than float32) and the
    division by 255 and mean/std normalisation happen once per batch, on the device.  On the CPU
    the process first calls ``ops.video_io.keep_freed_memory`` so that every batch's float32
    output (38 MB for 8 clips of 8×224²) reuses the previous batch's freed memory instead of
    fresh pages: with DataLoader workers, the main process otherwise paid about 4 ms of page
    faults per clip here, more than decoding the clip.
    """
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        if norm is None:
            raise ValueError('uint8 clips need norm=(mean, std)')
        from ops.transforms import normalize_clip
        if x.device.type == 'cpu':
            from ops.video_io import keep_freed_memory
            keep_freed_memory()
        x = normalize_clip(x, *norm)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def step_statistics(loss, output, target, world, stop=False):
    """``[loss·n, top-1 hits, top-5 hits, n, stop requests, non-finite losses]`` summed over the
    processes in one reduction, so every process agrees on the metrics, an interrupt and a NaN."""
    value = loss.item()
    c1, c5 = topk_correct(output.detach().float(), target, (1, 5))
    n = target.size(0)
    stats = torch.tensor([value * n, c1, c5, n, float(stop), 0.0 if math.isfinite(value) else 1.0],
                         dtype=torch.float64)
    return world.all_sum(stats)


def backward_and_step(loss, model, optimizer, scaler=None, clip_gradient=None):
    """Backward pass (scaled under CUDA fp16), optional gradient-norm clipping, optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_gradient is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_gradient)
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if clip_gradient is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_gradient)
    optimizer.step()


def train_one_epoch(model, loader, criterion, optimizer, schedule, epoch, *, device,
                    world=None, amp=False, scaler=None, clip_gradient=None, channels_last=False,
                    norm=None, print_freq=20, should_stop=None, on_step=None, prefix_loss=False):
    """One pass over ``loader``; returns a dict of loss, top1, top5, clips/s, steps, interrupted.

    ``prefix_loss`` ``W`` (``--prefix_loss``, online models): the loss is ``(1 - W)`` times the
    whole clip's plus ``W`` times the mean over the clip's prefixes (segments ``1..t`` for every
    ``t``, see ``TSN.forward``), so the predictions an online recogniser makes early in a video are
    trained too; the accuracies are those of the whole clip, as without.

    Raises :class:`NonFiniteLoss` (before any weight update from that step) when the loss is not
    finite on any process.  ``should_stop()`` is polled each step and ends the epoch early with
    ``interrupted=True``.  ``on_step(global_step, scalars)`` receives per-step scalars for logging.
    """
    world = world or World()
    model.train()
    meter, progress = EpochMeter(), Progress(loader, 'Epoch: [{}]'.format(epoch), world, print_freq)
    step, interrupted = -1, False
    for step, (clips, target) in enumerate(progress):
        lr = schedule.apply(optimizer, epoch, step, len(loader))
        clips, target = prepare_clips(clips, device, channels_last, norm), target.to(device, non_blocking=True)
        with autocast_context(device, amp):
            output = model(clips, prefixes=True) if prefix_loss else model(clips)
        if prefix_loss:  # (N, T, K): every prefix scored against the clip's label; the last is the clip
            loss = criterion(output.float().flatten(0, 1), target.repeat_interleave(output.shape[1]))
            output = output[:, -1]
            if prefix_loss < 1:
                loss = prefix_loss * loss + (1 - prefix_loss) * criterion(output.float(), target)
        else:
            loss = criterion(output.float(), target)
        stats = step_statistics(loss, output, target, world, should_stop is not None and should_stop())
        if stats[5] > 0:
            raise NonFiniteLoss('loss is {} at epoch {} step {}/{} (lr {:.3g}); stopped before the update, no '
                                'checkpoint written from these weights; lower --lr or set --gd'.format(
                                    loss.item() if not math.isfinite(loss.item()) else 'non-finite on another process',
                                    epoch, step, len(loader), lr))
        backward_and_step(loss, model, optimizer, scaler, clip_gradient)
        meter.add(stats[:4])
        step_loss = stats[0].item() / max(stats[3].item(), 1)
        progress.report(step, lr, meter, step_loss)
        if on_step is not None:
            on_step(epoch * len(loader) + step, {'loss/train_step': step_loss, 'lr': lr})
        if stats[4] > 0:
            interrupted = True
            break
    progress.close()
    return dict(meter.result(), steps=step + 1, interrupted=interrupted)


@torch.no_grad()
def validate(model, loader, criterion, *, device, world=None, amp=False, channels_last=False, norm=None):
    """Loss / top-1 / top-5 / count over ``loader`` (summed over processes when distributed)."""
    world = world or World()
    model.eval()
    meter, progress = EpochMeter(), Progress(loader, 'val', world)
    for clips, target in progress:
        clips, target = prepare_clips(clips, device, channels_last, norm), target.to(device, non_blocking=True)
        with autocast_context(device, amp):
            output = model(clips).float()
        meter.add(step_statistics(criterion(output, target), output, target, World())[:4])
    progress.close()
    meter.sums = world.all_sum(meter.sums)
    return dict(meter.result(), count=meter.count)


def parameters_finite(model):
    """True when every parameter and buffer of ``model`` is finite."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            return False
    return True
