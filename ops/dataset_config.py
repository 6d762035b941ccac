"""Dataset registry: name + modality → frame root, list files, category names, template, flip policy.

The dataset root ``R`` comes from ``root_path`` (``--root_path``), else the environment variable
``LSNET_DATA_ROOT``; nothing is hard-coded.  Registered datasets follow the TSM reference's layout
under ``R`` (paths below are relative to ``R``):

- ``ucf101``: frames ``UCF101/jpg``; lists
  ``UCF101/file_list/ucf101_{rgb,flow}_{train,val}_split_1.txt``; classes
  ``UCF101/labels/classInd.txt`` or ``UCF101/file_list/category.txt``.
- ``hmdb51``: frames ``HMDB51/images``; lists
  ``HMDB51/splits/hmdb51_{rgb,flow}_{train,val}_split_1.txt``; classes
  ``HMDB51/labels/category.txt`` or ``HMDB51/splits/category.txt``.
- ``kinetics``: frames ``kinetics/images`` (Flow ``kinetics/flow``); lists
  ``kinetics/labels/{train,val}_videofolder[_flow].txt``; classes ``kinetics/labels/category.txt``.
- ``something`` (V1): frames ``something/v1/20bn-something-something-v1[-flow]``; lists
  ``something/v1/{train,val}_videofolder[_flow].txt``; classes ``something/v1/category.txt``.
- ``somethingv2``: frames ``something/v2/20bn-something-something-v2-frames`` (Flow
  ``...-v2-flow``); lists ``something/v2/{train,val}_videofolder[_flow].txt``; classes
  ``something/v2/category.txt``.
- ``jester``: frames ``jester/20bn-jester-v1[-flow]``; lists
  ``jester/{train,val}_videofolder[_flow].txt``; classes ``jester/category.txt``.

Without a category file a registered dataset still resolves, with one logged notice: its class
count is the reference's (Kinetics 400, HMDB51 51: the reference's dataset config gives a count, not
a file) or the dataset's published one (UCF101 101, Something V1 and V2 174, Jester 27).  Kinetics
classes are then named from ``ops/kinetics400.txt`` (the Kinetics-400 names in the label order of the
TSM model zoo), the others ``class_<i>``.  ``num_class`` (a checkpoint's class count) does the same
for ``custom`` without ``--category_file``.  :attr:`DatasetConfig.category_file` is ``None`` when the
names did not come from a category file.

Templates: ``img_{:05d}.jpg`` (UCF101, HMDB51, Kinetics), ``{:05d}.jpg`` (Something V1, Jester),
``{:06d}.jpg`` (Something V2); Flow ``flow_{}_{:05d}.jpg`` (x/y files), ``{:06d}-{}_{:05d}.jpg``
(Something V1) and ``{:06d}.jpg`` (Something V2, x/y in the channels of one image).
``train_list``/``val_list``/``category_file``/``image_tmpl`` override the entry; relative override
paths are taken as given when they exist, else under the root.  An ``image_tmpl`` override must
hold a ``{}`` field for the frame number (:func:`check_image_tmpl`).

``custom`` trains on any frames: ``root_path``, ``train_list``, ``val_list`` and ``category_file``
(one class name per line) are required.  ``synthetic`` is the embedded dataset rendered by
:mod:`ops.synthetic` under :func:`synthetic_root` (``root_path``, else ``$LSNET_DATA_ROOT/synthetic``,
else ``./data/synthetic``).  Resolving it only resolves paths: it renders nothing, and a root without
a complete set is an :class:`LSNetError`.  The entry points render it first, explicitly, with
``ops.synthetic.ensure_synthetic(synthetic_root(root_path))``; by hand it is
``python tools/gen_synthetic.py --out ROOT``.

Flip policy.  Horizontal flipping is off for Something-Something V1/V2 and Jester, whose classes
depend on direction (as in the reference), and for ``--no_flip``.  ``label_swap`` maps each class
to its mirror class when the category names say so: a name whose words ``left``/``right`` swapped
give another category ("Pushing something from left to right" ↔ "... from right to left",
"Swiping Left" ↔ "Swiping Right").  It is built for every dataset with such names and is used by
``TSNDataSet(label_swap=...)`` whenever flipping is on, so a ``custom`` dataset with mirrored class
names can keep flips and still get correct labels.  We keep flipping off for the registered
direction-sensitive datasets anyway, as the reference does: the map is only as complete as the
class names (a mirrored clip of a class without left/right in its name is assumed unchanged).
``synthetic`` flips only when its generator wrote ``label_swap.json`` (the generator knows which
of its classes mirror each other).
"""
import json
import logging
import os
import re
import string
from dataclasses import dataclass

