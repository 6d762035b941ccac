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

from ops.errors import LSNetError, make_folder
from opts import build_train_parser

log = logging.getLogger('main')

INTERRUPTED_EXIT = 130


# ---------------------------------------------------------------- helpers

def check_flags(args):
    """Reject training flags the loops cannot honour (model flags are checked by ModelConfig)."""
    for flag, value, low in (('--epochs', args.epochs, 1), ('--batch-size', args.batch_size, 1),
                             ('--eval-freq', args.eval_freq, 1), ('--workers', args.workers, 0)):
        if value < low:
            raise LSNetError('{} must be at least {} (got {})'.format(flag, low, value))
    for flag, value in (('--momentum', args.momentum), ('--wd', args.weight_decay), ('--warmup', args.warmup)):
        if value < 0:
            raise LSNetError('{} must be >= 0 (got {})'.format(flag, value))
    if args.lr <= 0:
        raise LSNetError('--lr must be positive (got {})'.format(args.lr))
    if args.clip_gradient is not None and args.clip_gradient <= 0:
        raise LSNetError('--gd must be positive (got {})'.format(args.clip_gradient))
    if args.start_epoch < 0 or args.start_epoch > args.epochs:
        raise LSNetError('--start-epoch must lie in [0, --epochs] (got {})'.format(args.start_epoch))
    if args.lsm_start and not args.lsm:
        raise LSNetError('--lsm_start needs --lsm')
    if not 0 <= args.lsm_start < args.epochs:
        raise LSNetError('--lsm_start must lie in [0, --epochs) (got {})'.format(args.lsm_start))
    if not 0 <= args.prefix_loss <= 1:
        raise LSNetError('--prefix_loss must lie in [0, 1] (got {})'.format(args.prefix_loss))


def check_prefix_loss(cfg):
    """``--prefix_loss`` scores each prefix of a clip on its own: only sound when no segment reads a later one."""
    if cfg.consensus_type != 'avg':
        raise LSNetError('--prefix_loss needs --consensus_type avg (got {})'.format(cfg.consensus_type))
    for flag, on in (('--non_local', cfg.non_local), ('--temporal_pool', cfg.temporal_pool),
                     ('--shift without --shift_direction uni', cfg.shift and not cfg.causal)):
        if on:
            raise LSNetError('--prefix_loss with {}: early segments would read later ones; it trains online '
                             'models (--shift --shift_direction uni, or TSN)'.format(flag))


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


def same_dataset(ckpt, path, dataset):
    """Was the ``--tune_from`` checkpoint trained on ``dataset``? Ours say so; official names carry it."""
    stored = ckpt.get('dataset') if isinstance(ckpt, dict) else None
    if stored:
        return stored == dataset
    return dataset in os.path.basename(path)


