"""Evaluate one checkpoint, or an ensemble of several, on a test list.

A clip's score is the model's output for it (mean of its frame logits for TSN/TSM avg consensus);
a video's score is the plain mean of its clips' raw scores (crops x dense clips x twice clips),
softmaxed afterwards only with ``--softmax``.  An ensemble sums coeff x score over checkpoints and
divides by their number.  The model configuration comes from the checkpoint's stored ``config``
(ours) or from the official file-name pattern.
"""
import csv
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


def model_config_for(path, ckpt, args):
    """(config dict for build_model_from_config, source) for one weight file."""
    from ops.utils import parse_weight_name
    stored = ckpt.get('config')
    if isinstance(stored, dict):
        cfg = dict(stored)
        if ckpt.get('input_size') and 'input_size' not in cfg:
            cfg['input_size'] = ckpt['input_size']
        return cfg, 'checkpoint config'
    parsed = parse_weight_name(path)
    parsed.pop('dataset')
    return parsed, 'file name'


def load_model(path, n_segments, test_list, args, device):
    """Build and load one checkpoint for testing; returns (model, dataset_config, segments)."""
    from ops.checkpoint import load_checkpoint, load_weights
    from ops.dataset_config import get_dataset_config
    from ops.models import build_model_from_config
    from ops.utils import to_channels_last

    ckpt = load_checkpoint(path)
    cfg, source = model_config_for(path, ckpt, args)
    modality = cfg.get('modality', 'RGB')
    if args.dataset == 'custom' and not test_list:
        raise LSNetError('dataset custom needs --test_list (with --root_path and --category_file)')
    dcfg = get_dataset_config(args.dataset, modality, root_path=args.root_path or None,
                              train_list=test_list, val_list=test_list,
                              category_file=args.category_file, image_tmpl=args.image_tmpl)
    stored_classes = cfg.get('num_class')
    if stored_classes is not None and stored_classes != dcfg.num_class:
        raise LSNetError('{}: checkpoint has {} classes but dataset {} has {}'
                         .format(path, stored_classes, args.dataset, dcfg.num_class))
    segments = n_segments or cfg.get('num_segments')
    overrides = dict(num_class=dcfg.num_class, num_segments=segments, pretrain='none',
                     consensus_type=args.crop_fusion_type)
    if args.input_size is not None:
        overrides['input_size'] = args.input_size
    elif 'input_size' not in cfg:
        overrides['input_size'] = 224
    model = build_model_from_config(cfg, **overrides)
    report = load_weights(model, ckpt, finetune=False, source=path)
    log.info('=> %s: %s from %s, %d segments, shift %s, %s', path, model.base_model_name, source, segments,
             '{}/{}'.format(model.shift_div, model.shift_place) if model.is_shift else 'off', report.summary())
    model.to(device).eval()
    if args.channels_last:
        to_channels_last(model)
    return model, dcfg, segments