from ops.errors import LSNetError
from ops.synthetic import META_FILE

log = logging.getLogger(__name__)

DATA_ROOT_ENV = 'LSNET_DATA_ROOT'

KINETICS400_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kinetics400.txt')

DATASETS = ('ucf101', 'hmdb51', 'kinetics', 'something', 'somethingv2', 'jester', 'custom',
            'synthetic')
MODALITIES = ('RGB', 'Flow', 'RGBDiff')


@dataclass
class DatasetConfig:
    name: str
    modality: str
    num_class: int
    categories: list
    root_path: str
    train_list: str
    val_list: str
    image_tmpl: str
    flip: bool
    label_swap: dict = None
    class_groups: dict = None
    category_file: str = None  # where the names came from; None: generated (no category file)


@dataclass(frozen=True)
class _Layout:
    categories: tuple  # candidate category files (relative paths), first found wins
    frames: str
    train_list: str
    val_list: str
    image_tmpl: str
    num_class: int  # the class count when no category file is found


def _layout(dataset, modality):
    flow = modality == 'Flow'
    kind = 'flow' if flow else 'rgb'
    if dataset == 'ucf101':
        return _Layout(('UCF101/labels/classInd.txt', 'UCF101/file_list/category.txt'), 'UCF101/jpg',
                       'UCF101/file_list/ucf101_{}_train_split_1.txt'.format(kind),
                       'UCF101/file_list/ucf101_{}_val_split_1.txt'.format(kind),
                       'flow_{}_{:05d}.jpg' if flow else 'img_{:05d}.jpg', 101)
    if dataset == 'hmdb51':
        return _Layout(('HMDB51/labels/category.txt', 'HMDB51/splits/category.txt'), 'HMDB51/images',
                       'HMDB51/splits/hmdb51_{}_train_split_1.txt'.format(kind),
                       'HMDB51/splits/hmdb51_{}_val_split_1.txt'.format(kind),
                       'flow_{}_{:05d}.jpg' if flow else 'img_{:05d}.jpg', 51)
    suffix = '_flow' if flow else ''
    if dataset == 'kinetics':
        return _Layout(('kinetics/labels/category.txt',), 'kinetics/flow' if flow else 'kinetics/images',
                       'kinetics/labels/train_videofolder{}.txt'.format(suffix),
                       'kinetics/labels/val_videofolder{}.txt'.format(suffix),
                       'flow_{}_{:05d}.jpg' if flow else 'img_{:05d}.jpg', 400)
    if dataset == 'something':
        return _Layout(('something/v1/category.txt',),
                       'something/v1/20bn-something-something-v1' + ('-flow' if flow else ''),
                       'something/v1/train_videofolder{}.txt'.format(suffix),
                       'something/v1/val_videofolder{}.txt'.format(suffix),
                       '{:06d}-{}_{:05d}.jpg' if flow else '{:05d}.jpg', 174)
    if dataset == 'somethingv2':
        return _Layout(('something/v2/category.txt',),
                       'something/v2/20bn-something-something-v2-' + ('flow' if flow else 'frames'),
                       'something/v2/train_videofolder{}.txt'.format(suffix),
                       'something/v2/val_videofolder{}.txt'.format(suffix),
                       '{:06d}.jpg', 174)
    if dataset == 'jester':
        return _Layout(('jester/category.txt',), 'jester/20bn-jester-v1' + ('-flow' if flow else ''),
                       'jester/train_videofolder{}.txt'.format(suffix),
                       'jester/val_videofolder{}.txt'.format(suffix),
                       'flow_{}_{:05d}.jpg' if flow else '{:05d}.jpg', 27)
    raise KeyError(dataset)


