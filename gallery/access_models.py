"""Tables of accountable use: the people who use the system, the audit trail of what they did, their reviews.

- :class:`User`: a name, a role (``viewer``, ``investigator`` or ``admin``), an API token known only by its salted
  hash (``token_id`` is the token's public half, used to find the row; the secret half is never stored) and an
  optional password hash; ``disabled_at`` set: refused.
- :class:`AuditEntry`: one action (search, enroll, remove, merge, rematch, undo, export, review, purge, user change,
  login, failed login, ...) by ``actor`` (a user, the OS account of a CLI command, the shared API token), on
  ``objects``, with ``details`` and its ``result``. Append-only: ``hash`` is the SHA-256 of the entry's content and
  ``prev_hash`` (the previous entry's ``hash``), so an edited, deleted or cut-off row breaks the chain.
- :class:`Review`: a person's verdict on what the system decided about a track (a match, a retroactive match, an
  alert, an unknown track named); it never rewrites the logged decision.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gallery.models import Base, UTCDateTime, utcnow

__all__ = ["AuditEntry", "Review", "User"]


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(300))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    __tablename__ = "audit"
    __table_args__ = (
        Index(None, "at", "id"),
        Index(None, "actor", "at", "id"),
        Index(None, "action", "at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    actor_kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    objects: Mapped[list] = mapped_column(JSON)
    details: Mapped[dict] = mapped_column(JSON)
    result: Mapped[str] = mapped_column(String(16))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (Index(None, "track_pk", "at", "id"), Index(None, "at", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_pk: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str] = mapped_column(String(16))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"))
    retro_id: Mapped[int | None] = mapped_column(ForeignKey("retro_matches.id", ondelete="SET NULL"))
    reviewer: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
