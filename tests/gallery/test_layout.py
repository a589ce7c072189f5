"""gallery/ stays small per module and below pipeline and stages (the layers of docs: ARCHITECTURE.md)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

MODULES = sorted((ROOT / "gallery").rglob("*.py"))


@pytest.mark.parametrize(
    "path", [*MODULES, ROOT / "bench" / "gallery.py"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_module_is_under_400_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) < 400


def test_gallery_imports_neither_pipeline_nor_stages():
    pattern = re.compile(
        r"^\s*(from|import)\s+(pipeline|stages)\b|import_module\(\s*['\"](pipeline|stages)\b", re.M
    )
    found = [str(p.relative_to(ROOT)) for p in MODULES if pattern.search(p.read_text(encoding="utf-8"))]
    assert found == []
