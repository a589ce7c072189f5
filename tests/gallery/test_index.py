"""gallery/index.py: exact and HNSW indexes, the tagged file format, refusal of foreign or corrupt files."""

from __future__ import annotations

import numpy as np
import pytest

from gallery.config import IndexConfig
from gallery.errors import EmbeddingError, IndexFileError
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
    with pytest.raises(IndexFileError, match=message):
        VectorIndex.load(tmp_path / "bad.faiss", "e8")


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
