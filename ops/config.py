"""The model configuration: every architecture field once, with its flag's name.

``ModelConfig`` is what ``build_model`` builds, what a checkpoint stores (``cfg.to_dict()`` under
``'config'``), what ``--resume`` compares field by field, and what an official TSM file name
describes.  The fields are named after the ``opts.py`` flags (``arch``, ``num_segments``,
``shift_div``, ...), so a flag, a config field and a checkpoint entry are one name.

Checkpoints written before this module stored the ``TSN`` constructor keywords (``base_model``,
``is_shift``, ``fc_lr5``, ...); :meth:`ModelConfig.from_dict` reads them with a one-line notice.
"""
import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from typing import Tuple

from ops.errors import LSNetError
from ops.long_short import BRANCHES, DEFAULT_TAP_INIT, STAGES, TAP_INITS, normalize_branches, normalize_stages

log = logging.getLogger(__name__)

MODALITIES = ('RGB', 'Flow', 'RGBDiff')
CONSENSUS_TYPES = ('avg', 'identity')
SHIFT_PLACES = ('blockres', 'block')
SHIFT_MODES = ('fast', 'lean')
SHIFT_DIRECTIONS = ('bi', 'uni')
PRETRAIN_CHOICES = ('imagenet', 'none')

# Keys of the old (TSN keyword) checkpoint configs: renamed, or dropped because they were training
# policies, not architecture (fc_lr5, partial_bn) or constants (new_length, crop_num, before_softmax).
_LEGACY_NAMES = {'base_model': 'arch', 'is_shift': 'shift'}
_LEGACY_DROPPED = ('fc_lr5', 'partial_bn', 'new_length', 'crop_num', 'before_softmax')


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a TSN / TSM / LSNet model (see the flags of the same names in ``opts.py``)."""
    num_class: int
    num_segments: int
    modality: str = 'RGB'
    arch: str = 'resnet50'
    consensus_type: str = 'avg'
    dropout: float = 0.5
    input_size: int = 224
    pretrain: str = 'imagenet'
    shift: bool = False
    shift_div: int = 8
    shift_place: str = 'blockres'
    shift_mode: str = 'fast'
    shift_direction: str = 'bi'
    temporal_pool: bool = False
    non_local: bool = False
    lsm: bool = False
    lsm_reduction: int = 16
    lsm_groups: int = 4
    lsm_branches: Tuple[str, ...] = BRANCHES
    lsm_short_stages: Tuple[int, ...] = STAGES
    lsm_long_stages: Tuple[int, ...] = STAGES
    lsm_tap_init: str = DEFAULT_TAP_INIT

    # Fields that change the network a checkpoint's weights belong to (--resume must keep them).
    # dropout, input_size, pretrain and shift_mode change training or speed, not the weights' meaning.
    ARCHITECTURE = ('num_class', 'num_segments', 'modality', 'arch', 'consensus_type', 'shift', 'shift_div',
                    'shift_place', 'shift_direction', 'temporal_pool', 'non_local', 'lsm', 'lsm_reduction', 'lsm_groups',
                    'lsm_branches', 'lsm_short_stages', 'lsm_long_stages', 'lsm_tap_init')

    def __post_init__(self):
        # sequences arrive as lists (JSON, argparse) or strings ('3,4'); keep one normal form
        object.__setattr__(self, 'lsm_branches', normalize_branches(self.lsm_branches))
        object.__setattr__(self, 'lsm_short_stages', normalize_stages(self.lsm_short_stages, '--lsm_short_stages'))
        object.__setattr__(self, 'lsm_long_stages', normalize_stages(self.lsm_long_stages, '--lsm_long_stages'))
        self.validate()

    def validate(self):
        """Raise an :class:`LSNetError` naming the flags of the first combination that cannot be built."""
        def choice(flag, value, choices):
            if value not in choices:
                raise LSNetError('{} {!r}: choose from {}'.format(flag, value, ', '.join(choices)))
        choice('modality', self.modality, MODALITIES)
        choice('--consensus_type', self.consensus_type, CONSENSUS_TYPES)
        choice('--shift_place', self.shift_place, SHIFT_PLACES)
        choice('--shift_mode', self.shift_mode, SHIFT_MODES)
        choice('--shift_direction', self.shift_direction, SHIFT_DIRECTIONS)
        choice('--pretrain', self.pretrain, PRETRAIN_CHOICES)
        choice('--lsm_tap_init', self.lsm_tap_init, TAP_INITS)
        if self.num_class is None or self.num_class < 1:
            raise LSNetError('the model needs at least one class (got {})'.format(self.num_class))
        if self.num_segments < 1:
            raise LSNetError('--num_segments must be at least 1 (got {})'.format(self.num_segments))
        if self.input_size < 16:
            raise LSNetError('--input_size must be at least 16 (got {})'.format(self.input_size))
        if not 0 <= self.dropout < 1:
            raise LSNetError('--dropout must lie in [0, 1) (got {})'.format(self.dropout))
        if self.shift and self.shift_div < 2:
            raise LSNetError('--shift_div must be at least 2 (got {}): 1/shift_div of the channels move each way'
                             .format(self.shift_div))
        resnet = self.arch.startswith('resnet')
        if self.temporal_pool and self.num_segments % 2:
            raise LSNetError('--temporal_pool needs an even --num_segments (got {})'.format(self.num_segments))
        if self.temporal_pool and not resnet:
            raise LSNetError('--temporal_pool needs a ResNet --arch (got {})'.format(self.arch))
        if self.non_local and not resnet:
            raise LSNetError('--non_local needs a ResNet --arch (got {})'.format(self.arch))
        if self.shift and not resnet and self.shift_place != 'blockres':
            raise LSNetError('--arch {} supports only --shift_place blockres (got {})'.format(self.arch, self.shift_place))
        if self.causal:
            if not self.shift:
                raise LSNetError('--shift_direction uni needs --shift: it makes the temporal shift causal')
            for flag, on in (('--non_local', self.non_local), ('--temporal_pool', self.temporal_pool)):
                if on:
                    raise LSNetError('--shift_direction uni with {}: that module reads future frames, so the '
                                     'model cannot run online'.format(flag))
            if self.consensus_type != 'avg':
                raise LSNetError('--shift_direction uni needs --consensus_type avg (got {})'.format(self.consensus_type))
        if self.lsm and not self.shift:
            raise LSNetError('--lsm needs --shift: the long-short module goes into the shifted blocks')
        for flag, value in (('--lsm_reduction', self.lsm_reduction), ('--lsm_groups', self.lsm_groups)):
            if self.lsm and value < 1:
                raise LSNetError('{} must be at least 1 (got {})'.format(flag, value))

    # ------------------------------------------------------------------ derived quantities
    @property
    def new_length(self):
        """Frames per segment: 1 for RGB, 5 for Flow (x/y pairs) and RGBDiff (differences)."""
        return 1 if self.modality == 'RGB' else 5

    @property
    def causal(self):
        """True for an online model (``--shift_direction uni``): frame ``t`` never reads a later frame."""
        return self.shift_direction == 'uni'

    def replace(self, **changes):
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def differences(self, other, fields=ARCHITECTURE):
        """``[(field, self value, other value)]`` of the ``fields`` where the two configs differ."""
        return [(f, getattr(self, f), getattr(other, f)) for f in fields if getattr(self, f) != getattr(other, f)]

    # ------------------------------------------------------------------ conversions
    def to_dict(self):
        """JSON-friendly dict (tuples as lists); ``ModelConfig.from_dict(cfg.to_dict()) == cfg``."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def field_names(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d, source='model config', **overrides):
        """Config from a stored dict (ours, or the TSN keywords of older checkpoints); ``overrides`` win.

        Unknown keys raise; legacy keys are renamed or dropped with one notice.
        """
        d = dict(d)
        legacy = sorted(k for k in d if k in _LEGACY_NAMES or k in _LEGACY_DROPPED)
        for old, new in _LEGACY_NAMES.items():
            if old in d:
                d.setdefault(new, d.pop(old))
        for k in _LEGACY_DROPPED:
            d.pop(k, None)
        if legacy:
            log.info('%s: read an older config (keys %s); it is converted on load', source, ', '.join(legacy))
        d.update(overrides)
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise LSNetError('{}: unknown model config keys {}'.format(source, ', '.join(unknown)))
        missing = [k for k in ('num_class', 'num_segments') if d.get(k) is None]
        if missing:
            raise LSNetError('{}: model config lacks {}'.format(source, ', '.join(missing)))
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:  # a hand-edited file: num_segments='x', a list for a number, ...
            raise LSNetError('{}: model config has a value of the wrong type ({})'.format(source, e)) from None

    @classmethod
    def from_args(cls, args, num_class):
        """Config from parsed ``main.py`` flags (``num_class`` comes from the dataset)."""
        return cls(num_class=num_class, num_segments=args.num_segments, modality=args.modality, arch=args.arch,
                   consensus_type=args.consensus_type, dropout=args.dropout, input_size=args.input_size,
                   pretrain=args.pretrain, shift=args.shift, shift_div=args.shift_div,
                   shift_place=args.shift_place, shift_mode=args.shift_mode,
                   shift_direction=args.shift_direction, temporal_pool=args.temporal_pool,
                   non_local=args.non_local, lsm=args.lsm, lsm_reduction=args.lsm_reduction,
                   lsm_groups=args.lsm_groups, lsm_branches=args.lsm_branches,
                   lsm_short_stages=args.lsm_short_stages, lsm_long_stages=args.lsm_long_stages,
                   lsm_tap_init=args.lsm_tap_init)


