"""Checkpoint files in the official TSM layout: load safely, match keys to a model, save atomically.

A checkpoint is a dict with ``epoch``, ``arch``, ``state_dict`` (keys with the ``module.`` prefix of
``nn.DataParallel``), ``optimizer``, ``best_prec1`` and, in ours, ``config`` (the model's
:class:`ops.config.ModelConfig` as a dict).  :func:`load_model` is the one way from a checkpoint
file (ours or an official TSM file) to a ready model. Loading always uses ``weights_only=True``; the only non-tensor globals
allowed are the numpy scalar pieces that the reference's ``main.py`` writes (its step schedule
stores the learning rate as a numpy float64 in the optimizer entry).
"""
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from ops.errors import LSNetError

log = logging.getLogger(__name__)

PREFIX = 'module.'


def _numpy_scalar_globals():
    """The globals a pickled ``numpy.float64`` needs, under both numpy 1.x and 2.x module paths."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    allowed = [scalar, (scalar, 'numpy.core.multiarray.scalar'), (scalar, 'numpy._core.multiarray.scalar'),
               np.dtype]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:  # numpy >= 1.25 names the dtype classes
        allowed.append(dtypes.Float64DType)
    return allowed


def _unpickler_detail(exc):
    """The line after torch's 'WeightsUnpickler error:' (e.g. 'Unsupported operand 110'); never
    torch's advice to retry with unrestricted unpickling, which is wrong for a damaged file."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.startswith('WeightsUnpickler error'):
            return lines[i + 1]
    lines = [line for line in lines if 'weights_only' not in line]
    return lines[0] if lines else 'not a readable pickle'


def load_checkpoint(path):
    """Read a checkpoint with ``weights_only=True``; a bare state dict comes back as ``{'state_dict': sd}``."""
    if not os.path.exists(path):
        raise LSNetError('checkpoint not found: {}'.format(path))
    if os.path.isdir(path):
        raise LSNetError('checkpoint path is a directory: {}'.format(path))
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if 'GLOBAL' in line), None)
        if detail is None:  # not a pickle of any kind
            raise LSNetError('cannot read checkpoint {} (corrupt or not a torch file): {}'
                             .format(path, _unpickler_detail(exc))) from None
        raise LSNetError('refusing to load {}: it holds objects outside the weights_only allow-list ({})'
                         .format(path, detail)) from None
    except Exception as exc:  # whatever a damaged or foreign file makes the unpickler raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LSNetError('cannot read checkpoint {} (corrupt or not a torch file): {}'.format(path, msg)) from None
    if not isinstance(obj, dict):
        raise LSNetError('checkpoint {} holds a {}, not a dict'.format(path, type(obj).__name__))
    if 'state_dict' not in obj:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {'state_dict': obj}
        raise LSNetError('checkpoint {} has no state_dict entry (top-level keys: {})'
                         .format(path, ', '.join(map(str, list(obj)[:8]))))
    return obj


def strip_module_prefix(sd):
    """Drop a leading ``module.`` from every key (keys without it are kept)."""
    return {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in sd.items()}


def add_module_prefix(sd):
    """Give every key the ``module.`` prefix of the official files (never twice)."""
    return {(k if k.startswith(PREFIX) else PREFIX + k): v for k, v in sd.items()}


def _canonical(key):
    """Key without the wrapper segments ``net`` (TemporalShift/TemporalPool): TSN ↔ TSM naming."""
    return '.'.join(part for part in key.split('.') if part != 'net')


def _is_lsm(key):
    return '.lsm.' in key or key.startswith('lsm.')


@dataclass
class LoadReport:
    """What :func:`load_weights` did, by key name (model names)."""
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    renamed: list = field(default_factory=list)  # (file key, model key)
    source: str = ''

    def summary(self):
        parts = ['{}: loaded {} tensors'.format(self.source, len(self.loaded))]
        if self.renamed:
            parts.append('renamed {}'.format(len(self.renamed)))
        if self.dropped:
            parts.append('dropped {} ({})'.format(len(self.dropped), ', '.join(self.dropped)))
        if self.missing:
            parts.append('missing {} ({}{})'.format(len(self.missing), ', '.join(self.missing[:4]),
                                                   ', ...' if len(self.missing) > 4 else ''))
        if self.unexpected:
            parts.append('unexpected {} ({}{})'.format(len(self.unexpected), ', '.join(self.unexpected[:4]),
                                                      ', ...' if len(self.unexpected) > 4 else ''))
        return '; '.join(parts)


def _unwrap(model):
    return model.module if hasattr(model, 'module') and isinstance(model.module, torch.nn.Module) else model


def _shape(t):
    return list(t.shape)


def load_weights(model, ckpt_or_state_dict, finetune=False, source='<checkpoint>', drop_classifier=False):
    """Load a checkpoint dict or state dict into ``model`` (a TSN, possibly DDP/DataParallel-wrapped).

    Handles the ``module.`` prefix, ``base_model.classifier.*`` → ``new_fc.*`` and the ``.net``
    segments that differ between TSN and TSM files. ``finetune=True`` drops ``new_fc.*`` when its
    shape differs (and the first conv when its input channels differ, e.g. RGB weights for a Flow
    model, which keeps its averaged-kernel init) and tolerates missing/unexpected keys (reported).
    ``drop_classifier=True`` (fine-tuning on another dataset) drops ``new_fc.*`` whatever its shape.
    A fine-tuning source that supplies fewer than half of the backbone's tensors is another
    architecture and raises. Otherwise any shape mismatch, missing key (except LSM modules and BN
    ``num_batches_tracked``) or unexpected key raises an :class:`LSNetError` naming ``source`` and the
    first offending keys.
    """
    target = _unwrap(model)
    model_sd = target.state_dict()
    sd = _file_state_dict(ckpt_or_state_dict, model_sd, source)
    report, to_load, mismatched = _match_keys(target, model_sd, sd, finetune, drop_classifier, source)
    _check_fit(report, mismatched, model_sd, to_load, finetune, source)
    target.load_state_dict(to_load, strict=False)
    log.info('%s', report.summary())
    return report


