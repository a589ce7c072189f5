"""The track-template index: a FAISS copy of the match log's track templates, one per embedder, in step with SQL.

SQL is the truth (``tracks.template``); the index holds each track's template of one ``embedder_id`` under the
track's primary key, in a :class:`gallery.index.VectorIndex`: exact up to ``gallery.index.hnsw_above`` tracks, HNSW
above, as the gallery's, saved beside the gallery's index files (``<db>.<embedder>.tracks.faiss``, the same folder
rule and file format) or kept in memory when the gallery keeps its indexes there.

It covers every track of its embedder up to its highest track id ``M``, and stays so:

- catch-up: tracks logged since (by any process) have ids above ``M``; they are read from SQL (one indexed range
  query) and added, when it opens and before every search;
- the match-log writer of the same process adds each batch it commits (:meth:`TrackIndexes.note_logged`), after
  reading any tracks of others logged between ``M`` and that batch;
- check: the count and sum of the ids ``<= M`` in SQL against the index's entries, when it opens and every
  :data:`RECHECK_S` seconds: a difference (tracks purged by another process, or a track committed late below
  ``M`` on PostgreSQL) is put right from the difference of the two id sets, with one warning;
- a purge in this process removes the entries of the tracks it deleted (:meth:`TrackIndexes.note_removed`);
- rebuilt from SQL when its file is missing, or damaged (with a warning); an exact index that grew past
  ``hnsw_above`` is rebuilt as HNSW, and an HNSW graph with more tombstones than live entries is compacted, both
  from its own vectors, at a search (never in the writer).

Saves are atomic (:meth:`VectorIndex.save`), made at a search or at close once the unsaved changes reach 1% of the
index (at most :data:`SAVE_AFTER`): a file a little behind costs the next process a short catch-up, not a rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import Select, func, select

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.errors import EmbeddingError, IndexFileDamagedError
from gallery.index import VectorIndex
from gallery.models import Track
from gallery.search import GallerySearch

logger = logging.getLogger(__name__)

__all__ = ["CHUNK", "COMPACT_MIN", "RECHECK_S", "SAVE_AFTER", "SPOT_CHECKS", "TrackIndex", "TrackIndexes"]

CHUNK = 10_000  # rows read from SQL at a time
RECHECK_S = 60.0  # seconds between two checks of an open index against SQL
SAVE_AFTER = 1_000  # unsaved changes that make a large index worth saving
SPOT_CHECKS = 8  # entries of a loaded index compared with SQL's templates
COMPACT_MIN = 1_000  # tombstones that, once more than the live entries, make an HNSW graph worth compacting


def _read(session, stmt: Select, dim: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids [n], templates [n, D])`` chunks of a select of ``Track.id, Track.dim, Track.template``."""
    for rows in session.execute(stmt.execution_options(yield_per=CHUNK)).partitions():
        dims = {r.dim for r in rows}
        dim = rows[0].dim if dim is None else dim
        if dims != {dim}:
            raise EmbeddingError(f"track index: expected templates of dimension {dim}, got {sorted(dims)}")
        blob = b"".join(r.template for r in rows)
        yield np.array([r.id for r in rows], np.int64), np.frombuffer(blob, "<f4").reshape(len(rows), dim)


