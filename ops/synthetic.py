"""The embedded synthetic dataset's renderer: a small Something-Something-like set in the TSN layout.

Shapes move, rotate, grow, change colour and orbit over static textured backgrounds, 64x64 px,
24 frames per clip.  Default classes (label order; group in brackets): move left->right /
right->left, top->bottom / bottom->top [direction]; rotate clockwise / counterclockwise [rotation];
approach (grow) / recede (shrink) [scale]; red turns blue / blue turns red [order]; orbit slow / fast
[speed]; ring / cross [appearance] -- 14 classes, 100 train + 30 val clips each.  Optional families
(``families=``): "presence" (appear / disappear), "order_long" (a red flash, then, a third of the
clip or more later, a blue one, or the reverse: only long-range order separates them) and "order_far"
(the same order with both flashes away from the clip ends and further apart than a TSM ResNet-18 sees
at ``frames`` = 64 segments; :func:`far_flash_frames`) and "speed_far" (an object hops between two
places, quickly or slowly, the two sightings as far apart as in order_far; :func:`far_hop_frames`).
Most classes come in
*temporal pairs*: the clips of one class are the clips of its partner played backwards (each random
draw is rendered once and written both ways), so the two classes have exactly the same frames, only
in opposite order.  A frame-averaging model (TSN) therefore cannot beat chance inside a pair, while
a model that mixes information across time (TSM) can.  The "speed" pair (slow vs fast orbit) is not
a reversal pair, but both classes show the object on the same evenly spaced ring of positions at the
sampled frames.  The "appearance" classes differ only in the object's shape (a sanity check that
both models learn).

Layout under ``out_dir`` (paths in the lists are relative to ``out_dir/frames``)::

    frames/<video>/img_00001.jpg ...    JPEG frames, ``size`` x ``size`` pixels, ``frames`` per clip
    train_videofolder.txt               "<video> <num_frames> <label>" per line
    val_videofolder.txt
    category.txt                        one class name per line (line i = label i)
    class_groups.json                   {"group name": [label, ...]}
    label_swap.json                     {"label": label} classes exchanged by a horizontal flip
    synthetic_meta.json                 seed, options, temporal pairs; written last (completeness mark)

Library code, no side effects on import: :func:`generate` renders a set into a new folder and
:func:`ensure_synthetic` renders one at a root unless a complete set is there (the entry points call
it once, explicitly, before building datasets; ``ops.dataset_config`` only resolves paths).  The
command line is ``python tools/gen_synthetic.py --out DIR [--seed S] [--force]`` (plus the size
options of :func:`generate`, e.g. ``--train_per_class 8 --val_per_class 4 --frames 8 --size 32``).
"""

import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image

from ops.errors import LSNetError, make_folder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
IMAGE_TMPL = 'img_{:05d}.jpg'
JPEG_QUALITY = 90
META_FILE = 'synthetic_meta.json'

# family name -> (group name, class names, kind).  kind "pair": class 0 forward, class 1 = the same
# clip reversed.  kind "independent": every class has its own draws.
FAMILIES = {
    'horizontal': ('direction', ['move_left_to_right', 'move_right_to_left'], 'pair'),
    'vertical': ('direction', ['move_top_to_bottom', 'move_bottom_to_top'], 'pair'),
    'rotation': ('rotation', ['rotate_clockwise', 'rotate_counterclockwise'], 'pair'),
    'scale': ('scale', ['approach_grow', 'recede_shrink'], 'pair'),
    'presence': ('presence', ['appear', 'disappear'], 'pair'),
    'order': ('order', ['red_turns_blue', 'blue_turns_red'], 'pair'),
    'order_long': ('long_order', ['red_flash_then_blue_flash', 'blue_flash_then_red_flash'], 'pair'),
    'order_far': ('far_order', ['red_flash_far_before_blue', 'blue_flash_far_before_red'], 'pair'),
    'speed': ('speed', ['orbit_slow', 'orbit_fast'], 'independent'),
    'speed_far': ('far_speed', ['hop_far_slow', 'hop_far_fast'], 'independent'),
    'appearance': ('appearance', ['ring_shape', 'cross_shape'], 'independent'),
}
DEFAULT_FAMILIES = ('horizontal', 'vertical', 'rotation', 'scale', 'order', 'speed', 'appearance')
# optional families (``families=...``): 'presence' (appear / disappear), 'order_long' (two brief
# flashes far apart, red then blue or the reverse) and 'order_far' (the same, away from the clip ends
# and further apart than a shift network of ``frames / 8`` shifted blocks can see: see far_flash_frames)
# and 'speed_far' (an object shown twice at two places, the second time soon or late, both out of
# that reach: see far_hop_frames)
# shapes the temporal families draw from; the appearance classes own 'ring' and 'cross'
PLAIN_SHAPES = ('disc', 'square', 'triangle')
# horizontal flip maps these classes onto each other (everything else is flip-invariant)
FLIP_PAIRS = (('move_left_to_right', 'move_right_to_left'),
              ('rotate_clockwise', 'rotate_counterclockwise'))

