"""Enrolled media and fused templates in SQL: add vectors to an identity (its template refit in the same
transaction), remove some of them again, bulk imports, list them, and read templates and per-image vectors back.

Every media row says what it is (``kind``): an ``image`` (a photo file), a ``template`` (a row of a template file,
or a bulk-imported vector: no photo) or a ``track`` (a logged track's template, with ``track_pk``, the track's row
in the match log). That stored fact, never the row's path, decides how the media is shown.

Templates of different embedders never mix: each embedder id has its own dimension, fixed by its first
template.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError

from gallery.db import Database
from gallery.errors import EmbeddingError, EnrollmentError, IdentityExistsError, IdentityNotFoundError
from gallery.models import Identity, Media, Template, Track, from_blob, to_blob
from gallery.names import identity_name, lookup_name
from gallery.queries import Filters, Page, _iso, _page, _refuse
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
from gallery.refs import track_ref

__all__ = ["MEDIA_KINDS", "MediaStore", "MediaVector", "find_media"]

MEDIA_KINDS = ("image", "template", "track")


@dataclass(frozen=True)
class MediaVector:
    """One enrolled image's (or template row's, or logged track's) vector: unit ``vector [D]`` float32, its
    pre-normalisation norm, its ``kind`` (one of :data:`MEDIA_KINDS`) and, for a track, ``track_pk`` (the
    track's row id in the match log)."""

    path: str
    content_hash: str
    quality: float
    vector: np.ndarray
    norm: float
    kind: str = "image"
    track_pk: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in MEDIA_KINDS or (self.kind == "track") != (self.track_pk is not None):
            raise EmbeddingError(
                f"{self.path}: expected a kind of {', '.join(MEDIA_KINDS)} with a track id exactly for a track, "
                f"got kind {self.kind!r} and track {self.track_pk!r}"
            )


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
        name = identity_name(name) if create else lookup_name(name)  # gallery.names: before any write
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
                        kind=item.kind,
                        track_pk=item.track_pk,
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

    def remove_media(
        self, name: str, media_ids: Sequence[int] = (), tracks: Sequence[tuple[int, int]] = ()
    ) -> list[dict]:
        """Remove media of identity ``name``, given by id (``query media``) or by the track they were enrolled
        from (``(run_id, track_id)``), and refit its templates from the rest, bumping the gallery version: one
        transaction. Returns the removed rows (:func:`find_media`'s fields). Media of another identity, an unknown
        id or track, or removing every media of ``name`` (remove the identity instead) raise
        :class:`EnrollmentError` and change nothing."""
        if not media_ids and not tracks:
            raise EnrollmentError(
                f"identity {name!r}: expected media ids or track references to remove, got none"
            )
        with self.db.session() as session:
            identity = get_identity(session, name)
            wanted = {int(m) for m in media_ids}
            if tracks:
                pairs = [(int(r), int(t)) for r, t in tracks]
                found = {
                    (run, track): media_id
                    for run, track, media_id in session.execute(
                        select(Track.run_id, Track.track_id, Media.id)
                        .join(Track, Track.id == Media.track_pk)
                        .where(
                            Media.identity_id == identity.id,
                            tuple_(Track.run_id, Track.track_id).in_(pairs),
                        )
                    )
                }
                missing = [f"{r}:{t}" for r, t in pairs if (r, t) not in found]
                if missing:
                    raise EnrollmentError(
                        f"track {missing[0]}: expected a track {name!r} was enrolled from (see 'query media "
                        f"--identity {name}'), got one it was not"
                    )
                wanted |= set(found.values())
            rows = session.execute(_MEDIA_ROWS.where(Media.id.in_(wanted)).order_by(Media.id)).all()
            owners = {r.id: r.identity for r in rows}
            for media_id in sorted(wanted):
                if media_id not in owners:
                    raise EnrollmentError(
                        f"media {media_id}: expected an enrolled media id (see 'query media'), got none"
                    )
                if owners[media_id] != identity.name:
                    raise EnrollmentError(
                        f"media {media_id}: expected a media of {name!r}, got one of {owners[media_id]!r}"
                    )
            left = session.scalar(
                select(func.count())
                .select_from(Media)
                .where(Media.identity_id == identity.id, Media.id.not_in(wanted))
            )
            if not left:
                raise EnrollmentError(
                    f"identity {name!r}: removing {len(wanted)} media would leave it none; expected at least one "
                    f"to remain (remove the identity instead: remove {name})"
                )
            session.execute(delete(Media).where(Media.id.in_(wanted)))
            for embedder_id in sorted({r.embedder_id for r in rows}):
                refit_template(session, identity.id, embedder_id)
            bump_version(session)
        return [_media_row(r) for r in rows]

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
                                "kind": "template",
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


_MEDIA_ROWS = (
    select(
        Media.id,
        Identity.name.label("identity"),
        Media.kind,
        Media.path,
        Media.embedder_id,
        Media.quality,
        Media.created_at,
        Track.run_id,
        Track.track_id,
    )
    .join(Identity, Identity.id == Media.identity_id)
    .outerjoin(Track, Track.id == Media.track_pk)
)


def _media_row(r) -> dict:
    return {
        "id": r.id,
        "identity": r.identity,
        "kind": r.kind,
        "track": track_ref(r.run_id, r.track_id) if r.run_id is not None else None,
        "path": r.path,
        "embedder_id": r.embedder_id,
        "quality": r.quality,
        "created_at": _iso(r.created_at),
    }


def find_media(db: Database, f: Filters) -> Page:
    """Enrolled media by identity name, then id: what each is (``kind``), the track it came from (``track``:
    ``RUN:TRACK``, None for images, template rows and tracks purged since), its path, embedder and quality. The
    ``id`` is what ``remove NAME --media ID`` takes. Only ``identity`` filters."""
    _refuse(f, "media", {"identity"})
    stmt = _MEDIA_ROWS.order_by(Identity.name, Media.id)
    with db.session() as session:
        if f.identity is not None:
            stmt = stmt.where(Media.identity_id == get_identity(session, f.identity).id)
        return _page(session, stmt, f, _media_row)
