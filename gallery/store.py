"""The gallery: identities, their enrolled media and fused templates in SQL, searched through a FAISS copy.

SQL is the source of truth. Every transaction that changes templates bumps the gallery version; the FAISS
index of an embedder is tagged with that version and rebuilt from SQL when it is stale or missing. Templates
of different embedders never mix: each embedder id has its own index, dimension and threshold.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.errors import EmbeddingError, EnrollmentError, IdentityExistsError, IdentityNotFoundError
from gallery.index import VectorIndex
from gallery.models import (
    GalleryMeta,
    Identity,
    MatchEvent,
    Media,
    Template,
    Threshold,
    from_blob,
    to_blob,
    utcnow,
)

logger = logging.getLogger(__name__)

__all__ = ["Gallery", "MediaVector", "IdentityInfo", "Calibration", "fuse"]


@dataclass(frozen=True)
class MediaVector:
    """One enrolled image's (or template row's) vector: unit ``vector [D]`` float32 and its pre-normalisation
    norm."""

    path: str
    content_hash: str
    quality: float
    vector: np.ndarray
    norm: float


@dataclass(frozen=True)
class IdentityInfo:
    id: int
    name: str
    external_id: str | None
    watchlist: bool
    notes: str
    media: int
    embedders: tuple[str, ...]


@dataclass(frozen=True)
class Calibration:
    """An open-set threshold: ``calibrated`` is False when the gallery had too few impostor scores."""

    embedder_id: str
    value: float
    target_fpir: float
    impostor_scores: int
    calibrated: bool


def fuse(vectors: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Feature-norm weighted fusion: ``normalise(sum_i norm_i * unit_i)`` (the pre-normalisation vector
    sum)."""
    total = (np.asarray(vectors, np.float64) * np.asarray(norms, np.float64)[:, None]).sum(axis=0)
    length = np.linalg.norm(total)
    if not np.isfinite(length) or length == 0.0:
        raise EmbeddingError("template fusion: expected vectors with a non-zero weighted sum, got zero")
    return (total / length).astype(np.float32)


