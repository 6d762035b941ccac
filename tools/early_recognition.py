"""Early recognition: top-1 accuracy against the fraction of each video seen (10 %, 20 %, ..., 100 %).

Evidence that online recognition works: every validation video of a dataset (the synthetic set
by default) is streamed frame by frame through each trained online checkpoint, and the prediction
available after the first ``ceil(f·n)`` of its ``n`` frames is scored for f = 0.1 ... 1.0::

    python tools/early_recognition.py --root_path data/synthetic \\
        --model TSN=tsn.pth --model TSM-uni=tsm_uni.pth --model LSNet-uni=lsnet_uni.pth \\
        --offline TSM=tsm.pth --out_png early.png --out_md early.md

Three kinds of model:

- ``--model`` with an online checkpoint (``--shift --shift_direction uni``, TSM or LSNet): an
  :class:`ops.streaming.OnlineRecognizer` over the frames (window = the model's ``num_segments``,
  stride below); the prediction at fraction f is the recogniser's smoothed prediction (the mean
  logits of the window) after the last frame it processed among the first ``ceil(f·n)``.
- ``--model`` with a TSN (no shift, no non-local block or temporal pool): also a frame-by-frame
  model, with no temporal state: each processed frame is ``new_fc(base_model(frame))`` alone
  (the Streamer of a TSN keeps only its frame counter), through the same ``OnlineRecognizer``
  smoothing.
- ``--offline`` (any checkpoint, normally a bidirectional TSM / LSNet): at fraction f it sees the
  first ``ceil(f·n)`` frames sampled into ``num_segments`` segments at the segment centres, as
  ``test_models.py`` samples a whole video (``ops.dataset.sample_test_indices``, 1 crop); its
  100 % accuracy is the reference line of the plot.

Stride of the frame-by-frame models: ``--stride`` when given; else the checkpoint's
(:func:`ops.streaming.default_stride`, from ``ckpt['frames_per_segment']``) when it stores one;
else ``max(1, n // num_segments)`` for each video of ``n`` frames, the spacing of the segments the
model was trained on. The first frame is always processed, so every fraction has a prediction.

Preprocessing is ``test_models.py``'s 1-crop test pipeline for each model's sizes: the frames are
decoded by ``ops.dataset.TSNDataSet.load_clip`` and transformed by ``ops.transforms.build_transform
('test', ...)`` (short side to ``scale_size``, centre crop ``crop_size``), uint8, then normalised by
``ops.engine.prepare_clips`` (channels_last unless ``--no_channels_last``). All of a video's frames
are prepared once per distinct pipeline and shared by the models.

Outputs: a table on stdout, ``--out_md`` (markdown table: one row per model, one column per
fraction), ``--out_png`` (matplotlib, accuracy against fraction seen, one line per model; offline
models dashed with a dotted horizontal line at their 100 % accuracy), ``--out_json`` (accuracies and
every video's prediction at every fraction), and a last line
``early_recognition: <name>@100=<acc> ...`` (top-1 % on the whole videos, every model).
"""
import json
import logging
import os
import sys
import time

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from ops.errors import ArgumentParser, LSNetError  # noqa: E402
from ops.streaming import OnlineRecognizer, Streamer, default_stride  # noqa: E402

log = logging.getLogger('early_recognition')

PERCENTS = tuple(range(10, 101, 10))
KIND_LABELS = {'online': 'online, streamed', 'frame': 'per frame, streamed', 'offline': 'offline, segments'}


