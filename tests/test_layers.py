"""Imports point one way: run_pipeline.py -> pipeline -> (stages | gallery) -> facemoe -> core.

Two checks of the same rule: import-linter's contracts (pyproject.toml, [tool.importlinter]), and a scan of
every source file's imports, lazy ones inside functions and ``importlib.import_module("...")`` included. The
scan also covers run_pipeline.py, which import-linter cannot take as a root package (it is a module).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("core", "facemoe", "stages", "gallery", "pipeline")
# package -> the top-level names it must never import
FORBIDDEN = {
    "core": {"facemoe", "stages", "gallery", "pipeline", "run_pipeline"},
    "facemoe": {"stages", "gallery", "pipeline", "run_pipeline"},
    "stages": {"gallery", "pipeline", "run_pipeline"},
    "gallery": {"stages", "pipeline", "run_pipeline"},
    "pipeline": {"run_pipeline"},
}
DYNAMIC = {"import_module", "__import__"}


def test_import_linter_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    if not lint_imports.is_file():
        pytest.fail(f"{lint_imports} not found: make test installs it (dev extra)")
    run = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, f"lint-imports exit {run.returncode}:\n{run.stdout}\n{run.stderr}"


def _imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, wherever it stands in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in DYNAMIC and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_upward_or_sideways(package):
    sources = sorted((ROOT / package).rglob("*.py"))
    assert sources, f"no sources under {package}/"
    broken = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in sources
        for line, module in _imported(path)
        if module.split(".")[0] in FORBIDDEN[package]
    ]
    assert not broken, f"{package} may not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(broken)


SOURCES = sorted(p for d in (*PACKAGES, "bench") for p in (ROOT / d).rglob("*.py")) + [
    ROOT / "run_pipeline.py"
]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_is_over_400_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 400, f"{path.relative_to(ROOT)}: {lines} lines; split it by concern"
