"""Command-line options of ``main.py`` and ``test_models.py``.

Every flag of the TSM reference keeps its name and default (except ``--arch``, whose default is
``resnet50`` instead of ``BNInception``).  Flags that the reference does not have are additive and
live in their own argument groups.
"""
from ops.errors import ArgumentParser

DEVICE_CHOICES = ('auto', 'cpu', 'cuda')
MODALITIES = ('RGB', 'Flow', 'RGBDiff')
TEST_CROPS = (1, 3, 5, 10)


def _add_device_flags(group):
    group.add_argument('--device', default='auto', choices=DEVICE_CHOICES,
                       help='where to run: auto picks CUDA when present, else CPU')


def _add_dataset_flags(group):
    group.add_argument('--category_file', type=str, default=None,
                       help='class names, one per line (custom datasets)')
    group.add_argument('--image_tmpl', type=str, default=None,
                       help='frame file template, e.g. img_{:05d}.jpg (default: per dataset)')


def build_train_parser():
    """Parser of ``main.py`` (training, fine-tuning, validation)."""
    p = ArgumentParser(description='Train TSN / TSM / LSNet video action recognition models')
    p.add_argument('dataset', type=str)
    p.add_argument('modality', type=str, choices=MODALITIES)
    p.add_argument('--train_list', type=str, default='')
    p.add_argument('--val_list', type=str, default='')
    p.add_argument('--root_path', type=str, default='')
    # ========================= Model Configs ==========================
    p.add_argument('--arch', type=str, default='resnet50')
    p.add_argument('--num_segments', type=int, default=3)
    p.add_argument('--consensus_type', type=str, default='avg')
    p.add_argument('--k', type=int, default=3)
    p.add_argument('--dropout', '--do', default=0.5, type=float, metavar='DO',
                   help='dropout ratio (default: 0.5)')
    p.add_argument('--loss_type', type=str, default='nll', choices=['nll'])
    p.add_argument('--img_feature_dim', default=256, type=int,
                   help='the feature dimension for each frame (kept for compatibility)')
    p.add_argument('--suffix', type=str, default=None)
    p.add_argument('--pretrain', type=str, default='imagenet', choices=['imagenet', 'none'])
    p.add_argument('--tune_from', type=str, default=None, help='fine-tune from checkpoint')
    p.add_argument('--fc_lr5', choices=('auto', 'on', 'off'), default='auto',
                   help="new classifier at 5x the lr (bias 10x): 'on' is the reference's rule (off only when "
                        "fine-tuning from the same dataset), 'off' trains it at the base lr; 'auto' (default) "
                        "is the reference's rule when the backbone starts from pretrained weights (ImageNet or "
                        "--tune_from) and off from scratch (--pretrain none), where 5x destabilises SGD")
    # ========================= Learning Configs ==========================
    p.add_argument('--epochs', default=120, type=int, metavar='N', help='number of total epochs to run')
    p.add_argument('-b', '--batch-size', default=128, type=int, metavar='N',
                   help='mini-batch size, summed over all processes (default: 128)')
    p.add_argument('--lr', '--learning-rate', default=0.001, type=float, metavar='LR',
                   help='initial learning rate')
    p.add_argument('--lr_type', default='step', type=str, choices=['step', 'cos'], metavar='LRtype',
                   help='learning rate schedule: step or cos')
    p.add_argument('--lr_steps', default=[50, 100], type=float, nargs='+', metavar='LRSteps',
                   help='epochs to decay learning rate by 10')
    p.add_argument('--momentum', default=0.9, type=float, metavar='M', help='momentum')
    p.add_argument('--weight-decay', '--wd', default=5e-4, type=float, metavar='W',
                   help='weight decay (default: 5e-4)')
    p.add_argument('--clip-gradient', '--gd', default=None, type=float, metavar='W',
                   help='gradient norm clipping (default: disabled)')
    p.add_argument('--no_partialbn', '--npb', default=False, action='store_true')
    p.add_argument('--prefix_loss', default=0.0, type=float, nargs='?', const=0.5, metavar='W',
                   help='online models (--shift_direction uni, or TSN): train the predictions made early '
                        "in a streamed video; the loss is (1-W) x the clip's + W x the mean over the clip's "
                        'prefixes (mean logits of segments 1..t for every t); W is 0.5 when the flag is '
                        'given without a value')
    # ========================= Monitor Configs ==========================
    p.add_argument('--print-freq', '-p', default=20, type=int, metavar='N',
                   help='print frequency in steps (default: 20)')
    p.add_argument('--eval-freq', '-ef', default=5, type=int, metavar='N',
                   help='evaluation frequency in epochs (default: 5)')
    # ========================= Runtime Configs ==========================
    p.add_argument('-j', '--workers', default=8, type=int, metavar='N',
                   help='number of data loading workers (default: 8)')
    p.add_argument('--resume', default='', type=str, metavar='PATH',
                   help='checkpoint file, or run folder whose ckpt.pth.tar to continue from')
    p.add_argument('-e', '--evaluate', dest='evaluate', action='store_true',
                   help='evaluate model on validation set')
    p.add_argument('--snapshot_pref', type=str, default='')
    p.add_argument('--start-epoch', default=0, type=int, metavar='N',
                   help='manual epoch number (useful on restarts)')
    p.add_argument('--gpus', nargs='+', type=int, default=None)
    p.add_argument('--flow_prefix', default='', type=str)
    p.add_argument('--root_log', type=str, default='log')
    p.add_argument('--root_model', type=str, default='checkpoint')
    p.add_argument('--shift', default=False, action='store_true', help='use shift for models')
    p.add_argument('--shift_div', default=8, type=int, help='number of div for shift (default: 8)')
    p.add_argument('--shift_direction', default='bi', choices=['bi', 'uni'],
                   help="'uni': online (causal) TSM/LSNet - frame t reads only frames <= t, so the model "
                        "can run frame by frame (tools/online_demo.py)")
    p.add_argument('--shift_place', default='blockres', type=str, help='place for shift (default: blockres)')
    p.add_argument('--temporal_pool', default=False, action='store_true', help='add temporal pooling')
    p.add_argument('--non_local', default=False, action='store_true', help='add non local block')
    p.add_argument('--dense_sample', default=False, action='store_true',
                   help='use dense sample for video dataset')

    g = p.add_argument_group('runtime (LSNet additions)')
    _add_device_flags(g)
    g.add_argument('--amp', default=False, action='store_true',
                   help='mixed precision: bf16 autocast on CPU, fp16 + GradScaler on CUDA (on CPU a win '
                        'for large inputs on CPUs with native bf16 only; see tools/bench_train.py)')
    add_memory_format_flags(g)
    g.add_argument('--seed', type=int, default=None,
                   help='seed of sampling, augmentation and initialisation (default: drawn, then saved)')
    g.add_argument('--warmup', type=float, default=0.0, metavar='EPOCHS',
                   help='linear learning-rate warm-up length in epochs (default: 0)')
    g.add_argument('--input_size', type=int, default=224,
                   help='crop size; the scale size follows as input_size*256//224')
    g.add_argument('--shift_mode', type=str, default='fast', choices=['fast', 'lean'],
                   help='temporal shift implementation (same weights either way)')
    add_compile_flags(g)

    d = p.add_argument_group('data (LSNet additions)')
    _add_dataset_flags(d)
    d.add_argument('--no_flip', default=False, action='store_true',
                   help='no random horizontal flip in training augmentation')
    d.add_argument('--skip_bad_videos', default=False, action='store_true',
                   help='training only: replace a video whose frames are missing or unreadable by another '
                        'one (each logged and counted) instead of stopping with an error')

    m = p.add_argument_group('LSNet long-short module')
    m.add_argument('--lsm', default=False, action='store_true',
                   help='insert the long-short module into the shifted blocks (needs --shift)')
    m.add_argument('--lsm_reduction', type=int, default=16)
    m.add_argument('--lsm_groups', type=int, default=4)
    m.add_argument('--lsm_branches', type=str, nargs='+', default=['short', 'long'],
                   help='branches to use, space or comma separated: short, long (default: both)')
    m.add_argument('--lsm_short_stages', type=str, nargs='+', default=['1', '2', '3', '4'],
                   help='backbone stages (1-4: ResNet layer1..layer4, MobileNetV2 by output stride) '
                        'whose shifted blocks get the short-term branch (default: all)')
    m.add_argument('--lsm_long_stages', type=str, nargs='+', default=['1', '2', '3', '4'],
                   help='stages whose shifted blocks get the long-term branch (default: all)')
    m.add_argument('--lsm_tap_init', default='shift', choices=['shift', 'identity'],
                   help="initial temporal kernels of the long branch: 'shift' (default: half of each "
                        "group's channels look d frames back, half d frames ahead, so the branch starts "
                        "with its full reach; the network still equals TSM at init) or 'identity' (the "
                        'original spec, which the README tables before the change were measured with)')
    m.add_argument('--lsm_start', type=int, default=0, metavar='EPOCH',
                   help='train with the long-short branches off (the network is then exactly TSM) '
                        'until this epoch; they join from their zero initialisation at this epoch '
                        '(default 0: from the start)')
    return p


