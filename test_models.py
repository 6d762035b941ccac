"""Evaluate one checkpoint, or an ensemble of several, on a test list.

A clip's score is the model's output for it (mean of its frame logits for TSN/TSM avg consensus);
a video's score is the plain mean of its clips' raw scores (crops x dense clips x twice clips),
softmaxed afterwards only with ``--softmax``.  An ensemble sums coeff x score over checkpoints and
divides by their number.  The model configuration comes from the checkpoint's stored ``config``
(ours) or from the official file-name pattern.

Under ``torchrun --nproc_per_node N`` each process scores the videos ``rank, rank + N, ...`` of the
list; the scores are gathered back into list order and rank 0 alone prints and writes, exactly
what a single process would.
"""
import csv
import dataclasses
import json
import logging
import os
import sys
import time

import numpy as np
import torch

from ops.errors import LSNetError
from opts import build_test_parser

log = logging.getLogger('test_models')


def split_values(values):
    """Flatten ``['a,b', 'c']`` into ``['a', 'b', 'c']``."""
    out = []
    for v in values or []:
        out.extend(s for s in str(v).split(',') if s != '')
    return out


def per_weight(values, n, flag, cast):
    """One value per weight: a single value is shared; otherwise the counts must match."""
    try:
        vals = [cast(v) for v in split_values(values)]
    except ValueError:
        raise LSNetError('{}: cannot read {!r}'.format(flag, values)) from None
    if not vals:
        return [None] * n
    if len(vals) == 1:
        return vals * n
    if len(vals) != n:
        raise LSNetError('{} gives {} values for {} --weights'.format(flag, len(vals), n))
    return vals


def load_model(path, num_segments, test_list, args, device):
    """Build and load one checkpoint for testing; returns (model, dataset config, segments)."""
    from ops import checkpoint
    from ops.dataset_config import get_dataset_config
    from ops.utils import to_channels_last

    if args.dataset == 'custom' and not test_list:
        raise LSNetError('dataset custom needs --test_list (with --root_path; --category_file names the classes)')
    if args.dataset == 'synthetic':
        from ops.dataset_config import synthetic_root
        from ops.synthetic import ensure_synthetic
        ensure_synthetic(synthetic_root(args.root_path or None))
    overrides = dict(consensus_type=args.crop_fusion_type)
    if num_segments:
        overrides['num_segments'] = num_segments
    if args.input_size is not None:
        overrides['input_size'] = args.input_size
    model, cfg, ckpt = checkpoint.load_model(path, device, **overrides)
    dcfg = get_dataset_config(args.dataset, cfg.modality, root_path=args.root_path or None,
                              train_list=test_list, val_list=test_list, category_file=args.category_file,
                              image_tmpl=args.image_tmpl, num_class=cfg.num_class)
    if cfg.num_class != dcfg.num_class:
        raise LSNetError('{}: checkpoint has {} classes but dataset {} has {}'
                         .format(path, cfg.num_class, args.dataset, dcfg.num_class))
    stored = ckpt.get('categories')
    if dcfg.category_file is None and isinstance(stored, (list, tuple)) and len(stored) == cfg.num_class:
        dcfg = dataclasses.replace(dcfg, categories=[str(c) for c in stored])  # the names it was trained with
    source = 'checkpoint config' if isinstance(ckpt.get('config'), dict) else 'file name'
    log.info('=> %s: %s from %s, %d segments, shift %s', path, cfg.arch, source, cfg.num_segments,
             '{}/{}'.format(cfg.shift_div, cfg.shift_place) if cfg.shift else 'off')
    if args.channels_last:
        to_channels_last(model)
    return model, dcfg, cfg.num_segments


