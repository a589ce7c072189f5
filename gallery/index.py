"""FAISS inner-product index over unit templates, keyed by identity id, tagged with embedder id and gallery
version.

Exact (flat) search up to ``IndexConfig.hnsw_above`` templates, HNSW above. The file format is one file: a
magic line, a JSON tag line, then FAISS's serialized index; it is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from gallery.config import IndexConfig
from gallery.errors import EmbeddingError, IndexFileError

logger = logging.getLogger(__name__)

__all__ = ["IndexTag", "VectorIndex", "as_queries"]

MAGIC = b"FACEMOE-GALLERY-INDEX 1\n"


@dataclass(frozen=True)
class IndexTag:
    """What an index was built from: ``kind`` is ``"exact"`` or ``"hnsw"``."""

    embedder_id: str
    dim: int
    gallery_version: int
    kind: str
    count: int


def as_queries(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """Check ``[M, dim]`` finite values and return L2-normalised contiguous float32 rows."""
    arr = np.asarray(embeddings)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise EmbeddingError(f"embeddings: expected shape [M, {dim}], got {list(arr.shape)}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise EmbeddingError("embeddings: expected finite values, got NaN or infinity")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if len(arr) and float(norms.min()) == 0.0:
        raise EmbeddingError("embeddings: expected non-zero vectors, got a zero row")
    return arr / np.maximum(norms, 1e-12)


class VectorIndex:
    """A searchable copy of one embedder's templates. Build with :meth:`build`, persist with :meth:`save`."""

    def __init__(self, tag: IndexTag, index: faiss.Index) -> None:
        self.tag = tag
        self._index = index

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        embedder_id: str,
        gallery_version: int,
        config: IndexConfig,
    ) -> VectorIndex:
        """Index unit ``vectors [N, D]`` under int64 ``ids [N]`` (HNSW when N > ``config.hnsw_above``)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.ndim != 2 or ids.shape != (len(vectors),):
            raise EmbeddingError(
                f"index input: expected vectors [N, D] and ids [N], got {list(vectors.shape)} "
                f"and {list(ids.shape)}"
            )
        n, dim = vectors.shape
        kind = "hnsw" if n > config.hnsw_above else "exact"
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = config.hnsw_ef_construction
            inner.hnsw.efSearch = config.hnsw_ef_search
        else:
            inner = faiss.IndexFlatIP(dim)
        index = faiss.IndexIDMap2(inner)
        if n:
            index.add_with_ids(vectors, ids)
        logger.info("built %s index of %d templates (%s, dim %d)", kind, n, embedder_id, dim)
        return cls(IndexTag(embedder_id, dim, gallery_version, kind, n), index)

    def __len__(self) -> int:
        return self.tag.count

    def set_ef_search(self, ef: int) -> None:
        """Change the HNSW search breadth (no effect on an exact index)."""
        if self.tag.kind == "hnsw":
            faiss.downcast_index(self._index.index).hnsw.efSearch = ef

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(scores [M, k'], ids [M, k'])`` with ``k' = min(k, count)``."""
        if k < 1:
            raise EmbeddingError(f"k: expected at least 1, got {k}")
        queries = as_queries(queries, self.tag.dim)
        k = min(k, self.tag.count)
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
        return self._index.search(queries, k)

    def save(self, path: Path) -> None:
        """Write tag and index to ``path`` atomically (temporary file, then rename)."""
        data = faiss.serialize_index(self._index).tobytes()
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + json.dumps(asdict(self.tag)).encode() + b"\n" + data)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, embedder_id: str) -> VectorIndex:
        """Read an index file made for ``embedder_id``; another embedder's file raises
        :class:`IndexFileError`."""
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise IndexFileError(f"cannot read index file {path}: {exc.strerror}") from exc
        if not blob.startswith(MAGIC):
            raise IndexFileError(f"index file {path}: expected a gallery index, got an unknown format")
        head, _, data = blob[len(MAGIC) :].partition(b"\n")
        try:
            tag = IndexTag(**json.loads(head))
        except (ValueError, TypeError) as exc:
            raise IndexFileError(f"index file {path}: unreadable tag ({exc})") from exc
        if tag.embedder_id != embedder_id:
            raise IndexFileError(
                f"index file {path}: expected embedder {embedder_id!r}, got an index made by "
                f"{tag.embedder_id!r}; templates of different embedders never mix"
            )
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexFileError(f"index file {path}: corrupt FAISS data") from exc
        if index.d != tag.dim or index.ntotal != tag.count:
            raise IndexFileError(
                f"index file {path}: tag says {tag.count} x {tag.dim}, got {index.ntotal} x {index.d}"
            )
        return cls(tag, index)