def add_memory_format_flags(g):
    g.add_argument('--channels_last', dest='channels_last', default=True, action='store_true',
                   help='channels_last memory format (default on: about 1.4x faster CPU training, '
                        'same numbers; see tools/bench_train.py)')
    g.add_argument('--no_channels_last', dest='channels_last', action='store_false',
                   help='keep the plain NCHW memory format')


def add_compile_flags(g):
    from ops.compile import COMPILE_MODES
    g.add_argument('--compile', default=False, action='store_true',
                   help='run the model through torch.compile (Inductor; needs a C++ compiler on the CPU, Triton '
                        'on CUDA): the first steps compile, the rest run the generated code; same weights and files')
    g.add_argument('--compile_mode', default='default', choices=COMPILE_MODES,
                   help="torch.compile mode (default: 'default'; 'max-autotune*' compile much longer)")


def build_test_parser():
    """Parser of ``test_models.py`` (evaluation of one or several checkpoints)."""
    p = ArgumentParser(description='Evaluate TSN / TSM / LSNet checkpoints on a test list')
    p.add_argument('dataset', type=str)
    p.add_argument('--weights', type=str, nargs='+', default=None, required=True,
                   help='checkpoint(s); several (space or comma separated) make an ensemble')
    p.add_argument('--test_segments', type=str, nargs='+', default=None,
                   help='segments per clip: one for all weights or one per weight '
                        '(default: the count each checkpoint was trained with)')
    p.add_argument('--dense_sample', default=False, action='store_true', help='use dense sample as I3D')
    p.add_argument('--twice_sample', default=False, action='store_true', help='use twice sample for ensemble')
    p.add_argument('--full_res', default=False, action='store_true',
                   help='use full resolution 256x256 for test as in Non-local I3D')
    p.add_argument('--test_crops', type=int, default=1, choices=TEST_CROPS)
    p.add_argument('--coeff', type=str, nargs='+', default=None,
                   help='ensemble weight per checkpoint (space or comma separated)')
    p.add_argument('--batch_size', type=int, default=1)
    p.add_argument('-j', '--workers', default=8, type=int, metavar='N',
                   help='number of data loading workers (default: 8)')
    p.add_argument('--test_list', type=str, default=None,
                   help='list file to test on, one for all or comma separated per weight (default: val list)')
    p.add_argument('--csv_file', type=str, default=None, help='write "video;class" predictions here')
    p.add_argument('--softmax', default=False, action='store_true',
                   help='softmax the video score (after averaging the clips)')
    p.add_argument('--max_num', type=int, default=-1, help='test only the first N videos')
    p.add_argument('--input_size', type=int, default=None,
                   help='crop size (default: the checkpoint\'s, else 224)')
    p.add_argument('--crop_fusion_type', type=str, default='avg')
    p.add_argument('--gpus', nargs='+', type=int, default=None)
    p.add_argument('--img_feature_dim', type=int, default=256)
    p.add_argument('--num_set_segments', type=int, default=1)
    p.add_argument('--pretrain', type=str, default='imagenet')

    g = p.add_argument_group('LSNet additions')
    _add_device_flags(g)
    add_memory_format_flags(g)
    g.add_argument('--root_path', type=str, default='')
    _add_dataset_flags(g)
    g.add_argument('--save_scores', type=str, default=None, metavar='FILE.npz',
                   help='save per-video scores, labels and predictions')
    g.add_argument('--json_file', type=str, default=None,
                   help='write metrics, per-class/per-group accuracy and predictions as JSON')
    g.add_argument('--class_groups', type=str, default=None, metavar='FILE.json',
                   help='{"group": [label, ...]}: print accuracy per group')
    g.add_argument('--confusion', type=str, default=None, metavar='FILE.png',
                   help='draw the row-normalised confusion matrix with class names (the 30 most-confused '
                        'classes when there are more; needs matplotlib)')
    g.add_argument('--amp', default=False, action='store_true',
                   help='mixed precision: bf16 autocast on CPU, fp16 on CUDA (as main.py --amp)')
    add_compile_flags(g)
    return p
