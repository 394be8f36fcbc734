"""The floors of mmdmpt (docs/architecture.md): no import cycle, no upward import.

The import graph is read from the source with ``ast`` -- every ``import`` and
``from ... import`` of every module of ``mmdmpt/``, including the ones inside
functions -- so a lazy import cannot hide an upward dependency.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'mmdmpt'

#: Floor of each top-level part of the package (docs/architecture.md).
FLOORS = {
    '': 1,  # mmdmpt/__init__.py, version.py
    'version': 1,
    'registry': 1,
    'utils': 1,
    'structures': 1,
    'testing': 1,
    'datasets': 2,
    'models': 2,
    'evaluation': 2,
    'visualization': 2,
    'engine': 3,
    'apis': 4,
}


def _modules():
    """``module name -> file`` for every module of the package."""
    found = {}
    for path in PACKAGE.rglob('*.py'):
        parts = path.relative_to(ROOT).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        found['.'.join(parts)] = path
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ''
    base = module.split('.')
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def _imports(modules):
    """``module -> set of mmdmpt modules it imports`` (names resolved to modules)."""
    graph = defaultdict(set)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == '__init__.py'
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                targets = [base]
                # `from pkg import submodule` imports the submodule too
                targets += [f'{base}.{alias.name}' for alias in node.names]
            for target in targets:
                if not target.startswith('mmdmpt'):
                    continue
                while target and target not in modules:
                    target = target.rpartition('.')[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def _part(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


GRAPH = _imports(_modules())


def test_every_part_has_a_floor():
    parts = {_part(m) for m in _modules()}
    assert parts <= set(FLOORS), f'parts without a floor: {sorted(parts - set(FLOORS))}'


def test_no_upward_import_and_floor_two_parts_never_import_each_other():
    bad = []
    for module, targets in GRAPH.items():
        src = _part(module)
        for target in targets:
            dst = _part(target)
            if FLOORS[dst] > FLOORS[src]:
                bad.append(f'{module} -> {target} (floor {FLOORS[src]} -> {FLOORS[dst]})')
            elif FLOORS[src] == FLOORS[dst] == 2 and src != dst:
                bad.append(f'{module} -> {target} (two parts of floor 2)')
            elif dst == 'testing' and src != 'testing':
                bad.append(f'{module} -> {target} (the library never imports its test helpers)')
    assert not bad, 'imports against the floors:\n' + '\n'.join(sorted(bad))


def test_no_import_cycle():
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(_modules()):
        if module not in index:
            visit(module)
    assert not cycles, f'import cycles: {cycles}'


def test_the_checker_sees_a_cycle_and_an_upward_import(monkeypatch):
    """The graph really contains the edges it checks (the test can fail)."""
    assert 'mmdmpt.structures' in GRAPH['mmdmpt.evaluation.metrics.reid_metric']
    assert 'mmdmpt.engine.hooks.rank_list_hook' in GRAPH['mmdmpt.apis']
    monkeypatch.setitem(GRAPH, 'mmdmpt.structures', {'mmdmpt.apis'})
    with pytest.raises(AssertionError, match='floor 1 -> 4'):
        test_no_upward_import_and_floor_two_parts_never_import_each_other()
    with pytest.raises(AssertionError, match='import cycles'):
        test_no_import_cycle()


def test_the_modality_vocabulary_is_written_once():
    """``('rgb', 'nir', 'tir')`` is spelled out in one file of the package only."""
    places = []
    for path in PACKAGE.rglob('*.py'):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and [getattr(e, 'value', None) for e in node.elts] == [
                'rgb',
                'nir',
                'tir',
            ]:
                places.append(f'{path.relative_to(ROOT)}:{node.lineno}')
    assert places == ['mmdmpt/structures/modalities.py:' + places[0].split(':')[1]], places
