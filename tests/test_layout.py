"""Package layout: ops/ and archs/ are side-effect-free library code without import cycles.

- ops/ and archs/ never import tools/ or an entry script (main, test_models, opts);
- archs/ holds architectures only and never imports ops/ (ops imports archs, not the reverse);
- ops/ never calls print(): library code logs or raises LSNetError, entry points print.
"""
import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_AND_TOOLS = ('tools', 'main', 'test_models', 'opts')


def _files(package):
    folder = os.path.join(REPO, package)
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith('.py'))


def _module(path):
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _imports(path):
    """(line, top-level package) of every import in the file, relative imports resolved, plus
    importlib.import_module('x...') / __import__('x...') calls with a constant name."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    package = _module(path).split('.')
    if not path.endswith('__init__.py'):
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split('.')[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((node.lineno, name.split('.')[0]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, 'id', None)
            if name in ('import_module', '__import__'):
                found.append((node.lineno, node.args[0].value.split('.')[0]))
    return found


def _where(path, line):
    return '{}:{}'.format(os.path.relpath(path, REPO), line)


@pytest.mark.parametrize('package', ['ops', 'archs'])
def test_library_never_imports_tools_or_entry_scripts(package):
    bad = [_where(p, line) + ' imports ' + top for p in _files(package) for line, top in _imports(p)
           if top in ENTRY_AND_TOOLS]
    assert not bad, bad


def test_archs_never_imports_ops():
    bad = [_where(p, line) for p in _files('archs') for line, top in _imports(p) if top == 'ops']
    assert not bad, bad


def test_ops_has_no_print_calls():
    bad = []
    for path in _files('ops'):
        with open(path) as f:
            tree = ast.parse(f.read(), filename=path)
        bad += [_where(path, n.lineno) for n in ast.walk(tree)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == 'print']
    assert not bad, bad


def test_every_library_module_imports_alone_without_tools_or_entry_scripts():
    """Each module of ops/ and archs/ imports in a fresh interpreter, and pulls in no tools/ module
    or entry script, not even indirectly."""
    modules = [_module(p) for pkg in ('ops', 'archs') for p in _files(pkg)]
    code = '\n'.join([
        'import importlib, sys',
        'bad = []',
        'for name in {!r}:'.format(modules),
        '    importlib.import_module(name)',
        '    bad += [name + " -> " + m for m in sys.modules if m.split(".")[0] in {!r}]'.format(ENTRY_AND_TOOLS),
        'print("\\n".join(sorted(set(bad))))',
    ])
    res = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == ''
