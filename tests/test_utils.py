"""Run names, weight-name parsing, meters, accuracy, lr schedule, reproducible data order."""
import random

import numpy as np
import pytest
import torch

from ops.engine import EpochSeededDataset, LRSchedule, ShardSampler, derive_seed
from ops.errors import LSNetError
from ops.config import ModelConfig, parse_weight_name
from ops.config import store_name as config_store_name
from ops.metrics import AverageMeter, accuracy, topk_correct
from ops.utils import select_device
from opts import build_test_parser, build_train_parser

SEED_README_WEIGHTS = {
    'pretrained/TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth':
        dict(dataset='kinetics', modality='RGB', arch='resnet50', num_segments=5, consensus_type='avg',
             shift=False, temporal_pool=False, non_local=False, lsm=False),
    'pretrained/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth':
        dict(dataset='kinetics', arch='resnet50', num_segments=8, shift=True, shift_div=8,
             shift_place='blockres', non_local=False),
    'pretrained/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense.pth':
        dict(shift=True, num_segments=8, non_local=False),
    'pretrained/TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense_nl.pth':
        dict(shift=True, num_segments=8, non_local=True),
    'pretrained/TSM_something_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth':
        dict(dataset='something', shift=True, num_segments=8, non_local=False),
    'TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth':
        dict(arch='mobilenetv2', shift=True),
    'TSM_kinetics_Flow_resnet50_shift8_blockres_avg_segment8_e50.pth':
        dict(modality='Flow'),
    'TSM_kinetics_RGB_resnet50_shift4_blockres_tpool_avg_segment8_e50.pth':
        dict(shift_div=4, temporal_pool=True),
}


@pytest.mark.parametrize('path', sorted(SEED_README_WEIGHTS))
def test_official_weight_names_parse(path):
    dataset, got = parse_weight_name(path)
    got = dict(got, dataset=dataset)
    for k, v in SEED_README_WEIGHTS[path].items():
        assert got[k] == v, (k, got)


def test_only_the_file_name_is_parsed():
    dataset, got = parse_weight_name('/data/shift_experiments/nl_runs/TSM_ucf101_RGB_resnet18_avg_segment4_e5.pth.tar')
    assert got['shift'] is False and got['non_local'] is False and dataset == 'ucf101'


@pytest.mark.parametrize('name', ['ckpt.pth.tar', 'TSM_kinetics.pth', 'model_resnet50.pth'])
def test_unparseable_names_raise(name):
    with pytest.raises(LSNetError, match='file name'):
        parse_weight_name(name)


@pytest.mark.parametrize('argv', [
    'kinetics RGB --arch resnet50 --num_segments 8 --epochs 50 --shift --shift_div=8 --shift_place=blockres',
    'kinetics RGB --arch resnet50 --num_segments 5 --epochs 50',
    'something RGB --arch resnet101 --num_segments 16 --epochs 45 --shift --shift_div 4 --temporal_pool',
    'synthetic RGB --arch resnet18 --num_segments 8 --epochs 10 --shift --lsm',
    'kinetics RGB --num_segments 8 --epochs 100 --shift --dense_sample --non_local',
    'ucf101 Flow --arch resnet50 --num_segments 8 --epochs 25 --shift --lr_type cos --suffix x',
])
def test_store_name_round_trips(argv):
    args = build_train_parser().parse_args(argv.split())
    name = store_name(args)
    dataset, got = parse_weight_name(name + '.pth')
    assert dataset == args.dataset and got['modality'] == args.modality
    assert got['arch'] == args.arch and got['num_segments'] == args.num_segments
    assert got['shift'] == args.shift and got['temporal_pool'] == args.temporal_pool
    assert got['non_local'] == args.non_local and got['lsm'] == args.lsm
    if args.shift:
        assert (got['shift_div'], got['shift_place']) == (args.shift_div, args.shift_place)


def store_name(args):
    """The run name main.py gives the run of these flags."""
    cfg = ModelConfig.from_args(args, num_class=1)
    return config_store_name(cfg, args.dataset, args.epochs, args.lr_type, args.dense_sample, args.suffix)


def test_store_name_matches_reference_examples():
    p = build_train_parser()
    a = p.parse_args('kinetics RGB --arch resnet50 --num_segments 8 --gd 20 --lr 0.02 --wd 1e-4 --lr_steps 20 40 '
                     '--epochs 50 --batch-size 128 -j 16 --dropout 0.5 --consensus_type=avg --eval-freq=1 '
                     '--shift --shift_div=8 --shift_place=blockres --npb'.split())
    assert store_name(a) == 'TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50'
    a = p.parse_args('synthetic RGB --arch resnet18 --num_segments 8 --epochs 10 --shift --lsm'.split())
    assert store_name(a) == 'TSM_synthetic_RGB_resnet18_shift8_blockres_lsm_avg_segment8_e10'
    a = p.parse_args('kinetics RGB --num_segments 8 --epochs 100 --shift --dense_sample --non_local '
                     '--pretrain none --lr_type cos --suffix run2'.split())
    assert store_name(a) == 'TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_none_cos_dense_nl_run2'


