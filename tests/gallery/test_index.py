"""gallery/index.py: exact and HNSW indexes, the tagged file format, refusal of foreign or corrupt files, search on
the GPU when FAISS sees one (else the CPU)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

import gallery.index as index_module
from gallery.config import IndexConfig
from gallery.errors import EmbeddingError, IndexFileDamagedError, IndexFileError
from gallery.index import MAGIC, VectorIndex, as_queries
from tests.gallery.helpers import unit


def _index(n: int, hnsw_above: int = 1000) -> tuple[VectorIndex, np.ndarray]:
    vecs = unit(np.random.default_rng(0), n, 8)
    return VectorIndex.build(
        np.arange(100, 100 + n),
        vecs,
        embedder_id="e8",
        gallery_version=3,
        config=IndexConfig(hnsw_above=hnsw_above),
    ), vecs


@pytest.mark.parametrize(
    "n,hnsw_above,kind", [(0, 10, "exact"), (1, 10, "exact"), (30, 10, "hnsw"), (30, 100, "exact")]
)
def test_build_and_search(n, hnsw_above, kind):
    index, vecs = _index(n, hnsw_above)
    assert index.tag.kind == kind and len(index) == n
    scores, ids = index.search(vecs if n else np.ones((2, 8), np.float32), 3)
    assert ids.shape == (len(vecs) if n else 2, min(3, n))
    if n:
        np.testing.assert_array_equal(ids[:, 0], np.arange(100, 100 + n))
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    index, vecs = _index(20, hnsw_above=5)
    index.save(tmp_path / "g.faiss")
    loaded = VectorIndex.load(tmp_path / "g.faiss", "e8")
    assert loaded.tag == index.tag
    np.testing.assert_array_equal(loaded.search(vecs, 2)[1], index.search(vecs, 2)[1])
    assert list(tmp_path.iterdir()) == [tmp_path / "g.faiss"]  # no temporary file left


def test_a_save_removes_what_a_killed_save_left(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    orphan = tmp_path / f"g.faiss.{gone.pid}.1.tmp"  # a writer killed while saving
    live = tmp_path / f"g.faiss.{os.getpid()}.2.tmp"  # a save going on in a live process
    orphan.write_bytes(b"half")
    live.write_bytes(b"half")
    _index(20, hnsw_above=5)[0].save(tmp_path / "g.faiss")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.faiss", live.name]


@pytest.mark.parametrize(
    "content,message",
    [
        (b"garbage", "unknown format"),
        (MAGIC + b"{not json\n", "unreadable tag"),
        (
            MAGIC + b'{"embedder_id": "e8", "dim": 8, "gallery_version": 1, "kind": "exact", "count": 1}\nxx',
            "corrupt FAISS data",
        ),
    ],
)
def test_bad_files_are_refused(tmp_path, content, message):
    (tmp_path / "bad.faiss").write_bytes(content)
    with pytest.raises(IndexFileDamagedError, match=message):
        VectorIndex.load(tmp_path / "bad.faiss", "e8")


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "tag only", "empty", "garbage after tag"])
def test_damaged_files_are_detected(tmp_path, damage):
    """Every kind of damage is an IndexFileDamagedError (which the gallery rebuilds), never a crash."""
    index, _ = _index(40, hnsw_above=10)
    path = tmp_path / "g.faiss"
    index.save(path)
    blob = bytearray(path.read_bytes())
    head = blob.index(b"\n", len(MAGIC)) + 1
    damaged = {
        "truncated": bytes(blob[: len(blob) // 2]),
        "flipped byte": bytes(blob[:-100] + bytes([blob[-100] ^ 0xFF]) + blob[-99:]),
        "tag only": bytes(blob[:head]),
        "empty": b"",
        "garbage after tag": bytes(blob[:head]) + np.random.default_rng(1).bytes(4000),
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(IndexFileDamagedError, match=f"index file {path}"):
        VectorIndex.load(path, "e8")


def test_index_files_are_owner_only(tmp_path):
    import os
    import stat

    index, _ = _index(5)
    (tmp_path / "g.faiss").write_bytes(b"old")
    os.chmod(tmp_path / "g.faiss", 0o644)
    for name in ("g.faiss", "new.faiss"):
        index.save(tmp_path / name)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_foreign_embedder_and_missing_file(tmp_path):
    index, _ = _index(3)
    index.save(tmp_path / "g.faiss")
    with pytest.raises(IndexFileError, match="expected embedder 'other', got an index made by 'e8'"):
        VectorIndex.load(tmp_path / "g.faiss", "other")
    with pytest.raises(IndexFileError, match="cannot read"):
        VectorIndex.load(tmp_path / "none.faiss", "e8")


@pytest.mark.parametrize(
    "array,message",
    [
        (np.ones((2, 4)), r"expected shape \[M, 8\], got \[2, 4\]"),
        (np.full((1, 8), np.nan), "finite"),
        (np.zeros((1, 8)), "non-zero"),
    ],
)
def test_bad_queries(array, message):
    with pytest.raises(EmbeddingError, match=message):
        as_queries(array, 8)


def test_queries_are_normalised():
    np.testing.assert_allclose(as_queries(np.full((1, 8), 2.0), 8), np.full((1, 8), 8**-0.5), rtol=1e-6)


# device: GPU when FAISS sees one (exact indexes), else CPU; files are always CPU indexes


@pytest.fixture
def fresh_log(monkeypatch):
    """Forget which device choices were already logged in this process."""
    monkeypatch.setattr(index_module, "_announced", set())


class _FakeGpuIndex:
    """Stands in for what faiss.index_cpu_to_all_gpus returns: searches the CPU index and counts the calls."""

    def __init__(self, cpu_index):
        self.cpu_index, self.searches = cpu_index, 0

    def search(self, queries, k):
        self.searches += 1
        return self.cpu_index.search(queries, k)


def test_cpu_is_chosen_when_faiss_sees_no_gpu(monkeypatch, caplog, fresh_log):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    moved = []
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index, **kw: moved.append(index))
    with caplog.at_level(logging.INFO, logger="gallery.index"):
        first, vecs = _index(20)
        second, _ = _index(5)
        assert first.device == "cpu" and second.device == "cpu" and moved == []
        np.testing.assert_array_equal(first.search(vecs, 1)[1][:, 0], np.arange(100, 120))
    assert [r.getMessage() for r in caplog.records].count("FAISS search on the CPU (FAISS sees no GPU)") == 1
    monkeypatch.delattr(faiss, "get_num_gpus")  # a FAISS without GPU support at all
    assert index_module.faiss_gpus() == 0 and _index(3)[0].device == "cpu"


def test_gpu_is_chosen_when_faiss_sees_one_and_files_stay_cpu(monkeypatch, tmp_path, caplog, fresh_log):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    fakes = []
    monkeypatch.setattr(
        faiss, "index_cpu_to_all_gpus", lambda index, **kw: fakes.append(_FakeGpuIndex(index)) or fakes[-1]
    )
    with caplog.at_level(logging.INFO, logger="gallery.index"):
        index, vecs = _index(20)
        assert index.device == "gpu" and len(fakes) == 1
        np.testing.assert_array_equal(index.search(vecs, 2)[1][:, 0], np.arange(100, 120))
        assert fakes[0].searches == 1
    assert "FAISS search of exact indexes on 2 GPU(s)" in caplog.text
    index.save(tmp_path / "g.faiss")  # serialises the CPU index (the GPU copy cannot be serialised)
    loaded = VectorIndex.load(tmp_path / "g.faiss", "e8", gpu=False)
    assert loaded.device == "cpu" and len(fakes) == 1
    np.testing.assert_array_equal(loaded.search(vecs, 2)[1], index.search(vecs, 2)[1])
    hnsw, _ = _index(30, hnsw_above=10)  # FAISS has no GPU HNSW
    assert hnsw.device == "cpu" and len(fakes) == 1
    off = VectorIndex.build(
        np.arange(3), vecs[:3], embedder_id="e8", gallery_version=0, config=IndexConfig(gpu=False)
    )
    assert off.device == "cpu" and len(fakes) == 1


def test_failed_gpu_copy_falls_back_to_cpu(monkeypatch, caplog, fresh_log):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)

    def out_of_memory(index, **kw):
        raise RuntimeError("cudaMalloc error out of memory")

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", out_of_memory)
    index, vecs = _index(10)
    assert index.device == "cpu" and "cannot copy the index to the GPU" in caplog.text
    np.testing.assert_array_equal(index.search(vecs, 1)[1][:, 0], np.arange(100, 110))


@pytest.mark.skipif(
    index_module.faiss_gpus() == 0,
    reason="FAISS sees no GPU (a faiss-cpu build, or no visible device): install the gpu extra on a GPU machine",
)
def test_search_on_a_real_gpu_matches_the_cpu(tmp_path):
    vecs = unit(np.random.default_rng(1), 5000, 64)
    index = VectorIndex.build(
        np.arange(5000), vecs, embedder_id="e64", gallery_version=1, config=IndexConfig()
    )
    assert index.device == "gpu"
    scores, ids = index.search(vecs[:100], 5)
    cpu_scores, cpu_ids = index._index.search(vecs[:100], 5)
    np.testing.assert_array_equal(ids[:, 0], np.arange(100))
    np.testing.assert_allclose(scores, cpu_scores, atol=1e-4)
    index.save(tmp_path / "g.faiss")
    loaded = VectorIndex.load(tmp_path / "g.faiss", "e64")
    assert loaded.device == "gpu"
    np.testing.assert_array_equal(loaded.search(vecs[:100], 1)[1], ids[:, :1])