def build_loader(model, dcfg, segments, test_list, args, remove_missing):
    from ops.dataset import TSNDataSet
    from ops.dataset_config import check_labels
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
    workers = min(args.workers, -(-len(dataset) // args.batch_size))  # no more workers than batches
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                                         num_workers=workers, pin_memory=torch.cuda.is_available())
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


def summarize(scores, labels, categories, groups):
    """Metrics dict: top1, top5, mean class accuracy, per-class and per-group accuracy (percent)."""
    from sklearn.metrics import confusion_matrix
    num_class = scores.shape[1]
    preds = scores.argmax(1)
    k = min(5, num_class)
    top5 = np.argsort(-scores, axis=1)[:, :k]
    cm = confusion_matrix(labels, preds, labels=list(range(num_class))).astype(float)
    counts = cm.sum(1)
    hits = np.diag(cm)
    present = counts > 0
    per_class = []
    for c in range(num_class):
        if present[c]:
            per_class.append({'class': c, 'name': categories[c] if c < len(categories) else str(c),
                              'count': int(counts[c]), 'acc': 100.0 * hits[c] / counts[c]})
    res = {'videos': int(len(labels)),
           'top1': 100.0 * float((preds == labels).mean()) if len(labels) else 0.0,
           'top5': 100.0 * float((top5 == labels[:, None]).any(1).mean()) if len(labels) else 0.0,
           'mean_class_acc': 100.0 * float(np.mean(hits[present] / counts[present])) if present.any() else 0.0,
           'per_class': per_class, 'groups': []}
    for name, members in (groups or {}).items():
        members = [int(m) for m in members]
        bad = [m for m in members if not 0 <= m < num_class]
        if bad:
            raise LSNetError('class group {!r} names label {} outside 0..{}'.format(name, bad[0], num_class - 1))
        mask = np.isin(labels, members)
        if not mask.any():
            continue
        within = np.array(members)[scores[mask][:, members].argmax(1)]
        res['groups'].append({'group': name, 'classes': members, 'count': int(mask.sum()),
                              'acc': 100.0 * float((preds[mask] == labels[mask]).mean()),
                              'within_group_acc': 100.0 * float((within == labels[mask]).mean())})
    return res


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
    for flag, path in (('--csv_file', args.csv_file), ('--json_file', args.json_file),
                       ('--save_scores', args.save_scores)):
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise LSNetError('{} {}: folder {} does not exist'.format(flag, path, folder))
            if os.path.isdir(path):
                raise LSNetError('{} {}: is a folder'.format(flag, path))


def write_outputs(args, res, scores, labels, names, categories):
    preds = scores.argmax(1)
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


def run(args):
    from tqdm import tqdm
    from ops.engine import prepare_clips
    from ops.utils import select_device

    weights = split_values(args.weights)
    if not weights:
        raise LSNetError('--weights: give at least one checkpoint')
    n = len(weights)
    segs = per_weight(args.test_segments, n, '--test_segments', int)
    coeffs = per_weight(args.coeff, n, '--coeff', float)
    coeffs = [1.0 if c is None else c for c in coeffs]
    lists = per_weight([args.test_list] if args.test_list else None, n, '--test_list', str)
    if args.batch_size < 1:
        raise LSNetError('--batch_size must be at least 1')
    if any(s is not None and s < 1 for s in segs):
        raise LSNetError('--test_segments must be at least 1 (got {})'.format(' '.join(args.test_segments)))
    if args.dense_sample and args.twice_sample:
        raise LSNetError('--dense_sample and --twice_sample do not combine (dense testing already takes 10 clips)')
    check_output_paths(args)
    device = select_device(args.device, args.gpus)
    num_clips = clips_per_video(args)

    models, loaders, names, dcfg = [], [], None, None
    for path, seg, test_list in zip(weights, segs, lists):
        model, this_cfg, segments = load_model(path, seg, test_list, args, device)
        # as the reference: a single model skips videos too short to sample, an ensemble keeps all
        loader, this_names = build_loader(model, this_cfg, segments, test_list, args, remove_missing=n == 1)
        if names is not None and len(this_names) != len(names):
            raise LSNetError('ensemble members see different test lists ({} vs {} videos)'
                             .format(len(names), len(this_names)))
        names, dcfg = this_names, dcfg or this_cfg
        models.append((model, segments))
        loaders.append(loader)
    groups = load_groups(args, dcfg)
    categories = list(dcfg.categories)

    all_scores, all_labels = [], []
    t0 = time.time()
    bar = tqdm(zip(*loaders), total=len(loaders[0]), desc='test', disable=not sys.stderr.isatty())
    for batches in bar:
        total, label = None, None
        for (model, segments), coeff, (clips, target) in zip(models, coeffs, batches):
            if label is not None and not torch.equal(label, target):
                raise LSNetError('ensemble members disagree on the labels of the same videos')
            label = target
            s = video_scores(model, prepare_clips(clips, device, norm=(model.input_mean, model.input_std)),
                             segments, num_clips)
            if args.softmax:
                s = torch.softmax(s, dim=1)
            total = s * coeff if total is None else total + s * coeff
        all_scores.append((total / len(models)).cpu().numpy())
        all_labels.append(label.numpy())
        seen = sum(len(x) for x in all_labels)
        bar.set_postfix(videos=seen, sec_per_video='{:.3f}'.format((time.time() - t0) / seen))
    bar.close()
    scores = np.concatenate(all_scores).astype(np.float32) if all_scores else np.zeros((0, len(categories)), np.float32)
    labels = np.concatenate(all_labels).astype(np.int64) if all_labels else np.zeros((0,), np.int64)
    res = summarize(scores, labels, categories, groups)
    print_report(res, weights)
    write_outputs(args, res, scores, labels, names, categories)
    return 0


def main(argv=None):
    """Entry point; returns 0 on success, 2 on a user error (message on stderr)."""
    from ops.utils import run_entry_point
    return run_entry_point(run, build_test_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
