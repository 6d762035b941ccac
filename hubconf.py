"""torch.hub entry points: TSN, TSM and LSNet video classifiers, with model-zoo weights if asked.

    repo = 'path/to/LSNet'  # or 'OWNER/LSNet' with source='github'
    name = 'TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth'
    model = torch.hub.load(repo, 'tsm', source='local', pretrained=name)
    prep = torch.hub.load(repo, 'preprocessing', model, source='local')
    logits = model(prep(clip)[None])  # clip: uint8 (T, 3, H, W), T = model.num_segments -> (1, 400)

A model takes ``(N, T·3, H, W)`` float clips (RGB) and returns ``(N, num_class)`` logits; it comes
back in eval mode on the CPU. ``pretrained`` is a model-zoo name (``tools/download_pretrained.py
--list``; downloaded and verified once into ``torch.hub.get_dir()/checkpoints``) or a checkpoint
path; ``None`` gives fresh weights (random, or ImageNet with ``pretrain='imagenet'``).
"""
import os

dependencies = ['torch', 'torchvision']

# what each entry point fixes; the other ModelConfig fields are keyword arguments
_KINDS = {'tsn': dict(shift=False, lsm=False), 'tsm': dict(shift=True, lsm=False), 'lsnet': dict(shift=True, lsm=True)}
# fields a checkpoint may differ in from the model asked for: segments (a TSM runs at any count, as
# the reference tests its 5-segment TSN at 8) and what changes training or speed, not the weights
_FREE = ('num_segments', 'dropout', 'input_size', 'pretrain', 'shift_mode')


def tsn(arch='resnet50', num_segments=8, num_class=400, pretrained=None, base_url=None, **config_fields):
    """TSN: a 2D ``arch`` over ``num_segments`` segments, logits averaged. ``config_fields`` are
    further :class:`ops.config.ModelConfig` fields; ``base_url`` a mirror of the model zoo."""
    return _model('tsn', arch, num_segments, num_class, pretrained, base_url, config_fields)


def tsm(arch='resnet50', num_segments=8, num_class=400, pretrained=None, base_url=None, **config_fields):
    """TSM: TSN plus the temporal shift (``shift_div``, ``shift_place``, ``temporal_pool``,
    ``non_local`` among ``config_fields``). Arguments as :func:`tsn`."""
    return _model('tsm', arch, num_segments, num_class, pretrained, base_url, config_fields)


def lsnet(arch='resnet50', num_segments=8, num_class=400, pretrained=None, base_url=None, **config_fields):
    """LSNet: TSM plus the long-short module (``lsm_*`` among ``config_fields``). A TSM checkpoint
    as ``pretrained`` fills everything but the new ``.lsm.`` modules (the model then equals that TSM)."""
    return _model('lsnet', arch, num_segments, num_class, pretrained, base_url, config_fields)


def preprocessing(model, test_crops=1):
    """The model's test transform: uint8 clip ``(T, C, H, W)`` (frames in time order) → float
    ``(K·T·C, h, w)``, normalised, ``h = w = model.crop_size`` (short side to ``model.scale_size``,
    then ``test_crops`` K crops: 1 centre crop by default). Stack clips for a batch."""
    from ops.transforms import build_transform
    return _Flatten(build_transform('test', modality=model.modality, new_length=model.new_length,
                                    crop_size=model.crop_size, scale_size=model.scale_size,
                                    mean=model.input_mean, std=model.input_std, test_crops=test_crops))


class _Flatten:
    """A clip transform with its ``(K·T, C, h, w)`` output folded into ``(K·T·C, h, w)``."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, clip):
        out = self.transform(clip)
        return out.reshape(-1, *out.shape[-2:])

    def __repr__(self):
        return 'preprocessing({!r})'.format(self.transform)


def _model(kind, arch, num_segments, num_class, pretrained, base_url, config_fields):
    from ops.checkpoint import load_checkpoint, load_weights
    from ops.config import ModelConfig, config_from_checkpoint
    from ops.errors import LSNetError
    from ops.models import build_model
    fixed = _KINDS[kind]
    clash = sorted(set(fixed) & set(config_fields))
    if clash:
        raise LSNetError('{}() sets {} itself'.format(kind, ', '.join(clash)))
    fields = dict(dict(pretrain='none'), **config_fields, **fixed)
    if pretrained is not None:
        fields['pretrain'] = 'none'  # the file replaces every backbone weight: download nothing else
    cfg = ModelConfig(num_class=num_class, num_segments=num_segments, arch=arch, **fields)
    if pretrained is None:
        return build_model(cfg).eval()
    path = _weights_path(pretrained, base_url)
    ckpt = load_checkpoint(path)
    _check_fits(kind, path, config_from_checkpoint(path, ckpt, pretrain='none'), cfg)
    model = build_model(cfg)
    load_weights(model, ckpt, finetune=False, source=path)
    return model.eval()


def _check_fits(kind, path, stored, cfg):
    """Raise unless checkpoint config ``stored`` describes the model ``cfg`` asks for, up to
    :data:`_FREE` (and the long-short fields, for a TSM file loaded into an LSNet)."""
    from ops.config import ModelConfig
    from ops.errors import LSNetError
    free = set(_FREE)
    if not stored.lsm:
        free |= {f for f in ModelConfig.ARCHITECTURE if f.startswith('lsm_')} | ({'lsm'} if cfg.lsm else set())
    diff = [d for d in stored.differences(cfg, ModelConfig.ARCHITECTURE) if d[0] not in free]
    stored_kind = 'lsnet' if stored.lsm else 'tsm' if stored.shift else 'tsn'
    if any(f in ('shift', 'lsm') for f, _, _ in diff):
        raise LSNetError("{} holds a {} model: load it with '{}', not '{}'".format(
            path, stored_kind.upper(), stored_kind, kind))
    if diff:
        raise LSNetError('{} holds a model with {}, not {} as asked: pass {}'.format(
            path, ', '.join('{}={!r}'.format(f, a) for f, a, _ in diff),
            ', '.join('{}={!r}'.format(f, b) for f, _, b in diff),
            ', '.join('{}={!r}'.format(f, a) for f, a, _ in diff)))


def _weights_path(pretrained, base_url):
    """A checkpoint path as given, or a model-zoo name downloaded (once) into torch hub's cache."""
    import torch
    from ops import model_zoo
    from ops.errors import LSNetError
    if os.path.isfile(pretrained):
        return pretrained
    try:
        entry = model_zoo.find(pretrained)
    except LSNetError:
        raise LSNetError('pretrained={!r} is neither a checkpoint file nor a model-zoo name (see the names with: {})'
                         .format(pretrained, model_zoo.LIST_HINT)) from None
    folder = os.path.join(torch.hub.get_dir(), 'checkpoints')
    return model_zoo.download(entry, folder, base_url=base_url)[0]
