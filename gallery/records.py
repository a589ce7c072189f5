"""SQL building blocks of the gallery stores, each run inside the caller's session (one transaction).

The gallery version (bumped by every transaction that changes templates), identity lookup and creation, and
the refit of an identity's template from its media through the one fusion of the system,
:func:`core.fusion.pre_norm_vector_add`, and :func:`retry_on_conflict`, which settles races between commands
writing the same rows at once (the database's unique constraints decide; the loser re-reads and retries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.fusion import ZeroTemplateError, pre_norm_vector_add
from gallery.errors import EmbeddingError, IdentityExistsError, IdentityNotFoundError
from gallery.models import GalleryMeta, Identity, Media, Template, from_blob, to_blob, utcnow
from gallery.names import identity_name, lookup_name, quoted

logger = logging.getLogger(__name__)

T = TypeVar("T")
CONFLICT_ATTEMPTS = 4  # tries of one unit of work that lost a race on a unique constraint

__all__ = [
    "NameTakenMeanwhile",
    "bump_version",
    "create_identity",
    "embedder_dim",
    "fuse_media",
    "get_identity",
    "refit_template",
    "retry_on_conflict",
    "taken_name_error",
    "version_of",
]


def version_of(session: Session) -> int:
    """The gallery version: it changes whenever any template changes."""
    return session.scalar(select(GalleryMeta.version).where(GalleryMeta.id == 1))


def bump_version(session: Session) -> None:
    session.execute(update(GalleryMeta).where(GalleryMeta.id == 1).values(version=GalleryMeta.version + 1))


def taken_name_error(name: str) -> IdentityExistsError:
    return IdentityExistsError(
        f"identity {name!r} already exists (add images to it instead, or pick another name)"
    )


def create_identity(
    session: Session, name: str, external_id: str | None, watchlist: bool, notes: str
) -> Identity:
    """Insert a new identity (a name by :func:`gallery.names.identity_name`, not taken) and flush it so that it
    has an id."""
    name = identity_name(name)
    if session.scalar(select(Identity.id).where(Identity.name == name)) is not None:
        raise taken_name_error(name)
    identity = Identity(name=name, external_id=external_id, watchlist=watchlist, notes=notes or "")
    session.add(identity)
    session.flush()
    return identity


def get_identity(session: Session, name: str) -> Identity:
    name = lookup_name(name)
    identity = session.scalar(select(Identity).where(Identity.name == name))
    if identity is None:
        raise IdentityNotFoundError(f"identity {quoted(name)}: not in the gallery")
    return identity


def embedder_dim(session: Session, embedder_id: str) -> int | None:
    """The dimension of ``embedder_id``'s templates, or None when it has none yet."""
    return session.scalar(select(Template.dim).where(Template.embedder_id == embedder_id).limit(1))


def fuse_media(units: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Feature-norm weighted fusion of unit ``units [N, D]`` with their pre-normalisation ``norms [N]``
    (:func:`core.fusion.pre_norm_vector_add`); a zero sum is an :class:`EmbeddingError`."""
    try:
        return pre_norm_vector_add(units, norms)
    except ZeroTemplateError:
        raise EmbeddingError(
            "template fusion: expected vectors with a non-zero weighted sum, got zero"
        ) from None


def refit_template(session: Session, identity_id: int, embedder_id: str) -> None:
    """Recompute (or create, or delete when no media is left) the fused template of one identity and
    embedder."""
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
    fused = fuse_media(np.stack([from_blob(r.vector, dim) for r in rows]), np.array([r.norm for r in rows]))
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


class NameTakenMeanwhile(IdentityExistsError):
    """An identity name that another command created after this transaction read it: the transaction is
    retried by :func:`retry_on_conflict` (and this error shown only if every retry loses)."""


def retry_on_conflict(work: Callable[[], T], what: str, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """Run ``work`` (one whole transaction) again when it loses a race on a unique constraint: another
    command inserted the same row (identity name, media content, threshold) between its read and its write.
    The retry re-reads and sees that row (a duplicate, a no-op, an update). The last failure propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except (IntegrityError, NameTakenMeanwhile) as exc:
            if attempt == attempts:
                raise
            reason = exc.orig if isinstance(exc, IntegrityError) else exc
            logger.info("%s: lost a race with another writer (%s): retrying", what, str(reason)[:200])
    raise AssertionError("unreachable")
