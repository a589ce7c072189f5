"""Identities in SQL: create, list, look up, remove and merge them (media and templates follow).

Every change that touches templates bumps the gallery version in the same transaction, so that the search
index of every embedder knows it is stale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update

from gallery.db import Database
from gallery.errors import EnrollmentError
from gallery.models import Identity, MatchEvent, Media, RetroMatch, Template
from gallery.names import quoted
from gallery.records import bump_version, create_identity, get_identity, refit_template, version_of

logger = logging.getLogger(__name__)

__all__ = ["IdentityInfo", "IdentityStore"]


@dataclass(frozen=True)
class IdentityInfo:
    id: int
    name: str
    external_id: str | None
    watchlist: bool
    notes: str
    media: int
    embedders: tuple[str, ...]


class IdentityStore:
    """The identities of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def version(self) -> int:
        """The gallery version: it changes whenever any template changes."""
        with self.db.session() as session:
            return version_of(session)

    def add_identity(
        self, name: str, *, external_id: str | None = None, watchlist: bool = False, notes: str = ""
    ) -> int:
        """Create an identity with no media yet; a taken name raises :class:`IdentityExistsError`."""
        with self.db.session() as session:
            return create_identity(session, name, external_id, watchlist, notes).id

    def has_identity(self, name: str) -> bool:
        with self.db.session() as session:
            return session.scalar(select(Identity.id).where(Identity.name == name)) is not None

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

    def embedders(self) -> list[str]:
        """The embedders that have templates, by id."""
        with self.db.session() as session:
            return list(
                session.scalars(select(Template.embedder_id).distinct().order_by(Template.embedder_id))
            )

    def remove_identity(self, name: str) -> None:
        """Delete an identity with its media and templates; match events keep their candidates but lose the
        link."""
        with self.db.session() as session:
            identity = get_identity(session, name)
            session.execute(
                update(MatchEvent).where(MatchEvent.identity_id == identity.id).values(identity_id=None)
            )
            session.delete(identity)
            bump_version(session)
        logger.info("removed identity %r", name)

    def merge_identities(self, source: str, into: str) -> None:
        """Move all media of ``source`` to ``into``, refit ``into``'s templates, re-point match events and
        retroactive matches, delete ``source``: one transaction."""
        if source == into:
            raise EnrollmentError(f"merge: expected two different identities, got {quoted(source)} twice")
        with self.db.session() as session:
            src, dst = get_identity(session, source), get_identity(session, into)
            embedders = set(session.scalars(select(Media.embedder_id).where(Media.identity_id == src.id)))
            session.execute(update(Media).where(Media.identity_id == src.id).values(identity_id=dst.id))
            session.execute(
                update(MatchEvent).where(MatchEvent.identity_id == src.id).values(identity_id=dst.id)
            )
            taken = select(RetroMatch.track_pk).where(RetroMatch.identity_id == dst.id)
            retro = update(RetroMatch).where(
                RetroMatch.identity_id == src.id, RetroMatch.track_pk.not_in(taken)
            )
            session.execute(retro.values(identity_id=dst.id))  # the rest go with ``source`` (one per track)
            session.execute(delete(Template).where(Template.identity_id == src.id))
            session.execute(delete(Identity).where(Identity.id == src.id))
            for embedder_id in embedders:
                refit_template(session, dst.id, embedder_id)
            bump_version(session)
        logger.info("merged identity %r into %r", source, into)
