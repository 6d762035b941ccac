"""MobileNetV2 with the parameter names of the official TSM MobileNetV2 checkpoints.

Each inverted residual block keeps its layers in one flat ``conv`` Sequential
(``conv.0`` pw conv, ``conv.1`` BN, ``conv.2`` ReLU6, ``conv.3`` dw conv, ``conv.4`` BN, ``conv.5``
ReLU6, ``conv.6`` pw-linear conv, ``conv.7`` BN; the expand-ratio-1 block has the last five only),
so official keys such as ``features.3.conv.0.net.weight`` (shifted first conv) load directly.

torchvision's ImageNet MobileNetV2 has the same layers grouped differently; :func:`from_torchvision_keys`
maps its state dict onto these names (used by ``--pretrain imagenet``):

===============================  ===========================
torchvision                      here
===============================  ===========================
``features.0.{0,1}``             ``features.0.{0,1}``
``features.1.conv.0.{0,1}``      ``features.1.conv.{0,1}``
``features.1.conv.{1,2}``        ``features.1.conv.{3,4}``
``features.N.conv.0.{0,1}``      ``features.N.conv.{0,1}``   (N >= 2)
``features.N.conv.1.{0,1}``      ``features.N.conv.{3,4}``
``features.N.conv.{2,3}``        ``features.N.conv.{6,7}``
``features.18.{0,1}``            ``features.18.{0,1}``
``classifier.1``                 ``classifier``
===============================  ===========================
"""
import math
import re

import torch.nn as nn

# (expand ratio t, output channels c, repeats n, first stride s)
INVERTED_RESIDUAL_SETTING = [
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _conv_bn_relu(inp, oup, kernel, stride):
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """(N, inp, H, W) → (N, oup, H/stride, W/stride); adds the input when stride 1 and inp == oup."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError('stride must be 1 or 2')
        self.stride = stride
        hidden = int(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """(N, 3, H, W) → (N, num_classes); global average pooling before ``classifier``."""

    def __init__(self, num_classes=1000):
        super().__init__()
        input_channel, self.last_channel = 32, 1280
        features = [_conv_bn_relu(3, input_channel, 3, 2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(input_channel, c, s if i == 0 else 1, t))
                input_channel = c
        features.append(_conv_bn_relu(input_channel, self.last_channel, 1, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Linear(self.last_channel, num_classes)
        self._initialize_weights()

    def forward(self, x):
        x = self.features(x)
        x = x.mean(3).mean(2)
        return self.classifier(x)

    def _initialize_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, math.sqrt(2. / n))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


_TV_BLOCK = re.compile(r'^features\.(\d+)\.conv\.(\d+)(?:\.(\d+))?\.(.+)$')


def from_torchvision_keys(state_dict):
    """Rename a torchvision MobileNetV2 state dict to this module's names (see module docstring)."""
    out = {}
    for key, value in state_dict.items():
        m = _TV_BLOCK.match(key)
        if m:
            idx, group, sub, rest = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            if idx == 1:  # expand ratio 1: [dw conv-bn-relu] pw conv, bn
                flat = {(0, '0'): 0, (0, '1'): 1, (1, None): 3, (2, None): 4}[(group, sub)]
            else:  # [pw conv-bn-relu] [dw conv-bn-relu] pw conv, bn
                flat = {(0, '0'): 0, (0, '1'): 1, (1, '0'): 3, (1, '1'): 4, (2, None): 6, (3, None): 7}[(group, sub)]
            key = 'features.{}.conv.{}.{}'.format(idx, flat, rest)
        elif key.startswith('classifier.1.'):
            key = 'classifier.' + key[len('classifier.1.'):]
        out[key] = value
    return out


def mobilenet_v2(num_classes=1000):
    return MobileNetV2(num_classes=num_classes)