def _safe_name(text: str) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', text)[:60]}-{digest}"


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
        self._cache: dict[str, tuple[VectorIndex, dict[int, str]]] = {}

    @classmethod
    def open(
        cls, url: str | None = None, config: GalleryConfig | None = None, *, create: bool = True
    ) -> Gallery:
        """Connect to ``url`` (default ``config.db_url``), upgrading the schema unless ``create`` is False."""
        config = config or GalleryConfig()
        return cls(Database(url or config.db_url, create=create), config)

    def close(self) -> None:
        self._cache.clear()
        self.db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # storage
    @property
    def storage_dir(self) -> Path | None:
        """Folder for index files and the default thumbnail store, or None (memory only)."""
        return self.db.storage_dir(self.config.storage_dir)

    def index_path(self, embedder_id: str) -> Path | None:
        folder = self.storage_dir
        if folder is None or not self.config.index.persist:
            return None
        return folder / f"{self.db.stem}.{_safe_name(embedder_id)}.faiss"

    def version(self) -> int:
        """The gallery version: it changes whenever any template changes."""
        with self.db.session() as session:
            return session.scalar(select(GalleryMeta.version).where(GalleryMeta.id == 1))

    @staticmethod
    def _bump(session: Session) -> None:
        session.execute(
            update(GalleryMeta).where(GalleryMeta.id == 1).values(version=GalleryMeta.version + 1)
        )

    # identities
    def add_identity(
        self, name: str, *, external_id: str | None = None, watchlist: bool = False, notes: str = ""
    ) -> int:
        """Create an identity with no media yet; a taken name raises :class:`IdentityExistsError`."""
        with self.db.session() as session:
            return self._create_identity(session, name, external_id, watchlist, notes).id

    @staticmethod
    def _create_identity(session: Session, name: str, external_id, watchlist, notes) -> Identity:
        name = name.strip()
        if not name or len(name) > 200:
            raise EnrollmentError(f"identity name: expected 1-200 characters, got {name!r}")
        if session.scalar(select(Identity.id).where(Identity.name == name)) is not None:
            raise IdentityExistsError(
                f"identity {name!r} already exists (add images to it instead, or pick another name)"
            )
        identity = Identity(name=name, external_id=external_id, watchlist=watchlist, notes=notes or "")
        session.add(identity)
        session.flush()
        return identity

    @staticmethod
    def _get_identity(session: Session, name: str) -> Identity:
        identity = session.scalar(select(Identity).where(Identity.name == name))
        if identity is None:
            raise IdentityNotFoundError(f"identity {name!r}: not in the gallery")
        return identity

    def known_hashes(self, embedder_id: str, hashes: Sequence[str]) -> dict[str, str]:
        """Content hash -> identity name, for those of ``hashes`` already enrolled with ``embedder_id``."""
        if not hashes:
            return {}
        with self.db.session() as session:
            return dict(
                session.execute(
                    select(Media.content_hash, Identity.name)
                    .join(Identity)
                    .where(Media.embedder_id == embedder_id, Media.content_hash.in_(list(hashes)))
                ).all()
            )

    def has_identity(self, name: str) -> bool:
        with self.db.session() as session:
            return session.scalar(select(Identity.id).where(Identity.name == name)) is not None

    def identities(self) -> list[IdentityInfo]:
        """All identities by name, with their media count and the embedders they have templates for."""
        with self.db.session() as session:
            media = dict(
                session.execute(select(Media.identity_id, func.count()).group_by(Media.identity_id)).all()
            )
            embedders: dict[int, list[str]] = {}
            for ident, emb in session.execute(select(Template.identity_id, Template.embedder_id)):
                embedders.setdefault(ident, []).append(emb)
            return [
                IdentityInfo(
                    i.id,
                    i.name,
                    i.external_id,
                    i.watchlist,
                    i.notes,
                    media.get(i.id, 0),
                    tuple(sorted(embedders.get(i.id, ()))),
                )
                for i in session.scalars(select(Identity).order_by(Identity.name))
            ]

    def remove_identity(self, name: str) -> None:
        """Delete an identity with its media and templates; match events keep their candidates but lose the
        link."""
        with self.db.session() as session:
            identity = self._get_identity(session, name)
            session.execute(
                update(MatchEvent).where(MatchEvent.identity_id == identity.id).values(identity_id=None)
            )
            session.delete(identity)
            self._bump(session)
        logger.info("removed identity %r", name)

    def merge_identities(self, source: str, into: str) -> None:
        """Move all media of ``source`` to ``into``, refit ``into``'s templates, re-point match events, delete
        ``source``: one transaction."""
        if source == into:
            raise EnrollmentError(f"merge: expected two different identities, got {source!r} twice")
        with self.db.session() as session:
            src, dst = self._get_identity(session, source), self._get_identity(session, into)
            embedders = set(session.scalars(select(Media.embedder_id).where(Media.identity_id == src.id)))
            session.execute(update(Media).where(Media.identity_id == src.id).values(identity_id=dst.id))
            session.execute(
                update(MatchEvent).where(MatchEvent.identity_id == src.id).values(identity_id=dst.id)
            )
            session.execute(delete(Template).where(Template.identity_id == src.id))
            session.execute(delete(Identity).where(Identity.id == src.id))
            for embedder_id in embedders:
                self._refit(session, dst.id, embedder_id)
            self._bump(session)
        logger.info("merged identity %r into %r", source, into)

    # media and templates
    def add_media(
        self,
        name: str,
        embedder_id: str,
        items: Sequence[MediaVector],
        *,
        create: bool = False,
        external_id: str | None = None,
        watchlist: bool = False,
        notes: str = "",
    ) -> list[str]:
        """Add vectors to identity ``name`` (created first when ``create``; a taken name then raises) and
        refit its template, in one transaction. Returns one status per item: ``"enrolled"``, ``"duplicate"``
        (this content is already enrolled for this identity and embedder: a no-op) or ``"conflict: <other
        identity>"``. A new identity is only created when at least one item is enrolled."""
        with self.db.session() as session:
            identity = None if create else self._get_identity(session, name)
            if (
                create
                and session.scalar(select(Identity.id).where(Identity.name == name.strip())) is not None
            ):
                raise IdentityExistsError(
                    f"identity {name!r} already exists (add images to it instead, or pick another name)"
                )
            dim = self._dim(session, embedder_id)
            owners = (
                dict(
                    session.execute(
                        select(Media.content_hash, Identity.name)
                        .join(Identity)
                        .where(
                            Media.embedder_id == embedder_id,
                            Media.content_hash.in_([m.content_hash for m in items]),
                        )
                    ).all()
                )
                if items
                else {}
            )
            statuses, new = [], []
            for item in items:
                vec = np.asarray(item.vector, np.float32).reshape(-1)
                if dim is not None and vec.shape[0] != dim:
                    raise EmbeddingError(
                        f"{item.path}: expected a {dim}-d vector for embedder {embedder_id!r}, "
                        f"got {vec.shape[0]}-d"
                    )
                dim = vec.shape[0]
                owner = owners.get(item.content_hash)
                if owner is not None and owner != name:
                    statuses.append(f"conflict: already enrolled as {owner!r}")
                elif owner is not None or item.content_hash in {m.content_hash for m, _ in new}:
                    statuses.append("duplicate")
                else:
                    new.append((item, vec))
                    statuses.append("enrolled")
            if not new:
                return statuses
            if identity is None:
                identity = self._create_identity(session, name, external_id, watchlist, notes)
            for item, vec in new:
                session.add(
                    Media(
                        identity_id=identity.id,
                        path=item.path,
                        content_hash=item.content_hash,
                        embedder_id=embedder_id,
                        quality=float(item.quality),
                        dim=dim,
                        vector=to_blob(vec),
                        norm=float(item.norm),
                    )
                )
            session.flush()
            self._refit(session, identity.id, embedder_id)
            self._bump(session)
        return statuses

    @staticmethod
    def _dim(session: Session, embedder_id: str) -> int | None:
        return session.scalar(select(Template.dim).where(Template.embedder_id == embedder_id).limit(1))

    @staticmethod
    def _refit(session: Session, identity_id: int, embedder_id: str) -> None:
        rows = session.execute(
            select(Media.vector, Media.norm, Media.dim).where(
                Media.identity_id == identity_id, Media.embedder_id == embedder_id
            )
        ).all()
        template = session.scalar(
            select(Template).where(Template.identity_id == identity_id, Template.embedder_id == embedder_id)
        )
        if not rows:
            if template is not None:
                session.delete(template)
            return
        dim = rows[0].dim
        fused = fuse(np.stack([from_blob(r.vector, dim) for r in rows]), np.array([r.norm for r in rows]))
        if template is None:
            session.add(
                Template(
                    identity_id=identity_id,
                    embedder_id=embedder_id,
                    dim=dim,
                    vector=to_blob(fused),
                    num_media=len(rows),
                )
            )
        else:
            template.vector, template.num_media, template.updated_at = to_blob(fused), len(rows), utcnow()

    def bulk_enroll(
        self, names: Sequence[str], embedder_id: str, vectors: np.ndarray, *, chunk: int = 20_000
    ) -> None:
        """Enroll many new identities with one unit vector each (one transaction per chunk): for imports and
        benchmarks. A taken name or an already enrolled vector raises :class:`IdentityExistsError` and rolls
        back that chunk."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) != len(names):
            raise EmbeddingError(
                f"bulk enroll: expected vectors [{len(names)}, D], got {list(vectors.shape)}"
            )
        dim = vectors.shape[1]
        for start in range(0, len(names), chunk):
            part, vecs = names[start : start + chunk], vectors[start : start + chunk]
            norms = np.linalg.norm(vecs, axis=1)
            units = vecs / np.maximum(norms, 1e-12)[:, None]
            try:
                with self.db.session() as session:
                    known = self._dim(session, embedder_id)
                    if known is not None and known != dim:
                        raise EmbeddingError(
                            f"bulk enroll: expected {known}-d vectors for {embedder_id!r}, got {dim}-d"
                        )
                    ids = session.scalars(
                        insert(Identity).returning(Identity.id, sort_by_parameter_order=True),
                        [{"name": n, "watchlist": False, "notes": ""} for n in part],
                    ).all()
                    blobs = [to_blob(u) for u in units]
                    session.execute(
                        insert(Media),
                        [
                            {
                                "identity_id": i,
                                "path": f"vector:{n}",
                                "content_hash": hashlib.sha256(b).hexdigest(),
                                "embedder_id": embedder_id,
                                "quality": 1.0,
                                "dim": dim,
                                "vector": b,
                                "norm": float(w),
                            }
                            for i, n, b, w in zip(ids, part, blobs, norms)
                        ],
                    )
                    session.execute(
                        insert(Template),
                        [
                            {
                                "identity_id": i,
                                "embedder_id": embedder_id,
                                "dim": dim,
                                "vector": b,
                                "num_media": 1,
                            }
                            for i, b in zip(ids, blobs)
                        ],
                    )
                    self._bump(session)
            except IntegrityError as exc:
                raise IdentityExistsError(
                    f"bulk enroll: rows {start}-{start + len(part) - 1} hold a name or a vector that is "
                    f"already enrolled (or repeated)"
                ) from exc

    def template(self, name: str, embedder_id: str) -> np.ndarray:
        """The fused unit template of ``name`` for ``embedder_id``."""
        with self.db.session() as session:
            identity = self._get_identity(session, name)
            row = session.execute(
                select(Template.vector, Template.dim).where(
                    Template.identity_id == identity.id, Template.embedder_id == embedder_id
                )
            ).first()
        if row is None:
            raise IdentityNotFoundError(f"identity {name!r}: no template for embedder {embedder_id!r}")
        return from_blob(row.vector, row.dim)

    def media_vectors(self, name: str, embedder_id: str) -> np.ndarray:
        """The per-image unit vectors kept for ``name`` ``[N, D]`` (in enrollment order)."""
        with self.db.session() as session:
            identity = self._get_identity(session, name)
            rows = session.execute(
                select(Media.vector, Media.dim)
                .where(Media.identity_id == identity.id, Media.embedder_id == embedder_id)
                .order_by(Media.id)
            ).all()
        return np.stack([from_blob(r.vector, r.dim) for r in rows]) if rows else np.zeros((0, 0), np.float32)

    # search
    def index(self, embedder_id: str) -> tuple[VectorIndex, dict[int, str]] | None:
        """The current index of ``embedder_id`` and its id -> name map, or None when it has no templates.

        Uses the cached copy, else the persisted file, else builds from SQL (and saves it) when either is
        stale. A persisted file made by another embedder raises :class:`IndexFileError`."""
        version = self.version()
        cached = self._cache.get(embedder_id)
        if cached is not None and cached[0].tag.gallery_version == version:
            return cached
        path = self.index_path(embedder_id)
        index = None
        if path is not None and path.is_file():
            index = VectorIndex.load(path, embedder_id)
            if index.tag.gallery_version != version:
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

    # open-set threshold
    def threshold(self, embedder_id: str) -> float:
        """The operating threshold of ``embedder_id``: ``config.threshold.override`` if set, else the stored
        calibration, else ``config.threshold.default``."""
        cfg = self.config.threshold
        if cfg.override is not None:
            return cfg.override
        with self.db.session() as session:
            stored = session.get(Threshold, embedder_id)
        return stored.value if stored is not None else cfg.default

    def calibrate(self, embedder_id: str, *, seed: int = 0) -> Calibration:
        """Set the threshold of ``embedder_id`` at the ``1 - target_fpir`` quantile of impostor scores (each
        enrolled image's best score against the *other* identities' templates) and store it with the
        gallery."""
        cfg = self.config.threshold
        found = self.index(embedder_id)
        with self.db.session() as session:
            rows = session.execute(
                select(Media.identity_id, Media.vector, Media.dim)
                .where(Media.embedder_id == embedder_id)
                .order_by(Media.id)
            ).all()
            if len(rows) > cfg.max_probes:
                pick = np.random.default_rng(seed).choice(len(rows), cfg.max_probes, replace=False)
                rows = [rows[i] for i in sorted(pick)]
            impostor = np.zeros(0)
            if found is not None and len(found[0]) > 1 and rows:
                probes = np.stack([from_blob(r.vector, r.dim) for r in rows])
                scores, ids = found[0].search(probes, 2)
                own = np.array([r.identity_id for r in rows])[:, None]
                impostor = np.where(ids[:, 0] != own[:, 0], scores[:, 0], scores[:, 1])
            calibrated = len(impostor) >= cfg.min_impostor_scores
            stored = session.get(Threshold, embedder_id)
            if not calibrated:
                if stored is not None:
                    session.delete(stored)
                logger.warning(
                    "threshold of %s: %d impostor scores, need %d: using the default %.3f",
                    embedder_id,
                    len(impostor),
                    cfg.min_impostor_scores,
                    cfg.default,
                )
                return Calibration(embedder_id, cfg.default, cfg.target_fpir, len(impostor), False)
            value = float(np.quantile(impostor, 1.0 - cfg.target_fpir, method="higher"))
            version = session.scalar(select(GalleryMeta.version).where(GalleryMeta.id == 1))
            if stored is None:
                stored = Threshold(embedder_id=embedder_id)
                session.add(stored)
            stored.value, stored.target_fpir, stored.impostor_scores = value, cfg.target_fpir, len(impostor)
            stored.gallery_version, stored.calibrated_at = version, utcnow()
        logger.info(
            "threshold of %s: %.4f at FPIR %.4g from %d impostor scores",
            embedder_id,
            value,
            cfg.target_fpir,
            len(impostor),
        )
        return Calibration(embedder_id, value, cfg.target_fpir, len(impostor), True)

    def embedders(self) -> list[str]:
        with self.db.session() as session:
            return list(
                session.scalars(select(Template.embedder_id).distinct().order_by(Template.embedder_id))
            )
