"""TSN / TSM / LSNet video classifier: a 2D backbone applied per frame plus segment consensus.

Inside the model a batch is ``(N*T, C, H, W)``; temporal modules (shift, non-local, temporal pool,
long-short) reshape to ``(N, T, ...)`` themselves. State-dict keys match the official TSM
checkpoints (``base_model.*``, ``new_fc.*``).
"""
import inspect
import logging

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ops.backbones import build_backbone
from ops.basic_ops import ConsensusModule
from ops.errors import LSNetError
from ops.long_short import DEFAULT_TAP_INIT, normalize_branches, normalize_stages

log = logging.getLogger(__name__)

MODALITIES = ('RGB', 'Flow', 'RGBDiff')
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def _in_submodule(qualified_name, names):
    """True when a dotted module path passes through a child called one of ``names``."""
    return any(part in names for part in qualified_name.split('.'))


class TSN(nn.Module):
    """Video classifier over ``T = num_segments`` segments per clip.

    ``forward(x)``: ``x`` has ``N·T·sample_len·H·W`` elements with ``H, W`` last (``(N, T·L·C, H, W)``
    or ``(N, T, L·C, H, W)``); returns ``(N, num_class)`` raw logits for ``avg`` consensus or
    ``(N, T', num_class)`` for ``identity`` (``T' = T/2`` with temporal pool).
    """

    def __init__(self, num_class, num_segments, modality='RGB', base_model='resnet50', new_length=None,
                 consensus_type='avg', before_softmax=True, dropout=0.8, crop_num=1, partial_bn=True,
                 pretrain='imagenet', is_shift=False, shift_div=8, shift_place='blockres', fc_lr5=False,
                 temporal_pool=False, non_local=False, input_size=224, shift_mode='fast',
                 lsm=False, lsm_reduction=16, lsm_groups=4, lsm_branches=('short', 'long'),
                 lsm_short_stages=(1, 2, 3, 4), lsm_long_stages=(1, 2, 3, 4), lsm_tap_init=DEFAULT_TAP_INIT):
        super().__init__()
        if modality not in MODALITIES:
            raise LSNetError('unknown modality {!r} (choose from {})'.format(modality, ', '.join(MODALITIES)))
        if num_segments < 1:
            raise LSNetError('--num_segments must be >= 1 (got {})'.format(num_segments))
        if not before_softmax and consensus_type != 'avg':
            raise LSNetError('only avg consensus can be used after softmax (--consensus_type {})'
                             .format(consensus_type))
        if shift_mode not in ('fast', 'lean'):
            raise LSNetError("unknown --shift_mode {!r} (choose from fast, lean)".format(shift_mode))
        if lsm and not is_shift:
            raise LSNetError('--lsm requires --shift (the long-short module sits in the shifted blocks)')
        self._kwargs = dict(
            num_class=num_class, num_segments=num_segments, modality=modality, base_model=base_model,
            new_length=new_length, consensus_type=consensus_type, before_softmax=before_softmax,
            dropout=dropout, crop_num=crop_num, partial_bn=partial_bn, pretrain=pretrain,
            is_shift=is_shift, shift_div=shift_div, shift_place=shift_place, fc_lr5=fc_lr5,
            temporal_pool=temporal_pool, non_local=non_local, input_size=input_size,
            shift_mode=shift_mode, lsm=lsm, lsm_reduction=lsm_reduction, lsm_groups=lsm_groups,
            lsm_branches=list(normalize_branches(lsm_branches)) if lsm else list(lsm_branches),
            lsm_short_stages=list(normalize_stages(lsm_short_stages, '--lsm_short_stages')),
            lsm_long_stages=list(normalize_stages(lsm_long_stages, '--lsm_long_stages')),
            lsm_tap_init=lsm_tap_init)
        self.num_class = num_class
        self.num_segments = num_segments
        self.modality = modality
        self.new_length = (1 if modality == 'RGB' else 5) if new_length is None else new_length
        self.base_model_name = base_model
        self.consensus_type = consensus_type
        self.before_softmax = before_softmax
        self.dropout = dropout
        self.crop_num = crop_num
        self.pretrain = pretrain
        self.is_shift = is_shift
        self.shift_div = shift_div
        self.shift_place = shift_place
        self.shift_mode = shift_mode
        self.fc_lr5 = fc_lr5
        self.temporal_pool = temporal_pool
        self.non_local = non_local
        self.lsm = lsm
        self.input_size = input_size

        self._prepare_base_model(base_model)
        self._prepare_tsn(num_class)
        if modality == 'Flow':
            self._replace_first_conv(2 * self.new_length)
        elif modality == 'RGBDiff':
            self._replace_first_conv(3 * self.new_length)
        self.consensus = ConsensusModule(consensus_type)
        self.softmax = None if before_softmax else nn.Softmax(dim=1)
        self._enable_pbn = False
        self.partialBN(partial_bn)

    # ----------------------------------------------------------------- construction
    def _prepare_base_model(self, arch):
        self.base_model, self._last_layer_name = build_backbone(arch, self.pretrain)
        from ops.temporal_shift import make_temporal_pool, make_temporal_shift, stage_segments
        if self.is_shift:
            make_temporal_shift(self.base_model, self.num_segments, n_div=self.shift_div,
                                place=self.shift_place, temporal_pool=self.temporal_pool, mode=self.shift_mode)
            if self.lsm:
                from ops.long_short import make_long_short
                make_long_short(self.base_model, arch, self.num_segments, self._kwargs['lsm_reduction'],
                                self._kwargs['lsm_groups'], tuple(self._kwargs['lsm_branches']),
                                self._kwargs['lsm_short_stages'], self._kwargs['lsm_long_stages'],
                                self._kwargs['lsm_tap_init'])
        if self.non_local:
            from ops.non_local import make_non_local
            make_non_local(self.base_model, self.num_segments,
                           stage_segments(self.num_segments, self.temporal_pool))
        if self.temporal_pool:
            make_temporal_pool(self.base_model, self.num_segments)

        self.input_mean = list(IMAGENET_MEAN)
        self.input_std = list(IMAGENET_STD)
        mean_std = float(sum(IMAGENET_STD) / len(IMAGENET_STD))
        if self.modality == 'Flow':
            self.input_mean = [0.5]
            self.input_std = [mean_std]
        elif self.modality == 'RGBDiff':
            self.input_mean = IMAGENET_MEAN + [0.0] * 3 * self.new_length
            self.input_std = IMAGENET_STD + [mean_std * 2] * 3 * self.new_length

    def _prepare_tsn(self, num_class):
        last = getattr(self.base_model, self._last_layer_name)
        feature_dim = last.in_features
        # the backbone's classifier becomes dropout; new_fc is the head (keys new_fc.*)
        setattr(self.base_model, self._last_layer_name,
                nn.Dropout(p=self.dropout) if self.dropout > 0 else nn.Identity())
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
        return self.num_segments // 2 if self.temporal_pool else self.num_segments

    def config(self):
        """JSON-serialisable constructor kwargs; ``TSN(**config())`` rebuilds this architecture."""
        return dict(self._kwargs)

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
    def get_optim_policies(self):
        """Parameter groups ``{'params', 'lr_mult', 'decay_mult', 'name'}``, each parameter once.

        Convs (any dimension): first conv weight/bias, then normal weight/bias; Linear layers other
        than ``new_fc`` are normal; normalisation layers go to ``BN scale/shift`` (with partial BN
        only those it does not freeze); parameters of any other module type go to ``custom_ops``.
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
                head = m is self.new_fc and self.fc_lr5
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

    def forward(self, x):
        h, w = x.shape[-2:]
        per_clip = self.num_segments * self.input_channels * h * w
        if x.numel() == 0 or x.numel() % per_clip:
            raise ValueError('input of shape {} does not hold whole clips of {} segments x {} channels'
                             .format(tuple(x.shape), self.num_segments, self.input_channels))
        x = x.reshape(-1, self.input_channels, h, w)
        if self.modality == 'RGBDiff':
            x = self._get_diff(x)
        out = self.new_fc(self.base_model(x))
        if self.softmax is not None:
            out = self.softmax(out)
        out = self.consensus(out.view(-1, self.output_segments, out.size(-1)))
        return out.squeeze(1) if self.consensus.consensus_type == 'avg' else out


def build_model_from_config(cfg, **overrides):
    """Build a :class:`TSN` from :meth:`TSN.config` output; ``overrides`` win (e.g. ``pretrain='none'``)."""
    kwargs = dict(cfg or {})
    kwargs.update(overrides)
    known = set(inspect.signature(TSN.__init__).parameters) - {'self'}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        log.warning('ignoring unknown model config keys: %s', ', '.join(unknown))
    kwargs = {k: v for k, v in kwargs.items() if k in known}
    for required in ('num_class', 'num_segments'):
        if required not in kwargs:
            raise LSNetError('model config lacks {!r}'.format(required))
    return TSN(**kwargs)
