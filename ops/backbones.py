"""Backbone factory: torchvision ResNets and the TSM-named MobileNetV2, random or ImageNet weights.

The architectures themselves live in ``archs/`` (which imports nothing from ``ops``); this module
picks one by ``--arch`` and loads its weights.

``pretrain='imagenet'`` uses torchvision's ``weights=`` API (the ``IMAGENET1K_V1`` weights, the
ones the TSM models were trained from). Without network access the download fails; we then raise
an :class:`LSNetError` telling the user to pass ``--pretrain none`` or to place the file in the
torch hub cache.
"""
import logging
import os

import torch.nn as nn
import torchvision

from archs.mobilenet_v2 import MobileNetV2, from_torchvision_keys
from ops.errors import LSNetError

log = logging.getLogger(__name__)

RESNETS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')
ARCHS = RESNETS + ('mobilenetv2',)
PRETRAIN_CHOICES = ('imagenet', 'none')

_WEIGHT_ENUMS = {
    'resnet18': 'ResNet18_Weights', 'resnet34': 'ResNet34_Weights', 'resnet50': 'ResNet50_Weights',
    'resnet101': 'ResNet101_Weights', 'resnet152': 'ResNet152_Weights',
    'mobilenetv2': 'MobileNet_V2_Weights',
}


def _imagenet_state_dict(arch):
    """Download (or read from the hub cache) torchvision's IMAGENET1K_V1 state dict for ``arch``."""
    weights = getattr(torchvision.models, _WEIGHT_ENUMS[arch]).IMAGENET1K_V1
    import torch.hub
    cache = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(weights.url))
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # urllib/socket/OSError variants depend on the platform
        raise LSNetError('cannot get ImageNet weights for {} ({}: {}); use --pretrain none, or put {} at {}'
                         .format(arch, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else '',
                                 os.path.basename(weights.url), cache)) from None


def build_backbone(arch, pretrain='imagenet'):
    """Return ``(model, last_layer_name)`` for ``arch`` in :data:`ARCHS`.

    ResNets: ``(N, 3, H, W) → (N, 1000)`` with ``fc`` last; MobileNetV2: ``classifier`` last.
    """
    if arch not in ARCHS:
        raise LSNetError('unknown --arch {!r} (choose from {})'.format(arch, ', '.join(ARCHS)))
    if pretrain not in PRETRAIN_CHOICES:
        raise LSNetError('unknown --pretrain {!r} (choose from {})'.format(pretrain, ', '.join(PRETRAIN_CHOICES)))
    if arch in RESNETS:
        model = getattr(torchvision.models, arch)(weights=None)
        if pretrain == 'imagenet':
            model.load_state_dict(_imagenet_state_dict(arch))
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        return model, 'fc'
    model = MobileNetV2()
    if pretrain == 'imagenet':
        model.load_state_dict(from_torchvision_keys(_imagenet_state_dict(arch)))
    return model, 'classifier'
