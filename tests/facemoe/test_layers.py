"""The package's place in the layers: it imports ``core`` and nothing else of the application, and its own
modules import each other one way (no cycle, counting imports inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "facemoe"
APPLICATION = {"pipeline", "stages", "gallery", "run_pipeline"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Absolute names of everything ``path`` imports, at any depth; ``from X import y`` also yields ``X.y``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append(target)
            found += [f"{target}.{alias.name}" for alias in node.names]
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def test_imports_nothing_of_the_application_above_it():
    offenders = [
        (name, target)
        for name, path in _modules().items()
        for target in _imports(path)
        if target.split(".")[0] in APPLICATION
    ]
    assert offenders == []


def test_own_modules_import_each_other_one_way():
    modules = _modules()
    graph = {
        name: {t for t in _imports(path) if t in modules and t != name} for name, path in modules.items()
    }
    for name in modules:  # a package's __init__ is not an edge of its own submodules
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(trail[trail.index(nxt) :] + [nxt])
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_backbone_does_not_know_its_checkpoints_or_registry():
    for name in ("facemoe.blocks", "facemoe.model", "facemoe.moe"):
        targets = _imports(_modules()[name])
        assert not [t for t in targets if t.startswith(("facemoe.checkpoint", "facemoe.registry"))], name