DEFAULTS = dict(num_train_per_class=100, num_val_per_class=30, frames=24, size=64,
                families=DEFAULT_FAMILIES)


def class_table(families=DEFAULT_FAMILIES):
    """Return (class names, {group: [labels]}, [(label_a, label_b)] reversal pairs, [(family, k)])."""
    names, groups, pairs, owners = [], {}, [], []
    for fam in families:
        if fam not in FAMILIES:
            raise LSNetError(f'gen_synthetic: unknown family {fam!r} (known: {", ".join(FAMILIES)})')
        group, cls, kind = FAMILIES[fam]
        first = len(names)
        for k, c in enumerate(cls):
            names.append(c)
            owners.append((fam, k))
            groups.setdefault(group, []).append(first + k)
        if kind == 'pair':
            pairs.append((first, first + 1))
    return names, groups, pairs, owners


# --------------------------------------------------------------------------------------------
# rendering

def _shape_coverage(shape, u, v, scale_px):
    """Soft coverage in [0, 1] of a unit-size shape at local coords u, v (any equal shapes).

    ``scale_px`` converts local units to pixels (broadcastable), giving a ~1 px anti-aliased edge.
    """
    rho = np.sqrt(u * u + v * v)
    if shape == 'disc':
        d = rho - 1.0
    elif shape == 'square':
        d = np.maximum(np.abs(u), np.abs(v)) - 0.85
    elif shape == 'triangle':
        d = None
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            e = u * np.cos(a) + v * np.sin(a) - 0.7
            d = e if d is None else np.maximum(d, e)
    elif shape == 'pacman':
        # disc with a 100-degree mouth around +u, so it has no rotational symmetry
        phi = np.abs(np.arctan2(v, u))
        mouth = (np.radians(50) - phi) * np.maximum(rho, 0.15)
        d = np.maximum(rho - 1.0, mouth)
    elif shape == 'ring':
        d = np.abs(rho - 0.68) - 0.32
    elif shape == 'cross':
        arm1 = np.maximum(np.abs(u) - 0.34, np.abs(v) - 1.0)
        arm2 = np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.34)
        d = np.minimum(arm1, arm2)
    else:
        raise ValueError(shape)
    return np.clip(0.5 - d * scale_px, 0.0, 1.0)


