"""Train, fine-tune, resume or evaluate a TSN / TSM / LSNet model.

Single process: ``python main.py DATASET MODALITY [flags]``.  Several processes (GPUs or CPU
processes, one or more nodes): ``torchrun --nproc_per_node N main.py ...``; ``--batch-size`` is the
total over all processes.  See ``opts.py`` for the flags.
"""
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ops.errors import LSNetError
from opts import build_train_parser

log = logging.getLogger('main')

INTERRUPTED_EXIT = 130


# ---------------------------------------------------------------- helpers

def check_flags(args):
    """Reject flag combinations the model or loops cannot honour."""
    if args.lsm and not args.shift:
        raise LSNetError('--lsm needs --shift: the long-short module goes into the shifted blocks')
    if args.temporal_pool and args.num_segments % 2:
        raise LSNetError('--temporal_pool needs an even --num_segments (got {})'.format(args.num_segments))
    for flag, value, low in (('--num_segments', args.num_segments, 1), ('--epochs', args.epochs, 1),
                             ('--batch-size', args.batch_size, 1), ('--eval-freq', args.eval_freq, 1),
                             ('--input_size', args.input_size, 16), ('--workers', args.workers, 0)):
        if value < low:
            raise LSNetError('{} must be at least {} (got {})'.format(flag, low, value))
    if args.shift and args.shift_div < 2:
        raise LSNetError('--shift_div must be at least 2 (got {}): 1/shift_div of the channels move each way'
                         .format(args.shift_div))
    if not 0 <= args.dropout < 1:
        raise LSNetError('--dropout must lie in [0, 1) (got {})'.format(args.dropout))
    if args.momentum < 0:
        raise LSNetError('--momentum must be >= 0 (got {})'.format(args.momentum))
    if args.weight_decay < 0:
        raise LSNetError('--wd must be >= 0 (got {})'.format(args.weight_decay))
    if args.lr <= 0:
        raise LSNetError('--lr must be positive (got {})'.format(args.lr))
    if args.warmup < 0:
        raise LSNetError('--warmup must be >= 0 epochs (got {})'.format(args.warmup))
    if args.clip_gradient is not None and args.clip_gradient <= 0:
        raise LSNetError('--gd must be positive (got {})'.format(args.clip_gradient))
    if args.start_epoch < 0 or args.start_epoch > args.epochs:
        raise LSNetError('--start-epoch must lie in [0, --epochs] (got {})'.format(args.start_epoch))
    if args.lsm_start and not args.lsm:
        raise LSNetError('--lsm_start needs --lsm')
    if not 0 <= args.lsm_start < args.epochs:
        raise LSNetError('--lsm_start must lie in [0, --epochs) (got {})'.format(args.lsm_start))


def lsm_phase(model, epoch, lsm_start):
    """Context for one training epoch: before ``--lsm_start`` every long-short branch is off, so the
    network trains as TSM and the branches' parameters get no gradient (SGD leaves them, and their
    momentum, untouched); from that epoch on, nothing changes.  The branches output zero at their
    initialisation, so validation with them on scores the same TSM meanwhile."""
    if epoch >= lsm_start:
        return contextlib.nullcontext()
    from ops.long_short import branches_off, present_branches
    log.info('epoch %d: long-short branches off until epoch %d (--lsm_start)', epoch, lsm_start)
    return branches_off(model, frozenset(present_branches(model)))


def resolve_resume(path):
    """A checkpoint file, or a run folder holding ``ckpt.pth.tar``."""
    if os.path.isdir(path):
        ckpt = os.path.join(path, 'ckpt.pth.tar')
        if not os.path.isfile(ckpt):
            raise LSNetError('--resume {}: folder has no ckpt.pth.tar'.format(path))
        return ckpt
    if not os.path.isfile(path):
        raise LSNetError('--resume {}: no such checkpoint file or run folder'.format(path))
    return path


