"""Classify one video file or frame folder with a trained checkpoint and print the top-5 classes.

The model is rebuilt from the checkpoint's stored configuration (segments, backbone, shift,
input size, ...); official TSM files without one are read from their file name.  Frames are
sampled at the segment centres (test sampling) and centre-cropped like ``test_models.py``
(``--test_crops 3/5/10`` average several crops).  Class names come from ``--category_file``, else
the checkpoint's ``categories`` entry, else, for a 400-class Kinetics checkpoint (its ``dataset``
entry or official file name), the Kinetics-400 names of ``ops/kinetics400.txt``, else ``class_<i>``.

    python tools/demo.py checkpoints/.../ckpt.best.pth.tar video.mp4
    python tools/demo.py TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth frames/abc/ \\
        --category_file kinetics/labels/category.txt --json
"""

import json
import os
import re
import sys
import time

if __package__ in (None, ''):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from ops.checkpoint import load_model  # noqa: E402
from ops.errors import ArgumentParser, LSNetError  # noqa: E402
from ops.utils import to_channels_last  # noqa: E402
from opts import add_compile_flags, add_memory_format_flags  # noqa: E402

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
_NUMBERED = re.compile(r'^(.*?)(\d+)(\.[A-Za-z]+)$')


def checkpoint_dataset(ckpt, path):
    """The dataset a checkpoint was trained on: its ``dataset`` entry (ours), else its official file
    name's (``TSM_kinetics_...``), else None."""
    from ops.config import parse_weight_name
    if ckpt.get('dataset'):
        return str(ckpt['dataset'])
    try:
        return parse_weight_name(path)[0]
    except LSNetError:
        return None


def class_names(ckpt, num_class, category_file=None, dataset=None):
    """``num_class`` names from ``category_file``, else ``ckpt['categories']``, else the dataset's
    default names (Kinetics-400 for a 400-class ``kinetics`` model), else ``class_<i>``."""
    if category_file:
        if not os.path.isfile(category_file):
            raise LSNetError('--category_file not found: %s' % category_file)
        from ops.dataset_config import read_categories
        names, source = read_categories(category_file), category_file
    elif ckpt.get('categories'):
        names, source = [str(c) for c in ckpt['categories']], 'the checkpoint'
    else:
        from ops.dataset_config import default_categories
        return default_categories(dataset, num_class)
    if len(names) != num_class:
        raise LSNetError('%s lists %d classes but the model has %d' % (source, len(names), num_class))
    return names


def detect_template(folder):
    """``(template, num_frames)`` of a frame folder, e.g. ``('img_{:05d}.jpg', 120)``.

    The template is read off the first numbered image; frames are counted as the files with the
    same prefix, digit count and extension.
    """
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    for name in names:
        m = _NUMBERED.match(name)
        if m and not m.group(1).startswith('flow_'):
            prefix, digits, ext = m.groups()
            tmpl = '%s{:0%dd}%s' % (prefix.replace('{', '{{').replace('}', '}}'), len(digits), ext)
            pat = re.compile(r'^%s\d{%d}%s$' % (re.escape(prefix), len(digits), re.escape(ext)))
            return tmpl, sum(1 for n in names if pat.match(n))
    raise LSNetError('no numbered image frames in %s' % folder)


def load_clip(source, model, image_tmpl=None):
    """``(uint8 clip (F, C, H, W), num_frames)`` with the frames the model's test sampling picks."""
    from ops.dataset import sample_test_indices, segment_frame_numbers
    from ops.video_io import count_video_frames, is_video_file, read_frames, read_video_frames

    if model.modality == 'Flow':
        raise LSNetError('the demo takes RGB models (this checkpoint is a Flow model)')
    images = model.new_length + 1 if model.modality == 'RGBDiff' else model.new_length
    if os.path.isdir(source):
        if image_tmpl:
            tmpl = image_tmpl
            n = 0
            while os.path.exists(os.path.join(source, tmpl.format(n + 1))):
                n += 1
        else:
            tmpl, n = detect_template(source)
    elif os.path.isfile(source):
        if not is_video_file(source):
            raise LSNetError('%s is neither a frame folder nor a video file (.mp4 .webm .avi .mkv)' % source)
        n = count_video_frames(source)
    else:
        raise LSNetError('input not found: %s' % source)
    if n < 1:
        raise LSNetError('no frames in %s' % source)
    offsets = sample_test_indices(n, model.num_segments, images)
    numbers = segment_frame_numbers(offsets, n, images)
    if os.path.isdir(source):
        clip = read_frames([os.path.join(source, tmpl.format(i)) for i in numbers],
                           min_short_side=model.scale_size)
    else:
        clip = read_video_frames(source, numbers)
    return clip, n