def _background(rng, size):
    """Static low-contrast texture (size, size, 3) float in [0, 1]; returns (image, luminance)."""
    dark = rng.random() < 0.5
    lum = rng.uniform(0.12, 0.32) if dark else rng.uniform(0.68, 0.88)
    tint = rng.uniform(-0.08, 0.08, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tex = np.zeros((size, size), np.float32)
    for _ in range(3):
        ang = rng.uniform(0, np.pi)
        freq = rng.uniform(2, 7)
        phase = rng.uniform(0, 2 * np.pi)
        tex += np.sin(2 * np.pi * freq * (xx * np.cos(ang) + yy * np.sin(ang)) + phase)
    tex *= rng.uniform(0.02, 0.05)
    tex += rng.normal(0, 0.015, size=(size, size)).astype(np.float32)
    img = np.clip(lum + tint[None, None, :] + tex[:, :, None], 0, 1)
    return img.astype(np.float32), dark


def _object_colour(rng, dark_bg):
    """A saturated colour whose luminance contrasts with the background."""
    hue = rng.uniform(0, 1)
    rgb = np.clip(np.abs(((hue * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)
    rgb = 0.35 + 0.65 * rgb if dark_bg else 0.55 * rgb
    return rgb.astype(np.float32)


def _render(bg, layers, frames, size):
    """Composite ``layers`` over ``bg`` for every frame -> uint8 (frames, size, size, 3).

    Each layer: dict(shape, colour (3,), and per-frame arrays cx, cy, r (pixels), theta (rad),
    alpha in [0, 1]).
    """
    out = np.broadcast_to(bg, (frames, size, size, 3)).copy()
    coords = np.arange(size, dtype=np.float32) + 0.5
    for L in layers:
        cx = L['cx'][:, None, None]
        cy = L['cy'][:, None, None]
        r = L['r'][:, None, None]
        th = L['theta'][:, None, None]
        dx = coords[None, None, :] - cx
        dy = coords[None, :, None] - cy
        c, s = np.cos(th), np.sin(th)
        u = (dx * c + dy * s) / r
        v = (-dx * s + dy * c) / r
        cov = _shape_coverage(L['shape'], u, v, r) * L['alpha'][:, None, None]
        cov = cov[..., None]
        out = out * (1 - cov) + L['colour'][None, None, None, :] * cov
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def _layer(shape, colour, frames, cx, cy, r, theta=0.0, alpha=1.0):
    full = lambda a: np.broadcast_to(np.asarray(a, np.float32), (frames,)).astype(np.float32)
    return dict(shape=shape, colour=colour, cx=full(cx), cy=full(cy), r=full(r),
                theta=full(theta), alpha=full(alpha))


def _red_blue(rng):
    """The order families' red and blue, each slightly jittered: two (3,) float32 colours."""
    red = np.array([0.95, 0.12, 0.1], np.float32) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    blue = np.array([0.1, 0.3, 0.95], np.float32) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    return red, blue


def _flash_layers(rng, shape, theta0, S, frames, red_on, blue_on):
    """A red and a blue flash of ``shape``, each at its own random place, shown where ``*_on`` is 1."""
    layers = []
    for col, on in zip(_red_blue(rng), (red_on, blue_on)):
        cx, cy = rng.uniform(0.32, 0.68, size=2) * S
        layers.append(_layer(shape, col, frames, cx, cy, rng.uniform(0.2, 0.28) * S, theta0, on))
    return layers


def far_flash_geometry(frames):
    """(margin, gap, width) of 'order_far' clips of ``frames`` frames (see :func:`far_flash_frames`);
    raises :class:`LSNetError` for clips too short to hold them."""
    reach = frames // 8
    w = max(2, frames // 16)
    margin, gap = 2 * reach, 2 * reach + 1  # gap: blank frames between the flashes
    if reach < 7 or frames - margin - 2 * w - gap < margin:
        raise LSNetError(f'gen_synthetic: family order_far needs --frames >= 56 (got {frames})')
    return margin, gap, w


def far_flash_frames(rng, frames):
    """First frames ``(a, b)`` and width ``w`` of the two flashes of an 'order_far' clip.

    With R = frames // 8 (the temporal reach, in frames, of a network with R shifted blocks that
    each move features by one frame, e.g. TSM ResNet-18 when frames = 64 segments), both flashes
    lie at least 2R frames from either end and more than 2R frames apart.  So no output frame of
    such a network sees both flashes, nor a flash together with a clip end (an output frame knows
    an end only if it is within R of it, and then sees only frames up to 2R from it): every frame
    sees at most one flash, at an offset that is distributed the same way in a clip and in its
    reversal.  Averaged over frames, such a network cannot beat chance on the pair; a network whose
    temporal reach exceeds 2R frames can.  Needs frames >= 56 (R >= 7).
    """
    margin, gap, w = far_flash_geometry(frames)
    a = int(rng.integers(margin, frames - margin - 2 * w - gap + 1))
    b = int(rng.integers(a + w + gap, frames - margin - w + 1))
    return a, b, w


def far_hop_geometry(frames):
    """(margin, slow_gap, fast_gap, width, jitter) of 'speed_far' clips of ``frames`` frames (see
    :func:`far_hop_frames`); raises :class:`LSNetError` for clips too short to hold them."""
    reach = frames // 8
    w = max(2, frames // 32)
    margin, fast_gap, jitter = 2 * reach, 2 * reach + 1, reach // 2
    slow_gap = frames - 2 * margin - 2 * w - jitter
    if reach < 7 or slow_gap - fast_gap < reach // 2:
        raise LSNetError(f'gen_synthetic: family speed_far needs --frames >= 56 (got {frames})')
    return margin, slow_gap, fast_gap, w, jitter


def far_hop_frames(rng, frames, fast):
    """First frames ``(a, b)`` and width ``w`` of the two sightings of a 'speed_far' clip.

    The object is shown for ``w`` frames at one place, then, after ``gap`` blank frames, for ``w``
    frames at another: apparent motion over the same distance, slow (the longer gap) or fast
    (``2R + 1`` blank frames, R = frames // 8).  As in :func:`far_flash_frames`, both sightings lie
    at least 2R frames from either end and more than 2R frames apart, so a network whose output
    frames see R frames either way sees at most one sighting, never with a clip end, at an offset
    distributed the same way in both classes: averaged over frames, it is at chance.  The first
    sighting starts in the same range for both classes; what tells them apart (the interval, or
    equally the second sighting's distance from the end) spans more than 2R frames.  At 64 frames:
    2-frame sightings 19 (fast) or 26 (slow) frames apart, onset to onset.
    """
    margin, slow_gap, fast_gap, w, jitter = far_hop_geometry(frames)
    a = int(rng.integers(margin, margin + jitter + 1))
    return a, a + w + (fast_gap if fast else slow_gap), w


# families whose clips need a minimum length: family -> geometry function that raises below it
LONG_CLIP_FAMILIES = {'order_far': far_flash_geometry, 'speed_far': far_hop_geometry}


def _draw_clip(family, k, rng, frames, size):
    """Random clip of class ``k`` of ``family`` (forward class for pairs) -> uint8 frames."""
    S = float(size)
    tau = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    bg, dark = _background(rng, size)
    colour = _object_colour(rng, dark)
    shape = PLAIN_SHAPES[rng.integers(len(PLAIN_SHAPES))]
    theta0 = rng.uniform(0, 2 * np.pi)

    if family in ('horizontal', 'vertical'):
        r = rng.uniform(0.15, 0.2) * S
        travel = rng.uniform(0.4, 0.55) * S
        mid = rng.uniform(0.45, 0.55) * S
        along = mid - travel / 2 + travel * tau
        across = rng.uniform(0.35, 0.65) * S
        cx, cy = (along, across) if family == 'horizontal' else (across, along)
        layers = [_layer(shape, colour, frames, cx, cy, r, theta0)]
    elif family == 'rotation':
        r = rng.uniform(0.3, 0.38) * S
        # 300-420 degrees per clip: 40-55 degrees between 8 evenly spaced samples, under the
        # 180 degrees that would make the direction ambiguous even with sampling jitter
        total = np.radians(rng.uniform(300, 420))
        cx, cy = rng.uniform(0.42, 0.58, size=2) * S
        # image y points down, so an increasing angle turns clockwise on screen
        layers = [_layer('pacman', colour, frames, cx, cy, r, theta0 + total * tau)]
    elif family == 'scale':
        r0, r1 = rng.uniform(0.06, 0.1) * S, rng.uniform(0.3, 0.38) * S
        cx, cy = rng.uniform(0.42, 0.58, size=2) * S
        layers = [_layer(shape, colour, frames, cx, cy, r0 + (r1 - r0) * tau, theta0)]
    elif family == 'presence':
        r = rng.uniform(0.2, 0.3) * S
        cx, cy = rng.uniform(0.35, 0.65, size=2) * S
        t_on = rng.uniform(0.3, 0.7)
        layers = [_layer(shape, colour, frames, cx, cy, r, theta0,
                         (tau >= t_on).astype(np.float32))]
    elif family == 'order':
        # the object's colour switches once, red -> blue (the partner: blue -> red)
        r = rng.uniform(0.22, 0.3) * S
        cx, cy = rng.uniform(0.38, 0.62, size=2) * S
        t_c = rng.uniform(0.3, 0.7)
        red, blue = _red_blue(rng)
        on = (tau >= t_c).astype(np.float32)
        layers = [_layer(shape, red, frames, cx, cy, r, theta0, 1 - on),
                  _layer(shape, blue, frames, cx, cy, r, theta0, on)]
    elif family == 'order_long':
        # long-range order: a red flash early and a blue flash late (the partner, played backwards:
        # blue early, red late), the same shape at two random places.  Each flash lasts >= 5 of 24
        # frames, so every segment grid samples it; >= 1/3 of the clip separates the two.  Colour,
        # which every model sees at 32 px, tells the flashes apart: only their order is hard.
        width = 0.22
        t_a = rng.uniform(0.0, 0.15)
        t_b = rng.uniform(t_a + 0.55, 1.0 - width)
        on = [((tau >= t0) & (tau <= t0 + width)).astype(np.float32) for t0 in (t_a, t_b)]
        layers = _flash_layers(rng, shape, theta0, S, frames, *on)
    elif family == 'order_far':
        a, b, w = far_flash_frames(rng, frames)
        t = np.arange(frames)
        on = [((t >= t0) & (t < t0 + w)).astype(np.float32) for t0 in (a, b)]
        layers = _flash_layers(rng, shape, theta0, S, frames, *on)
    elif family == 'speed_far':
        a, b, w = far_hop_frames(rng, frames, fast=k == 1)
        t = np.arange(frames)
        r = rng.uniform(0.15, 0.2) * S
        cy = rng.uniform(0.35, 0.65) * S
        xs = np.array([0.28, 0.72]) * S + rng.uniform(-0.04, 0.04, 2) * S
        if rng.random() < 0.5:
            xs = xs[::-1]
        layers = [_layer(shape, colour, frames, x, cy, r, theta0,
                         ((t >= t0) & (t < t0 + w)).astype(np.float32)) for x, t0 in zip(xs, (a, b))]
    elif family == 'speed':
        # orbit: slow = one turn per clip, fast = three turns; with evenly spaced samples both
        # visit the same ring of positions, only the step between consecutive samples differs
        turns = 1 if k == 0 else 3
        direction = 1 if rng.random() < 0.5 else -1
        phase = rng.uniform(0, 2 * np.pi)
        ang = phase + direction * 2 * np.pi * turns * np.arange(frames, dtype=np.float32) / frames
        rad = rng.uniform(0.24, 0.3) * S
        ox, oy = rng.uniform(0.46, 0.54, size=2) * S
        r = rng.uniform(0.12, 0.15) * S
        layers = [_layer(shape, colour, frames, ox + rad * np.cos(ang), oy + rad * np.sin(ang), r,
                         theta0)]
    elif family == 'appearance':
        # shape is the class; motion is any of the temporal families' motions, so it carries
        # no label information
        shape = ('ring', 'cross')[k]
        r = rng.uniform(0.3, 0.36) * S
        cx, cy = rng.uniform(0.35, 0.65, size=2) * S
        motion = rng.integers(3)
        if motion == 0:
            d = rng.uniform(-0.3, 0.3, size=2) * S
            layers = [_layer(shape, colour, frames, cx + d[0] * (tau - 0.5),
                             cy + d[1] * (tau - 0.5), r, theta0)]
        elif motion == 1:
            spin = rng.uniform(-1, 1) * np.pi
            layers = [_layer(shape, colour, frames, cx, cy, r, theta0 + spin * tau)]
        else:
            g = rng.uniform(0.6, 1.0)
            rr = r * (g + (1 - g) * (tau if rng.random() < 0.5 else 1 - tau))
            layers = [_layer(shape, colour, frames, cx, cy, rr, theta0)]
    else:
        raise ValueError(family)
    return _render(bg, layers, frames, size)


def _save_clip(folder, clip):
    os.makedirs(folder, exist_ok=True)
    for t in range(clip.shape[0]):
        Image.fromarray(clip[t]).save(os.path.join(folder, IMAGE_TMPL.format(t + 1)),
                                      quality=JPEG_QUALITY)


def _job(args):
    """Render one draw and save it as one clip (or two, forward and reversed, for a pair)."""
    frames_dir, seed, split_id, draw_idx, family, k, videos, frames, size = args
    rng = np.random.default_rng([seed, split_id, draw_idx])
    clip = _draw_clip(family, k, rng, frames, size)
    _save_clip(os.path.join(frames_dir, videos[0]), clip)
    if len(videos) == 2:
        _save_clip(os.path.join(frames_dir, videos[1]), clip[::-1])


def _plan(seed, split, split_id, per_class, families, frames, size, frames_dir):
    """Jobs and list lines for one split, in a fixed order independent of the worker count."""
    names, _, _, owners = class_table(families)
    jobs, lines = [], []
    label = 0
    prefix = split[0]
    vid = 0
    draw = 0
    for fam in families:
        _, cls, kind = FAMILIES[fam]
        if kind == 'pair':
            for _ in range(per_class):
                va, vb = f'{prefix}{vid:05d}', f'{prefix}{vid + 1:05d}'
                jobs.append((frames_dir, seed, split_id, draw, fam, 0, (va, vb), frames, size))
                lines += [f'{va} {frames} {label}', f'{vb} {frames} {label + 1}']
                vid += 2
                draw += 1
        else:
            for _ in range(per_class):
                for k in range(len(cls)):
                    v = f'{prefix}{vid:05d}'
                    jobs.append((frames_dir, seed, split_id, draw, fam, k, (v,), frames, size))
                    lines.append(f'{v} {frames} {label + k}')
                    vid += 1
                    draw += 1
        label += len(cls)
    return jobs, lines


def check_options(num_train_per_class=DEFAULTS['num_train_per_class'],
                  num_val_per_class=DEFAULTS['num_val_per_class'], frames=DEFAULTS['frames'],
                  size=DEFAULTS['size'], families=DEFAULTS['families'], workers=None):
    """Raise :class:`LSNetError` for options :func:`generate` cannot render (before anything is written)."""
    if frames < 2 or size < 16 or num_train_per_class < 1 or num_val_per_class < 1:
        raise LSNetError(f'gen_synthetic: need frames >= 2, size >= 16 and >= 1 clip per class '
                         f'(got frames={frames}, size={size}, train={num_train_per_class}, '
                         f'val={num_val_per_class})')
    if workers is not None and workers < 1:
        raise LSNetError(f'gen_synthetic: --workers must be at least 1 (got {workers})')
    class_table(tuple(families))  # raises for an unknown family
    for fam in families:
        if fam in LONG_CLIP_FAMILIES:
            LONG_CLIP_FAMILIES[fam](frames)  # raises for clips too short


def generate(out_dir, seed=0, num_train_per_class=DEFAULTS['num_train_per_class'],
             num_val_per_class=DEFAULTS['num_val_per_class'], frames=DEFAULTS['frames'],
             size=DEFAULTS['size'], families=DEFAULTS['families'], workers=None):
    """Render the dataset into ``out_dir`` (created; must not hold a dataset already).

    Size options (small values for tests, e.g. 4 / 2 / 8 / 32):
      num_train_per_class, num_val_per_class: clips per class in each split;
      frames: frames per clip (default 24; a multiple of 8 with an odd quotient keeps TSN's
              8-segment centre sampling symmetric under time reversal);
      size: frame side in pixels (square frames);
      families: which class families to include (see ``FAMILIES``), in label order;
      workers: rendering processes (default: min(2, CPUs)); the output does not depend on it.
    Returns ``out_dir``.  Same seed and options -> byte-identical files.
    """
    families = tuple(families)
    check_options(num_train_per_class, num_val_per_class, frames, size, families, workers)
    names, groups, pairs, _ = class_table(families)
    frames_dir = os.path.join(out_dir, 'frames')
    os.makedirs(frames_dir, exist_ok=True)
    t0 = time.time()
    jobs, lists = [], {}
    for split_id, (split, n) in enumerate((('train', num_train_per_class),
                                           ('val', num_val_per_class))):
        j, lines = _plan(seed, split, split_id, n, families, frames, size, frames_dir)
        jobs += j
        lists[split] = lines
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 16:
        ctx = multiprocessing.get_context('fork' if 'fork' in multiprocessing.get_all_start_methods()
                                          else 'spawn')
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_job, jobs, chunksize=8):
                pass
    else:
        for j in jobs:
            _job(j)
    for split, lines in lists.items():
        with open(os.path.join(out_dir, f'{split}_videofolder.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    with open(os.path.join(out_dir, 'category.txt'), 'w') as f:
        f.write('\n'.join(names) + '\n')
    with open(os.path.join(out_dir, 'class_groups.json'), 'w') as f:
        json.dump(groups, f, indent=1)
    swap = {}
    for a, b in FLIP_PAIRS:
        if a in names and b in names:
            swap[str(names.index(a))] = names.index(b)
            swap[str(names.index(b))] = names.index(a)
    with open(os.path.join(out_dir, 'label_swap.json'), 'w') as f:
        json.dump(swap, f, indent=1)
    meta = dict(format_version=FORMAT_VERSION, seed=seed, num_train_per_class=num_train_per_class,
                num_val_per_class=num_val_per_class, frames=frames, size=size,
                families=list(families), image_tmpl=IMAGE_TMPL, num_class=len(names),
                temporal_pairs=[list(p) for p in pairs],
                # every two-class temporal contrast: the reversal pairs plus slow / fast
                pairs=[list(p) for p in pairs] + [groups['speed']] if 'speed' in groups else
                [list(p) for p in pairs])
    with open(os.path.join(out_dir, META_FILE), 'w') as f:
        json.dump(meta, f, indent=1)
    log.info('synthetic dataset: %d classes, %d train + %d val clips in %.1fs -> %s', len(names),
             len(lists['train']), len(lists['val']), time.time() - t0, out_dir)
    return out_dir


def read_meta(root):
    """The parsed ``synthetic_meta.json`` of a complete set at ``root``, else None."""
    path = os.path.join(root, META_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def ensure_synthetic(root, seed=0, **size_options):
    """Create the synthetic dataset at ``root`` unless a complete one is there; return ``root``.

    Idempotent: a complete set already at ``root`` (any seed or size options, e.g. a small one a
    test made) is used as it is.  Atomic: the set is rendered into a temporary sibling folder and
    renamed into place, so an interrupted run leaves no half-written ``root`` and concurrent
    callers (e.g. DDP ranks) end up sharing one complete copy.  A non-empty ``root`` without a
    complete set is an error.  ``size_options``: see :func:`generate`.
    """
    root = os.path.abspath(root)
    if read_meta(root) is not None:
        return root
    if os.path.isdir(root) and os.listdir(root):
        raise LSNetError(f'synthetic dataset folder {root} exists but holds no complete dataset '
                         f'({META_FILE} missing); remove it or run '
                         f'python tools/gen_synthetic.py --out {root} --force')
    if os.path.exists(root) and not os.path.isdir(root):
        raise LSNetError(f'synthetic dataset folder {root} is a file')
    parent = os.path.dirname(root)
    make_folder(parent, f'cannot create the folder {parent} of the synthetic dataset {root}')
    tmp = tempfile.mkdtemp(prefix='.' + os.path.basename(root) + '.tmp-', dir=parent)
    try:
        generate(tmp, seed=seed, **size_options)
        if os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)
        try:
            os.rename(tmp, root)
        except OSError:
            if read_meta(root) is None:  # not another process's finished copy
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def describe_mismatch(root, seed=0, **size_options):
    """None if the set at ``root`` was made with these settings, else a one-line difference."""
    meta = read_meta(root) or {}
    wanted = dict(DEFAULTS, **size_options, seed=seed)
    wanted['families'] = list(wanted['families'])
    diff = [f'{k}={meta.get(k)!r} (wanted {v!r})' for k, v in wanted.items() if meta.get(k) != v]
    return ', '.join(diff) or None