# ---------------------------------------------------------------------- run names

def store_name(cfg, dataset, epochs, lr_type='step', dense_sample=False, suffix=None):
    """Run folder name, as the TSM reference builds it (plus ``_lsm`` for LSNet models).

    e.g. ``TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50``; :func:`parse_weight_name`
    reads it back.
    """
    arch = cfg.arch
    if cfg.shift:
        arch += '_shift{}_{}'.format(cfg.shift_div, cfg.shift_place)
        if cfg.causal:
            arch += '_uni'
    if cfg.temporal_pool:
        arch += '_tpool'
    if cfg.lsm:
        arch += '_lsm'
    name = '_'.join(['TSM', dataset, cfg.modality, arch, cfg.consensus_type,
                     'segment{}'.format(cfg.num_segments), 'e{}'.format(epochs)])
    if cfg.pretrain != 'imagenet':
        name += '_{}'.format(cfg.pretrain)
    if lr_type != 'step':
        name += '_{}'.format(lr_type)
    if dense_sample:
        name += '_dense'
    if cfg.non_local:
        name += '_nl'
    if suffix is not None:
        name += '_{}'.format(suffix)
    return name


_EXTS = ('.pth.tar', '.pth', '.tar', '.pt')
_EXPECTED = 'TSM_{dataset}_{modality}_{arch}[_shift{div}_{place}[_uni]]_{consensus}_segment{T}_e{E}[_dense][_nl].pth'