def build_loaders(args, dcfg, model, seed, world):
    """(train loader, val loader): uint8 clips, sharded over the processes, seeded per epoch."""
    from ops.dataset import TSNDataSet
    from ops.dataset_config import check_labels
    from ops.engine import EpochSeededDataset, ShardSampler
    from ops.transforms import build_transform
    common = dict(modality=args.modality, new_length=model.new_length, crop_size=model.crop_size,
                  scale_size=model.scale_size, mean=model.input_mean, std=model.input_std,
                  normalize=False)  # uint8 batches, normalised on the device (engine.prepare_clips)
    train_tf = build_transform('train', augmentation=model.get_augmentation(flip=dcfg.flip), **common)
    val_tf = build_transform('val', **common)
    data = dict(num_segments=args.num_segments, new_length=model.new_length, modality=args.modality,
                image_tmpl=dcfg.image_tmpl, dense_sample=args.dense_sample)
    train_set = TSNDataSet(dcfg.root_path, dcfg.train_list, transform=train_tf, label_swap=dcfg.label_swap,
                           skip_bad=args.skip_bad_videos, **data)
    val_set = TSNDataSet(dcfg.root_path, dcfg.val_list, transform=val_tf, random_shift=False, **data)
    check_labels(train_set.video_list, dcfg.num_class, dcfg.train_list)
    check_labels(val_set.video_list, dcfg.num_class, dcfg.val_list)
    if args.batch_size % world.size:
        raise LSNetError('--batch-size {} is not divisible by the {} processes'.format(args.batch_size, world.size))
    if len(train_set) < args.batch_size:
        raise LSNetError('--batch-size {} is larger than the training list {} ({} videos)'
                         .format(args.batch_size, dcfg.train_list, len(train_set)))
    per_proc = args.batch_size // world.size
    train_sampler = DistributedSampler(EpochSeededDataset(train_set, seed), num_replicas=world.size,
                                       rank=world.rank, shuffle=True, seed=seed, drop_last=False)
    val_sampler = ShardSampler(len(val_set), world.size, world.rank)
    pin = torch.cuda.is_available()
    # more workers than batches only costs start-up time; workers persist between epochs and evaluations.
    # Each loader draws its workers' base seed from its own generator, not the global one: dropout then
    # does not depend on whether an epoch starts new workers (-j 0, a resume) or reuses them.
    train_workers = min(args.workers, len(train_sampler) // per_proc)
    val_workers = min(args.workers, -(-len(val_sampler) // per_proc))
    train_loader = DataLoader(train_sampler.dataset, batch_size=per_proc, sampler=train_sampler,
                              num_workers=train_workers, persistent_workers=train_workers > 0,
                              generator=torch.Generator(), pin_memory=pin, drop_last=True)
    val_loader = DataLoader(EpochSeededDataset(val_set, seed), batch_size=per_proc, sampler=val_sampler,
                            num_workers=val_workers, persistent_workers=val_workers > 0,
                            generator=torch.Generator(), pin_memory=pin)
    return train_loader, val_loader


# ---------------------------------------------------------------- the run, step by step

def choose_seed(args, resume_ckpt, world):
    """--seed, else the resumed run's seed, else a fresh one (the same on every process)."""
    from ops.utils import draw_seed
    if args.seed is not None:
        return args.seed
    if resume_ckpt is not None and resume_ckpt.get('seed') is not None:
        return int(resume_ckpt['seed'])
    seed = draw_seed()
    if world.distributed:
        t = torch.tensor([seed], dtype=torch.int64)
        dist.broadcast(t, src=0)
        seed = int(t.item())
    return seed


def prepare_dataset(args, world):
    """Resolve the dataset's paths; the embedded synthetic set is rendered first if absent (rank 0
    renders while the other processes wait)."""
    from ops.dataset_config import get_dataset_config, synthetic_root
    if args.dataset == 'synthetic':
        from ops.synthetic import ensure_synthetic
        if world.is_main:
            ensure_synthetic(synthetic_root(args.root_path or None))
        world.barrier()
    return get_dataset_config(args.dataset, args.modality, root_path=args.root_path or None,
                              train_list=args.train_list or None, val_list=args.val_list or None,
                              category_file=args.category_file, image_tmpl=args.image_tmpl, no_flip=args.no_flip)


def check_resume_config(resume_ckpt, cfg, path):
    """Name every architecture field in which the checkpoint differs from the flags."""
    from ops.config import ModelConfig
    stored = resume_ckpt.get('config')
    if not isinstance(stored, dict):
        return
    diffs = ModelConfig.from_dict(stored, source=path).differences(cfg)
    if diffs:
        raise LSNetError('--resume {}: the checkpoint was trained with another model: {}'.format(
            path, '; '.join('{} is {!r} in the checkpoint, {!r} from the flags'.format(*d) for d in diffs)))


def classifier_lr5(flag, pretrained, tuned_from_same_dataset):
    """``(fc_lr5, reason)``: does the new classifier train at 5x the lr (bias 10x)?

    The reference's rule (``on``): yes, unless fine-tuning from a checkpoint of the same dataset. It is
    meant for a new head on a pretrained backbone; from scratch a fresh backbone's features are large
    and share a common component, and 5x puts SGD with momentum at its stability limit, so ``auto``
    keeps the rule only when the backbone starts pretrained.
    """
    if flag == 'off':
        return False, '--fc_lr5 off'
    if tuned_from_same_dataset:
        return False, 'fine-tuning from the same dataset'
    if flag == 'on':
        return True, '--fc_lr5 on'
    if pretrained:
        return True, '--fc_lr5 auto, pretrained backbone'
    return False, '--fc_lr5 auto, backbone from scratch'


def build_and_load(args, cfg, resume_ckpt, resume_path):
    """The model with its starting weights (--tune_from, --resume); returns (model, fc_lr5)."""
    from ops.checkpoint import load_checkpoint, load_weights
    from ops.models import build_model
    model = build_model(cfg)
    same = False
    if args.tune_from:
        tune_ckpt = load_checkpoint(args.tune_from)
        same = same_dataset(tune_ckpt, args.tune_from, args.dataset)
        report = load_weights(model, tune_ckpt, finetune=True, source=args.tune_from, drop_classifier=not same)
        log.info('=> fine-tuning from %s: %s', args.tune_from, report.summary())
        for what, keys in (('dropped (another dataset or shape)', report.dropped),
                           ('not in checkpoint (kept as initialised)', report.missing),
                           ('unused checkpoint keys', report.unexpected)):
            if keys:
                log.info('=> %s: %s', what, ', '.join(keys))
    fc_lr5, reason = classifier_lr5(args.fc_lr5, cfg.pretrain != 'none' or bool(args.tune_from), same)
    if resume_ckpt is not None:
        check_resume_config(resume_ckpt, cfg, resume_path)
        load_weights(model, resume_ckpt, finetune=False, source=resume_path)
        # older checkpoints did not store it: their runs followed the reference's rule
        stored = bool(resume_ckpt.get('fc_lr5', not same))
        if stored != fc_lr5:
            fc_lr5, reason = stored, 'kept from the resumed run'
    log.info('=> classifier learning rate: %s (%s)', 'x5 weight / x10 bias' if fc_lr5 else 'base rate', reason)
    return model, fc_lr5


def make_optimizer(args, model, fc_lr5):
    """SGD over the reference's parameter groups, the lr schedule and (CUDA --amp) the grad scaler."""
    from ops.engine import LRSchedule
    model.partialBN(not args.no_partialbn)
    policies = model.get_optim_policies(fc_lr5=fc_lr5)
    for group in policies:
        log.info('group: %s has %d params, lr_mult: %s, decay_mult: %s',
                 group['name'], len(group['params']), group['lr_mult'], group['decay_mult'])
    optimizer = torch.optim.SGD(policies, args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    schedule = LRSchedule(args.lr, args.weight_decay, args.lr_type, args.lr_steps, args.epochs, args.warmup)
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler('cuda') if (args.amp and device.type == 'cuda') else None
    return optimizer, schedule, scaler


def restore_training_state(args, resume_ckpt, resume_path, optimizer, schedule, scaler):
    """(start epoch, best top-1) of a resumed run, with its optimizer, schedule and scaler state."""
    if resume_ckpt is None:
        return args.start_epoch, 0.0
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
    start_epoch, best = int(resume_ckpt.get('epoch', 0)), float(resume_ckpt.get('best_prec1', 0.0))
    log.info("=> resumed from '%s' (epoch %d, best Prec@1 %.3f)", resume_path, start_epoch, best)
    return start_epoch, best


def parallelize(model, args, world, device):
    """The module the loops call: DDP under torchrun, DataParallel for several --gpus in one process,
    else the model itself; with --compile, ``torch.compile(model)`` in its place (compiled first, then
    wrapped: PyTorch's order for DDP, whose forward lets Dynamo's DDPOptimizer split the graph at the
    gradient buckets). ``model`` stays the eager module: weights are saved and loaded through it."""
    data_parallel = bool(not world.distributed and device.type == 'cuda' and args.gpus and len(args.gpus) > 1)
    net = model
    if args.compile:
        from ops.compile import compile_model
        if data_parallel:
            raise LSNetError('--compile: not supported with several --gpus in one process (DataParallel); '
                             'run one process per GPU with torchrun instead')
        net = compile_model(model, args.compile_mode, device)
    if world.distributed:
        # with --lsm_start the branches' parameters take no part in the first epochs' forward passes
        return torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == 'cuda' else None,
            find_unused_parameters=args.lsm_start > 0)
    if data_parallel:
        return torch.nn.DataParallel(net, device_ids=args.gpus)
    return net


def run(args):
    from ops.checkpoint import load_checkpoint
    from ops.config import ModelConfig, store_name
    from ops.engine import init_distributed, validate
    from ops.utils import seed_everything, select_device, to_channels_last

    check_flags(args)
    world, local_rank = init_distributed(args.device)
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    device = select_device(args.device, args.gpus, local_rank if world.size > 1 else None)
    if args.compile:  # a missing compiler is one line now, not a traceback at the first step
        from ops.compile import check_compile_support
        check_compile_support(device, args.compile_mode)
    resume_path = resolve_resume(args.resume) if args.resume else None
    resume_ckpt = load_checkpoint(resume_path) if resume_path else None
    seed = choose_seed(args, resume_ckpt, world)
    seed_everything(seed)

    dcfg = prepare_dataset(args, world)
    cfg = ModelConfig.from_args(args, dcfg.num_class)
    if args.prefix_loss:
        check_prefix_loss(cfg)
    run_name = store_name(cfg, args.dataset, args.epochs, args.lr_type, args.dense_sample, args.suffix)
    log.info('storing name: %s', run_name)
    model, fc_lr5 = build_and_load(args, cfg, resume_ckpt, resume_path)
    model.to(device)
    if args.channels_last:
        to_channels_last(model)
    optimizer, schedule, scaler = make_optimizer(args, model, fc_lr5)
    start_epoch, best_prec1 = restore_training_state(args, resume_ckpt, resume_path, optimizer, schedule, scaler)
    net = parallelize(model, args, world, device)
    train_loader, val_loader = build_loaders(args, dcfg, model, seed, world)
    criterion = torch.nn.CrossEntropyLoss().to(device)
    loop_kw = dict(device=device, world=world, amp=args.amp, channels_last=args.channels_last,
                   norm=(model.input_mean, model.input_std))
    if args.evaluate:
        res = validate(net, val_loader, criterion, **loop_kw)
        log.info('Testing Results: Prec@1 %.3f Prec@5 %.3f Loss %.5f (%d videos)',
                 res['top1'], res['top5'], res['loss'], res['count'])
        return 0
    training = TrainingRun(args, world, model, net, optimizer, schedule, scaler, criterion, loop_kw,
                      run_name=run_name, seed=seed, fc_lr5=fc_lr5, categories=list(dcfg.categories))
    return training.fit(train_loader, val_loader, start_epoch, best_prec1, resumed=resume_ckpt is not None)


def frames_per_segment(dataset, num_segments):
    """Mean frames per segment of the training videos (stored for online recognition's default
    --stride), or None when the list does not give frame counts."""
    while not hasattr(dataset, 'video_list') and hasattr(dataset, 'dataset'):
        dataset = dataset.dataset
    counts = [rec.num_frames for rec in getattr(dataset, 'video_list', []) if rec.num_frames > 0]
    return round(sum(counts) / len(counts) / num_segments, 3) if counts else None


class TrainingRun:
    """The epoch loop of one run: train, validate every --eval-freq epochs, log, save checkpoints."""

    def __init__(self, args, world, model, net, optimizer, schedule, scaler, criterion, loop_kw, *,
                 run_name, seed, fc_lr5, categories):
        from ops.compile import unwrap
        # model: the eager TSN (saved, checked, --lsm_start); net: what the loops call (compiled, DDP)
        self.args, self.world, self.model, self.net = args, world, unwrap(model), net
        self.optimizer, self.schedule, self.scaler, self.criterion = optimizer, schedule, scaler, criterion
        self.loop_kw, self.run_name, self.seed, self.fc_lr5 = loop_kw, run_name, seed, fc_lr5
        self.categories = categories
        self.model_dir = os.path.join(args.root_model, run_name)
        self.ckpt_path = os.path.join(self.model_dir, 'ckpt.pth.tar')

    def fit(self, train_loader, val_loader, start_epoch, best_prec1, resumed):
        """Epochs ``start_epoch .. --epochs - 1``; returns the exit status (130 when interrupted)."""
        from ops.logger import RunLogger
        args, world = self.args, self.world
        self.frames_per_segment = frames_per_segment(train_loader.dataset, args.num_segments)
        log_dir = os.path.join(args.root_log, self.run_name)
        if world.is_main:
            for path, flag, value in ((self.model_dir, '--root_model', args.root_model),
                                      (log_dir, '--root_log', args.root_log)):
                make_folder(path, '{} {}: cannot create folder {}'.format(flag, value, path))
        logger = RunLogger(log_dir, enabled=world.is_main, append=resumed)
        logger.save_args(dict(vars(args), store_name=self.run_name, seed=self.seed, world_size=world.size,
                              device=str(self.loop_kw['device'])))
        log.info('seed %d, device %s, %d process(es), %d train / %d val videos, %d steps per epoch', self.seed,
                 self.loop_kw['device'], world.size, len(train_loader.dataset), len(val_loader.dataset),
                 len(train_loader))
        stop = StopRequest()
        stop.install()
        try:
            for epoch in range(start_epoch, args.epochs):
                status, best_prec1 = self.epoch(epoch, train_loader, val_loader, best_prec1, logger, stop)
                if status is not None:
                    return status
            log.info('done: best Prec@1 %.3f; checkpoints in %s', best_prec1, self.model_dir)
        finally:
            stop.uninstall()
            logger.close()
        return 0

    def epoch(self, epoch, train_loader, val_loader, best_prec1, logger, stop):
        """One epoch; returns (exit status or None to go on, best top-1 so far)."""
        from ops.engine import derive_seed, parameters_finite, train_one_epoch, validate
        args, t_epoch = self.args, time.time()
        torch.manual_seed(derive_seed(self.seed, epoch, self.world.rank, 1))  # dropout etc.: same on a resume
        train_loader.sampler.set_epoch(epoch)
        train_loader.dataset.set_epoch(epoch)
        with lsm_phase(self.model, epoch, args.lsm_start):
            tr = train_one_epoch(self.net, train_loader, self.criterion, self.optimizer, self.schedule, epoch,
                                 scaler=self.scaler, clip_gradient=args.clip_gradient, print_freq=args.print_freq,
                                 should_stop=stop, on_step=lambda step, vals: logger.scalars(vals, step),
                                 prefix_loss=args.prefix_loss, **self.loop_kw)
        if tr['interrupted']:
            log.warning('interrupted during epoch %d; last complete checkpoint: %s', epoch,
                        self.ckpt_path if os.path.exists(self.ckpt_path) else 'none')
            return INTERRUPTED_EXIT, best_prec1
        lr = args.lr * self.schedule.last_factor
        row = {'epoch': epoch, 'lr': '{:.6g}'.format(lr), 'train_loss': '{:.5f}'.format(tr['loss']),
               'train_top1': '{:.3f}'.format(tr['top1']), 'train_top5': '{:.3f}'.format(tr['top5']),
               'clips_per_s': '{:.2f}'.format(tr['clips_per_s'])}
        logger.scalars({'loss/train': tr['loss'], 'acc/train_top1': tr['top1'], 'acc/train_top5': tr['top5'],
                        'lr/epoch': lr}, epoch)
        is_best = False
        if (epoch + 1) % args.eval_freq == 0 or epoch == args.epochs - 1:
            val_loader.dataset.set_epoch(0)
            va = validate(self.net, val_loader, self.criterion, **self.loop_kw)
            is_best, best_prec1 = va['top1'] > best_prec1, max(va['top1'], best_prec1)
            log.info('Testing Results: Prec@1 %.3f Prec@5 %.3f Loss %.5f\nBest Prec@1: %.3f',
                     va['top1'], va['top5'], va['loss'], best_prec1)
            logger.scalars({'loss/test': va['loss'], 'acc/test_top1': va['top1'], 'acc/test_top5': va['top5'],
                            'acc/test_top1_best': best_prec1}, epoch)
            row.update(val_loss='{:.5f}'.format(va['loss']), val_top1='{:.3f}'.format(va['top1']),
                       val_top5='{:.3f}'.format(va['top5']))
        if not parameters_finite(self.model):
            raise LSNetError('weights became non-finite during epoch {}; no checkpoint written '
                             '(lower --lr or set --gd)'.format(epoch))
        self.save(epoch + 1, best_prec1, is_best)
        row.update(best_top1='{:.3f}'.format(best_prec1), seconds='{:.1f}'.format(time.time() - t_epoch))
        logger.epoch_row(row)
        logger.flush()
        if stop.requested:
            log.warning('interrupted after epoch %d; checkpoint saved: %s', epoch, self.ckpt_path)
            return INTERRUPTED_EXIT, best_prec1
        return None, best_prec1

    def save(self, epoch, best_prec1, is_best):
        """Write ckpt.pth.tar (and ckpt.best.pth.tar) atomically on the main process; all processes wait."""
        from ops.checkpoint import make_checkpoint, save_checkpoint
        if self.world.is_main:  # the eager module's keys: no '_orig_mod.' of --compile
            state = make_checkpoint(self.model, self.optimizer, epoch=epoch, best_prec1=best_prec1,
                                    scheduler=self.schedule.state_dict(),
                                    scaler=self.scaler.state_dict() if self.scaler is not None else None,
                                    seed=self.seed, fc_lr5=self.fc_lr5, categories=self.categories,
                                    dataset=self.args.dataset, store_name=self.run_name,
                                    frames_per_segment=self.frames_per_segment,
                                    args=json.loads(json.dumps(vars(self.args), default=str)))
            save_checkpoint(state, self.ckpt_path)
            if is_best:
                atomic_copy(self.ckpt_path, os.path.join(self.model_dir, 'ckpt.best.pth.tar'))
        self.world.barrier()


def main(argv=None):
    """Entry point; returns 0 on success, 2 on a user error (message on stderr), 130 if interrupted."""
    from ops.engine import leave_distributed
    from ops.utils import run_entry_point
    return run_entry_point(run, build_train_parser().parse_args(argv), cleanup=leave_distributed)


if __name__ == '__main__':
    sys.exit(main())
