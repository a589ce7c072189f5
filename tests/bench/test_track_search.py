"""bench/track_search.py runs end to end at a tiny size and reports every figure."""

from __future__ import annotations

import json

import pytest

from tests.bench.conftest import load_bench


@pytest.mark.parametrize(
    "n, kind, rows",
    [
        (1, "exact", ["exact (flat)"]),
        (300, "exact", ["exact (flat)"]),
        (2000, "hnsw", ["hnsw M=32 ef=16", "hnsw M=32 ef=64"]),
    ],
)
def test_track_search_bench_on_a_sqlite_log(tmp_path, capsys, n, kind, rows):
    argv = ["--n", str(n), "--dim", "16", "--queries", "20", "--repeats", "20", "--hnsw-above", "500"]
    argv += ["--ef-search", "16", "64", "--updates", "10", "--exact-queries", "2", "--db-dir", str(tmp_path)]
    assert load_bench("track_search").main([*argv, "--json", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["kind"] == kind and [r["index"] for r in out["search"]] == rows
    assert out["search"][-1]["recall@10"] >= 0.9 and out["search"][-1]["search_tracks_p50_ms"] > 0
    assert out["build_s"] >= 0 and out["open_s"] >= 0 and out["index_mb"] >= 0 and out["exact_sql_p50_ms"] > 0
    assert out["update_p50_ms"] > 0 and out["write_per_track_ms"] > 0 and out["peak_rss_mb"] > 0
    assert f"## track search ({n:,} x 16-d, people" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [tmp_path / "out.json"]  # the log and its index went with the run


@pytest.mark.parametrize("data", ["people", "random"])
def test_track_search_bench_index_only(tmp_path, data):
    argv = ["--n", "1500", "--dim", "16", "--data", data, "--queries", "20", "--repeats", "20", "--no-sql"]
    argv += [
        "--hnsw-above",
        "500",
        "--ef-search",
        "64",
        "--updates",
        "5",
        "--json",
        str(tmp_path / "out.json"),
    ]
    assert load_bench("track_search").main(argv) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["kind"] == "hnsw" and out["data"] == data and 0 < out["search"][0]["recall@10"] <= 1
    assert out["update_p50_ms"] > 0 and "log_s" not in out


def test_track_search_bench_keeps_and_reuses_its_log(tmp_path):
    keep = tmp_path / "kept"
    argv = ["--n", "600", "--dim", "16", "--queries", "10", "--repeats", "10", "--hnsw-above", "200"]
    argv += ["--groups", "0", "--updates", "5", "--exact-queries", "1", "--keep", str(keep)]
    bench = load_bench("track_search")
    runs = []
    for name in ("first.json", "second.json"):
        assert bench.main([*argv, "--json", str(tmp_path / name)]) == 0
        runs.append(json.loads((tmp_path / name).read_text()))
    assert runs[0]["log_s"] is not None and runs[0]["build_s"] is not None  # logged and built
    assert runs[1]["log_s"] is None and runs[1]["build_s"] is None  # reused: opened
    assert [r["recall@10"] for r in runs[1]["search"]] == [r["recall@10"] for r in runs[0]["search"]]
    assert (keep / "log.db").is_file() and len(list(keep.glob("*.tracks.faiss"))) == 1
