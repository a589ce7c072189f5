"""Watch lists: named lists of identities, each with its own alert threshold and the cameras it applies to.

- :class:`Watchlist`: ``name`` (unique, the rule of identity names), ``threshold`` (a match alerts for a member
  only at this score or above; null: the operating threshold in force), ``cameras`` (JSON list of camera names the
  list applies to; null: every camera).
- :class:`WatchlistMember`: one identity on one list (removed with either).

The default list ``default`` is the ``identities.watchlist`` flag: its members are the flagged identities (and the
names of ``live.alerts.watchlist``), never rows of ``watchlist_members``; a ``watchlists`` row named ``default``
only gives it a threshold or cameras (without one it alerts at the threshold in force, on every camera).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gallery.models import Base, UTCDateTime, utcnow

__all__ = ["DEFAULT_LIST", "Watchlist", "WatchlistMember"]

DEFAULT_LIST = "default"


class Watchlist(Base):
    __tablename__ = "watchlists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    threshold: Mapped[float | None] = mapped_column(Float)
    cameras: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WatchlistMember(Base):
    __tablename__ = "watchlist_members"
    __table_args__ = (Index(None, "identity_id"),)

    watchlist_id: Mapped[int] = mapped_column(
        ForeignKey("watchlists.id", ondelete="CASCADE"), primary_key=True
    )
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
