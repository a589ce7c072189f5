"""Read side of the gallery and the match log: matches (retroactive ones too), tracks (with their current
decision, :mod:`gallery.decisions`) and identities, filtered, newest first, paged.

Each function returns a :class:`Page` of JSON-ready dicts (times in ISO 8601 UTC). Every row of a track starts with
its reference ``ref`` (``RUN:TRACK``, :mod:`gallery.refs`) and carries its sighting times ``seen_start``/``seen_end``
(wall clock, None when unknown) with their ``time_origin``, the offsets within the source (``start_time``/
``end_time``) and when it was logged (``logged_at``); ``since``/``until`` select by sighting time (a track whose
time is unknown is never in a time range). Matches and tracks are one
statement each on an autocommit connection (one round trip to a server, no BEGIN/COMMIT): names in the
filters are resolved inside the statement, and only an empty page is followed by a look-up that tells an
unknown name from no rows. Every newest-first order (time, then id) is read straight off an index that ends
with those two columns, so a page stops after ``page_size + 1`` rows whatever the matching total.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone

from sqlalchemy import Connection, Select, func, select
from sqlalchemy.orm import Session

from gallery.db import Database
from gallery.decisions import all_decisions, with_decisions
from gallery.errors import IdentityNotFoundError, QueryError
from gallery.matchlog import DECISIONS
from gallery.models import Identity, MatchEvent, Media, Source, Template, Track
from gallery.refs import track_ref
from gallery.review_state import review_fields, with_review

logger = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "MAX_OFFSET",
    "MAX_PAGE",
    "MAX_PAGE_SIZE",
    "TRACK_COLUMNS",
    "Filters",
    "Page",
    "csv_cell",
    "find_identities",
    "find_matches",
    "find_tracks",
    "track_fields",
]

MAX_PAGE_SIZE = 1000
MAX_OFFSET = 10**9  # rows skipped before a page: far beyond any match log, well inside every SQL integer
MAX_PAGE = MAX_OFFSET + 1  # the last page reachable with page size 1
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads a cell starting so as a formula


def check_page_and_times(page: int, page_size: int, since: datetime | None, until: datetime | None) -> None:
    """The one check of a page request and a time window: page from 1, size 1..MAX_PAGE_SIZE, at most MAX_OFFSET rows
    skipped, ``since``/``until`` aware, valid in UTC and in order; a :class:`QueryError` names what was expected."""
    if page < 1:
        raise QueryError(f"page: expected 1 or more, got {page}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise QueryError(f"page size: expected 1..{MAX_PAGE_SIZE}, got {page_size}")
    if (page - 1) * page_size > MAX_OFFSET:
        raise QueryError(
            f"page: expected at most {MAX_OFFSET // page_size + 1} with page size {page_size} "
            f"(at most {MAX_OFFSET:,} rows skipped), got {page}"
        )
    for name, value in (("since", since), ("until", until)):
        if value is None:
            continue
        if value.tzinfo is None:
            raise QueryError(
                f"{name}: expected a time with a timezone (e.g. 2026-01-01T00:00:00Z), got {value.isoformat()}"
            )
        try:
            value.astimezone(timezone.utc)  # compared in UTC, where it must still be a valid time
        except OverflowError:
            raise QueryError(
                f"{name}: expected a time between years 1 and 9999 in UTC, got {value.isoformat()}"
            ) from None
    if since and until and since >= until:
        raise QueryError(
            f"time range: expected since < until, got {since.isoformat()} .. {until.isoformat()}"
        )


@dataclass(frozen=True)
class Filters:
    """Query filters; None means "any". ``identity``: exact name; ``source``: exact source name;
    ``since``/``until``: aware datetimes (``since <= t < until``); ``decision``: ``match``/``unknown``;
    ``min_score``: best score at least this; ``watchlist``: identities on (True) or off (False) the watch
    list; ``page`` counts from 1."""

    identity: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    decision: str | None = None
    min_score: float | None = None
    watchlist: bool | None = None
    page: int = 1
    page_size: int = 50

    def __post_init__(self) -> None:
        check_page_and_times(self.page, self.page_size, self.since, self.until)
        for name in ("identity", "source"):
            value = getattr(self, name)
            if value is not None and "\x00" in value:
                raise QueryError(f"{name}: expected a name without NUL characters, got {value!r}")
        if self.decision is not None and self.decision not in DECISIONS:
            raise QueryError(f"decision: expected one of {', '.join(DECISIONS)}, got {self.decision!r}")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise QueryError(f"min_score: expected a finite number, got {self.min_score}")

    def used(self) -> set[str]:
        return {
            f.name
            for f in fields(self)
            if f.name not in ("page", "page_size") and getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class Page:
    rows: list[dict]
    page: int
    page_size: int
    has_more: bool

    def as_dict(self) -> dict:
        return {"rows": self.rows, "page": self.page, "page_size": self.page_size, "has_more": self.has_more}


def csv_cell(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula: text starting with ``= + - @``, a tab or a carriage
    return gets a leading single quote (OWASP CSV injection); numbers, None and other text pass unchanged."""
    if isinstance(value, str) and value.startswith(CSV_TRIGGERS):
        return "'" + value
    return value


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# what every row of a track shows of it (:func:`track_fields`), selected with these columns
TRACK_COLUMNS = (
    Track.run_id,
    Track.track_id,
    Track.seen_start,
    Track.seen_end,
    Track.time_origin,
    Track.start_time,
    Track.end_time,
    Track.created_at.label("logged_at"),
)


