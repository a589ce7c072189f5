"""What the web app's routers share: the error body and its responses, query times, thumbnail URLs, times within a
video, what the app is given (:class:`Forensic`: the search and grouping callables; :class:`Context`: the database,
the thumbnail store and the options every router reads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fastapi import HTTPException
from pydantic import BaseModel, Field

from gallery.db import Database
from gallery.thumbnails import ThumbnailStore
from gallery.track_search import TrackHit
from gallery.unknowns import Grouping
from pipeline.services.links import thumbnail_url

__all__ = [
    "ERRORS",
    "PAGE_ERRORS",
    "TIME",
    "Context",
    "Detail",
    "Evidence",
    "Forensic",
    "SearchUnavailable",
    "clock",
    "query_time",
    "thumbnail_url",
]

TIME = "ISO 8601 time with a timezone, e.g. 2026-03-01T10:00:00Z"


class Detail(BaseModel):
    detail: str = Field(description="why the request was refused")


ERRORS = {code: {"model": Detail} for code in (400, 401, 404)}
# the page answers HTML, its errors JSON: the schema inline, as a model would put it under text/html
PAGE_ERRORS = {
    code: {"description": "refused", "content": {"application/json": {"schema": Detail.model_json_schema()}}}
    for code in (400, 401, 404)
}


def query_time(name: str, text: str | None) -> datetime | None:
    """An ISO 8601 time; a bare number (which pydantic would read as a Unix time) is refused like any other
    text that is no ISO 8601 time, and so is an empty one (leave the parameter out for no bound). A time without a
    timezone is refused by :class:`gallery.queries.Filters`."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name}: expected an {TIME}, got {text[:100]!r}") from None


def clock(seconds: float | None) -> str:
    """A time within a file or stream as ``m:ss.s`` (``h:mm:ss.s`` from an hour on)."""
    if seconds is None:
        return ""
    tenths = round(max(seconds, 0.0) * 10)
    hours, rest = divmod(tenths, 36_000)
    minutes, tenths = divmod(rest, 600)
    text = f"{minutes:02d}:{tenths / 10:04.1f}" if hours else f"{minutes}:{tenths / 10:04.1f}"
    return f"{hours}:{text}" if hours else text


class SearchUnavailable(Exception):
    """The search by photo cannot run on this server (its detector or embedder does not load): 503."""


@dataclass(frozen=True)
class Forensic:
    """What the forensic endpoints need beyond the database: ``search(photos, *, face, top, min_score, source,
    since, until) -> [TrackHit]`` (photos: ``[(name, bytes)]``; bad photos raise a :class:`UserError`),
    ``unknowns(*, embedder_id, threshold, min_size, source, since, until) -> Grouping``, the upload limit and the
    folders enrolled photos may be shown from."""

    search: Callable[..., list[TrackHit]] | None = None
    unknowns: Callable[..., Grouping] | None = None
    max_upload_bytes: int = 10 * 2**20
    media_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evidence:
    """What the evidence routes need: ``clip(ref) -> Path`` the track's clip (an MP4 file; a temporary one lies in
    a folder of its own, removed after it is sent), which starts ``margin_s`` seconds before the track (less at the
    start of its source); ``export(ref) -> Path`` the track's evidence export as a zip in a folder of its own
    (removed after it is sent). Either raises a :class:`core.errors.UserError` with the reason when it cannot;
    None: that route answers 404."""

    clip: Callable[[str], Path] | None = None
    export: Callable[[str], Path] | None = None
    margin_s: float = 2.0


@dataclass(frozen=True)
class Context:
    """What every router is built from: the database, the thumbnail store (None: no thumbnails served), the
    injected callables, rows per page, whether pages show a log out button, and the dependencies every protected
    route carries (the authentication check)."""

    db: Database
    thumbnails: ThumbnailStore | None
    forensic: Forensic
    page_size: int = 50
    logout: bool = False
    auth: list = field(default_factory=list)
    evidence: Evidence = field(default_factory=Evidence)
