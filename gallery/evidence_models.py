"""Tables of the evidence kept beside the match log: camera recordings and the cases that hold them.

- :class:`Recording`: one segment of a camera's stream, remuxed into MP4 without re-encoding, under the recording
  store (store-relative ``path``); ``started_at``/``ended_at`` are the wall clock of its first and last frame,
  ``status`` is ``recording`` while it is written and ``done`` once finalised; ``masks``: the camera's privacy-mask
  polygons in force while it was recorded (the segment itself is untouched; clips cut from it are masked).
- :class:`Case` and :class:`CaseHold`: an evidence export opens a case; the segments its camera clips were cut from
  are held, and retention never deletes a held segment while its case is open (``closed_at`` unset).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gallery.models import Base, UTCDateTime, utcnow

__all__ = ["Case", "CaseHold", "Recording"]


class Recording(Base):
    __tablename__ = "recordings"
    __table_args__ = (Index(None, "camera", "started_at"), Index(None, "started_at", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera: Mapped[str] = mapped_column(String(500))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    path: Mapped[str] = mapped_column(String(1000), unique=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="recording")
    masks: Mapped[list | None] = mapped_column(JSON)


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    note: Mapped[str] = mapped_column(Text, default="")
    operator: Mapped[str] = mapped_column(String(200))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CaseHold(Base):
    __tablename__ = "case_holds"

    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True
    )