_DIRECTION_SENSITIVE = ('something', 'somethingv2', 'jester')
_INDEXED_LINE = re.compile(r'^(\d+)\s+(\S.*)$')


def read_categories(path):
    """Class names, one per non-empty line; ``classInd.txt`` lines (``1 ApplyEyeMakeup``) lose their index."""
    try:
        with open(path) as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as e:
        raise LSNetError('cannot read category file {}: {}'.format(path, e)) from None
    names = [line for line in lines if line]
    if not names:
        raise LSNetError('category file {} has no class names'.format(path))
    matches = [_INDEXED_LINE.match(n) for n in names]
    if all(matches):
        idx = [int(m.group(1)) for m in matches]
        if idx == list(range(1, len(idx) + 1)) or idx == list(range(len(idx))):
            names = [m.group(2).strip() for m in matches]
    return names


def kinetics400_names():
    """The 400 Kinetics-400 class names in label order: sorted, the order the TSM model zoo was
    trained with (``ops/kinetics400.txt``; sources in docs/reference_semantics.md)."""
    names = read_categories(KINETICS400_FILE)
    if len(names) != 400:
        raise LSNetError('{} holds {} class names, not 400'.format(KINETICS400_FILE, len(names)))
    return names


def default_categories(dataset, num_class):
    """Names for ``num_class`` classes no category file names: the Kinetics-400 names for a
    400-class ``kinetics`` model, else ``class_<i>``."""
    if dataset == 'kinetics' and num_class == 400:
        return kinetics400_names()
    return ['class_{}'.format(i) for i in range(num_class)]


_NOTIFIED = set()  # (dataset, modality, root): the no-category-file notice is logged once per process


def _generated_categories(dataset, modality, root, num_class, looked_for, why):
    """``default_categories`` for a dataset without a category file, with one logged notice."""
    names = default_categories(dataset, num_class)
    key = (dataset, modality, root, num_class)
    if key not in _NOTIFIED:
        _NOTIFIED.add(key)
        named = ('named from the Kinetics-400 label map {} (the model zoo\'s label order)'.format(KINETICS400_FILE)
                 if names[0] != 'class_0' else 'unnamed (class_0 ... class_{}; --category_file names them)'
                 .format(num_class - 1))
        log.info('%s: no category file (%s): %d classes (%s), %s', dataset, looked_for, num_class, why, named)
    return names


def check_image_tmpl(tmpl, modality='RGB'):
    """Raise :class:`LSNetError` naming ``--image_tmpl`` unless ``tmpl`` has a ``{}`` field for the
    frame number that formats as the dataset formats it (Flow: x/y field too)."""
    example = 'flow_{}_{:05d}.jpg' if modality == 'Flow' else 'img_{:05d}.jpg'
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(tmpl) if f is not None]
        if fields:
            if modality == 'Flow' and len(fields) == 3:
                tmpl.format(1, 'x', 1)
            elif modality == 'Flow' and len(fields) == 2:
                tmpl.format('x', 1)
            else:
                tmpl.format(1)
    except (IndexError, KeyError, ValueError, TypeError) as e:
        raise LSNetError('--image_tmpl {!r} is not a valid template ({}); expected the form {}'
                         .format(tmpl, e, example)) from None
    if not fields:
        raise LSNetError('--image_tmpl {!r} has no {{}} field for the frame number; expected the form {}'
                         .format(tmpl, example))