def parse_weight_name(filename):
    """``(dataset, fields)`` read off an official weight file name; ``fields`` are ModelConfig fields.

    Only the file name is parsed, never its folder.  Pattern: ``TSM_{dataset}_{modality}_{arch}
    [_shift{div}_{place}[_uni]][_tpool][_lsm]_{consensus}_segment{T}_e{E}[_{pretrain}][_{lr_type}][_dense]
    [_nl][_{suffix}].pth``.  ``num_class`` is not in a name: it comes from the weights.
    """
    base = os.path.basename(filename)
    stem = base
    for ext in _EXTS:
        if stem.endswith(ext):
            stem = stem[:-len(ext)]
            break
    if 'TSM_' not in stem:
        raise LSNetError('cannot read the model configuration from file name {!r}: expected {} '
                         '(or a checkpoint saved by main.py, which stores its config)'.format(base, _EXPECTED))
    tokens = stem.split('TSM_', 1)[1].split('_')
    seg_idx = next((i for i, t in enumerate(tokens) if re.fullmatch(r'segment\d+', t)), None)
    if len(tokens) < 5 or seg_idx is None or seg_idx < 4:
        raise LSNetError('cannot read the model configuration from file name {!r}: expected {}'.format(base, _EXPECTED))
    dataset, modality_tok, arch = tokens[0], tokens[1], tokens[2]
    modality = modality_tok if modality_tok in MODALITIES else ('RGB' if 'RGB' in modality_tok else 'Flow')
    head = tokens[3:seg_idx - 1]      # between arch and consensus: shift / tpool / lsm tokens
    tail = tokens[seg_idx + 1:]       # after segment{T}: e{E}, pretrain, lr type, dense, nl, suffix
    shift, shift_div, shift_place = False, 8, 'blockres'
    for i, t in enumerate(head):
        m = re.fullmatch(r'shift(\d+)', t)
        if m:
            shift, shift_div = True, int(m.group(1))
            if i + 1 < len(head):
                shift_place = head[i + 1]
            break
    if 'shift' in stem and (not shift or shift_div < 2):
        raise LSNetError('cannot read the shift from file name {!r}: expected a token shift<div> with div >= 2 '
                         'followed by the place, as in {}'.format(base, _EXPECTED))
    return dataset, {
        'modality': modality, 'arch': arch, 'num_segments': int(tokens[seg_idx][len('segment'):]),
        'consensus_type': tokens[seg_idx - 1], 'shift': shift, 'shift_div': shift_div, 'shift_place': shift_place,
        'shift_direction': 'uni' if 'uni' in head else 'bi',
        'temporal_pool': 'tpool' in head, 'non_local': 'nl' in tail, 'lsm': 'lsm' in head,
    }


def config_from_checkpoint(path, ckpt, num_class=None, **overrides):
    """The ModelConfig of a loaded checkpoint: its stored ``config`` (ours), else its official file
    name; the class count from the config, else ``num_class``, else the classifier's weight."""
    stored = ckpt.get('config')
    if isinstance(stored, dict):
        fields = dict(stored)
        if fields.get('input_size') is None and ckpt.get('input_size'):  # older checkpoints kept it beside
            fields['input_size'] = ckpt['input_size']
    else:
        fields = parse_weight_name(path)[1]
    if fields.get('num_class') is None:
        fields['num_class'] = num_class or classifier_classes(ckpt.get('state_dict', {}))
        if fields['num_class'] is None:
            raise LSNetError('{}: cannot tell the number of classes (no config, no new_fc.weight)'.format(path))
    return ModelConfig.from_dict(fields, source=path, **overrides)


def classifier_classes(state_dict):
    """Rows of the classifier weight in a state dict (any of the official key spellings), or None."""
    for key in ('new_fc.weight', 'module.new_fc.weight', 'base_model.classifier.weight',
                'module.base_model.classifier.weight'):
        if key in state_dict:
            return int(state_dict[key].shape[0])
    return None


