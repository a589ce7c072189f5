"""bench/gallery.py runs end to end at a tiny size (SQLite only) and reports every figure."""
from __future__ import annotations

import importlib.util
import json

from tests.conftest import ROOT


def test_gallery_bench_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_gallery", ROOT / "bench" / "gallery.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--templates", "400", "--enroll", "100", "--dim", "32", "--clusters", "20", "--queries", "50",
            "--repeats", "5", "--ef-search", "16", "64", "--events", "500", "--log-identities", "20",
            "--log-queries", "5", "--no-pg", "--json", str(tmp_path / "out.json")]
    assert bench.main(argv) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert [r["backend"] for r in out["enroll"]] == ["sqlite"] and out["enroll"][0]["templates"] == 100
    assert [r["index"] for r in out["index"]] == ["exact", "hnsw M=32 ef=16", "hnsw M=32 ef=64"]
    assert out["index"][0]["recall@1"] == 1.0 and out["index"][2]["recall@1"] >= 0.9
    assert out["match_log"][0]["events"] == 500 and out["match_log"][0]["query_p50_ms"] > 0
    assert "## search (400 x 32-d, 20 clusters)" in capsys.readouterr().out
