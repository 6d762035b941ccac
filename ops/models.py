"""TSN / TSM / LSNet video classifier: a 2D backbone applied per frame plus segment consensus.

Inside the model a batch is ``(N*T, C, H, W)``; temporal modules (shift, non-local, temporal pool,
long-short) reshape to ``(N, T, ...)`` themselves. State-dict keys match the official TSM
checkpoints (``base_model.*``, ``new_fc.*``).
"""
import logging

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ops.backbones import build_backbone
from ops.basic_ops import ConsensusModule, running_mean
from ops.config import ModelConfig

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def _in_submodule(qualified_name, names):
    """True when a dotted module path passes through a child called one of ``names``."""
    return any(part in names for part in qualified_name.split('.'))


class TSN(nn.Module):
    """Video classifier over ``T = cfg.num_segments`` segments per clip, built from a :class:`ModelConfig`.

    ``forward(x)``: ``x`` has ``N·T·sample_len·H·W`` elements with ``H, W`` last (``(N, T·L·C, H, W)``
    or ``(N, T, L·C, H, W)``); returns ``(N, num_class)`` raw logits for ``avg`` consensus or
    ``(N, T', num_class)`` for ``identity`` (``T' = T/2`` with temporal pool).
    """

    def __init__(self, cfg):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError('TSN takes a ModelConfig (got {})'.format(type(cfg).__name__))
        self.cfg = cfg
        self.num_class = cfg.num_class
        self.num_segments = cfg.num_segments
        self.modality = cfg.modality
        self.new_length = cfg.new_length
        self.input_size = cfg.input_size

        self.base_model, self._last_layer_name = build_backbone(cfg.arch, cfg.pretrain)
        self._insert_temporal_modules()
        self._prepare_tsn(cfg.num_class)
        if cfg.modality == 'Flow':
            self._replace_first_conv(2 * self.new_length)
        elif cfg.modality == 'RGBDiff':
            self._replace_first_conv(3 * self.new_length)
        self.consensus = ConsensusModule(cfg.consensus_type)
        self.input_mean, self.input_std = input_normalisation(cfg.modality, self.new_length)
        self._enable_pbn = False

    # ----------------------------------------------------------------- construction
    def _insert_temporal_modules(self):
        """Shift (and long-short modules), non-local blocks, temporal pool: in the reference's order."""
        from ops.temporal_shift import make_temporal_pool, make_temporal_shift, stage_segments
        cfg = self.cfg
        if cfg.shift:
            make_temporal_shift(self.base_model, cfg.num_segments, shift_div=cfg.shift_div, place=cfg.shift_place,
                                temporal_pool=cfg.temporal_pool, mode=cfg.shift_mode,
                                direction=cfg.shift_direction)
            if cfg.lsm:
                from ops.long_short import make_long_short
                make_long_short(self.base_model, cfg.arch, cfg.num_segments, cfg.lsm_reduction, cfg.lsm_groups,
                                cfg.lsm_branches, cfg.lsm_short_stages, cfg.lsm_long_stages, cfg.lsm_tap_init,
                                causal=cfg.causal)
        if cfg.non_local:
            from ops.non_local import make_non_local
            make_non_local(self.base_model, cfg.num_segments, stage_segments(cfg.num_segments, cfg.temporal_pool))
        if cfg.temporal_pool:
            make_temporal_pool(self.base_model, cfg.num_segments)

    def _prepare_tsn(self, num_class):
        last = getattr(self.base_model, self._last_layer_name)
        feature_dim = last.in_features
        # the backbone's classifier becomes dropout; new_fc is the head (keys new_fc.*)
        setattr(self.base_model, self._last_layer_name,
                nn.Dropout(p=self.cfg.dropout) if self.cfg.dropout > 0 else nn.Identity())
        self.new_fc = nn.Linear(feature_dim, num_class)
        nn.init.normal_(self.new_fc.weight, 0, 0.001)
        nn.init.constant_(self.new_fc.bias, 0)
        return feature_dim

    def _first_conv(self):
        """``(qualified name, module)`` of the first Conv2d of the backbone."""
        for name, m in self.base_model.named_modules():
            if isinstance(m, nn.Conv2d):
                return name, m
        raise RuntimeError('backbone has no Conv2d')

    def _replace_first_conv(self, in_channels):
        """Rebuild the first conv for ``in_channels`` inputs, each kernel the mean RGB kernel."""
        name, conv = self._first_conv()
        new_conv = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                             bias=conv.bias is not None)
        with torch.no_grad():
            kernel = conv.weight.mean(dim=1, keepdim=True)
            new_conv.weight.copy_(kernel.expand(-1, in_channels, -1, -1))
            if conv.bias is not None:
                new_conv.bias.copy_(conv.bias)
        parent_name, _, attr = name.rpartition('.')
        parent = self.base_model.get_submodule(parent_name) if parent_name else self.base_model
        setattr(parent, attr, new_conv)

    # ----------------------------------------------------------------- properties
    @property
    def crop_size(self):
        return self.input_size

    @property
    def scale_size(self):
        return self.input_size * 256 // 224

    @property
    def input_channels(self):
        """Channels per segment the model reads: 3L (RGB), 2L (Flow), 3(L+1) (RGBDiff)."""
        if self.modality == 'RGB':
            return 3 * self.new_length
        if self.modality == 'Flow':
            return 2 * self.new_length
        return 3 * (self.new_length + 1)

    @property
    def output_segments(self):
        return self.num_segments // 2 if self.cfg.temporal_pool else self.num_segments

    def get_augmentation(self, flip=True):
        from ops import transforms
        return transforms.train_augmentation(self.crop_size, modality=self.modality, flip=flip)

    # ----------------------------------------------------------------- partial BN
    def _partial_bn_targets(self):
        """BatchNorm2d layers that partial BN freezes: all but the first, never those of LSM modules."""
        targets, count = [], 0
        for name, m in self.base_model.named_modules():
            if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)) and not _in_submodule(name, ('lsm', 'nl')):
                count += 1
                if count >= 2:
                    targets.append(m)
        return targets

    def _apply_partial_bn(self):
        for m in self._partial_bn_targets():
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad_(not self._enable_pbn)
            if self._enable_pbn and self.training:
                m.eval()

    def partialBN(self, enable):
        """Freeze (``True``) or release every BatchNorm2d after the first while training."""
        self._enable_pbn = bool(enable)
        if not self._enable_pbn:
            for m in self._partial_bn_targets():
                m.train(self.training)
        self._apply_partial_bn()

    def train(self, mode=True):
        super().train(mode)
        self._apply_partial_bn()
        return self

    # ----------------------------------------------------------------- optimizer groups
    def get_optim_policies(self, fc_lr5=False):
        """Parameter groups ``{'params', 'lr_mult', 'decay_mult', 'name'}``, each parameter once.

        Convs (any dimension): first conv weight/bias, then normal weight/bias; Linear layers other
        than ``new_fc`` are normal; normalisation layers go to ``BN scale/shift`` (with partial BN
        only those it does not freeze); parameters of any other module type go to ``custom_ops``.
        ``fc_lr5``: ``new_fc`` trains at 5x the learning rate (bias 10x), the reference's rule for a
        new classifier on a pretrained backbone.
        """
        first_w, first_b, normal_w, normal_b, bn, custom, lr5_w, lr10_b = ([] for _ in range(8))
        frozen = {id(p) for m in (self._partial_bn_targets() if self._enable_pbn else [])
                  for p in m.parameters(recurse=False)}
        seen = set()
        conv_count = 0
        for m in self.modules():
            params = [(n, p) for n, p in m.named_parameters(recurse=False) if id(p) not in seen]
            if not params:
                continue
            seen.update(id(p) for _, p in params)
            if isinstance(m, _ConvNd):
                conv_count += 1
                for n, p in params:
                    weight = n == 'weight'
                    if conv_count == 1:
                        (first_w if weight else first_b).append(p)
                    else:
                        (normal_w if weight else normal_b).append(p)
            elif isinstance(m, nn.Linear):
                head = m is self.new_fc and fc_lr5
                for n, p in params:
                    if n == 'weight':
                        (lr5_w if head else normal_w).append(p)
                    else:
                        (lr10_b if head else normal_b).append(p)
            elif isinstance(m, _NORM_TYPES):
                bn.extend(p for _, p in params if id(p) not in frozen)
            else:
                custom.extend(p for _, p in params)
        flow = self.modality == 'Flow'
        return [
            {'params': first_w, 'lr_mult': 5 if flow else 1, 'decay_mult': 1, 'name': 'first_conv_weight'},
            {'params': first_b, 'lr_mult': 10 if flow else 2, 'decay_mult': 0, 'name': 'first_conv_bias'},
            {'params': normal_w, 'lr_mult': 1, 'decay_mult': 1, 'name': 'normal_weight'},
            {'params': normal_b, 'lr_mult': 2, 'decay_mult': 0, 'name': 'normal_bias'},
            {'params': bn, 'lr_mult': 1, 'decay_mult': 0, 'name': 'BN scale/shift'},
            {'params': custom, 'lr_mult': 1, 'decay_mult': 1, 'name': 'custom_ops'},
            {'params': lr5_w, 'lr_mult': 5, 'decay_mult': 1, 'name': 'lr5_weight'},
            {'params': lr10_b, 'lr_mult': 10, 'decay_mult': 0, 'name': 'lr10_bias'},
        ]

    # ----------------------------------------------------------------- forward
    def _get_diff(self, x):
        """``(N*T, (L+1)*3, H, W)`` frames → ``(N*T, L*3, H, W)`` consecutive differences."""
        h, w = x.shape[-2:]
        x = x.reshape(-1, self.new_length + 1, 3, h, w)
        return (x[:, 1:] - x[:, :-1]).reshape(-1, 3 * self.new_length, h, w)

    def frame_logits(self, x):
        """Per-segment logits before the consensus: ``(N, T', num_class)`` for input as in :meth:`forward`."""
        h, w = x.shape[-2:]
        per_clip = self.num_segments * self.input_channels * h * w
        if x.numel() == 0 or x.numel() % per_clip:
            raise ValueError('input of shape {} does not hold whole clips of {} segments x {} channels'
                             .format(tuple(x.shape), self.num_segments, self.input_channels))
        x = x.reshape(-1, self.input_channels, h, w)
        if self.modality == 'RGBDiff':
            x = self._get_diff(x)
        out = self.new_fc(self.base_model(x))
        return out.view(-1, self.output_segments, out.size(-1))

    def forward(self, x, prefixes=False):
        """Clip logits after the consensus, ``(N, num_class)`` for ``avg``.

        ``prefixes=True`` (``avg`` consensus; ``--prefix_loss``): ``(N, T', num_class)``, for every
        ``t`` the mean logits of segments ``1..t`` -- what an online recogniser scores once it has seen
        ``t`` of them (:mod:`ops.streaming`); the last prefix is the ``avg`` consensus itself.
        """
        logits = self.frame_logits(x)
        if prefixes:
            return running_mean(logits, dim=1)
        out = self.consensus(logits)
        return out.squeeze(1) if self.consensus.consensus_type == 'avg' else out


def input_normalisation(modality, new_length):
    """``(mean, std)`` per input channel: ImageNet's for RGB, 0.5 / mean std for Flow, RGB plus
    zero-mean differences for RGBDiff."""
    mean_std = float(sum(IMAGENET_STD) / len(IMAGENET_STD))
    if modality == 'Flow':
        return [0.5], [mean_std]
    if modality == 'RGBDiff':
        return IMAGENET_MEAN + [0.0] * 3 * new_length, IMAGENET_STD + [mean_std * 2] * 3 * new_length
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def build_model(cfg):
    """The :class:`TSN` that ``cfg`` (a :class:`ModelConfig`) describes, freshly initialised."""
    return TSN(cfg)