def init_distributed(args):
    """Join the torchrun process group when RANK / WORLD_SIZE are set; returns (world, local_rank)."""
    from ops.engine import World
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return World(), None
    rank, size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ.get('LOCAL_RANK', rank))
    use_cuda = args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available())
    if size > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend='nccl' if use_cuda else 'gloo')
    return World(rank, size), local_rank


class StopRequest:
    """SIGINT sets a flag polled between steps; a second SIGINT interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __call__(self):
        return self.requested

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning('interrupt received: finishing the current step/write, then stopping '
                    '(press Ctrl-C again to abort at once)')

    def install(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._previous = None

    def uninstall(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def atomic_copy(src, dst):
    tmp = dst + '.tmp{}'.format(os.getpid())
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def unwrap(model):
    return model.module if hasattr(model, 'module') else model


def same_dataset(ckpt, path, dataset):
    """Was the ``--tune_from`` checkpoint trained on ``dataset``? Ours say so; official names carry it."""
    stored = ckpt.get('dataset') if isinstance(ckpt, dict) else None
    if stored:
        return stored == dataset
    return dataset in os.path.basename(path)


def build_model(args, num_class, fc_lr5=True):
    from ops.models import TSN
    return TSN(num_class, args.num_segments, args.modality,
               base_model=args.arch, consensus_type=args.consensus_type, dropout=args.dropout,
               partial_bn=not args.no_partialbn, pretrain=args.pretrain,
               is_shift=args.shift, shift_div=args.shift_div, shift_place=args.shift_place,
               fc_lr5=fc_lr5,
               temporal_pool=args.temporal_pool, non_local=args.non_local,
               input_size=args.input_size, shift_mode=args.shift_mode,
               lsm=args.lsm, lsm_reduction=args.lsm_reduction, lsm_groups=args.lsm_groups,
               lsm_branches=tuple(args.lsm_branches),
               lsm_short_stages=args.lsm_short_stages, lsm_long_stages=args.lsm_long_stages,
               lsm_tap_init=args.lsm_tap_init)


def check_resume_config(ckpt, model, path):
    """Name the first architecture field that differs between the checkpoint and the flags."""
    stored = ckpt.get('config')
    if not isinstance(stored, dict):
        return
    current = model.config()
    for key in ('base_model', 'modality', 'num_class', 'num_segments', 'is_shift', 'shift_div',
                'shift_place', 'temporal_pool', 'non_local', 'lsm', 'lsm_reduction', 'lsm_groups',
                'lsm_branches', 'lsm_short_stages', 'lsm_long_stages', 'lsm_tap_init', 'consensus_type'):
        if key in stored and key in current and stored[key] != current[key]:
            raise LSNetError('--resume {}: checkpoint has {}={!r} but the flags give {!r}'
                             .format(path, key, stored[key], current[key]))


def build_loaders(args, cfg, model, seed, world):
    from ops.dataset import TSNDataSet
    from ops.dataset_config import check_labels
    from ops.engine import EpochSeededDataset, ShardSampler
    from ops.transforms import build_transform
    common = dict(modality=args.modality, new_length=model.new_length, crop_size=model.crop_size,
                  scale_size=model.scale_size, mean=model.input_mean, std=model.input_std,
                  normalize=False)  # uint8 batches, normalised on the device (engine.prepare_clips)
    train_tf = build_transform('train', augmentation=model.get_augmentation(flip=cfg.flip), **common)
    val_tf = build_transform('val', **common)
    train_set = TSNDataSet(cfg.root_path, cfg.train_list, num_segments=args.num_segments,
                           new_length=model.new_length, modality=args.modality, image_tmpl=cfg.image_tmpl,
                           transform=train_tf, dense_sample=args.dense_sample, label_swap=cfg.label_swap,
                           skip_bad=args.skip_bad_videos)
    val_set = TSNDataSet(cfg.root_path, cfg.val_list, num_segments=args.num_segments,
                         new_length=model.new_length, modality=args.modality, image_tmpl=cfg.image_tmpl,
                         transform=val_tf, random_shift=False, dense_sample=args.dense_sample)
    check_labels(train_set.video_list, cfg.num_class, cfg.train_list)
    check_labels(val_set.video_list, cfg.num_class, cfg.val_list)
    if args.batch_size % world.size:
        raise LSNetError('--batch-size {} is not divisible by the {} processes'.format(args.batch_size, world.size))
    per_proc = args.batch_size // world.size
    train_seeded = EpochSeededDataset(train_set, seed)
    val_seeded = EpochSeededDataset(val_set, seed)
    train_sampler = DistributedSampler(train_seeded, num_replicas=world.size, rank=world.rank,
                                       shuffle=True, seed=seed, drop_last=False)
    if len(train_set) < args.batch_size:
        raise LSNetError('--batch-size {} is larger than the training list {} ({} videos)'
                         .format(args.batch_size, cfg.train_list, len(train_set)))
    pin = torch.cuda.is_available()
    val_sampler = ShardSampler(len(val_set), world.size, world.rank)
    # more workers than batches only costs start-up time
    train_workers = min(args.workers, len(train_sampler) // per_proc)
    val_workers = min(args.workers, -(-len(val_sampler) // per_proc))
    train_loader = DataLoader(train_seeded, batch_size=per_proc, sampler=train_sampler,
                              num_workers=train_workers, pin_memory=pin, drop_last=True)
    val_loader = DataLoader(val_seeded, batch_size=per_proc, sampler=val_sampler,
                            num_workers=val_workers, pin_memory=pin)
    return train_loader, val_loader


# ---------------------------------------------------------------- the run

def run(args):
    from ops.checkpoint import load_checkpoint, load_weights, make_checkpoint, save_checkpoint
    from ops.dataset_config import get_dataset_config
    from ops.engine import LRSchedule, parameters_finite, train_one_epoch, validate, derive_seed
    from ops.logger import RunLogger
    from ops.utils import draw_seed, seed_everything, select_device, store_name, to_channels_last

    check_flags(args)
    world, local_rank = init_distributed(args)
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    device = select_device(args.device, args.gpus, local_rank if world.size > 1 else None)

    resume_path = resolve_resume(args.resume) if args.resume else None
    resume_ckpt = load_checkpoint(resume_path) if resume_path else None

    seed = args.seed
    if seed is None and resume_ckpt is not None and resume_ckpt.get('seed') is not None:
        seed = int(resume_ckpt['seed'])
    if seed is None:
        seed = draw_seed()
        if world.distributed:
            t = torch.tensor([seed], dtype=torch.int64)
            dist.broadcast(t, src=0)
            seed = int(t.item())
    seed_everything(seed)

    # rank 0 first: a dataset created on first use (synthetic) must not be built twice at once
    cfg_kwargs = dict(root_path=args.root_path or None, train_list=args.train_list or None,
                      val_list=args.val_list or None, category_file=args.category_file,
                      image_tmpl=args.image_tmpl, no_flip=args.no_flip)
    if not world.is_main:
        world.barrier()
    cfg = get_dataset_config(args.dataset, args.modality, **cfg_kwargs)
    if world.is_main:
        world.barrier()

    args.store_name = store_name(args)
    log_dir = os.path.join(args.root_log, args.store_name)
    model_dir = os.path.join(args.root_model, args.store_name)
    log.info('storing name: %s', args.store_name)

    tune_ckpt = load_checkpoint(args.tune_from) if args.tune_from else None
    # as the reference: the classifier of another dataset is dropped and the new one trains at lr x5/x10
    tune_same = tune_ckpt is not None and same_dataset(tune_ckpt, args.tune_from, args.dataset)
    model = build_model(args, cfg.num_class, fc_lr5=not tune_same)
    if tune_ckpt is not None:
        report = load_weights(model, tune_ckpt, finetune=True, source=args.tune_from,
                              drop_classifier=not tune_same)
        log.info('=> fine-tuning from %s: %s', args.tune_from, report.summary())
        if report.dropped:
            log.info('=> dropped (another dataset or shape): %s', ', '.join(report.dropped))
        if report.missing:
            log.info('=> not in checkpoint (kept as initialised): %s', ', '.join(report.missing))
        if report.unexpected:
            log.info('=> unused checkpoint keys: %s', ', '.join(report.unexpected))
    if resume_ckpt is not None:
        check_resume_config(resume_ckpt, model, resume_path)
        load_weights(model, resume_ckpt, finetune=False, source=resume_path)

    policies = model.get_optim_policies()
    for group in policies:
        log.info('group: %s has %d params, lr_mult: %s, decay_mult: %s',
                 group['name'], len(group['params']), group['lr_mult'], group['decay_mult'])
    model.partialBN(not args.no_partialbn)
    model.to(device)
    if args.channels_last:
        to_channels_last(model)
    optimizer = torch.optim.SGD(policies, args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    schedule = LRSchedule(args.lr, args.weight_decay, args.lr_type, args.lr_steps, args.epochs, args.warmup)
    scaler = torch.amp.GradScaler('cuda') if (args.amp and device.type == 'cuda') else None

    start_epoch, best_prec1 = args.start_epoch, 0.0
    if resume_ckpt is not None:
        try:
            optimizer.load_state_dict(resume_ckpt['optimizer'])
        except (ValueError, KeyError, TypeError) as exc:
            raise LSNetError('--resume {}: its optimizer state does not match these parameter groups ({}); '
                             'resume with the same --npb / --tune_from / --lsm flags as the run that wrote it, '
                             'or fine-tune from it with --tune_from'.format(resume_path, str(exc).splitlines()[0])) from None
        if resume_ckpt.get('scheduler'):
            schedule.load_state_dict(resume_ckpt['scheduler'])
        if scaler is not None and resume_ckpt.get('scaler'):
            scaler.load_state_dict(resume_ckpt['scaler'])
        start_epoch = int(resume_ckpt.get('epoch', 0))
        best_prec1 = float(resume_ckpt.get('best_prec1', 0.0))
        log.info("=> resumed from '%s' (epoch %d, best Prec@1 %.3f)", resume_path, start_epoch, best_prec1)

    net = model
    if world.distributed:
        # with --lsm_start the branches' parameters take no part in the first epochs' forward passes
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None,
            find_unused_parameters=args.lsm_start > 0)
    elif device.type == 'cuda' and args.gpus and len(args.gpus) > 1:
        net = torch.nn.DataParallel(model, device_ids=args.gpus)

    train_loader, val_loader = build_loaders(args, cfg, model, seed, world)
    criterion = torch.nn.CrossEntropyLoss().to(device)
    loop_kw = dict(device=device, world=world, amp=args.amp, channels_last=args.channels_last,
                   norm=(model.input_mean, model.input_std))

    if args.evaluate:
        res = validate(net, val_loader, criterion, **loop_kw)
        log.info('Testing Results: Prec@1 %.3f Prec@5 %.3f Loss %.5f (%d videos)',
                 res['top1'], res['top5'], res['loss'], res['count'])
        return 0

    if world.is_main:
        os.makedirs(model_dir, exist_ok=True)
    logger = RunLogger(log_dir, enabled=world.is_main, append=resume_ckpt is not None)
    logger.save_args(dict(vars(args), seed=seed, world_size=world.size, device=str(device)))
    log.info('seed %d, device %s, %d process(es), %d train / %d val videos, %d steps per epoch',
             seed, device, world.size, len(train_loader.dataset), len(val_loader.dataset), len(train_loader))

    stop = StopRequest()
    stop.install()
    ckpt_path = os.path.join(model_dir, 'ckpt.pth.tar')
    try:
        for epoch in range(start_epoch, args.epochs):
            t_epoch = time.time()
            torch.manual_seed(derive_seed(seed, epoch, world.rank, 1))  # dropout etc.: same on a resume
            train_loader.sampler.set_epoch(epoch)
            train_loader.dataset.set_epoch(epoch)
            with lsm_phase(model, epoch, args.lsm_start):
                tr = train_one_epoch(net, train_loader, criterion, optimizer, schedule, epoch,
                                     scaler=scaler, clip_gradient=args.clip_gradient, print_freq=args.print_freq,
                                     should_stop=stop, on_step=lambda step, vals: logger.scalars(vals, step),
                                     **loop_kw)
            if tr['interrupted']:
                log.warning('interrupted during epoch %d; last complete checkpoint: %s', epoch,
                            ckpt_path if os.path.exists(ckpt_path) else 'none')
                return INTERRUPTED_EXIT
            row = {'epoch': epoch, 'lr': '{:.6g}'.format(args.lr * schedule.last_factor),
                   'train_loss': '{:.5f}'.format(tr['loss']), 'train_top1': '{:.3f}'.format(tr['top1']),
                   'train_top5': '{:.3f}'.format(tr['top5']), 'clips_per_s': '{:.2f}'.format(tr['clips_per_s'])}
            logger.scalars({'loss/train': tr['loss'], 'acc/train_top1': tr['top1'],
                            'acc/train_top5': tr['top5'], 'lr/epoch': args.lr * schedule.last_factor}, epoch)
            is_best = False
            if (epoch + 1) % args.eval_freq == 0 or epoch == args.epochs - 1:
                val_loader.dataset.set_epoch(0)
                va = validate(net, val_loader, criterion, **loop_kw)
                is_best = va['top1'] > best_prec1
                best_prec1 = max(va['top1'], best_prec1)
                log.info('Testing Results: Prec@1 %.3f Prec@5 %.3f Loss %.5f\nBest Prec@1: %.3f',
                         va['top1'], va['top5'], va['loss'], best_prec1)
                logger.scalars({'loss/test': va['loss'], 'acc/test_top1': va['top1'],
                                'acc/test_top5': va['top5'], 'acc/test_top1_best': best_prec1}, epoch)
                row.update(val_loss='{:.5f}'.format(va['loss']), val_top1='{:.3f}'.format(va['top1']),
                           val_top5='{:.3f}'.format(va['top5']))
            if not parameters_finite(model):
                raise LSNetError('weights became non-finite during epoch {}; no checkpoint written '
                                 '(lower --lr or set --gd)'.format(epoch))
            if world.is_main:
                state = make_checkpoint(model, optimizer, epoch=epoch + 1, best_prec1=best_prec1,
                                        scheduler=schedule.state_dict(),
                                        scaler=scaler.state_dict() if scaler is not None else None,
                                        seed=seed, categories=list(cfg.categories), input_size=args.input_size,
                                        dataset=args.dataset, store_name=args.store_name,
                                        args=json.loads(json.dumps(vars(args), default=str)))
                save_checkpoint(state, ckpt_path)
                if is_best:
                    atomic_copy(ckpt_path, os.path.join(model_dir, 'ckpt.best.pth.tar'))
            world.barrier()
            row.update(best_top1='{:.3f}'.format(best_prec1), seconds='{:.1f}'.format(time.time() - t_epoch))
            logger.epoch_row(row)
            logger.flush()
            if stop.requested:
                log.warning('interrupted after epoch %d; checkpoint saved: %s', epoch, ckpt_path)
                return INTERRUPTED_EXIT
        log.info('done: best Prec@1 %.3f; checkpoints in %s', best_prec1, model_dir)
    finally:
        stop.uninstall()
        logger.close()
    return 0


def main(argv=None):
    """Entry point; returns 0 on success, 2 on a user error (message on stderr), 130 if interrupted."""
    from ops.utils import run_entry_point

    def leave_process_group():
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return run_entry_point(run, build_train_parser().parse_args(argv), cleanup=leave_process_group)


if __name__ == '__main__':
    sys.exit(main())
