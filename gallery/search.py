"""Search of the gallery: the FAISS copy of each embedder's templates, kept current with SQL.

SQL is the source of truth. The index of an embedder is tagged with the gallery version it was built from;
it is used from memory, else from its file beside the database, else rebuilt from SQL (and saved) whenever
the version moved on or the file is damaged (with a warning). For a server database without a storage dir
the index lives in memory only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np
from sqlalchemy import select

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.errors import EmbeddingError, IndexFileDamagedError
from gallery.index import VectorIndex
from gallery.models import Identity, Template
from gallery.records import version_of

logger = logging.getLogger(__name__)

__all__ = ["GallerySearch"]


def _safe_name(text: str) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', text)[:60]}-{digest}"


class GallerySearch:
    """Top-k search over the templates of one database, one index per embedder."""

    def __init__(self, db: Database, config: GalleryConfig) -> None:
        self.db = db
        self.config = config
        self._cache: dict[str, tuple[VectorIndex, dict[int, str]]] = {}

    def clear(self) -> None:
        """Forget the indexes held in memory (files stay)."""
        self._cache.clear()

    @property
    def storage_dir(self) -> Path | None:
        """Folder for index files and the default thumbnail store, or None (memory only)."""
        return self.db.storage_dir(self.config.storage_dir)

    def index_path(self, embedder_id: str) -> Path | None:
        """The file of ``embedder_id``'s index, or None when indexes are not persisted."""
        folder = self.storage_dir
        if folder is None or not self.config.index.persist:
            return None
        return folder / f"{self.db.stem}.{_safe_name(embedder_id)}.faiss"

    def index(self, embedder_id: str) -> tuple[VectorIndex, dict[int, str]] | None:
        """The current index of ``embedder_id`` and its id -> name map, or None when it has no templates.

        Uses the cached copy, else the persisted file, else builds from SQL (and saves it) when either is
        stale or the file is damaged (truncated, garbled: rebuilt with a warning). A persisted file made by
        another embedder raises :class:`IndexFileError`."""
        with self.db.session() as session:
            version = version_of(session)
        cached = self._cache.get(embedder_id)
        if cached is not None and cached[0].tag.gallery_version == version:
            return cached
        path = self.index_path(embedder_id)
        index = None
        if path is not None and path.is_file():
            try:
                index = VectorIndex.load(path, embedder_id, gpu=self.config.index.gpu)
            except IndexFileDamagedError as exc:
                logger.warning("%s: rebuilding it from the database", exc)
        if index is not None and index.tag.gallery_version != version:
            logger.info(
                "index %s is stale (version %d, gallery %d): rebuilding",
                path,
                index.tag.gallery_version,
                version,
            )
            index = None
        with self.db.session() as session:
            if index is None:
                rows = session.execute(
                    select(Template.identity_id, Template.vector, Template.dim).where(
                        Template.embedder_id == embedder_id
                    )
                ).all()
                if not rows:
                    return None
                dim = rows[0].dim
                vectors = np.frombuffer(b"".join(r.vector for r in rows), dtype="<f4").reshape(len(rows), dim)
                index = VectorIndex.build(
                    np.array([r.identity_id for r in rows]),
                    vectors,
                    embedder_id=embedder_id,
                    gallery_version=version,
                    config=self.config.index,
                )
                if path is not None:
                    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a configured storage_dir
                    index.save(path)
            names = dict(
                session.execute(
                    select(Identity.id, Identity.name)
                    .join(Template, Template.identity_id == Identity.id)
                    .where(Template.embedder_id == embedder_id)
                ).all()
            )
        self._cache[embedder_id] = (index, names)
        return index, names

    def search(self, embeddings: np.ndarray, k: int, embedder_id: str) -> list[list[tuple[int, str, float]]]:
        """Top-``k`` identities per query, best first.

        ``embeddings``: float32 ``[M, D]`` features of ``embedder_id`` (normalised here). Returns ``M`` lists
        of ``(identity_id, name, cosine score)``; an empty gallery (no templates of this embedder) gives ``M``
        empty lists. Raises :class:`EmbeddingError` on a wrong shape or dimension."""
        arr = np.asarray(embeddings)
        if arr.ndim != 2:
            raise EmbeddingError(f"embeddings: expected shape [M, D], got {list(arr.shape)}")
        found = self.index(embedder_id)
        if found is None:
            return [[] for _ in range(len(arr))]
        index, names = found
        scores, ids = index.search(arr, k)
        return [
            [(int(i), names[int(i)], float(s)) for s, i in zip(srow, irow) if i >= 0]
            for srow, irow in zip(scores, ids)
        ]