def predict(model, clip, test_crops=1, channels_last=False, net=None):
    """Class probabilities ``(num_class,)``: softmax of the crops' mean logits (computed by ``net``, e.g.
    the compiled ``model``, when given)."""
    from ops.transforms import build_transform

    transform = build_transform('test', modality=model.modality, new_length=model.new_length,
                                crop_size=model.crop_size, scale_size=model.scale_size,
                                mean=model.input_mean, std=model.input_std, test_crops=test_crops)
    x = transform(clip)  # (K·T, L·C, h, w), crop-major
    device = next(model.parameters()).device
    x = x.reshape(-1, model.num_segments * x.shape[1], *x.shape[-2:]).to(device)  # (K, T·L·C, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = (model if net is None else net)(x)
    return torch.softmax(logits.float().mean(dim=0), dim=0).cpu()


def model_kind(cfg):
    """``'TSN'``, ``'TSM'`` or ``'LSNet'``, with ``'NL-'`` in front for non-local models."""
    kind = 'LSNet' if cfg.lsm else 'TSM' if cfg.shift else 'TSN'
    return ('NL-' if cfg.non_local else '') + kind


def pick_device(name):
    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if not re.match(r'^(cpu|cuda(:\d+)?)$', name):
        raise LSNetError('--device %s: choose auto, cpu, cuda or cuda:N' % name)
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise LSNetError('--device %s: CUDA is not available' % name)
    return name


def build_parser():
    p = ArgumentParser(description='Top-k classes of one video with a trained checkpoint.')
    p.add_argument('checkpoint', help='checkpoint file (ours or an official TSM file)')
    p.add_argument('input', help='video file or folder of frames')
    p.add_argument('--category_file', default='', help='class names, one per line')
    p.add_argument('--image_tmpl', default='', help='frame template, e.g. img_{:05d}.jpg (default: detected)')
    p.add_argument('--test_crops', type=int, default=1, choices=(1, 3, 5, 10))
    p.add_argument('--topk', type=int, default=5)
    p.add_argument('--device', default='auto', help='auto (CUDA when present), cpu, cuda, cuda:N')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (default: torch default)')
    p.add_argument('--json', action='store_true', help='print one JSON object')
    add_memory_format_flags(p)
    add_compile_flags(p)
    return p


def run(args):
    t0 = time.perf_counter()
    if args.threads < 0:
        raise LSNetError('--threads must be >= 0, got %d' % args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.compile:
        from ops.compile import check_compile_support
        check_compile_support(device, args.compile_mode)
    model, cfg, ckpt = load_model(args.checkpoint, device, consensus_type='avg')
    if args.channels_last:
        to_channels_last(model)
    names = class_names(ckpt, model.num_class, args.category_file, checkpoint_dataset(ckpt, args.checkpoint))
    clip, n = load_clip(args.input, model, args.image_tmpl or None)
    net = model
    if args.compile:  # after loading: the weights go into the eager module
        from ops.compile import compile_model
        net = compile_model(model, args.compile_mode, device, inference=True)
    probs = predict(model, clip, args.test_crops, args.channels_last, net=net)
    k = min(args.topk, model.num_class)
    scores, labels = probs.topk(k)
    top = [{'rank': i + 1, 'label': int(c), 'class': names[int(c)], 'score': float(s)}
           for i, (s, c) in enumerate(zip(scores, labels))]
    result = {'input': args.input, 'checkpoint': args.checkpoint, 'num_frames': n,
              'num_segments': model.num_segments, 'test_crops': args.test_crops,
              'input_size': model.crop_size, 'arch': cfg.arch, 'model': model_kind(cfg),
              'seconds': round(time.perf_counter() - t0, 3), 'top': top}
    return result


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.topk < 1:
            raise LSNetError('--topk must be >= 1, got %d' % args.topk)
        result = run(args)
    except LSNetError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print('%s: %d frames, %d segments x %d crop(s) at %dx%d, %s %s (%.2f s)' % (
            result['input'], result['num_frames'], result['num_segments'], result['test_crops'],
            result['input_size'], result['input_size'], result['model'], result['arch'],
            result['seconds']))
        width = max(len(t['class']) for t in result['top'])
        for t in result['top']:
            print('%2d. %-*s  %.4f' % (t['rank'], width, t['class'], t['score']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
