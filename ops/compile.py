"""Compiled execution (``--compile``): ``torch.compile`` with Inductor, and the way back to the eager module.

:func:`compile_model` checks first that Inductor can generate code on the device (a C++ compiler
on the CPU, Triton on CUDA), so a missing tool is one ``--compile: ...`` line at start-up instead of
a traceback at the first training step. It returns ``torch.compile(model)``: a wrapper module that
shares the parameters and buffers of ``model`` (so an optimizer built on ``model`` trains it, and
``model.train()``/``.eval()``, partial BN and ``--lsm_start`` reach the compiled code) but names them
``_orig_mod.*``. Everything that saves or loads weights goes through :func:`unwrap`, so checkpoints of
a compiled run have exactly the keys of an eager run.

Under DDP the model is compiled first and the compiled module is wrapped, the order PyTorch's
"Where to apply torch.compile?" page recommends; DDP's forward then lets Dynamo's DDPOptimizer split
the graph at the gradient-bucket boundaries, so communication still overlaps the backward pass.
"""
import importlib.util
import logging
import os
import platform
import shlex
import shutil
import sysconfig

import torch

from ops.errors import LSNetError

log = logging.getLogger(__name__)

# torch.compile's modes. 'reduce-overhead' adds CUDA graphs, which only CUDA code uses; the
# 'max-autotune' modes benchmark kernel variants while compiling (much longer compiles).
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')


def cpp_compiler():
    """The C++ compiler Inductor will use for CPU code, or None when it finds none.

    Asks Inductor's own search (``torch._inductor.cpp_builder.get_cpp_compiler``: the ``CXX``
    environment variable, else ``g++``; ``clang++`` on macOS) and, should that private function be
    unavailable in this torch version, looks the same candidates up on ``PATH``.
    """
    try:
        from torch._inductor import cpp_builder, exc
        search = cpp_builder.get_cpp_compiler
        invalid = (exc.InvalidCxxCompiler, OSError)
    except (ImportError, AttributeError):
        search, invalid = None, ()
    if search is not None:
        try:
            return search()
        except invalid:
            return None
    for cxx in _compiler_candidates():
        words = shlex.split(cxx)
        if words and shutil.which(words[0]):
            return cxx
    return None


def _compiler_candidates():
    """The compiler commands Inductor's configuration names (``CXX``, else the platform's default)."""
    from torch._inductor import config
    cxx = config.cpp.cxx
    return [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if isinstance(c, str) and c.strip()]


def python_headers():
    """The folder holding ``Python.h`` (Inductor's CPU kernels are C++ Python extensions), or None."""
    folders = [sysconfig.get_path('include')]
    if platform.system() == 'Darwin':  # a framework build keeps them under Headers
        folders.append(os.path.join(os.path.dirname(os.path.dirname(sysconfig.get_path('stdlib'))), 'Headers'))
    return next((f for f in folders if f and os.path.isfile(os.path.join(f, 'Python.h'))), None)


def check_compile_support(device, mode='default'):
    """Raise :class:`LSNetError` (one line naming ``--compile``) when Inductor cannot run on ``device``."""
    if mode not in COMPILE_MODES:
        raise LSNetError('--compile_mode {!r}: choose from {}'.format(mode, ', '.join(COMPILE_MODES)))
    device = torch.device(device)
    if device.type == 'cuda':
        if importlib.util.find_spec('triton') is None:
            raise LSNetError('--compile: Triton, which Inductor needs for CUDA code, is not installed '
                             '(pip install triton), or run without --compile')
    elif device.type == 'cpu':
        if cpp_compiler() is None:
            raise LSNetError('--compile: no C++ compiler found (Inductor looks for {}; install g++ or set CXX), '
                             'or run without --compile'.format(' or '.join(_compiler_candidates())))
        if python_headers() is None:
            raise LSNetError('--compile: Python.h not found in {} (install the Python development headers, '
                             'e.g. python3-dev), or run without --compile'.format(sysconfig.get_path('include')))
    else:
        raise LSNetError('--compile: device {} is not supported (cpu or cuda)'.format(device))


def compile_model(model, mode='default', device=None, inference=False):
    """``torch.compile(model, mode=mode, backend='inductor')`` after :func:`check_compile_support`.

    ``device`` defaults to that of the model's first parameter. The returned module shares
    ``model``'s parameters; compilation happens lazily at the first call of each kind (training,
    evaluation, a new input shape), which takes seconds to minutes on a CPU.

    ``inference=True`` is for callers that only evaluate and never change the weights after this
    call (test_models.py, the demos): Inductor's *freezing* then treats the weights as constants,
    folds each batch norm into its convolution and gives oneDNN its weights pre-packed, which makes
    compiled ResNet inference faster than eager on a CPU instead of slower (docs/performance.md).
    Weights changed later would not reach the frozen code, so training (main.py, whose validation
    runs between optimizer steps) compiles without it.
    """
    if device is None:
        device = next(model.parameters()).device
    check_compile_support(device, mode)
    log.info('--compile: torch.compile (Inductor, mode %s%s); the first %s compile, which takes a while',
             mode, ', weights frozen' if inference else '',
             'calls' if inference else 'training and evaluation steps')
    if mode == 'reduce-overhead' and torch.device(device).type != 'cuda':
        log.info('--compile_mode reduce-overhead: its CUDA graphs apply on CUDA only; on %s it compiles as default',
                 device)
    compiled = torch.compile(model, mode=mode, backend='inductor')
    return FrozenCompiled(model, compiled) if inference else compiled


class FrozenCompiled(torch.nn.Module):
    """``compiled`` (``torch.compile`` of ``model``) called with Inductor's freezing switched on.

    Freezing has to be on while Dynamo traces, which happens inside a call (the first one, and any
    recompilation for a new input shape): then the weights are taken into the graph as constants;
    ``torch.compile(options={'freezing': True})`` reaches the backend only, after the weights have
    become graph inputs, and freezes nothing.  ``_orig_mod`` is the eager ``model``, as on
    ``compiled``, so :func:`unwrap` and ``.eval()`` reach it.
    """

    def __init__(self, model, compiled):
        super().__init__()
        self._orig_mod = model
        object.__setattr__(self, 'compiled', compiled)  # not a submodule: it holds _orig_mod itself

    def forward(self, *args, **kwargs):
        from torch._inductor import config
        with config.patch(freezing=True):
            return self.compiled(*args, **kwargs)


def unwrap(model):
    """The eager module under ``torch.compile`` (``_orig_mod``) and DDP / DataParallel (``.module``)
    wrappers, in any nesting; any other module is returned as it is."""
    while True:
        inner = getattr(model, '_orig_mod', None)
        if isinstance(inner, torch.nn.Module) and inner is not model:
            model = inner
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            return model