def seen_frames(percent, n):
    """``ceil(percent/100 · n)`` in integers (0.3 · 10 is 3.0000000000000004 in floats), at least 1."""
    return max(1, -(-percent * n // 100))


def parse_named(values, flag):
    """``['A=path', ...]`` -> ``[(name, path)]``."""
    out = []
    for v in values or []:
        name, sep, path = v.partition('=')
        if not sep or not name.strip() or not path.strip():
            raise LSNetError('{} {!r}: expected NAME=CHECKPOINT'.format(flag, v))
        out.append((name.strip(), path.strip()))
    return out


def model_kind(cfg, flag, name):
    """``'online'`` / ``'frame'`` for ``--model``, ``'offline'`` for ``--offline``; raise when a
    ``--model`` cannot run frame by frame."""
    if flag == '--offline':
        return 'offline'
    if cfg.modality != 'RGB':
        raise LSNetError('--model {}: online recognition supports RGB models (this one is {})'
                         .format(name, cfg.modality))
    if cfg.causal:
        return 'online'
    if cfg.shift:
        raise LSNetError('--model {}: a bidirectional TSM reads future frames, so it cannot run online; '
                         'pass it with --offline'.format(name))
    if cfg.non_local or cfg.temporal_pool:
        raise LSNetError('--model {}: its non-local block / temporal pool mixes frames; pass it with --offline'
                         .format(name))
    return 'frame'


def load_models(args, device, num_class):
    from ops.checkpoint import load_model
    from ops.utils import to_channels_last
    entries = [(n, p, '--model') for n, p in parse_named(args.model, '--model')]
    entries += [(n, p, '--offline') for n, p in parse_named(args.offline, '--offline')]
    if not entries:
        raise LSNetError('give at least one --model NAME=CKPT or --offline NAME=CKPT')
    names = [n for n, _, _ in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LSNetError('model names must differ: {} given twice'.format(', '.join(dup)))
    models = []
    for name, path, flag in entries:
        model, cfg, ckpt = load_model(path, device)
        if cfg.num_class != num_class:
            raise LSNetError('{} {}={}: the checkpoint has {} classes, the dataset {}'.format(
                flag, name, path, cfg.num_class, num_class))
        kind = model_kind(cfg, flag, name)
        if args.channels_last:
            to_channels_last(model)
        if args.stride is not None:
            stride = args.stride
        elif isinstance(ckpt, dict) and ckpt.get('frames_per_segment'):
            stride = default_stride(ckpt)
        else:
            stride = None  # per video: n // num_segments
        step = None
        if kind == 'online':
            step = Streamer(model)
        elif kind == 'frame':
            step = Streamer(model)  # a TSN streams without temporal state
        models.append(dict(name=name, path=path, kind=kind, model=model, cfg=cfg, step=step,
                           stride=stride if kind != 'offline' else None, preds=[], key=pipeline_key(model)))
        log.info('%s: %s %s, %d segments, %s%s', name, path, cfg.arch, cfg.num_segments, KIND_LABELS[kind],
                 '' if kind == 'offline' else ', stride {}'.format(stride or 'n // {}'.format(cfg.num_segments)))
    return models


def pipeline_key(model):
    return (model.crop_size, model.scale_size, tuple(model.input_mean), tuple(model.input_std))


def build_datasets(dcfg, models):
    """One ``TSNDataSet`` (test mode, no sampling used) per distinct 1-crop test pipeline."""
    from ops.dataset import TSNDataSet
    from ops.transforms import build_transform
    out = {}
    for m in models:
        if m['key'] in out:
            continue
        model = m['model']
        tf = build_transform('test', modality='RGB', new_length=1, crop_size=model.crop_size,
                             scale_size=model.scale_size, mean=model.input_mean, std=model.input_std,
                             test_crops=1, normalize=False)
        out[m['key']] = TSNDataSet(dcfg.root_path, dcfg.val_list, num_segments=1, new_length=1, modality='RGB',
                                   image_tmpl=dcfg.image_tmpl, transform=tf, random_shift=False, test_mode=True)
    return out


def video_frames(dataset, record, device, channels_last, mean, std):
    """All ``n`` frames of a video through the test pipeline: float32 ``(n, 3, h, w)`` on ``device``."""
    from ops.engine import prepare_clips
    n = dataset.num_frames(record)
    clip = dataset.transform(dataset.load_clip(record, list(range(1, n + 1))))  # uint8 (n, 3, h, w)
    return prepare_clips(clip, device, channels_last, norm=(mean, std))


def stream_predictions(step, frames, stride, window):
    """Predicted class at each of :data:`PERCENTS`, streaming ``frames`` (n, 3, h, w) one at a time."""
    n = frames.shape[0]
    rec = OnlineRecognizer(step, stride=stride, window=window)
    after = {}  # processed frame index -> predicted class
    for i in range(n):
        scores = rec.update(frames[i:i + 1])
        if scores is not None:
            after[i] = int(scores.argmax())
    return [after[(seen_frames(p, n) - 1) // stride * stride] for p in PERCENTS]


@torch.no_grad()
def offline_predictions(model, frames, channels_last):
    """Predicted class at each of :data:`PERCENTS`: the first ``ceil(f·n)`` frames sampled at the
    centres of ``num_segments`` segments (test sampling), all fractions in one batch."""
    from ops.dataset import sample_test_indices, segment_frame_numbers
    n, t = frames.shape[0], model.num_segments
    index = []
    for p in PERCENTS:
        m = seen_frames(p, n)
        index += [f - 1 for f in segment_frame_numbers(sample_test_indices(m, t, 1), m, 1)]
    x = frames[torch.tensor(index, device=frames.device)]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x).argmax(dim=1).tolist()


def evaluate(args, models, dcfg, device):
    """Fills each model's ``preds`` (per video, per fraction); returns ``(video names, labels)``."""
    from ops.dataset_config import check_labels
    datasets = build_datasets(dcfg, models)
    records = next(iter(datasets.values())).video_list
    check_labels(records, dcfg.num_class, dcfg.val_list)
    if args.max_videos and args.max_videos > 0:
        records = records[:args.max_videos]
    if not records:
        raise LSNetError('{}: no videos to evaluate'.format(dcfg.val_list))
    t0 = time.time()
    for v, record in enumerate(records):
        cache = {}
        for m in models:
            if m['key'] not in cache:
                model = m['model']
                cache[m['key']] = video_frames(datasets[m['key']], record, device, args.channels_last,
                                               model.input_mean, model.input_std)
            frames = cache[m['key']]
            if m['kind'] == 'offline':
                m['preds'].append(offline_predictions(m['model'], frames, args.channels_last))
            else:
                stride = m['stride'] or max(1, frames.shape[0] // m['model'].num_segments)
                m['preds'].append(stream_predictions(m['step'], frames, stride, m['model'].num_segments))
        if (v + 1) % 50 == 0 or v + 1 == len(records):
            log.info('%d / %d videos (%.1f s)', v + 1, len(records), time.time() - t0)
    return [r.path for r in records], [r.label for r in records]


def accuracies(preds, labels):
    """Top-1 % at each fraction."""
    return [100.0 * sum(p[j] == y for p, y in zip(preds, labels)) / len(labels) for j in range(len(PERCENTS))]


def stride_text(m):
    if m['kind'] == 'offline':
        return '-'
    return str(m['stride']) if m['stride'] else 'n/{}'.format(m['model'].num_segments)


def markdown_table(models, num_videos):
    head = '| model | kind | stride | ' + ' | '.join('{} %'.format(p) for p in PERCENTS) + ' |'
    rule = '|---|---|---:|' + '---:|' * len(PERCENTS)
    rows = ['| {} | {} | {} | {} |'.format(m['name'], KIND_LABELS[m['kind']], stride_text(m),
                                           ' | '.join('{:.1f}'.format(a) for a in m['acc'])) for m in models]
    note = ('Top-1 % on {} validation videos against the fraction of each video seen (the first '
            'ceil(f·n) of its n frames).'.format(num_videos))
    return '\n'.join([note, '', head, rule] + rows) + '\n'


def plot(models, path, num_class, num_videos):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, m in enumerate(models):
        color = 'C{}'.format(i % 10)
        if m['kind'] == 'offline':
            ax.plot(PERCENTS, m['acc'], '--', color=color, marker='s', markersize=3,
                    label='{} (offline, seen part as segments)'.format(m['name']))
            ax.axhline(m['acc'][-1], color=color, linestyle=':', linewidth=1,
                       label='{}, whole video: {:.1f} %'.format(m['name'], m['acc'][-1]))
        else:
            ax.plot(PERCENTS, m['acc'], '-', color=color, marker='o', markersize=4,
                    label='{} ({})'.format(m['name'], KIND_LABELS[m['kind']]))
    ax.axhline(100.0 / num_class, color='grey', linestyle='-', linewidth=0.8, alpha=0.5, label='chance')
    ax.set_xlabel('fraction of the video seen (%)')
    ax.set_ylabel('top-1 accuracy (%)')
    ax.set_xticks(PERCENTS)
    ax.set_xlim(5, 102)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title('Early recognition, {} videos'.format(num_videos))
    ax.legend(fontsize=7, loc='best')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_outputs(args):
    for flag, path in (('--out_png', args.out_png), ('--out_md', args.out_md), ('--out_json', args.out_json)):
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise LSNetError('{} {}: folder {} does not exist'.format(flag, path, folder))
    if args.out_png:
        import importlib.util
        if importlib.util.find_spec('matplotlib') is None:
            raise LSNetError('--out_png needs matplotlib: pip install "matplotlib>=3.7"')


def run(args):
    from ops.dataset_config import get_dataset_config
    from ops.utils import select_device
    if args.stride is not None and args.stride < 1:
        raise LSNetError('--stride must be at least 1 (got {})'.format(args.stride))
    if not args.model and not args.offline:
        raise LSNetError('give at least one --model NAME=CKPT or --offline NAME=CKPT')
    check_outputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    dcfg = get_dataset_config(args.dataset, 'RGB', root_path=args.root_path, val_list=args.val_list,
                              image_tmpl=args.image_tmpl, category_file=args.category_file)
    models = load_models(args, device, dcfg.num_class)
    with torch.no_grad():
        names, labels = evaluate(args, models, dcfg, device)
    for m in models:
        m['acc'] = accuracies(m['preds'], labels)
        if m['step'] is not None:
            m['step'].close()
    table = markdown_table(models, len(labels))
    print(table, end='')
    if args.out_md:
        with open(args.out_md, 'w') as f:
            f.write(table)
    if args.out_png:
        plot(models, args.out_png, dcfg.num_class, len(labels))
    if args.out_json:
        with open(args.out_json, 'w') as f:
            json.dump({'percents': list(PERCENTS), 'num_videos': len(labels), 'videos': names, 'labels': labels,
                       'models': [{'name': m['name'], 'path': m['path'], 'kind': m['kind'],
                                   'stride': m['stride'], 'num_segments': m['model'].num_segments,
                                   'accuracy': m['acc'], 'predictions': m['preds']} for m in models]},
                      f, indent=1)
    print('early_recognition: ' + ' '.join('{}@100={:.2f}'.format(m['name'], m['acc'][-1]) for m in models))
    return 0


def build_parser():
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root_path', required=True, help='root of the dataset (a tools/gen_synthetic.py --out folder)')
    p.add_argument('--dataset', default='synthetic', help='registered dataset name (default: synthetic)')
    p.add_argument('--val_list', default=None, help='list file to evaluate (default: the dataset\'s validation list)')
    p.add_argument('--image_tmpl', default=None)
    p.add_argument('--category_file', default=None)
    p.add_argument('--model', action='append', default=[], metavar='NAME=CKPT',
                   help='a frame-by-frame model: an online TSM / LSNet (--shift_direction uni) or a TSN (repeat)')
    p.add_argument('--offline', action='append', default=[], metavar='NAME=CKPT',
                   help='an offline reference model, fed the seen part of each video as segments (repeat)')
    p.add_argument('--stride', type=int, default=None,
                   help="frames between processed frames (default: the checkpoint's frames_per_segment, "
                        "else n // num_segments per video)")
    p.add_argument('--max_videos', type=int, default=0, help='evaluate only the first N videos (0: all)')
    p.add_argument('--out_png', default=None)
    p.add_argument('--out_md', default=None)
    p.add_argument('--out_json', default=None, help='accuracies and every prediction, as JSON')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--channels_last', dest='channels_last', default=True, action='store_true',
                   help='channels_last models and frames (default, as test_models.py)')
    p.add_argument('--no_channels_last', dest='channels_last', action='store_false')
    return p


def main(argv=None):
    from ops.utils import run_entry_point
    return run_entry_point(run, build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