class TrackIndex:
    """The index of one embedder's track templates. Use through :class:`TrackIndexes`."""

    def __init__(self, db: Database, config: GalleryConfig, embedder_id: str, path: Path | None) -> None:
        self.db, self.config, self.embedder_id, self.path = db, config, embedder_id, path
        self.vectors: VectorIndex | None = None
        self.max_id = 0  # every track of the embedder with an id up to this one is in the index
        self.id_sum = 0  # sum of the ids of the live entries
        self.unsaved = 0
        self.checked = float("-inf")
        self.lock = threading.RLock()
        self._of_embedder = select(Track.id, Track.dim, Track.template).where(
            Track.embedder_id == embedder_id
        )

    @property
    def live(self) -> int:
        """Entries that can be found (tombstones left out)."""
        return 0 if self.vectors is None else self.vectors.tag.count - self.vectors.dead

    @property
    def dim(self) -> int | None:
        return None if self.vectors is None else self.vectors.tag.dim

    def refresh(self) -> None:
        """Open the index (file, else SQL) or bring it in step: catch up, check every ``RECHECK_S``, rebuild as
        another kind when its size calls for it, save when worth it."""
        with self.lock:
            if self.vectors is None:
                self._open()
            elif time.monotonic() - self.checked >= RECHECK_S:
                self._check()
            else:
                self._catch_up()
            self._reshape()
            self.save()

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest entries to the unit ``query [D]``: ``(scores [k'], track ids [k'])``, best first."""
        with self.lock:
            if not self.live:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            scores, ids = self.vectors.search(query.reshape(1, -1), k)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def check(self) -> None:
        """Check the open index against SQL now (and put a difference right)."""
        with self.lock:
            if self.vectors is not None:
                self._check()

    def note_logged(self, ids: np.ndarray, templates: np.ndarray) -> None:
        """Add tracks this process has just committed (ids ascending), when the index is open; tracks of others
        logged between the index's end and these are read from SQL first."""
        with self.lock:
            if self.vectors is None:
                return  # not open here: the next process or search that opens it catches up from SQL
            new = ids > self.max_id
            if not new.any():
                return
            ids, templates = ids[new], templates[new]
            if int(ids[0]) != self.max_id + 1:
                self._catch_up(below=int(ids[0]))
            self._add(ids, templates)

    def note_removed(self, ids: np.ndarray) -> None:
        """Drop the entries of tracks this process has deleted, when the index is open."""
        with self.lock:
            if self.vectors is not None and len(ids):
                self._remove(np.intersect1d(self.vectors.ids(), ids))

    def save(self, force: bool = False) -> None:
        """Write the index to its file when the unsaved changes reach 1% of it (at most ``SAVE_AFTER``), or any
        change with ``force``; a failed write is a warning (the index in memory stays good)."""
        with self.lock:
            if self.path is None or self.vectors is None or not self.unsaved:
                return
            if not force and self.unsaved < max(1, min(SAVE_AFTER, self.vectors.tag.count // 100)):
                return
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.vectors.save(self.path)
            except OSError as exc:
                logger.warning("track index %s: cannot save it (%s); kept in memory", self.path, exc)
                return
            self.unsaved = 0

    # in step with SQL
    def _open(self) -> None:
        loaded = None
        if self.path is not None and self.path.is_file():
            try:
                loaded = VectorIndex.load(self.path, self.embedder_id, gpu=self.config.index.gpu)
            except IndexFileDamagedError as exc:
                logger.warning("%s: rebuilding the track index from the match log", exc)
        if loaded is not None and not self._same_vectors(loaded):
            logger.warning(
                "track index %s: its templates differ from the match log's (another database of the same name?): "
                "rebuilding it",
                self.path,
            )
            loaded = None
        if loaded is None:
            self._rebuild()
            return
        self._adopt(loaded, unsaved=0)
        self._check()

    def _same_vectors(self, vectors: VectorIndex) -> bool:
        """Whether a few entries, spread over the index, hold the templates SQL has under their ids (ids SQL no
        longer has are the check's business)."""
        ids = vectors.ids()
        sample = (
            ids[np.linspace(0, len(ids) - 1, min(SPOT_CHECKS, len(ids))).astype(int)] if len(ids) else ids
        )
        with self.db.engine.connect() as conn:
            stmt = self._of_embedder.where(Track.id.in_(sample.tolist()))
            stored = {int(i): v for chunk in _read(conn, stmt, vectors.tag.dim) for i, v in zip(*chunk)}
        return all(
            np.array_equal(stored[int(i)], v)
            for i, v in zip(sample, vectors.vectors_of(sample))
            if int(i) in stored
        )

    def _adopt(self, vectors: VectorIndex, unsaved: int) -> None:
        vectors.set_ef_search(self.config.index.track_ef_search)
        ids = vectors.ids()
        self.vectors, self.unsaved = vectors, unsaved
        self.max_id = max(self.max_id, int(ids.max())) if len(ids) else self.max_id
        self.id_sum = int(ids.sum())

    def _rebuild(self) -> None:
        """Build the index from every track of the embedder in SQL (none: no index)."""
        with self.db.session() as session:
            where = Track.embedder_id == self.embedder_id
            count, dim = session.execute(select(func.count(Track.id), func.max(Track.dim)).where(where)).one()
            self.vectors, self.max_id, self.id_sum, self.checked = None, 0, 0, time.monotonic()
            if not count:
                return
            kind = "hnsw" if count > self.config.index.hnsw_above else "exact"
            logger.info(
                "track index of %s: building it from %d logged tracks (%s)", self.embedder_id, count, kind
            )
            vectors = VectorIndex.build(
                np.zeros(0, np.int64),
                np.zeros((0, dim), np.float32),
                embedder_id=self.embedder_id,
                gallery_version=0,
                config=self.config.index,
                kind=kind,
            )
            self._adopt(vectors, unsaved=0)
            for ids, templates in _read(session, self._of_embedder.order_by(Track.id), dim):
                self._add(ids, templates)
        self.unsaved = max(self.unsaved, 1) if self.vectors.tag.count else 0

    def _catch_up(self, below: int | None = None) -> None:
        """Add the tracks with ids above ``max_id`` (and below ``below``)."""
        stmt = self._of_embedder.where(Track.id > self.max_id).order_by(Track.id)
        if below is not None:
            stmt = stmt.where(Track.id < below)
        with self.db.engine.connect() as conn:  # read only, before every search: without the ORM's overhead
            for ids, templates in _read(conn, stmt, self.dim):
                self._add(ids, templates)

    def _check(self) -> None:
        """Compare the ids ``<= max_id`` with SQL (count and sum); put a difference right, then catch up."""
        where = (Track.embedder_id == self.embedder_id, Track.id <= self.max_id)
        with self.db.session() as session:
            count, total = session.execute(
                select(func.count(Track.id), func.coalesce(func.sum(Track.id), 0)).where(*where)
            ).one()
            self.checked = time.monotonic()
            if (int(count), int(total)) != (self.live, self.id_sum):
                logged = np.fromiter(session.scalars(select(Track.id).where(*where)), np.int64)
                have = self.vectors.ids()
                gone = np.setdiff1d(have, logged, assume_unique=True)
                missing = np.setdiff1d(logged, have, assume_unique=True)
                logger.warning(
                    "track index of %s: out of step with the match log (%d tracks no longer logged, %d not in "
                    "it): brought in step",
                    self.embedder_id,
                    len(gone),
                    len(missing),
                )
                self._remove(gone)
                for s in range(0, len(missing), CHUNK):
                    stmt = self._of_embedder.where(Track.id.in_(missing[s : s + CHUNK].tolist()))
                    for ids, templates in _read(session, stmt, self.dim):
                        self._add(ids, templates)
        self._catch_up()

    def _reshape(self) -> None:
        """An exact index past ``hnsw_above`` becomes HNSW; an HNSW graph mostly tombstones is compacted."""
        if self.vectors is None:
            return
        kind, hnsw_above = self.vectors.tag.kind, self.config.index.hnsw_above
        if not (
            (kind == "exact" and self.live > hnsw_above) or self.vectors.dead > max(self.live, COMPACT_MIN)
        ):
            return
        ids, templates = self.vectors.entries()
        logger.info("track index of %s: rebuilding it from its %d entries", self.embedder_id, len(ids))
        vectors = VectorIndex.build(
            ids, templates, embedder_id=self.embedder_id, gallery_version=0, config=self.config.index
        )
        self._adopt(vectors, unsaved=max(1, vectors.tag.count))

    def _add(self, ids: np.ndarray, templates: np.ndarray) -> None:
        if len(ids):
            self.vectors.add(ids, templates)
            self.max_id = max(self.max_id, int(ids.max()))
            self.id_sum += int(ids.sum())
            self.unsaved += len(ids)

    def _remove(self, ids: np.ndarray) -> None:
        """Remove entries known to be live."""
        if len(ids):
            self.vectors.remove(ids)
            self.id_sum -= int(ids.sum())
            self.unsaved += len(ids)


class TrackIndexes:
    """The track indexes of one database, one per embedder, opened on first use and kept for the process.

    ``config``: the gallery section (index settings and the storage folder rule)."""

    def __init__(self, db: Database, config: GalleryConfig) -> None:
        self.db, self.config = db, config
        self._indexes: dict[str, TrackIndex] = {}
        self._lock = threading.Lock()
        self._failing: set[str] = set()

    def path(self, embedder_id: str) -> Path | None:
        """The file of ``embedder_id``'s track index: beside its gallery index; None when kept in memory."""
        gallery = GallerySearch(self.db, self.config).index_path(embedder_id)
        return (
            None
            if gallery is None
            else gallery.with_name(gallery.name.removesuffix(".faiss") + ".tracks.faiss")
        )

    def _index(self, embedder_id: str) -> TrackIndex:
        with self._lock:
            if embedder_id not in self._indexes:
                self._indexes[embedder_id] = TrackIndex(
                    self.db, self.config, embedder_id, self.path(embedder_id)
                )
            return self._indexes[embedder_id]

    def get(self, embedder_id: str) -> TrackIndex | None:
        """The index of ``embedder_id``, in step with SQL; None when no track of it is logged. A file of another
        embedder raises :class:`IndexFileError`; templates of several dimensions :class:`EmbeddingError`."""
        index = self._index(embedder_id)
        index.refresh()
        return index if index.vectors is not None else None

    def note_logged(self, ids: Sequence[int], records: Sequence) -> None:
        """Tracks this process has just committed: their ``ids`` and records (each with ``embedder_id`` and
        ``template``, as :class:`gallery.matchlog.TrackRecord`), for the indexes open here. Never raises: a failure
        is a warning and the index is checked against SQL at its next use."""
        by_embedder: dict[str, list[tuple[int, np.ndarray]]] = {}
        for pk, rec in sorted(zip(ids, records), key=lambda e: e[0]):
            by_embedder.setdefault(rec.embedder_id, []).append((int(pk), rec.template))
        for embedder_id, rows in by_embedder.items():
            index = self._indexes.get(embedder_id)
            if index is None:
                continue
            try:
                pks = np.array([pk for pk, _ in rows], np.int64)
                index.note_logged(pks, np.stack([np.asarray(t, np.float32).reshape(-1) for _, t in rows]))
                self._failing.discard(embedder_id)
            except Exception as exc:  # noqa: BLE001 - the tracks are committed; the index catches up later
                index.checked = float("-inf")
                if embedder_id not in self._failing:
                    logger.warning(
                        "track index of %s: cannot add logged tracks (%s); it catches up", embedder_id, exc
                    )
                self._failing.add(embedder_id)

    def note_removed(self, ids: Sequence[int]) -> None:
        """Track ids this process has deleted (a purge): dropped from the indexes open here."""
        arr = np.asarray(sorted(ids), np.int64)
        for index in list(self._indexes.values()):
            index.note_removed(arr)

    def close(self) -> None:
        """Save what is worth saving; the indexes stay usable."""
        for index in list(self._indexes.values()):
            index.save()
