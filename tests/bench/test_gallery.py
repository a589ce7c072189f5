"""bench/gallery.py runs end to end at a tiny size (SQLite only) and reports every figure."""

from __future__ import annotations

import json

import pytest

from tests.bench.conftest import load_bench


def test_gallery_bench_tiny(tmp_path, capsys):
    bench = load_bench("gallery")
    argv = [
        "--templates",
        "400",
        "--enroll",
        "100",
        "--enroll-slice",
        "30",
        "--dim",
        "32",
        "--clusters",
        "20",
        "--queries",
        "50",
        "--repeats",
        "5",
        "--ef-search",
        "16",
        "64",
        "--events",
        "500",
        "--log-identities",
        "20",
        "--log-queries",
        "5",
        "--no-pg",
        "--json",
        str(tmp_path / "out.json"),
    ]
    assert bench.main(argv) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert [r["backend"] for r in out["enroll"]] == ["sqlite"] and out["enroll"][0]["templates"] == 100
    assert out["enroll"][0]["slice"] == 30 and out["enroll"][0]["first_per_s"] > 0
    assert out["enroll"][0]["last_per_s"] > 0 and out["enroll"][0]["load"] >= 0
    assert [r["index"] for r in out["index"]] == ["exact", "hnsw M=32 ef=16", "hnsw M=32 ef=64"]
    assert out["index"][0]["recall@1"] == 1.0 and out["index"][2]["recall@1"] >= 0.9
    log = out["match_log"][0]
    assert log["events"] == 500 and log["query_p50_ms"] > 0 and log["identity_all_p99_ms"] > 0
    assert "## search (400 x 32-d, 20 clusters)" in capsys.readouterr().out


@pytest.mark.parametrize("parts", [["match_log"], ["enroll"], ["enroll", "match_log"]])
def test_gallery_bench_parts(tmp_path, parts):
    argv = [
        "--templates",
        "50",
        "--dim",
        "8",
        "--clusters",
        "5",
        "--events",
        "200",
        "--log-identities",
        "10",
        "--log-queries",
        "3",
        "--no-pg",
        "--json",
        str(tmp_path / "out.json"),
        "--parts",
        *parts,
    ]
    assert load_bench("gallery").main(argv) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert [name for name in ("enroll", "index", "match_log") if out[name]] == parts


def test_gallery_bench_searches_on_the_cpu_even_where_faiss_sees_a_gpu(tmp_path, monkeypatch):
    import faiss

    def no_gpu_copy(index, **kw):
        raise AssertionError("the bench must time CPU search, figures comparable across machines")

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", no_gpu_copy)
    argv = [
        "--templates",
        "60",
        "--dim",
        "8",
        "--clusters",
        "5",
        "--queries",
        "10",
        "--repeats",
        "3",
        "--ef-search",
        "16",
        "--no-pg",
        "--parts",
        "index",
        "--json",
        str(tmp_path / "out.json"),
    ]
    assert load_bench("gallery").main(argv) == 0
    rows = json.loads((tmp_path / "out.json").read_text())["index"]
    assert [r["index"] for r in rows] == ["exact", "hnsw M=32 ef=16"]
