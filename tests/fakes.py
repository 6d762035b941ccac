"""Generated stand-ins for what users have on disk: frame folders, list and category files in the
official layouts, ImageNet weights in the torch hub cache, and official-format TSM checkpoints.

Everything is random but shaped exactly like the real thing: the official checkpoints carry the key
names and shapes of ``tests/fixtures/tsm_ckpt_manifests`` (checked here on every write).
"""
import glob
import json
import os

import numpy as np
import torch
from PIL import Image

MANIFEST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'tsm_ckpt_manifests')


def write_frames(folder, num_frames, size=(48, 40), colour=(128, 128, 128), flow=False, seed=0,
                 template='img_{:05d}.jpg'):
    """Frames ``template.format(i)`` of a noisy colour (plus ``flow_{x,y}_{:05d}.jpg`` when ``flow``)."""
    rng = np.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    w, h = size
    for i in range(1, num_frames + 1):
        img = np.clip(np.array(colour, np.float32) + rng.randn(h, w, 3) * 30, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(folder, template.format(i)))
        if flow:
            for axis in 'xy':
                gray = np.clip(128 + rng.randn(h, w) * 20, 0, 255).astype(np.uint8)
                Image.fromarray(gray).save(os.path.join(folder, 'flow_{}_{:05d}.jpg'.format(axis, i)))


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def tsn(num_class, num_segments, modality='RGB', partial_bn=False, **fields):
    """``build_model(ModelConfig(...))`` with positional class and segment counts, as the tests like
    it; ``partial_bn`` is applied as main.py applies ``--npb`` (on unless the flag is given)."""
    from ops.config import ModelConfig
    from ops.models import build_model
    model = build_model(ModelConfig(num_class=num_class, num_segments=num_segments, modality=modality, **fields))
    model.partialBN(partial_bn)
    return model


def make_lively(model, size, fc_scale=1.0):
    """Move ``model``'s LSM parameters off zero, give the classifier O(fc_scale) weights and set every
    BN's statistics from one training-mode pass on random clips of ``size``², so the temporal modules
    all act and the logits are O(1); returns the model in eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.lsm.' in name:
                p.add_(torch.randn_like(p) * 0.05)
        model.new_fc.weight.normal_(0, fc_scale / model.new_fc.in_features ** 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average: one pass sets the statistics
        model.train()(torch.randn(2, model.num_segments, 3, size, size))
    return model.eval()


def manifests():
    """{manifest name: manifest dict} of every official checkpoint kind."""
    out = {}
    for path in sorted(glob.glob(os.path.join(MANIFEST_DIR, '*.json'))):
        with open(path) as f:
            out[os.path.basename(path)[:-len('.json')]] = json.load(f)
    return out


def official_checkpoint(manifest, path, **config_changes):
    """Write a checkpoint with the official layout of ``manifest`` (random weights) to ``path``.

    Top-level keys ``epoch, arch, state_dict, optimizer, best_prec1``; ``state_dict`` keys carry the
    ``module.`` prefix, in the manifest's order and shapes (asserted). ``config_changes`` (e.g.
    ``num_segments``) may only change what the key layout does not depend on.
    """
    from ops.config import ModelConfig
    from ops.models import build_model
    config = dict(manifest['model_config'], **config_changes)
    model = build_model(ModelConfig.from_dict(config, pretrain='none'))
    sd = model.state_dict()
    prefix = manifest['state_dict_key_prefix']
    expected = [(k, tuple(shape)) for k, shape, _ in manifest['state_dict']]
    got = [(prefix + k, tuple(v.shape)) for k, v in sd.items()]
    assert got == expected, 'model keys/shapes differ from manifest {}'.format(manifest['official_file_name'])
    state = {'epoch': 50, 'arch': model.cfg.arch,
             'state_dict': {prefix + k: v for k, v in sd.items()},
             'optimizer': {'state': {}, 'param_groups': []}, 'best_prec1': 70.0}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(state, path)
    return path


def imagenet_cache(torch_home, archs=('resnet50',)):
    """Random stand-ins for torchvision's IMAGENET1K_V1 files in ``torch_home``'s hub cache, so
    ``--pretrain imagenet`` (the default) runs offline exactly as it would after a download."""
    import torchvision
    from ops.backbones import _WEIGHT_ENUMS
    folder = os.path.join(torch_home, 'hub', 'checkpoints')
    os.makedirs(folder, exist_ok=True)
    for arch in archs:
        weights = getattr(torchvision.models, _WEIGHT_ENUMS[arch]).IMAGENET1K_V1
        net = torchvision.models.mobilenet_v2() if arch == 'mobilenetv2' else getattr(torchvision.models, arch)()
        torch.save(net.state_dict(), os.path.join(folder, os.path.basename(weights.url)))
    return torch_home
