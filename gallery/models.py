"""SQL schema of the gallery and the match log (SQLAlchemy 2 typed models).

Vectors are stored as little-endian float32 bytes (``dim`` values); SQL is the source of truth, the FAISS
index is a derived copy. Times are stored as naive UTC and read back as aware UTC datetimes.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "GalleryMeta",
    "Identity",
    "MatchEvent",
    "Media",
    "Rematch",
    "RetroMatch",
    "Run",
    "Source",
    "Template",
    "Threshold",
    "Track",
    "from_blob",
    "owner_gone",
    "process_owner",
    "to_blob",
    "utcnow",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes, dim: int) -> np.ndarray:
    vec = np.frombuffer(blob, dtype="<f4")
    if vec.shape != (dim,):
        raise ValueError(f"stored vector: expected {dim} float32 values, got {vec.size}")
    return vec.astype(np.float32)


def _proc_start(pid: int) -> float | None:
    """Start time (epoch seconds) of process ``pid`` on this host; None when it is gone, a zombie, or unknown
    (no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, StopIteration):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return float(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_owner() -> tuple[str, int, float | None]:
    """This process as a run's owner: (host name, pid, process start time in epoch seconds or None)."""
    return socket.gethostname()[:255], os.getpid(), _proc_start(os.getpid())


def owner_gone(pid: int | None, started: float | None) -> bool:
    """Whether the owner process of a run on this host is gone (pid dead, or reused by a later process)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    now_started = _proc_start(pid)  # None: a zombie (or no /proc, then started is None too)
    return started is not None and (now_started is None or abs(now_started - started) > 2.0)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on both back ends (stored naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"datetime: expected a timezone-aware value, got naive {value.isoformat()}")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Identity(Base):
    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(200), index=True)
    watchlist: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    media: Mapped[list[Media]] = relationship(
        back_populates="identity", cascade="all, delete-orphan", passive_deletes=True
    )
    templates: Mapped[list[Template]] = relationship(
        back_populates="identity", cascade="all, delete-orphan", passive_deletes=True
    )


class Media(Base):
    """One enrolled image (or template file, or logged track) of an identity, with its own vector for one
    embedder. ``kind``: ``image``, ``template`` or ``track``; ``track_pk``: the logged track it came from (kind
    ``track``; None once that track is purged)."""

    __tablename__ = "media"
    __table_args__ = (UniqueConstraint("content_hash", "embedder_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(2000))
    kind: Mapped[str] = mapped_column(String(16), default="image", server_default="image")
    track_pk: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="SET NULL"))
    content_hash: Mapped[str] = mapped_column(String(64))
    embedder_id: Mapped[str] = mapped_column(String(200))
    quality: Mapped[float] = mapped_column(Float)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    norm: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    identity: Mapped[Identity] = relationship(back_populates="media")


class Template(Base):
    """The fused unit vector of one identity for one embedder."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("identity_id", "embedder_id"), Index(None, "embedder_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    embedder_id: Mapped[str] = mapped_column(String(200))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    num_media: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    identity: Mapped[Identity] = relationship(back_populates="templates")


class GalleryMeta(Base):
    """One row: the gallery version, bumped in every transaction that changes templates."""

    __tablename__ = "gallery_meta"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class Threshold(Base):
    """The calibrated open-set threshold of one embedder."""

    __tablename__ = "thresholds"

    embedder_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    target_fpir: Mapped[float] = mapped_column(Float)
    impostor_scores: Mapped[int] = mapped_column(Integer)
    gallery_version: Mapped[int] = mapped_column(Integer)
    calibrated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Source(Base):
    """A video file or a camera. ``content_key``: a file's identity by content (size and sampled blocks), so the
    same file under another path is the same source."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(500), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    uri: Mapped[str | None] = mapped_column(String(2000))
    content_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Run(Base):
    """One processing run over a source: its progress survives a crash. ``status``: ``running``, ``finished``,
    ``failed``, ``interrupted`` (its process died) or ``replaced`` (a later run of the same file took its place: its
    tracks are gone, :func:`gallery.runs.replace_runs`); ``owner_*``: the process writing it (host, pid, process start
    time in epoch seconds); ``last_timestamp``/``resume_at``: the last committed stream position and where a re-run
    must decode from to see every track still open there; ``resumed_from``: the interrupted run this one
    continues; ``threshold``/``threshold_origin``: the open-set threshold in force and where it came from;
    ``recorded_at``/``time_origin``: the wall clock of stream time 0 and its origin (None: unknown); ``path``: the
    path the source was read from."""

    __tablename__ = "runs"
    __table_args__ = (Index(None, "source_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    config_hash: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(20))
    frames_done: Mapped[int] = mapped_column(Integer, default=0)
    last_timestamp: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_started: Mapped[float | None] = mapped_column(Float)
    resume_at: Mapped[float | None] = mapped_column(Float)
    resumed_from: Mapped[int | None] = mapped_column(Integer)
    threshold: Mapped[float | None] = mapped_column(Float)
    threshold_origin: Mapped[str | None] = mapped_column(String(300))
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    time_origin: Mapped[str | None] = mapped_column(String(16))
    path: Mapped[str | None] = mapped_column(String(2000))


class Track(Base):
    """One face track of a run: stream times (seconds within the source), sighting times (wall clock of the first
    and last frame, None when unknown) with their ``time_origin`` (``given``, ``container``, ``filename``,
    ``camera``, ``unknown``), counts, fused template and thumbnail (store-relative); ``snapshot``: the
    store-relative context frame of the best crop; ``boxes``: the face box on each frame it was seen
    (:mod:`gallery.track_boxes`); ``zones``: names of the camera zones it entered. Its time indexes end with
    ``id``: pages are newest first by (created_at, id)."""

    __tablename__ = "tracks"
    __table_args__ = (
        UniqueConstraint("run_id", "track_id"),
        Index(None, "source_id", "created_at", "id"),
        Index(None, "created_at", "id"),
        Index(None, "embedder_id", "id"),  # one embedder's tracks by id: the track index's catch-up and check
        Index(None, "seen_start", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    track_id: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[float] = mapped_column(Float)
    end_time: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer)
    crops_embedded: Mapped[int] = mapped_column(Integer)
    embedder_id: Mapped[str] = mapped_column(String(200))
    dim: Mapped[int] = mapped_column(Integer)
    template: Mapped[bytes] = mapped_column(LargeBinary)
    thumbnail: Mapped[str | None] = mapped_column(String(1000))
    seen_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seen_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    time_origin: Mapped[str] = mapped_column(String(16), default="unknown", server_default="unknown")
    snapshot: Mapped[str | None] = mapped_column(String(1000))
    boxes: Mapped[bytes | None] = mapped_column(LargeBinary)
    zones: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MatchEvent(Base):
    """The open-set decision on one track: top-k candidates, the best identity and score, the threshold
    used. Its time indexes end with ``id``: pages are newest first by (at, id), read straight off the index."""

    __tablename__ = "match_events"
    __table_args__ = (
        Index(None, "identity_id", "at", "id"),
        Index(None, "source_id", "at", "id"),
        Index(None, "decision", "at", "id"),
        Index(None, "at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_pk: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), unique=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"))
    score: Mapped[float | None] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(16))
    threshold: Mapped[float] = mapped_column(Float)
    candidates: Mapped[list] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Rematch(Base):
    """One pass of retroactive matching: past tracks of ``embedder_id`` scored against the gallery at
    ``gallery_version`` with ``threshold``. ``cause``: ``enroll`` (``enroll --rematch``), ``from-track``
    (``enroll --from-track --rematch``) or ``rematch`` (the command); ``identities``: the names it could name
    (None: every identity); ``media_ids``: the media rows the enrollment added; ``source``/``since``: the tracks
    it looked at; ``finished_at`` stays empty when it was cut short (the batches written before stay)."""

    __tablename__ = "rematches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cause: Mapped[str] = mapped_column(String(16))
    embedder_id: Mapped[str] = mapped_column(String(200))
    threshold: Mapped[float] = mapped_column(Float)
    gallery_version: Mapped[int] = mapped_column(Integer)
    identities: Mapped[list | None] = mapped_column(JSON)
    media_ids: Mapped[list | None] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(String(500))
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tracks_scored: Mapped[int] = mapped_column(Integer, default=0)
    matches: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RetroMatch(Base):
    """A retroactive match: a past track named later, by the rematch ``rematch_id``, at time ``at``. The track's
    match event (what was decided then) is left as it was; one row per (track, identity). Its time indexes end
    with ``id`` like the match events'."""

    __tablename__ = "retro_matches"
    __table_args__ = (
        UniqueConstraint("track_pk", "identity_id"),
        Index(None, "identity_id", "at", "id"),
        Index(None, "source_id", "at", "id"),
        Index(None, "at", "id"),
        Index(None, "rematch_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_pk: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"))
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    rematch_id: Mapped[int] = mapped_column(ForeignKey("rematches.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    candidates: Mapped[list] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


from gallery import access_models as _access_models  # noqa: E402,F401  (their tables join Base.metadata)
from gallery import evidence_models as _evidence_models  # noqa: E402,F401
from gallery import watchlist_models as _watchlist_models  # noqa: E402,F401