def track_fields(r) -> dict:
    """The fields every row of a track starts with, from a row holding :data:`TRACK_COLUMNS`: its reference, the
    sighting times and their origin, the offsets within the source and when it was logged."""
    return {
        "ref": track_ref(r.run_id, r.track_id),
        "seen_start": _iso(r.seen_start),
        "seen_end": _iso(r.seen_end),
        "time_origin": r.time_origin,
        "start_time": r.start_time,
        "end_time": r.end_time,
        "logged_at": _iso(r.logged_at),
        "run_id": r.run_id,
        "track_id": r.track_id,
    }


def _identity_id(session: Session | Connection, name: str) -> int:
    ident = session.scalar(select(Identity.id).where(Identity.name == name))
    if ident is None:
        raise IdentityNotFoundError(f"identity {name!r}: not in the gallery")
    return ident


def _source_id(session: Session | Connection, name: str) -> int:
    src = session.scalar(select(Source.id).where(Source.name == name))
    if src is None:
        raise QueryError(f"source {name!r}: no such source in the match log")
    return src


@contextmanager
def _reader(db: Database) -> Iterator[Connection]:
    """A connection whose statements each commit on their own: a single SELECT sees one snapshot anyway, and
    a server is spared the BEGIN and COMMIT round trips."""
    with db.engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def _page(session: Session | Connection, stmt: Select, f: Filters, to_row: Callable) -> Page:
    result = session.execute(stmt.limit(f.page_size + 1).offset((f.page - 1) * f.page_size)).all()
    return Page([to_row(r) for r in result[: f.page_size]], f.page, f.page_size, len(result) > f.page_size)


def _refuse(f: Filters, kind: str, allowed: set[str]) -> None:
    extra = f.used() - allowed
    if extra:
        raise QueryError(
            f"{kind} query: filter(s) {', '.join(sorted(extra))} do not apply; expected only "
            f"{', '.join(sorted(allowed))}"
        )


def _event_filters(
    stmt: Select, f: Filters, time_col, ev=MatchEvent.__table__.c, source_col=Track.source_id
) -> Select:
    """The filters of a matches or tracks query on the decision columns ``ev`` (``identity_id``, ``decision``,
    ``score``), the time column ``time_col`` and the source column ``source_col``; identity and source names are
    resolved by scalar subqueries of the same statement (see :func:`_check_names`)."""
    if f.identity is not None:
        stmt = stmt.where(
            ev.identity_id == select(Identity.id).where(Identity.name == f.identity).scalar_subquery()
        )
    if f.source is not None:
        stmt = stmt.where(source_col == select(Source.id).where(Source.name == f.source).scalar_subquery())
    if f.since is not None:
        stmt = stmt.where(time_col >= f.since)
    if f.until is not None:
        stmt = stmt.where(time_col < f.until)
    if f.decision is not None:
        stmt = stmt.where(ev.decision == f.decision)
    if f.min_score is not None:
        stmt = stmt.where(ev.score >= f.min_score)
    return stmt


def _check_names(conn: Connection, f: Filters, page: Page) -> Page:
    """An empty page may come from a name that does not exist: raise for it (identity first)."""
    if not page.rows:
        if f.identity is not None:
            _identity_id(conn, f.identity)
        if f.source is not None:
            _source_id(conn, f.source)
    return page


