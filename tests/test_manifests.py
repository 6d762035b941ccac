"""Every official TSM checkpoint kind: our model has exactly its keys and shapes, and loads it."""
import glob
import json
import os

import pytest
import torch

from ops.checkpoint import load_weights
from ops.config import ModelConfig
from ops.models import build_model

MANIFEST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'tsm_ckpt_manifests')
MANIFESTS = sorted(glob.glob(os.path.join(MANIFEST_DIR, '*.json')))
DTYPES = {'float32': torch.float32, 'int64': torch.int64}


def test_manifests_present():
    assert len(MANIFESTS) == 8


@pytest.mark.parametrize('path', MANIFESTS, ids=[os.path.basename(p)[:-5] for p in MANIFESTS])
def test_manifest(path):
    with open(path) as f:
        manifest = json.load(f)
    prefix = manifest['state_dict_key_prefix']
    config = manifest['model_config']  # the reference's TSN keywords: read as an older config
    model = build_model(ModelConfig.from_dict(config, pretrain='none'))
    model.partialBN(config['partial_bn'])
    expected = [(k[len(prefix):], shape, dtype) for k, shape, dtype in manifest['state_dict']]
    got = [(k, list(v.shape), str(v.dtype).replace('torch.', '')) for k, v in model.state_dict().items()]
    assert got == expected  # same keys, same order, same shapes and dtypes

    groups = [(g['name'], g['lr_mult'], g['decay_mult'], len(g['params'])) for g in model.get_optim_policies(fc_lr5=config['fc_lr5'])]
    assert groups == [(g['name'], g['lr_mult'], g['decay_mult'], g['n_params'])
                      for g in manifest['optimizer_param_groups']]

    # a state dict shaped like the official file (with `module.`) loads with nothing left over
    gen = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(shape, generator=gen) if dtype == 'float32' else torch.zeros(shape, dtype=DTYPES[dtype]))
          for k, shape, dtype in manifest['state_dict']}
    report = load_weights(model, {'epoch': 1, 'arch': model.cfg.arch, 'state_dict': sd}, source=path)
    assert not report.missing and not report.unexpected and not report.dropped and not report.renamed
    assert len(report.loaded) == len(sd)
    probe = expected[0][0]
    assert torch.equal(model.state_dict()[probe], sd[prefix + probe])