def build_loader(model, dcfg, segments, test_list, args, remove_missing, world):
    """``(loader over this process's shard, names of all videos)``; the shard is ``rank::world size``."""
    from ops.dataset import TSNDataSet
    from ops.dataset_config import check_labels
    from ops.engine import ShardSampler
    from ops.transforms import build_transform
    tf = build_transform('test', modality=model.modality, new_length=model.new_length,
                         crop_size=model.crop_size, scale_size=model.scale_size,
                         mean=model.input_mean, std=model.input_std,
                         test_crops=args.test_crops, full_res=args.full_res,
                         normalize=False)  # uint8 batches, normalised on the device
    dataset = TSNDataSet(dcfg.root_path, dcfg.val_list, num_segments=segments,
                         new_length=model.new_length, modality=model.modality, image_tmpl=dcfg.image_tmpl,
                         transform=tf, random_shift=False, test_mode=True, remove_missing=remove_missing,
                         dense_sample=args.dense_sample, twice_sample=args.twice_sample)
    check_labels(dataset.video_list, dcfg.num_class, dcfg.val_list)
    names = [r.path for r in dataset.video_list]
    if args.max_num > 0 and args.max_num < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(args.max_num))
        names = names[:args.max_num]
    sampler = ShardSampler(len(dataset), world.size, world.rank)
    workers = min(args.workers, -(-len(sampler) // args.batch_size))  # no more workers than batches
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         pin_memory=torch.cuda.is_available())
    return loader, names


def clips_per_video(args):
    return args.test_crops * (10 if args.dense_sample else 1) * (2 if args.twice_sample else 1)


@torch.no_grad()
def video_scores(model, clips, segments, num_clips):
    """(B, K·T, C, h, w) clips of B videos → (B, num_class) mean of the K clip scores."""
    b = clips.size(0)
    x = clips.reshape(b * num_clips, segments, -1, clips.size(-2), clips.size(-1))
    out = model(x).float()
    if out.dim() == 3:  # identity consensus: (B·K, T', C)
        out = out.mean(1)
    return out.reshape(b, num_clips, -1).mean(1)


def load_groups(args, dcfg):
    if args.class_groups:
        try:
            with open(args.class_groups) as f:
                groups = json.load(f)
        except OSError as e:
            raise LSNetError('--class_groups {}: {}'.format(args.class_groups, e.strerror)) from None
        except ValueError as e:
            raise LSNetError('--class_groups {}: not valid JSON ({})'.format(args.class_groups, e)) from None
        if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
            raise LSNetError('--class_groups {}: expected {{"group name": [label, ...]}}'.format(args.class_groups))
        return groups
    return getattr(dcfg, 'class_groups', None)


def print_report(res, weights):
    print('-----Evaluation is finished------')
    print('{:<40} {:>6} {:>8}'.format('class', 'videos', 'acc %'))
    for row in res['per_class']:
        print('{:<40} {:>6d} {:>8.2f}'.format(row['name'][:40], row['count'], row['acc']))
    if res['groups']:
        print('{:<40} {:>6} {:>8} {:>14}'.format('group', 'videos', 'acc %', 'within-group %'))
        for g in res['groups']:
            print('{:<40} {:>6d} {:>8.2f} {:>14.2f}'.format(g['group'][:40], g['count'], g['acc'],
                                                          g['within_group_acc']))
    print('Weights: {}'.format(', '.join(weights)))
    print('Class Accuracy {:.02f}%'.format(res['mean_class_acc']))
    print('Overall Prec@1 {:.02f}% Prec@5 {:.02f}%'.format(res['top1'], res['top5']))


def check_output_paths(args):
    """Fail before the evaluation, not after it, when an output file cannot be written."""
    if args.confusion:
        import importlib.util
        if os.path.splitext(args.confusion)[1].lower() not in ('.png', '.pdf', '.svg'):
            raise LSNetError('--confusion {}: give a .png (or .pdf, .svg) file'.format(args.confusion))
        if importlib.util.find_spec('matplotlib') is None:
            raise LSNetError('--confusion needs matplotlib: pip install "matplotlib>=3.7"')
    inputs = [('--weights', w) for item in args.weights for w in item.split(',')]
    inputs += [(flag, path) for flag, path in (('--test_list', args.test_list), ('--category_file', args.category_file),
                                               ('--class_groups', args.class_groups)) if path]
    written = []
    for flag, path in (('--csv_file', args.csv_file), ('--json_file', args.json_file),
                       ('--save_scores', args.save_scores), ('--confusion', args.confusion)):
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise LSNetError('{} {}: folder {} does not exist'.format(flag, path, folder))
            if os.path.isdir(path):
                raise LSNetError('{} {}: is a folder'.format(flag, path))
            for other_flag, other in inputs + written:
                if os.path.abspath(other) == os.path.abspath(path) or (
                        os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other)):
                    raise LSNetError('{} {} is also {}: give another file'.format(flag, path, other_flag))
            written.append((flag, path))