# a side word not inside a longer word ('_' separates words too: move_left_to_right)
_SIDE_WORD = re.compile(r'(?<![a-z])(left|right)(?![a-z])', re.IGNORECASE)


def _mirror_name(name):
    def swap(m):
        word = m.group(0)
        new = 'right' if word.lower() == 'left' else 'left'
        if word.isupper():
            return new.upper()
        return new.capitalize() if word[0].isupper() else new
    return _SIDE_WORD.sub(swap, name)


def build_label_swap(categories):
    """``{label: mirrored label}`` for classes whose names differ only by left ↔ right, or None."""
    index = {name.lower(): i for i, name in enumerate(categories) if name}
    swap = {}
    for i, name in enumerate(categories):
        if not name or not _SIDE_WORD.search(name):
            continue
        j = index.get(_mirror_name(name).lower())
        if j is not None and j != i:
            swap[i] = j
    return swap or None


def _resolve_root(root_path):
    if root_path:
        return root_path
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return env
    raise LSNetError('no dataset root: pass --root_path or set the environment variable {}'
                     .format(DATA_ROOT_ENV))


def _user_file(path, root, flag):
    """An override path: as given if it exists, else under the root; error naming the flag."""
    if os.path.isfile(path):
        return path
    under = os.path.join(root, path)
    if not os.path.isabs(path) and os.path.isfile(under):
        return under
    raise LSNetError('{} {} not found'.format(flag, path))


def _list_path(path, root):
    if path is None:
        return None
    if os.path.isfile(path) or os.path.isabs(path):
        return path
    under = os.path.join(root, path)
    return under if os.path.isfile(under) else path


def synthetic_root(root_path=None):
    """Where dataset ``synthetic`` lives: ``root_path``, else ``$LSNET_DATA_ROOT/synthetic``, else
    ``data/synthetic`` (relative to the working directory).  Entry points render the set there
    (``ops.synthetic.ensure_synthetic``) before :func:`get_dataset_config` reads it."""
    if root_path:
        return root_path
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return os.path.join(env, 'synthetic')
    return os.path.join('data', 'synthetic')


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise LSNetError('cannot read {}: {}'.format(path, e)) from None