def test_reference_defaults_kept():
    a = build_train_parser().parse_args(['kinetics', 'RGB'])
    assert (a.num_segments, a.lr, a.lr_steps, a.epochs, a.batch_size, a.weight_decay, a.dropout) == \
        (3, 0.001, [50, 100], 120, 128, 5e-4, 0.5)
    assert (a.eval_freq, a.print_freq, a.workers, a.root_log, a.root_model, a.shift_div, a.shift_place) == \
        (5, 20, 8, 'log', 'checkpoint', 8, 'blockres')
    assert a.arch == 'resnet50' and a.clip_gradient is None and not a.no_partialbn
    t = build_test_parser().parse_args(['kinetics', '--weights', 'a.pth,b.pth', 'c.pth', '--coeff', '1,2', '3'])
    assert t.weights == ['a.pth,b.pth', 'c.pth'] and t.test_crops == 1 and t.batch_size == 1


def test_bad_test_crops_is_an_argparse_error():
    with pytest.raises(SystemExit) as e:
        build_test_parser().parse_args(['kinetics', '--weights', 'a.pth', '--test_crops', '7'])
    assert e.value.code == 2


def test_average_meter_and_accuracy():
    m = AverageMeter()
    m.update(2.0, 3)
    m.update(4.0, 1)
    assert m.avg == pytest.approx(2.5) and m.count == 4
    out = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 2, 0])
    top1, top5 = accuracy(out, target, topk=(1, 5))
    assert top1 == pytest.approx(100 / 3) and top5 == pytest.approx(100.0)  # k capped at 3 classes
    assert topk_correct(out, target, (1, 2)) == [1, 2]


def test_lr_schedule_step_cos_warmup():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD([{'params': [model.weight], 'lr_mult': 5, 'decay_mult': 1},
                           {'params': [model.bias], 'lr_mult': 10, 'decay_mult': 0}], 0.1, weight_decay=1e-4)
    s = LRSchedule(0.1, 1e-4, 'step', [2, 4], epochs=6)
    s.apply(opt, 3)
    assert opt.param_groups[0]['lr'] == pytest.approx(0.1 * 0.1 * 5)
    assert opt.param_groups[1]['lr'] == pytest.approx(0.1 * 0.1 * 10)
    assert opt.param_groups[0]['weight_decay'] == pytest.approx(1e-4) and opt.param_groups[1]['weight_decay'] == 0
    assert s.factor(4) == pytest.approx(0.01) and s.factor(1) == 1
    c = LRSchedule(0.1, 0, 'cos', epochs=10)
    assert c.factor(5) == pytest.approx(0.5) and c.factor(0) == pytest.approx(1.0)
    w = LRSchedule(0.1, 0, 'step', [100], epochs=10, warmup=2)
    assert w.factor(0, 0, 10) == pytest.approx(1 / 20)
    assert w.factor(1, 4, 10) == pytest.approx(15 / 20)
    assert w.factor(2, 0, 10) == pytest.approx(1.0)
    w2 = LRSchedule(0.1, 0, 'cos', epochs=10, warmup=1)
    w2.load_state_dict(w.state_dict())
    assert w2.last_epoch == w.last_epoch


class _RandomItems(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return random.random() + np.random.rand() + torch.rand(1).item()


def test_epoch_seeded_items_do_not_depend_on_order_or_workers():
    ds = EpochSeededDataset(_RandomItems(), seed=3)
    a = [ds[i] for i in range(6)]
    b = [ds[i] for i in reversed(range(6))][::-1]
    assert a == b
    torch.manual_seed(1)
    before = torch.rand(1)
    torch.manual_seed(1)
    _ = ds[0]
    assert torch.equal(torch.rand(1), before)  # global generators untouched
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    assert torch.cat(list(loader)).tolist() == pytest.approx(a)
    ds.set_epoch(1)
    assert [ds[i] for i in range(6)] != a
    assert derive_seed(1, 2, 3) != derive_seed(1, 3, 2)


def test_shard_sampler_covers_each_index_once():
    parts = [list(ShardSampler(7, 3, r)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(7))


def test_select_device_cpu_and_missing_cuda():
    assert select_device('cpu').type == 'cpu'
    if not torch.cuda.is_available():
        assert select_device('auto').type == 'cpu'
        with pytest.raises(LSNetError, match='CUDA'):
            select_device('cuda')