def write_outputs(args, res, scores, labels, names, categories):
    from ops.metrics import plot_confusion
    preds = scores.argmax(1)
    if args.confusion:
        title = plot_confusion(labels, preds, categories, args.confusion)
        log.info('=> %s written to %s', title.splitlines()[0], args.confusion)
    if args.csv_file:
        with open(args.csv_file, 'w', newline='') as f:
            w = csv.writer(f, delimiter=';', lineterminator='\n')
            for i, name in enumerate(names):
                if args.dataset == 'somethingv2':
                    w.writerow([name] + [int(c) for c in np.argsort(-scores[i])[:5]])
                else:
                    w.writerow([name, categories[preds[i]] if preds[i] < len(categories) else int(preds[i])])
        log.info('=> predictions written to %s', args.csv_file)
    if args.json_file:
        out = dict(res, weights=split_values(args.weights), predictions=[
            {'video': n, 'label': int(l), 'pred': int(p),
             'top5': [int(c) for c in np.argsort(-s)[:5]]}
            for n, l, p, s in zip(names, labels, preds, scores)])
        with open(args.json_file, 'w') as f:
            json.dump(out, f, indent=1)
        log.info('=> metrics and predictions written to %s', args.json_file)
    if args.save_scores:
        np.savez(args.save_scores, scores=scores, labels=labels, predictions=preds,
                 videos=np.array(names), categories=np.array(categories))
        log.info('=> scores written to %s', args.save_scores)


def ensemble_members(args):
    """``[(weight file, segments or None, coeff, test list or None)]`` from the flags, checked."""
    weights = split_values(args.weights)
    if not weights:
        raise LSNetError('--weights: give at least one checkpoint')
    n = len(weights)
    num_segments = per_weight(args.test_segments, n, '--test_segments', int)
    coeffs = [1.0 if c is None else c for c in per_weight(args.coeff, n, '--coeff', float)]
    lists = per_weight([args.test_list] if args.test_list else None, n, '--test_list', str)
    if args.batch_size < 1:
        raise LSNetError('--batch_size must be at least 1')
    if args.workers < 0:
        raise LSNetError('--workers must be at least 0 (got {})'.format(args.workers))
    if any(s is not None and s < 1 for s in num_segments):
        raise LSNetError('--test_segments must be at least 1 (got {})'.format(' '.join(args.test_segments)))
    if args.dense_sample and args.twice_sample:
        raise LSNetError('--dense_sample and --twice_sample do not combine (dense testing already takes 10 clips)')
    return list(zip(weights, num_segments, coeffs, lists))


def load_members(args, members, device, world):
    """``(models [(model, segments, coeff)], loaders, video names, dataset config)``; with ``--compile``
    each model is its ``torch.compile`` wrapper (``ops.compile.unwrap`` gives the eager module)."""
    models, loaders, names, dcfg = [], [], None, None
    for path, segments, coeff, test_list in members:
        model, this_cfg, segments = load_model(path, segments, test_list, args, device)
        # as the reference: a single model skips videos too short to sample, an ensemble keeps all
        loader, this_names = build_loader(model, this_cfg, segments, test_list, args,
                                          remove_missing=len(members) == 1, world=world)
        if names is not None and len(this_names) != len(names):
            raise LSNetError('ensemble members see different test lists ({} vs {} videos)'
                             .format(len(names), len(this_names)))
        names, dcfg = this_names, dcfg or this_cfg
        if args.compile:  # after loading: the weights go into the eager module
            from ops.compile import compile_model
            model = compile_model(model, args.compile_mode, device, inference=True)
        models.append((model, segments, coeff))
        loaders.append(loader)
    return models, loaders, names, dcfg