def _file_state_dict(ckpt_or_state_dict, model_sd, source):
    """The file's state dict in model naming: no ``module.``, the classifier as ``new_fc``."""
    sd = ckpt_or_state_dict.get('state_dict', ckpt_or_state_dict) if isinstance(ckpt_or_state_dict, dict) else None
    if not isinstance(sd, dict):
        raise LSNetError('{} holds no state dict'.format(source))
    sd = strip_module_prefix(sd)
    return {('new_fc.' + k[len('base_model.classifier.'):] if k.startswith('base_model.classifier.')
             and k not in model_sd else k): v for k, v in sd.items()}


def _match_keys(target, model_sd, sd, finetune, drop_classifier, source):
    """Pair each model key with a file key (same name, or same name up to the ``.net`` wrappers);
    returns ``(report, tensors to load, shape mismatches)``."""
    first_conv = next((name + '.weight' for name, m in target.named_modules() if isinstance(m, torch.nn.Conv2d)), None)
    by_canon = {}
    for k in sd:
        by_canon.setdefault(_canonical(k), []).append(k)
    report = LoadReport(source=source)
    to_load, used, mismatched = {}, set(), []
    for mk, mv in model_sd.items():
        fk = mk if mk in sd else None
        if fk is None:
            candidates = [k for k in by_canon.get(_canonical(mk), []) if k not in model_sd]
            if len(candidates) == 1:
                fk = candidates[0]
                report.renamed.append((fk, mk))
        if fk is None:
            report.missing.append(mk)
            continue
        used.add(fk)
        fv = sd[fk]
        if drop_classifier and mk.startswith('new_fc.'):
            report.dropped.append(mk)
        elif _shape(fv) == _shape(mv):
            to_load[mk] = fv
            report.loaded.append(mk)
        elif finetune and (mk.startswith('new_fc.') or mk == first_conv):
            report.dropped.append(mk)  # other classes, or RGB weights for a Flow/RGBDiff model
        else:
            mismatched.append('{} (file {} vs model {})'.format(fk, _shape(fv), _shape(mv)))
    report.unexpected = [k for k in sd if k not in used]
    return report, to_load, mismatched


def _check_fit(report, mismatched, model_sd, to_load, finetune, source):
    """Raise when the file does not fit: any shape mismatch; when fine-tuning, fewer than half of the
    backbone tensors found; otherwise any missing (but LSM / BN counters) or unexpected key."""
    if mismatched:
        hint = ''
        if any(m.startswith('new_fc.') for m in mismatched):
            hint = ' (wrong number of classes? fine-tune with --tune_from to drop the classifier)'
        raise LSNetError('checkpoint {} does not fit the model: shape mismatch for {}{}'
                         .format(source, '; '.join(mismatched[:3]), hint))
    if finetune:
        backbone = [k for k in model_sd if not k.startswith('new_fc.') and not _is_lsm(k)
                    and not k.endswith('num_batches_tracked')]
        found = [k for k in backbone if k in to_load]
        if len(found) * 2 < len(backbone):
            raise LSNetError('checkpoint {} does not fit the model: only {} of its {} backbone tensors match '
                             '(a checkpoint of another --arch or modality?)'.format(source, len(found), len(backbone)))
        return
    bad_missing = [k for k in report.missing if not _is_lsm(k) and not k.endswith('num_batches_tracked')]
    for what, keys in (('missing', bad_missing), ('unexpected', report.unexpected)):
        if keys:
            raise LSNetError('checkpoint {} does not fit the model: {} keys {}{}'.format(
                source, what, ', '.join(keys[:3]), ', ...' if len(keys) > 3 else ''))


def make_checkpoint(model, optimizer=None, epoch=0, best_prec1=0.0, **extra):
    """Checkpoint dict in the official layout plus ``config`` (``model.cfg.to_dict()``) and ``extra`` entries."""
    target = _unwrap(model)
    state = {
        'epoch': int(epoch),
        'arch': target.cfg.arch if hasattr(target, 'cfg') else type(target).__name__,
        'state_dict': add_module_prefix(strip_module_prefix(target.state_dict())),
        'optimizer': optimizer.state_dict() if optimizer is not None else None,
        'best_prec1': float(best_prec1),
    }
    if hasattr(target, 'cfg'):
        state['config'] = target.cfg.to_dict()
    state.update(extra)
    return state


def save_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the checkpoint the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_model(path, device='cpu', num_class=None, **overrides):
    """``(model in eval mode on device, ModelConfig, checkpoint dict)`` for a checkpoint file.

    The configuration is the checkpoint's stored ``config`` (ours) or its official file name; the
    class count comes from the config, else ``num_class``, else the classifier weight.
    ``overrides`` replace config fields (e.g. ``num_segments`` to test at another count,
    ``consensus_type``).  Weights always come from the file, so the backbone is never downloaded.
    """
    from ops.config import config_from_checkpoint
    from ops.models import build_model
    ckpt = load_checkpoint(path)
    cfg = config_from_checkpoint(path, ckpt, num_class=num_class, **dict(overrides, pretrain='none'))
    model = build_model(cfg)
    load_weights(model, ckpt, finetune=False, source=path)
    return model.to(device).eval(), cfg, ckpt
