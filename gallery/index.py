"""FAISS inner-product index over unit templates, keyed by identity id, tagged with embedder id and gallery
version.

Exact (flat) search up to ``IndexConfig.hnsw_above`` templates, HNSW above. The file format is one file: a
magic line, a JSON tag line (with the SHA-256 of the data), then FAISS's serialized index; it is written
atomically and readable by its owner only (0600). A truncated or garbled file raises
:class:`IndexFileDamagedError` (the gallery rebuilds it from SQL).

When FAISS sees a GPU (a faiss-gpu build and a visible device) an exact index is searched on a copy on every
GPU (``faiss.index_cpu_to_all_gpus``), made on the first search; the CPU index stays the one that is saved.
FAISS has no GPU HNSW, so HNSW indexes are searched on the CPU. Which is used is logged once per process.

An index can also change in place (the match log's track index does, :mod:`gallery.track_index`): :meth:`add`
appends entries, :meth:`remove` drops them (from an exact index for real; an HNSW graph cannot lose nodes, so their
ids become ``-1``, a tombstone that searches skip and that the file keeps until the index is rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from gallery.config import IndexConfig
from gallery.errors import EmbeddingError, IndexFileDamagedError, IndexFileError

logger = logging.getLogger(__name__)

__all__ = ["IndexTag", "VectorIndex", "as_queries", "faiss_gpus", "new_faiss_index"]

MAGIC = b"FACEMOE-GALLERY-INDEX 1\n"
LIVE = faiss.IDSelectorRange(0, 2**62)  # every id but the -1 of a tombstone
GPU_MAX_K = 2048  # the largest k FAISS's GPU indexes search; a larger k searches the CPU copy
_announced: set[str] = set()


def faiss_gpus() -> int:
    """How many GPUs FAISS can use: 0 with a CPU-only build (faiss-cpu) or without a visible device."""
    if not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return max(0, int(faiss.get_num_gpus()))
    except RuntimeError:
        return 0


def _announce(key: str, message: str, *args) -> None:
    """Log which device searches, once per process and kind of choice."""
    if key not in _announced:
        _announced.add(key)
        logger.info(message, *args)


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


def new_faiss_index(dim: int, kind: str, config: IndexConfig) -> faiss.IndexIDMap2:
    """An empty ``kind`` (``"exact"`` or ``"hnsw"``) inner-product index of ``dim`` with the graph settings of
    ``config``, mapping int64 ids."""
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = config.hnsw_ef_construction
        inner.hnsw.efSearch = config.hnsw_ef_search
    else:
        inner = faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap2(inner)


class VectorIndex:
    """A searchable copy of one embedder's templates. Build with :meth:`build`, persist with :meth:`save`."""

    def __init__(self, tag: IndexTag, index: faiss.Index, *, gpu: bool = True) -> None:
        self.tag = tag
        self._index = index  # on the CPU: what is saved
        self._gpu_allowed = gpu
        self._gpu_index: faiss.Index | None = None
        self._device: str | None = None  # "cpu" or "gpu", chosen on first use
        self._lock = threading.Lock()
        self.dead = 0  # tombstones (removed entries of an HNSW graph)
        if tag.kind == "hnsw" and tag.count:
            self.dead = int((faiss.vector_to_array(index.id_map) < 0).sum())

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        embedder_id: str,
        gallery_version: int,
        config: IndexConfig,
        kind: str | None = None,
    ) -> VectorIndex:
        """Index unit ``vectors [N, D]`` under int64 ``ids [N]`` (HNSW when N > ``config.hnsw_above``, or the
        ``kind`` given); searched on the GPU when ``config.gpu`` and FAISS sees one."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.ndim != 2 or ids.shape != (len(vectors),):
            raise EmbeddingError(
                f"index input: expected vectors [N, D] and ids [N], got {list(vectors.shape)} "
                f"and {list(ids.shape)}"
            )
        n, dim = vectors.shape
        kind = kind or ("hnsw" if n > config.hnsw_above else "exact")
        index = new_faiss_index(dim, kind, config)
        if n:
            index.add_with_ids(vectors, ids)
        logger.info("built %s index of %d templates (%s, dim %d)", kind, n, embedder_id, dim)
        return cls(IndexTag(embedder_id, dim, gallery_version, kind, n), index, gpu=config.gpu)

    def __len__(self) -> int:
        return self.tag.count

    def set_ef_search(self, ef: int) -> None:
        """Change the HNSW search breadth (no effect on an exact index)."""
        if self.tag.kind == "hnsw":
            faiss.downcast_index(self._index.index).hnsw.efSearch = ef

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append ``vectors [N, D]`` under new int64 ``ids [N]`` (a GPU copy is made again on the next search)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.tag.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) != len(vectors):
            raise EmbeddingError(
                f"index add: expected as many ids as vectors, got {len(ids)} and {len(vectors)}"
            )
        if len(ids):
            self._index.add_with_ids(vectors, ids)
            self._changed()

    def remove(self, ids: np.ndarray) -> int:
        """Drop the entries of ``ids`` (ids not in the index are ignored); returns how many went. An HNSW graph
        keeps their nodes as tombstones (id ``-1``) that searches skip."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if not len(ids) or not self.tag.count:
            return 0
        if self.tag.kind == "exact":
            gone = int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
        else:
            id_map = faiss.vector_to_array(self._index.id_map)
            hit = np.isin(id_map, ids[ids >= 0])
            gone = int(hit.sum())
            if gone:
                id_map[hit] = -1
                faiss.copy_array_to_vector(id_map, self._index.id_map)
                self._index.construct_rev_map()
                self.dead += gone
        if gone:
            self._changed()
        return gone

    def ids(self) -> np.ndarray:
        """The ids of the live entries (tombstones left out), in insertion order."""
        id_map = faiss.vector_to_array(self._index.id_map)
        return id_map[id_map >= 0]

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors ``[N, D]`` of live ``ids``."""
        return np.stack([self._index.reconstruct(int(i)) for i in ids]).reshape(-1, self.tag.dim)

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """The live entries: ``(ids [N], vectors [N, D])`` (to rebuild the index as another kind)."""
        id_map = faiss.vector_to_array(self._index.id_map)
        vectors = (
            self._index.index.reconstruct_n(0, len(id_map)) if len(id_map) else np.zeros((0, self.tag.dim))
        )
        live = id_map >= 0
        return id_map[live], np.ascontiguousarray(vectors[live], dtype=np.float32)

    def _changed(self) -> None:
        self.tag = replace(self.tag, count=int(self._index.ntotal))
        with self._lock:
            self._gpu_index, self._device = None, None

    @property
    def device(self) -> str:
        """Where searches run: ``"gpu"`` or ``"cpu"`` (decided, and the GPU copy made, on first use)."""
        if self._device is None:
            with self._lock:
                if self._device is None:
                    self._gpu_index = self._to_gpu()
                    self._device = "cpu" if self._gpu_index is None else "gpu"
        return self._device

    def _to_gpu(self) -> faiss.Index | None:
        """A copy of the index on every GPU, or None to search on the CPU."""
        if not self._gpu_allowed:
            _announce("off", "FAISS search on the CPU (gallery.index.gpu is false)")
            return None
        gpus = faiss_gpus()
        if gpus == 0:
            _announce("cpu", "FAISS search on the CPU (FAISS sees no GPU)")
            return None
        if self.tag.kind != "exact":
            _announce("hnsw", "FAISS search of HNSW indexes on the CPU (FAISS has no GPU HNSW)")
            return None
        try:
            index = faiss.index_cpu_to_all_gpus(self._index)
        except (RuntimeError, AttributeError) as exc:  # out of GPU memory, a build without GPU cloning
            logger.warning("FAISS: cannot copy the index to the GPU (%s): searching on the CPU", exc)
            return None
        _announce("gpu", "FAISS search of exact indexes on %d GPU(s)", gpus)
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(scores [M, k'], ids [M, k'])`` with ``k' = min(k, count)``."""
        if k < 1:
            raise EmbeddingError(f"k: expected at least 1, got {k}")
        queries = as_queries(queries, self.tag.dim)
        k = min(k, self.tag.count)
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
        if self.dead:  # only an HNSW graph has tombstones, and it is searched on the CPU
            ef = faiss.downcast_index(self._index.index).hnsw.efSearch
            return self._index.search(queries, k, params=faiss.SearchParametersHNSW(sel=LIVE, efSearch=ef))
        if self.device == "gpu" and k <= GPU_MAX_K:
            with self._lock:  # one search at a time on a GPU index (its resources are not thread-safe)
                return self._gpu_index.search(queries, k)
        return self._index.search(queries, k)

    def save(self, path: Path) -> None:
        """Write tag and index to ``path`` atomically (temporary file, then rename), mode 0600."""
        data = faiss.serialize_index(self._index)  # written and hashed in place: no copy of a large index
        head = {**asdict(self.tag), "sha256": hashlib.sha256(data).hexdigest()}
        _remove_orphans(path)
        tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(MAGIC + json.dumps(head).encode() + b"\n")
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, embedder_id: str, *, gpu: bool = True) -> VectorIndex:
        """Read an index file made for ``embedder_id``; another embedder's file raises
        :class:`IndexFileError`, a truncated or garbled one :class:`IndexFileDamagedError`. ``gpu``: search on
        the GPU when FAISS sees one."""
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise IndexFileError(f"cannot read index file {path}: {exc.strerror}") from exc
        if not blob.startswith(MAGIC):
            raise IndexFileDamagedError(f"index file {path}: expected a gallery index, got an unknown format")
        end = blob.find(b"\n", len(MAGIC))
        end = len(blob) if end < 0 else end
        head, data = blob[len(MAGIC) : end], memoryview(blob)[end + 1 :]  # a view: no copy of a large index
        try:
            fields = json.loads(head)
            digest = fields.pop("sha256", None)  # absent in files written before it was recorded
            tag = IndexTag(**fields)
        except (ValueError, TypeError, AttributeError) as exc:
            raise IndexFileDamagedError(f"index file {path}: unreadable tag ({exc})") from exc
        if tag.embedder_id != embedder_id:
            raise IndexFileError(
                f"index file {path}: expected embedder {embedder_id!r}, got an index made by "
                f"{tag.embedder_id!r}; templates of different embedders never mix"
            )
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise IndexFileDamagedError(
                f"index file {path}: expected FAISS data of SHA-256 {digest[:12]}..., got other bytes "
                f"({len(data)} bytes): corrupt FAISS data"
            )
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexFileDamagedError(f"index file {path}: corrupt FAISS data") from exc
        if index.d != tag.dim or index.ntotal != tag.count:
            raise IndexFileDamagedError(
                f"index file {path}: tag says {tag.count} x {tag.dim}, got {index.ntotal} x {index.d}"
            )
        return cls(tag, index, gpu=gpu)


def _remove_orphans(path: Path) -> None:
    """Delete the temporary files of ``path`` left by a writer whose process is gone (killed while saving)."""
    for tmp in path.parent.glob(path.name + ".*.tmp"):
        pid = tmp.name[len(path.name) + 1 :].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            logger.info("removed %s, left by a process that is gone", tmp.name)
        except PermissionError:
            pass  # alive, someone else's
