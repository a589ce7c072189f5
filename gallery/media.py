"""Enrolled media and fused templates in SQL: add vectors to an identity (its template refit in the same
transaction), bulk imports, and reading templates and per-image vectors back.

Templates of different embedders never mix: each embedder id has its own dimension, fixed by its first
template.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from gallery.db import Database
from gallery.errors import EmbeddingError, IdentityExistsError, IdentityNotFoundError
from gallery.models import Identity, Media, Template, from_blob, to_blob
from gallery.records import (
    NameTakenMeanwhile,
    bump_version,
    create_identity,
    embedder_dim,
    get_identity,
    refit_template,
    retry_on_conflict,
    taken_name_error,
)

__all__ = ["MediaStore", "MediaVector"]


@dataclass(frozen=True)
class MediaVector:
    """One enrolled image's (or template row's) vector: unit ``vector [D]`` float32 and its pre-normalisation
    norm."""

    path: str
    content_hash: str
    quality: float
    vector: np.ndarray
    norm: float


class MediaStore:
    """The enrolled media and fused templates of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        """Add vectors to identity ``name`` (created first when ``create``; a taken name then raises, unless
        ``exist_ok``: then the items go to the existing identity) and refit its template, in one transaction.
        Returns one status per item: ``"enrolled"``, ``"duplicate"`` (this content is already enrolled for
        this identity and embedder: a no-op) or ``"conflict: <other identity>"``. A new identity is only
        created when at least one item is enrolled.

        Two commands enrolling the same person or image at once are settled by the unique constraints: the
        loser's transaction is retried, re-reads, and finds the identity (or the duplicate)."""
        return retry_on_conflict(
            lambda: self._add_media(
                name, embedder_id, items, create, exist_ok, external_id, watchlist, notes
            ),
            f"enrolling {name!r}",
        )

    def _add_media(
        self,
        name: str,
        embedder_id: str,
        items: Sequence[MediaVector],
        create: bool,
        exist_ok: bool,
        external_id: str | None,
        watchlist: bool,
        notes: str,
    ) -> list[str]:
        with self.db.session() as session:
            identity = None if create else get_identity(session, name)
            if create:
                taken = session.scalar(select(Identity).where(Identity.name == name.strip()))
                if taken is not None and not exist_ok:
                    raise taken_name_error(name)
                identity = taken
            dim = embedder_dim(session, embedder_id)
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
                try:
                    identity = create_identity(session, name, external_id, watchlist, notes)
                except IdentityExistsError as exc:  # created by another command since the read above
                    if not exist_ok:
                        raise
                    raise NameTakenMeanwhile(str(exc)) from exc
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
            refit_template(session, identity.id, embedder_id)
            bump_version(session)
        return statuses

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
                    known = embedder_dim(session, embedder_id)
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
                    bump_version(session)
            except IntegrityError as exc:
                raise IdentityExistsError(
                    f"bulk enroll: rows {start}-{start + len(part) - 1} hold a name or a vector that is "
                    f"already enrolled (or repeated)"
                ) from exc

    def template(self, name: str, embedder_id: str) -> np.ndarray:
        """The fused unit template of ``name`` for ``embedder_id``."""
        with self.db.session() as session:
            identity = get_identity(session, name)
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
            identity = get_identity(session, name)
            rows = session.execute(
                select(Media.vector, Media.dim)
                .where(Media.identity_id == identity.id, Media.embedder_id == embedder_id)
                .order_by(Media.id)
            ).all()
        return np.stack([from_blob(r.vector, r.dim) for r in rows]) if rows else np.zeros((0, 0), np.float32)
