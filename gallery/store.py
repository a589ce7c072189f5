"""The gallery: identities, their enrolled media and fused templates in SQL, searched through a FAISS copy.

:class:`Gallery` is the one object the rest of the system holds. It is composed of one part per concern and
delegates to them:

- :class:`gallery.identities.IdentityStore` (``gallery.identity_store``): identities, remove, merge;
- :class:`gallery.media.MediaStore` (``gallery.media_store``): media, fused templates, bulk imports;
- :class:`gallery.search.GallerySearch` (``gallery.searcher``): the FAISS index of each embedder, search;
- :class:`gallery.thresholds.Thresholds` (``gallery.thresholds``): open-set thresholds and calibration.

SQL is the source of truth. Every transaction that changes templates bumps the gallery version; the FAISS
index of an embedder is tagged with that version and rebuilt from SQL when it is stale or missing. Templates
of different embedders never mix: each embedder id has its own index, dimension and threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.identities import IdentityInfo, IdentityStore
from gallery.index import VectorIndex
from gallery.media import MediaStore, MediaVector
from gallery.records import retry_on_conflict
from gallery.search import GallerySearch
from gallery.thresholds import Calibration, InForce, Thresholds

# MediaVector, IdentityInfo and Calibration live in gallery.media, gallery.identities and gallery.thresholds;
# they stay importable from here.
__all__ = ["Calibration", "Gallery", "IdentityInfo", "MediaVector"]


class Gallery:
    """Enrolled identities and their search.

    Open with ``Gallery.open("sqlite:///gallery.db")`` or
    ``Gallery.open("postgresql+psycopg://user@host/db")``. The index files live in ``config.storage_dir``, by
    default beside a SQLite file; for a server database without a storage dir the index is kept in memory and
    rebuilt from SQL on first use.
    """

    def __init__(self, db: Database, config: GalleryConfig | None = None) -> None:
        self.db = db
        self.config = config or GalleryConfig()
        self.identity_store = IdentityStore(db)
        self.media_store = MediaStore(db)
        self.searcher = GallerySearch(db, self.config)
        self.thresholds = Thresholds(db, self.config, self.searcher)

    @classmethod
    def open(
        cls, url: str | None = None, config: GalleryConfig | None = None, *, create: bool = True
    ) -> Gallery:
        """Connect to ``url`` (default ``config.db_url``), upgrading the schema unless ``create`` is False."""
        config = config or GalleryConfig()
        return cls(Database(url or config.db_url, create=create), config)

    def close(self) -> None:
        self.searcher.clear()
        self.db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # storage
    @property
    def storage_dir(self) -> Path | None:
        """Folder for index files and the default thumbnail store, or None (memory only)."""
        return self.searcher.storage_dir

    def index_path(self, embedder_id: str) -> Path | None:
        return self.searcher.index_path(embedder_id)

    def version(self) -> int:
        """The gallery version: it changes whenever any template changes."""
        return self.identity_store.version()

    # identities
    def add_identity(
        self, name: str, *, external_id: str | None = None, watchlist: bool = False, notes: str = ""
    ) -> int:
        """Create an identity with no media yet; a taken name raises :class:`IdentityExistsError`."""
        return self.identity_store.add_identity(
            name, external_id=external_id, watchlist=watchlist, notes=notes
        )

    def known_hashes(self, embedder_id: str, hashes: Sequence[str]) -> dict[str, str]:
        """Content hash -> identity name, for those of ``hashes`` already enrolled with ``embedder_id``."""
        return self.identity_store.known_hashes(embedder_id, hashes)

    def has_identity(self, name: str) -> bool:
        return self.identity_store.has_identity(name)

    def identities(self) -> list[IdentityInfo]:
        """All identities by name, with their media count and the embedders they have templates for."""
        return self.identity_store.identities()

    def remove_identity(self, name: str) -> None:
        """Delete an identity with its media and templates (match events lose the link)."""
        self.identity_store.remove_identity(name)

    def merge_identities(self, source: str, into: str) -> None:
        """Move all media of ``source`` to ``into`` and delete ``source``: one transaction."""
        self.identity_store.merge_identities(source, into)

    def embedders(self) -> list[str]:
        return self.identity_store.embedders()

    # media and templates
    def add_media(
        self,
        name: str,
        embedder_id: str,
        items: Sequence[MediaVector],
        *,
        create: bool = False,
        exist_ok: bool = False,
        external_id: str | None = None,
        watchlist: bool = False,
        notes: str = "",
    ) -> list[str]:
        """Add vectors to ``name`` and refit its template (see :meth:`MediaStore.add_media`): one status per
        item, ``"enrolled"``, ``"duplicate"`` or ``"conflict: <other identity>"``."""
        return self.media_store.add_media(
            name,
            embedder_id,
            items,
            create=create,
            exist_ok=exist_ok,
            external_id=external_id,
            watchlist=watchlist,
            notes=notes,
        )

    def bulk_enroll(
        self, names: Sequence[str], embedder_id: str, vectors: np.ndarray, *, chunk: int = 20_000
    ) -> None:
        """Enroll many new identities with one vector each (see :meth:`MediaStore.bulk_enroll`)."""
        self.media_store.bulk_enroll(names, embedder_id, vectors, chunk=chunk)

    def template(self, name: str, embedder_id: str) -> np.ndarray:
        """The fused unit template of ``name`` for ``embedder_id``."""
        return self.media_store.template(name, embedder_id)

    def media_vectors(self, name: str, embedder_id: str) -> np.ndarray:
        """The per-image unit vectors kept for ``name`` ``[N, D]`` (in enrollment order)."""
        return self.media_store.media_vectors(name, embedder_id)

    # search
    def index(self, embedder_id: str) -> tuple[VectorIndex, dict[int, str]] | None:
        """The current index of ``embedder_id`` and its id -> name map, or None when it has no templates."""
        return self.searcher.index(embedder_id)

    def search(self, embeddings: np.ndarray, k: int, embedder_id: str) -> list[list[tuple[int, str, float]]]:
        """Top-``k`` ``(identity_id, name, cosine score)`` per query row of ``embeddings [M, D]``, best
        first."""
        return self.searcher.search(embeddings, k, embedder_id)

    # open-set threshold
    def threshold(self, embedder_id: str) -> float:
        """The operating threshold of ``embedder_id`` (override, else calibration, else default)."""
        return self.thresholds.threshold(embedder_id)

    def threshold_in_force(self, embedder_id: str, configured: float | None = None) -> InForce:
        """The threshold decisions on ``embedder_id`` use and its origin (:meth:`Thresholds.in_force`)."""
        return self.thresholds.in_force(embedder_id, configured)

    def calibrate(self, embedder_id: str, *, seed: int = 0) -> Calibration:
        """Calibrate and store the threshold of ``embedder_id`` at the configured FPIR (retried when another
        command stores the first threshold of this embedder at the same moment)."""
        return retry_on_conflict(
            lambda: self.thresholds.calibrate(embedder_id, seed=seed), f"calibrating {embedder_id}"
        )
