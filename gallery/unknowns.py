"""Recurring unknowns: the match log's unknown tracks of one embedder grouped into persons.

Which tracks: every logged track whose current decision is ``unknown`` (no enrolled identity reached the
operating threshold, and no retroactive match named it later: :func:`gallery.decisions.current_decision`) and
that has a template (at least one crop embedded), of one ``embedder_id`` (templates of different embedders never
mix), optionally of one source and logged within a time window, in track order.

How: :func:`gallery.grouping.group_templates` (average linkage over a nearest-neighbour graph of the templates;
tracks of one run that overlap in time never join), at a cosine threshold that defaults to the matcher's
operating threshold (``gallery.unknowns.threshold``; the command resolves it). Groups are numbered by size
(largest first), then first seen, then track order. Each lists its tracks, its sources, when it was first and
last logged, its best thumbnail (the track with most crops embedded, then most frames) and the mean cosine
between its tracks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import Select, func, select

from gallery.config import UnknownsConfig
from gallery.db import Database
from gallery.decisions import current_decision
from gallery.errors import EmbeddingError, QueryError
from gallery.grouping import group_templates, mean_similarity
from gallery.models import MatchEvent, Source, Track, from_blob
from gallery.queries import Filters, _iso, track_fields
from gallery.refs import track_ref
from gallery.track_search import CHUNK

logger = logging.getLogger(__name__)

__all__ = ["Grouping", "UnknownGroup", "UnknownTrack", "check_options", "group_unknowns", "unknown_embedders"]


@dataclass(frozen=True)
class UnknownTrack:
    """One unknown track: which (``ref``), where (source), when (sighting times with their origin, None when
    unknown; stream seconds; ``logged_at``: when it was logged), how much."""

    pk: int
    source: str
    run_id: int
    track_id: int
    start_time: float
    end_time: float
    logged_at: datetime
    frames: int
    crops_embedded: int
    thumbnail: str | None
    seen_start: datetime | None = None
    seen_end: datetime | None = None
    time_origin: str = "unknown"

    def as_row(self) -> dict:
        return track_fields(self) | {
            "source": self.source,
            "start_time": round(self.start_time, 3),
            "end_time": round(self.end_time, 3),
            "frames": self.frames,
            "crops_embedded": self.crops_embedded,
            "thumbnail": self.thumbnail,
        }


@dataclass(frozen=True)
class UnknownGroup:
    """One person seen in several unknown tracks (or one, when single tracks are listed), in the order logged."""

    group: int
    tracks: tuple[UnknownTrack, ...]
    mean_similarity: float | None  # mean cosine over the pairs of its tracks; None for one track
    best: UnknownTrack

    @property
    def size(self) -> int:
        return len(self.tracks)

    @property
    def sources(self) -> list[str]:
        return sorted({t.source for t in self.tracks})

    @property
    def first_seen(self) -> datetime | None:
        """The earliest sighting of its tracks whose time is known (None: none is)."""
        return min((t.seen_start for t in self.tracks if t.seen_start is not None), default=None)

    @property
    def last_seen(self) -> datetime | None:
        """The latest sighting of its tracks whose time is known (None: none is)."""
        return max((t.seen_end for t in self.tracks if t.seen_end is not None), default=None)

    def as_row(self) -> dict:
        sim = None if self.mean_similarity is None else round(self.mean_similarity, 4)
        return {
            "group": self.group,
            "size": self.size,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "sources": self.sources,
            "mean_similarity": sim,
            "best": track_ref(self.best.run_id, self.best.track_id),
            "thumbnail": self.best.thumbnail,
            "tracks": [t.as_row() for t in self.tracks],
        }


@dataclass(frozen=True)
class Grouping:
    """The result: ``groups`` of at least ``min_size`` tracks, best first, out of ``tracks`` unknown tracks;
    ``singletons``: tracks alone in their group; ``embedder_id`` (and maybe ``threshold``) None when there was no
    unknown track."""

    embedder_id: str | None
    threshold: float | None
    min_size: int
    tracks: int
    singletons: int
    groups: list[UnknownGroup]
    seconds: dict[str, float] = field(default_factory=dict)  # ``load`` (from SQL) and ``group``

    def as_dict(self) -> dict:
        return {
            "embedder_id": self.embedder_id,
            "threshold": self.threshold,
            "min_size": self.min_size,
            "tracks": self.tracks,
            "singletons": self.singletons,
            "groups": [g.as_row() for g in self.groups],
        }


def _where(stmt: Select, source: str | None, since: datetime | None, until: datetime | None) -> Select:
    """Tracks whose current decision is unknown (no retroactive match since), with a template, of ``source`` and
    seen in ``since <= t < until`` (sighting time)."""
    retro, current = current_decision()
    stmt = (
        stmt.join(MatchEvent, MatchEvent.track_pk == Track.id)
        .outerjoin(*retro)
        .where(current.decision == "unknown", Track.crops_embedded > 0)
    )
    if source is not None:
        stmt = stmt.where(Track.source_id == select(Source.id).where(Source.name == source).scalar_subquery())
    if since is not None:
        stmt = stmt.where(Track.seen_start >= since)
    if until is not None:
        stmt = stmt.where(Track.seen_start < until)
    return stmt


def check_options(threshold: float | None, min_size: int | None) -> None:
    """A threshold that is a cosine and a minimum group size of 1 or more (None: not given)."""
    if threshold is not None and not -1.0 <= threshold <= 1.0:  # NaN too
        raise QueryError(f"threshold: expected a cosine in -1..1, got {threshold}")
    if min_size is not None and min_size < 1:
        raise QueryError(f"min size: expected 1 or more, got {min_size}")


def _check_filters(db: Database, source: str | None, since: datetime | None, until: datetime | None) -> None:
    Filters(source=source, since=since, until=until)  # the query filters' checks: timezone, order, NUL
    if source is not None:
        with db.session() as session:
            if session.scalar(select(Source.id).where(Source.name == source)) is None:
                raise QueryError(f"source {source!r}: no such source in the match log")


def unknown_embedders(
    db: Database, source: str | None = None, since: datetime | None = None, until: datetime | None = None
) -> dict[str, int]:
    """How many unknown tracks each embedder has (under the filters), most first."""
    _check_filters(db, source, since, until)
    stmt = _where(select(Track.embedder_id, func.count()), source, since, until).group_by(Track.embedder_id)
    with db.session() as session:
        counts = {e: n for e, n in session.execute(stmt)}
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _load(
    db: Database, embedder_id: str, source: str | None, since: datetime | None, until: datetime | None
) -> tuple[list[UnknownTrack], np.ndarray]:
    """The unknown tracks of ``embedder_id`` in track order and their unit templates ``[N, D]``, streamed from SQL
    ``CHUNK`` rows at a time."""
    cols = (Track.id, Track.source_id, Track.run_id, Track.track_id, Track.start_time, Track.end_time)
    cols += (Track.created_at, Track.frames, Track.crops_embedded, Track.thumbnail)
    cols += (Track.seen_start, Track.seen_end, Track.time_origin, Track.dim, Track.template)
    stmt = _where(select(*cols).where(Track.embedder_id == embedder_id), source, since, until)
    tracks: list[UnknownTrack] = []
    blocks: list[np.ndarray] = []
    with db.session() as session:
        names = dict(session.execute(select(Source.id, Source.name)).all())
        result = session.execute(stmt.order_by(Track.id).execution_options(yield_per=CHUNK))
        for rows in result.partitions():
            dims = {r.dim for r in rows} | ({blocks[0].shape[1]} if blocks else set())
            if len(dims) != 1:
                raise EmbeddingError(
                    f"unknowns: expected templates of one dimension for {embedder_id}, got {sorted(dims)}"
                )
            blocks.append(np.stack([from_blob(r.template, r.dim) for r in rows]))
            tracks += [UnknownTrack(r[0], names[r[1]], *r[2:13]) for r in rows]
    x = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    keep = (norms[:, 0] > 0) & np.isfinite(x).all(axis=1)
    if not keep.all():
        logger.warning("unknowns: %d tracks without a usable template skipped", int((~keep).sum()))
        tracks = [t for t, k in zip(tracks, keep) if k]
    return tracks, np.ascontiguousarray(x[keep] / norms[keep], np.float32)


def _best(tracks: list[UnknownTrack]) -> UnknownTrack:
    """The track whose thumbnail shows the person best: with a thumbnail, most crops embedded, most frames."""
    return max(tracks, key=lambda t: (t.thumbnail is not None, t.crops_embedded, t.frames, -t.pk))


def group_unknowns(
    db: Database,
    embedder_id: str | None,
    threshold: float,
    config: UnknownsConfig | None = None,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    min_size: int | None = None,
) -> Grouping:
    """Group the unknown tracks of ``embedder_id`` (None: the embedder with most unknown tracks) logged from
    ``source`` within ``since <= t < until``; list the groups of at least ``min_size`` tracks (default
    ``config.min_size``)."""
    config = config or UnknownsConfig()
    min_size = config.min_size if min_size is None else min_size
    check_options(threshold, min_size)
    if embedder_id is None:
        counts = unknown_embedders(db, source, since, until)
        embedder_id = next(iter(counts), None)
        if len(counts) > 1:
            logger.info("unknowns: grouping %s; unknown tracks of other embedders: %s", embedder_id, counts)
    else:
        _check_filters(db, source, since, until)
    if embedder_id is None:
        return Grouping(None, threshold, min_size, 0, 0, [])
    began = time.perf_counter()
    tracks, x = _load(db, embedder_id, source, since, until)
    loaded = time.perf_counter()
    labels = group_templates(
        x,
        [t.run_id for t in tracks],
        [t.start_time for t in tracks],
        [t.end_time for t in tracks],
        threshold,
        config,
    )
    seconds = {"load": loaded - began, "group": time.perf_counter() - loaded}
    members: dict[int, list[int]] = {}
    for i in sorted(range(len(tracks)), key=lambda i: (tracks[i].logged_at, tracks[i].pk)):
        members.setdefault(int(labels[i]), []).append(i)  # each group's tracks in the order they were logged
    ranked = sorted(members.values(), key=lambda m: (-len(m), tracks[m[0]].logged_at, tracks[m[0]].pk))
    groups = [
        UnknownGroup(
            number,
            tuple(tracks[i] for i in m),
            mean_similarity(x[m]),
            _best([tracks[i] for i in m]),
        )
        for number, m in enumerate(ranked, 1)
        if len(m) >= min_size
    ]
    singletons = sum(len(m) == 1 for m in members.values())
    logger.info(
        "unknowns: %d tracks of %s in %d groups (%d alone) at threshold %.3f; read in %.1f s, grouped in %.1f s",
        len(tracks),
        embedder_id,
        len(members),
        singletons,
        threshold,
        seconds["load"],
        seconds["group"],
    )
    return Grouping(embedder_id, threshold, min_size, len(tracks), singletons, groups, seconds)
