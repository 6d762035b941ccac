"""The temporal shift as one compiled C loop on CPU (``ops/csrc/temporal_shift.c``).

ATen needs five slice operations for a shift (three copies, two zero fills), each its own pass and
thread fork; the C loop walks the output once, copying or zeroing each ``H*W`` plane, so the
shift moves the bytes of one ``clone()`` at its speed. Same bytes as the slice formula, bit for bit.

The source is compiled on first use with the system C compiler (``$CC``, else ``cc``; OpenMP when
the compiler has it) into a cache folder (``$LSNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/lsnet`` or
``~/.cache/lsnet``) and loaded with ctypes, which releases the GIL during the call. A shift whose
source and output together exceed the last-level cache writes its output with non-temporal stores
(see the C source): the output would leave the cache before it is read anyway, and skipping the
read-for-ownership of every output line makes the shift cheaper than a ``clone()``. No compiler, a
failed build, ``LSNET_NATIVE_SHIFT=0``, a non-CPU device or a non-contiguous tensor: the caller
falls back to the ATen slice copies (same numbers), and the reason is logged once.
"""
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading

import torch

log = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc', 'temporal_shift.c')
_FLAG_SETS = (['-O3', '-fopenmp'], ['-O3'])  # without OpenMP the loop runs on one thread
_state = {'lib': None, 'tried': False, 'stream_bytes': None}
_lock = threading.Lock()


def enabled():
    return os.environ.get('LSNET_NATIVE_SHIFT', '1').strip().lower() not in ('0', 'false', 'no', 'off')


def cache_dir():
    if os.environ.get('LSNET_CACHE_DIR'):
        return os.environ['LSNET_CACHE_DIR']
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'lsnet')


def _build(target):
    """Compile ``SOURCE`` into ``target`` (atomic rename). Returns None or the reason it failed."""
    cc = os.environ.get('CC') or 'cc'
    if shutil.which(cc) is None:
        return 'no C compiler ({!r} not found)'.format(cc)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    reason = None
    for flags in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(target))
        os.close(fd)
        cmd = [cc, *flags, '-shared', '-fPIC', SOURCE, '-o', tmp]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            res, reason = None, '{}: {}'.format(' '.join(cmd), e)
        if res is not None and res.returncode == 0:
            os.replace(tmp, target)
            return None
        if res is not None:
            reason = '{} failed: {}'.format(' '.join(cmd), (res.stderr.strip().splitlines() or ['?'])[-1])
        os.unlink(tmp)
    return reason


def _load():
    with open(SOURCE, 'rb') as f:
        digest = hashlib.sha1(f.read()).hexdigest()[:12]
    target = os.path.join(cache_dir(), 'temporal_shift_{}.so'.format(digest))
    if not os.path.exists(target):
        try:
            reason = _build(target)
        except OSError as e:  # e.g. an unwritable cache folder
            reason = str(e)
        if reason:
            return None, reason
    try:
        lib = ctypes.CDLL(target)
    except OSError as e:
        return None, 'cannot load {}: {}'.format(target, e)
    fn = lib.lsnet_temporal_shift
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_long] * 5 + [ctypes.c_int] * 3
    fn.restype = None
    return fn, None


def last_level_cache_bytes(sysfs='/sys/devices/system/cpu/cpu0/cache'):
    """Size of CPU 0's largest cache level from Linux sysfs ("32768K"), or None when unknown."""
    best = None
    try:
        entries = os.listdir(sysfs)
    except OSError:
        return None
    for entry in entries:
        try:
            with open(os.path.join(sysfs, entry, 'level')) as f:
                level = int(f.read())
            with open(os.path.join(sysfs, entry, 'size')) as f:
                text = f.read().strip().upper()
        except (OSError, ValueError):
            continue
        scale = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip('KMG')
        if digits.isdigit() and (best is None or level > best[0]):
            best = (level, int(digits) * scale)
    return None if best is None else best[1]


def stream_min_bytes():
    """Output size from which the shift streams its output past the cache: half the last-level
    cache (source and output together fill it), 8 MiB when the cache size is unknown."""
    if _state['stream_bytes'] is None:
        llc = last_level_cache_bytes()
        _state['stream_bytes'] = llc // 2 if llc else 8 << 20
    return _state['stream_bytes']


def kernel():
    """The loaded C function, or None (decided once per process; :func:`reset` forgets it)."""
    if not _state['tried']:
        with _lock:
            if not _state['tried']:
                fn, reason = _load() if enabled() else (None, 'LSNET_NATIVE_SHIFT={}'.format(
                    os.environ.get('LSNET_NATIVE_SHIFT')))
                if reason:
                    log.info('native temporal shift unavailable (%s); using ATen slice copies', reason)
                _state['lib'], _state['tried'] = fn, True
    return _state['lib']


def reset():
    """Forget the loaded kernel, so the next shift re-reads the environment (for tests)."""
    with _lock:
        _state['lib'], _state['tried'] = None, False


def _tracing():
    """A tracer or transform is recording ops (jit trace, export, compile, vmap): the C call would be
    invisible to it or meet tensors without data, so the ATen slices must run."""
    functorch_active = getattr(torch._C, '_are_functorch_transforms_active', lambda: False)
    return (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or functorch_active())


def shift_into(src, dst, n_segment, fold, direction):
    """Shift ``src`` (N*T, C, H, W) into ``dst`` (a fresh tensor like it) with the C loop.

    Returns False, touching nothing, when the loop does not apply (disabled, unavailable, not CPU,
    not contiguous); the caller then runs the slice copies.
    """
    fn = kernel()
    if (fn is None or src.device.type != 'cpu' or not (src.is_contiguous() and dst.is_contiguous())
            or _tracing() or type(src) is not torch.Tensor or type(dst) is not torch.Tensor):
        return False
    nt, c, h, w = src.shape
    if nt:
        # like ATen's grain size: no thread gets less than 128 KiB to copy
        nbytes = src.numel() * src.element_size()
        threads = max(1, min(torch.get_num_threads(), nbytes >> 17))
        fn(src.data_ptr(), dst.data_ptr(), nt // n_segment, n_segment, c, h * w * src.element_size(),
           fold, direction, threads, int(nbytes >= stream_min_bytes()))
    return True