def score_videos(args, models, loaders, device, world):
    """``(scores (V, num_class) float32, labels (V,) int64)``: the ensemble's mean video scores over
    this process's shard (under ``--amp``, autocast: bf16 on CPU, fp16 on CUDA)."""
    from tqdm import tqdm
    from ops.compile import unwrap
    from ops.engine import autocast_context, prepare_clips
    num_clips = clips_per_video(args)
    all_scores, all_labels = [], []
    t0 = time.time()
    bar = tqdm(zip(*loaders), total=len(loaders[0]), desc='test',
               disable=not (world.is_main and sys.stderr.isatty()))
    for batches in bar:
        total, label = 0.0, None
        for (model, segments, coeff), (clips, target) in zip(models, batches):
            if label is not None and not torch.equal(label, target):
                raise LSNetError('ensemble members disagree on the labels of the same videos')
            label = target
            eager = unwrap(model)
            clips = prepare_clips(clips, device, args.channels_last, norm=(eager.input_mean, eager.input_std))
            with autocast_context(device, args.amp):
                s = video_scores(model, clips, segments, num_clips)
            total = total + coeff * (torch.softmax(s, dim=1) if args.softmax else s)
        all_scores.append((total / len(models)).cpu().numpy())
        all_labels.append(label.numpy())
        seen = sum(len(x) for x in all_labels)
        bar.set_postfix(videos=seen, sec_per_video='{:.3f}'.format((time.time() - t0) / seen))
    bar.close()
    if not all_scores:
        return np.zeros((0, unwrap(models[0][0]).num_class), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(all_scores).astype(np.float32), np.concatenate(all_labels).astype(np.int64)


def gather_in_order(scores, labels, indices, num_videos, world):
    """Every process's shard ``(scores, labels)`` at list positions ``indices`` → the whole list's
    ``(scores (V, C), labels (V,))`` in list order (a single process: returned as they are)."""
    if not world.distributed:
        return scores, labels
    import torch.distributed as dist
    parts = [None] * world.size
    dist.all_gather_object(parts, (list(indices), scores, labels))
    out_scores = np.zeros((num_videos, scores.shape[1]), np.float32)
    out_labels = np.zeros((num_videos,), np.int64)
    seen = 0
    for idx, s, l in parts:
        out_scores[idx], out_labels[idx] = s, l
        seen += len(idx)
    if seen != num_videos:
        raise RuntimeError('gathered {} of {} videos'.format(seen, num_videos))
    return out_scores, out_labels


def run(args):
    from ops.engine import init_distributed
    from ops.metrics import summarize
    from ops.utils import select_device

    members = ensemble_members(args)
    check_output_paths(args)
    world, local_rank = init_distributed(args.device)
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    device = select_device(args.device, args.gpus, local_rank if world.size > 1 else None)
    if args.compile:  # a missing compiler is one line before anything is loaded
        from ops.compile import check_compile_support
        check_compile_support(device, args.compile_mode)
    models, loaders, names, dcfg = load_members(args, members, device, world)
    scores, labels = score_videos(args, models, loaders, device, world)
    shard = len(labels)
    scores, labels = gather_in_order(scores, labels, loaders[0].sampler.indices, len(names), world)
    if world.distributed:
        log.info('=> %d processes scored the %d videos, %d of them on rank 0', world.size, len(labels), shard)
    if not world.is_main:
        return 0
    categories = list(dcfg.categories)
    res = summarize(scores, labels, categories, load_groups(args, dcfg))
    print_report(res, [m[0] for m in members])
    write_outputs(args, res, scores, labels, names, categories)
    return 0


def main(argv=None):
    """Entry point; returns 0 on success, 2 on a user error (message on stderr)."""
    from ops.engine import leave_distributed
    from ops.utils import run_entry_point
    return run_entry_point(run, build_test_parser().parse_args(argv), cleanup=leave_distributed)


if __name__ == '__main__':
    sys.exit(main())