def find_matches(db: Database, f: Filters) -> Page:
    """Match events and retroactive matches, newest first: time, source, track, best identity and score,
    decision, candidates, thumbnail, whether it is retroactive (and the rematch that wrote it), the camera zones its
    track entered (``zones``: None where the source has none), the review of its (track, identity) pair
    (``review``/``reviewed``, :mod:`gallery.review_state`)."""
    _refuse(f, "matches", {"identity", "source", "since", "until", "decision", "min_score"})
    ev = all_decisions().c
    stmt = (
        select(
            ev.id,
            ev.at,
            ev.identity_id,
            ev.score,
            ev.decision,
            ev.threshold,
            ev.candidates,
            ev.retroactive,
            ev.rematch_id,
            *TRACK_COLUMNS,
            Track.thumbnail,
            Track.zones,
            Source.name.label("source"),
            Identity.name.label("identity"),
        )
        .join(Track, Track.id == ev.track_pk)
        .join(Source, Source.id == ev.source_id)
        .outerjoin(Identity, Identity.id == ev.identity_id)
        .order_by(ev.at.desc(), ev.id.desc())
    )
    stmt = with_review(
        _event_filters(stmt, f, Track.seen_start, ev, ev.source_id), ev.track_pk, ev.identity_id, ev.decision
    )
    with _reader(db) as conn:
        page = _page(
            conn,
            stmt,
            f,
            lambda r: (
                track_fields(r)
                | {
                    "id": r.id,
                    "at": _iso(r.at),
                    "source": r.source,
                    "identity": r.identity,
                    "identity_id": r.identity_id,
                    "score": r.score,
                    "decision": r.decision,
                    "threshold": r.threshold,
                    "candidates": r.candidates,
                    "thumbnail": r.thumbnail,
                    "retroactive": bool(r.retroactive),
                    "rematch_id": r.rematch_id,
                    "zones": r.zones,
                }
                | review_fields(r)
            ),
        )
        return _check_names(conn, f, page)


def find_tracks(db: Database, f: Filters) -> Page:
    """Tracks, newest first, with their run, counts, stream times and current decision: the newest retroactive
    match when there is one (``retroactive`` true), else the logged one (``logged_decision``/``logged_identity``:
    what was decided then), the camera zones it entered (``zones``: None where the source has none), the review
    of its current decision (``review``/``reviewed``). The filters apply to the current decision."""
    _refuse(f, "tracks", {"identity", "source", "since", "until", "decision", "min_score"})
    stmt, current = with_decisions(
        select(
            *TRACK_COLUMNS,
            Track.frames,
            Track.crops_embedded,
            Track.embedder_id,
            Track.thumbnail,
            Track.zones,
            Source.name.label("source"),
        ).join(Source, Source.id == Track.source_id)
    )
    stmt = stmt.order_by(Track.created_at.desc(), Track.id.desc())
    stmt = with_review(
        _event_filters(stmt, f, Track.seen_start, current), Track.id, current.identity_id, current.decision
    )
    with _reader(db) as conn:
        page = _page(
            conn,
            stmt,
            f,
            lambda r: (
                track_fields(r)
                | {
                    "source": r.source,
                    "frames": r.frames,
                    "crops_embedded": r.crops_embedded,
                    "embedder_id": r.embedder_id,
                    "decision": r.decision,
                    "score": r.score,
                    "identity": r.identity,
                    "retroactive": bool(r.retroactive),
                    "logged_decision": r.logged_decision,
                    "logged_identity": r.logged_identity,
                    "thumbnail": r.thumbnail,
                    "zones": r.zones,
                }
                | review_fields(r)
            ),
        )
        return _check_names(conn, f, page)


def find_identities(db: Database, f: Filters) -> Page:
    """Enrolled identities, newest first, with media count and the embedders they have templates for."""
    _refuse(f, "identities", {"identity", "watchlist", "since", "until"})
    with db.session() as session:
        media = select(Media.identity_id, func.count().label("n")).group_by(Media.identity_id).subquery()
        stmt = (
            select(Identity, func.coalesce(media.c.n, 0).label("media"))
            .outerjoin(media, media.c.identity_id == Identity.id)
            .order_by(Identity.created_at.desc(), Identity.id.desc())
        )
        if f.identity is not None:
            stmt = stmt.where(Identity.name == f.identity)
        if f.watchlist is not None:
            stmt = stmt.where(Identity.watchlist == f.watchlist)
        if f.since is not None:
            stmt = stmt.where(Identity.created_at >= f.since)
        if f.until is not None:
            stmt = stmt.where(Identity.created_at < f.until)
        page = _page(
            session,
            stmt,
            f,
            lambda r: {
                "id": r.Identity.id,
                "name": r.Identity.name,
                "external_id": r.Identity.external_id,
                "watchlist": r.Identity.watchlist,
                "notes": r.Identity.notes,
                "media": r.media,
                "created_at": _iso(r.Identity.created_at),
            },
        )
        ids = [row["id"] for row in page.rows]
        embedders: dict[int, list[str]] = {}
        for ident, emb in session.execute(
            select(Template.identity_id, Template.embedder_id)
            .where(Template.identity_id.in_(ids))
            .order_by(Template.embedder_id)
        ):
            embedders.setdefault(ident, []).append(emb)
        for row in page.rows:
            row["embedders"] = embedders.get(row["id"], [])
        return page


KINDS = {"matches": find_matches, "tracks": find_tracks, "identities": find_identities}
