"""hubconf.py through torch.hub.load(source='local'): fresh models, official-format files by path and
by model-zoo name (served from 127.0.0.1 into torch hub's cache), and the matching preprocessing."""
import os

import pytest
import torch

from ops.checkpoint import strip_module_prefix
from ops.errors import LSNetError
from ops.long_short import LongShortInvertedResidual
from ops.temporal_shift import TemporalShift
from tests.fakes import manifests, official_checkpoint
from tests.test_download import NAME, Server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hub(entry, *args, **kwargs):
    return torch.hub.load(REPO, entry, *args, source='local', verbose=False, **kwargs)


@pytest.fixture(scope='module')
def mbv2_file(tmp_path_factory):
    """An official-format TSM MobileNetV2 Kinetics file (400 classes, 8 segments) under its zoo name."""
    return official_checkpoint(manifests()['tsm_mbv2_k400'], str(tmp_path_factory.mktemp('zoo') / NAME))


def file_weights(path):
    return strip_module_prefix(torch.load(path, weights_only=True)['state_dict'])


def assert_weights_equal(model, path, skip=lambda key: False):
    sd, expected = model.state_dict(), file_weights(path)
    assert sorted(k for k in sd if not skip(k)) == sorted(expected)
    for k, v in expected.items():
        assert torch.equal(sd[k], v), k


@pytest.mark.parametrize('kind, shifts, lsm', [('tsn', False, False), ('tsm', True, False), ('lsnet', True, True)])
def test_fresh_model_takes_a_batch_of_clips(kind, shifts, lsm):
    model = hub(kind, arch='resnet18', num_segments=4, num_class=5, pretrained=None)
    assert not model.training
    assert (model.cfg.shift, model.cfg.lsm, model.cfg.pretrain) == (shifts, lsm, 'none')
    assert any(isinstance(m, TemporalShift) for m in model.modules()) == shifts
    with torch.no_grad():
        assert model(torch.randn(2, 4 * 3, 64, 64)).shape == (2, 5)


def test_config_fields_pass_through_and_fixed_ones_are_refused():
    model = hub('tsm', arch='resnet18', num_segments=4, num_class=3, shift_div=4, shift_place='block')
    assert (model.cfg.shift_div, model.cfg.shift_place) == (4, 'block')
    with pytest.raises(LSNetError, match=r'tsn\(\) sets shift itself'):
        hub('tsn', arch='resnet18', shift=True)


def test_pretrained_path_loads_the_files_weights_and_preprocessing_fits(mbv2_file):
    model = hub('tsm', arch='mobilenetv2', pretrained=mbv2_file)
    assert not model.training and model.num_segments == 8
    assert_weights_equal(model, mbv2_file)
    prep = hub('preprocessing', model)
    clip = torch.randint(0, 256, (8, 3, 90, 120), dtype=torch.uint8)
    x = prep(clip)
    assert x.dtype == torch.float32 and x.shape == (8 * 3, 224, 224)
    assert abs(float(x.mean())) < 0.5  # normalised, not 0..255
    with torch.no_grad():
        assert model(torch.stack([x, x])).shape == (2, 400)


def test_lsnet_from_a_tsm_file_fills_all_but_the_long_short_modules(mbv2_file):
    model = hub('lsnet', arch='mobilenetv2', pretrained=mbv2_file)
    assert any(isinstance(m, LongShortInvertedResidual) for m in model.modules())
    assert_weights_equal(model, mbv2_file, skip=lambda k: '.lsm.' in k)


def test_a_file_of_another_model_is_refused_in_one_line(mbv2_file):
    with pytest.raises(LSNetError) as info:
        hub('tsm', arch='resnet18', num_class=400, pretrained=mbv2_file)
    assert "arch='mobilenetv2'" in str(info.value) and '\n' not in str(info.value)
    with pytest.raises(LSNetError, match="holds a TSM model: load it with 'tsm', not 'tsn'"):
        hub('tsn', arch='mobilenetv2', pretrained=mbv2_file)
    with pytest.raises(LSNetError, match='neither a checkpoint file nor a model-zoo name.*--list'):
        hub('tsm', pretrained='no_such_model.pth')


def test_pretrained_zoo_name_downloads_once_into_the_hub_cache(mbv2_file, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    if not torch.hub.get_dir().startswith(str(tmp_path)):
        pytest.skip('torch.hub.set_dir was called in this process; TORCH_HOME is not consulted')
    server = Server()
    try:
        with open(mbv2_file, 'rb') as f:
            server.files['/mirror/' + NAME] = f.read()
        for _ in range(2):
            model = hub('tsm', arch='mobilenetv2', pretrained=NAME[:-len('.pth')], base_url=server.url + '/mirror')
            assert_weights_equal(model, mbv2_file)
        assert len(server.requests) == 1
        assert os.listdir(os.path.join(torch.hub.get_dir(), 'checkpoints')) == [NAME]
    finally:
        server.close()


def test_hubconf_imports_only_the_library():
    """hubconf.py is loaded alone by torch.hub: no tools/ module or entry script, torch and
    torchvision the only third-party dependencies it declares."""
    import ast
    with open(os.path.join(REPO, 'hubconf.py')) as f:
        tree = ast.parse(f.read())
    tops = {a.name.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    tops |= {n.module.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert tops <= {'os', 'torch', 'ops'}, tops