def get_dataset_config(dataset, modality, root_path=None, train_list=None, val_list=None,
                       category_file=None, image_tmpl=None, no_flip=False, num_class=None):
    """Resolve a dataset name → :class:`DatasetConfig` (see the module docstring for layouts).

    ``num_class``: the class count of the model at hand (a checkpoint's), used by ``custom`` when
    there is no ``category_file``.  Raises :class:`LSNetError` for an unknown dataset or modality, a
    bad ``image_tmpl``, no root, a missing root folder or ``--category_file``, (``synthetic``) a set
    not rendered yet, or (``custom``) a missing required flag.  Never creates or renders anything.
    List files are checked when the dataset reads them.
    """
    if dataset not in DATASETS:
        raise LSNetError('unknown dataset {!r}; choose one of {}'.format(dataset, ', '.join(DATASETS)))
    if modality not in MODALITIES:
        raise LSNetError('unknown modality {!r}; choose one of {}'.format(modality, ', '.join(MODALITIES)))
    if image_tmpl is not None:
        check_image_tmpl(image_tmpl, modality)
    label_swap = None
    class_groups = None
    cat_path = None

    if dataset == 'synthetic':
        if modality == 'Flow':
            raise LSNetError('the synthetic dataset has RGB frames only (no Flow)')
        root = synthetic_root(root_path)
        if not os.path.isfile(os.path.join(root, META_FILE)):  # written last: the completeness mark
            where = os.path.abspath(root)
            raise LSNetError('synthetic dataset not found at {} ({} missing): render it with python '
                             'tools/gen_synthetic.py --out {} (main.py and test_models.py render it '
                             'on first use)'.format(where, META_FILE, where))
        frames = os.path.join(root, 'frames')
        cat_path = _user_file(category_file, root, '--category_file') if category_file else \
            os.path.join(root, 'category.txt')
        categories = read_categories(cat_path)
        train = _list_path(train_list, root) or os.path.join(root, 'train_videofolder.txt')
        val = _list_path(val_list, root) or os.path.join(root, 'val_videofolder.txt')
        tmpl = image_tmpl or 'img_{:05d}.jpg'
        groups_path = os.path.join(root, 'class_groups.json')
        if os.path.isfile(groups_path):
            class_groups = {str(k): [int(i) for i in v] for k, v in _read_json(groups_path).items()}
        swap_path = os.path.join(root, 'label_swap.json')
        if os.path.isfile(swap_path):
            label_swap = {int(k): int(v) for k, v in _read_json(swap_path).items()}
        flip = label_swap is not None and not no_flip

    elif dataset == 'custom':
        missing = [flag for flag, v in (('--root_path', root_path), ('--train_list', train_list),
                                        ('--val_list', val_list), ('--category_file', category_file or num_class))
                   if not v]
        if missing:
            raise LSNetError('dataset custom needs {}'.format(', '.join(missing)))
        frames = root_path
        if not os.path.isdir(frames):
            raise LSNetError('--root_path {} is not a folder'.format(frames))
        if category_file:
            cat_path = _user_file(category_file, frames, '--category_file')
            categories = read_categories(cat_path)
        else:
            categories = _generated_categories(dataset, modality, frames, int(num_class), '--category_file not given',
                                               "the checkpoint's count")
        train = _list_path(train_list, frames)
        val = _list_path(val_list, frames)
        tmpl = image_tmpl or ('flow_{}_{:05d}.jpg' if modality == 'Flow' else 'img_{:05d}.jpg')
        label_swap = build_label_swap(categories)
        flip = not no_flip

    else:
        root = _resolve_root(root_path)
        if not os.path.isdir(root):
            raise LSNetError('dataset root {} is not a folder (--root_path / {})'.format(root, DATA_ROOT_ENV))
        lay = _layout(dataset, 'Flow' if modality == 'Flow' else 'RGB')
        frames = os.path.join(root, lay.frames)
        if category_file:
            cat_path = _user_file(category_file, root, '--category_file')
        else:
            files = [os.path.join(root, c) for c in lay.categories]
            cat_path = next((f for f in files if os.path.isfile(f)), None)
        if cat_path:
            categories = read_categories(cat_path)
        else:
            why = "the reference's count" if dataset in ('kinetics', 'hmdb51') else "the dataset's published count"
            categories = _generated_categories(dataset, modality, root, lay.num_class,
                                               'looked for ' + ' or '.join(files), why)
        train = _list_path(train_list, root) or os.path.join(root, lay.train_list)
        val = _list_path(val_list, root) or os.path.join(root, lay.val_list)
        tmpl = image_tmpl or lay.image_tmpl
        label_swap = build_label_swap(categories)
        flip = dataset not in _DIRECTION_SENSITIVE and not no_flip

    cfg = DatasetConfig(name=dataset, modality=modality, num_class=len(categories),
                        categories=categories, root_path=frames, train_list=train, val_list=val,
                        image_tmpl=tmpl, flip=flip, label_swap=label_swap, class_groups=class_groups,
                        category_file=cat_path)
    log.info('%s %s: %d classes, frames under %s, flip %s', dataset, modality, cfg.num_class,
             frames, 'on' if flip else 'off')
    return cfg


def check_labels(records, num_class, list_file):
    """Raise :class:`LSNetError` naming ``file:line`` for the first label outside ``[0, num_class)``."""
    for rec in records:
        if rec.label >= num_class:
            raise LSNetError('{}:{}: label {} is out of range for {} classes (check the list and the '
                             'category file)'.format(list_file, rec.line, rec.label, num_class))
