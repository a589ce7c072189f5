"""What the forensic routes share (:mod:`pipeline.web.search`, :mod:`pipeline.web.tracks`): reading the search
form, search rows, timeline pages, unknown groups and one track as JSON-ready data, each with thumbnail URLs.

- The search form: a ``multipart/form-data`` body with a ``photo`` part (or several, of one person: fused), at
  most ``gallery.serve.max_upload_bytes`` in all (413 above, told by ``Content-Length`` before anything is read,
  else counted while reading). The form is read flat in one pass (:mod:`pipeline.web.multipart`): a nested
  multipart part, more than 64 parts or overlong part headers: 400. Nothing is written; the upload stays in
  memory. A photo that does not decode, shows no face, or several faces without ``face=N``: 400.
- One track (``ref``: ``RUN:TRACK``, :func:`gallery.forensic.track_detail`): another form of reference 422, none
  such 404.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from core.errors import UserError
from gallery.db import Database
from gallery.forensic import track_detail
from gallery.queries import Filters, Page
from gallery.refs import TrackRefError
from gallery.timeline import find_timeline
from pipeline.web.common import (
    ERRORS,
    TIME,
    Detail,
    Evidence,
    Forensic,
    SearchUnavailable,
    query_time,
    thumbnail_url,
)
from pipeline.web.models import SearchOptions
from pipeline.web.multipart import FormRefused, MalformedForm, parse_form

logger = logging.getLogger(__name__)

__all__ = [
    "UPLOAD",
    "UPLOAD_ERRORS",
    "read_form",
    "search_rows",
    "timeline_page",
    "track_view",
    "unknown_groups",
    "unknowns_options",
]

MAX_PHOTOS = 10  # photo parts of one search
FORM_OVERHEAD = 64 * 1024  # room for the multipart headers and boundaries beyond the photos themselves
MAX_ID = 2**31 - 1  # ids are SQL integers


def _invalid(message: str) -> RequestValidationError:
    """A body that is not what the schema says: 422 like every other request that breaks the schema."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", "photo"), "msg": message, "input": None}]
    )


def _multipart(content_type: str, body: bytes) -> list[tuple[str, str | None, bytes]]:
    """``(field name, file name, content)`` of each part of a flat ``multipart/form-data`` body (one linear pass,
    :mod:`pipeline.web.multipart`): 422 for a body that is not one, 400 for nested parts or too many."""
    try:
        return [(part.name, part.filename, part.data) for part in parse_form(content_type, body)]
    except MalformedForm as exc:
        raise _invalid(
            f"expected multipart/form-data with a 'photo' part, got a body that is not ({exc})"
        ) from None
    except FormRefused as exc:
        raise HTTPException(400, str(exc)) from None


async def read_form(request: Request, limit: int) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The ``photo`` parts of a ``multipart/form-data`` request, ``(file name, bytes)``, at most ``limit`` bytes
    in all (413 as soon as the request says or shows more), and its other fields as text."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise HTTPException(415, f"body: expected multipart/form-data, got {content_type[:100]!r}")
    cap = limit + FORM_OVERHEAD
    too_large = f"upload: expected at most {limit:,} bytes of photos"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise HTTPException(413, f"{too_large}, got a request of {int(declared):,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise HTTPException(413, f"{too_large}, got more")
    parts = await run_in_threadpool(_multipart, content_type, bytes(body))  # a few MB: off the event loop
    photos = [(file or "photo", data) for name, file, data in parts if name == "photo" and (file or data)]
    fields = {name: data.decode("utf-8", "replace") for name, file, data in parts if name != "photo"}
    if not photos:
        raise _invalid("expected a 'photo' part (an image file), got none")
    if len(photos) > MAX_PHOTOS:
        raise HTTPException(
            400, f"photo: expected at most {MAX_PHOTOS} photos of one person, got {len(photos)}"
        )
    total = sum(len(data) for _, data in photos)
    if total > limit:
        raise HTTPException(413, f"{too_large}, got {total:,}")
    return photos, fields


def search_rows(db: Database, forensic: Forensic, photos: list[tuple[str, bytes]], options: SearchOptions):
    """The search by photo as rows (the command's, with each track's ``thumbnail_url``); run it off the event loop.
    Bad photos: 400; no models: 503."""
    since, until = query_time("since", options.since), query_time("until", options.until)
    # the query filters' checks: timezone, order, NUL
    Filters(source=options.source, since=since, until=until)
    try:
        hits = forensic.search(
            photos,
            face=options.face,
            top=options.top,
            min_score=options.min_score,
            source=options.source,
            since=since,
            until=until,
        )
    except SearchUnavailable as exc:
        raise HTTPException(503, f"search by photo unavailable: {exc}") from None
    except UserError as exc:
        raise HTTPException(400, str(exc)) from None
    rows = [h.as_row() for h in hits]
    for row in rows:
        row["thumbnail_url"] = thumbnail_url(row["thumbnail"])
    return rows


def timeline_page(db: Database, f: Filters) -> Page:
    page = find_timeline(db, f)
    for row in page.rows:
        row["thumbnail_url"] = thumbnail_url(row["thumbnail"])
    return page


def unknown_groups(forensic: Forensic, **options) -> dict:
    """The grouping of the unknown tracks as JSON-ready data, every track with its thumbnail URL."""
    grouping = forensic.unknowns(**options)
    doc = grouping.as_dict()
    for row in doc["groups"]:
        row["thumbnail_url"] = thumbnail_url(row["thumbnail"])
        for track_row in row["tracks"]:
            track_row["thumbnail_url"] = thumbnail_url(track_row["thumbnail"])
    return doc


def track_view(db: Database, forensic: Forensic, ref: str, evidence: Evidence | None = None) -> dict:
    """The track ``ref`` (``RUN:TRACK``) as the track page and ``GET /api/tracks/{ref}`` show it, with the URLs of
    its thumbnail, its context snapshot and (on a server that cuts clips) its clip and the sighting's offset in it;
    another form of reference: 422; none such: 404."""
    try:
        row = track_detail(db, ref, forensic.media_dirs)
    except TrackRefError as exc:
        raise HTTPException(422, str(exc)) from None
    if row is None:
        raise HTTPException(404, f"track {ref}: not in the match log")
    clip = evidence is not None and evidence.clip is not None
    start = row["start_time"] or 0.0
    return row | {
        "thumbnail_url": thumbnail_url(row["thumbnail"]),
        "snapshot": row.get("snapshot"),
        "snapshot_url": thumbnail_url(row.get("snapshot")),
        "clip_url": f"/api/tracks/{ref}/clip" if clip else None,
        "clip_start_s": round(min(evidence.margin_s, start), 3) if clip else None,
        "export_url": f"/api/tracks/{ref}/export" if evidence is not None and evidence.export else None,
    }


def unknowns_options(
    embedder: str | None = Query(
        None, max_length=200, description="embedder id (default: most unknown tracks)"
    ),
    threshold: float | None = Query(
        None, ge=-1.0, le=1.0, description="cosine at or above which groups join"
    ),
    min_size: int | None = Query(None, ge=1, le=10**6, description="smallest group listed"),
    source: str | None = Query(None, max_length=500, description="only tracks of this source"),
    since: str | None = Query(
        None, description=f"from this {TIME}", json_schema_extra={"format": "date-time"}
    ),
    until: str | None = Query(
        None, description=f"before this {TIME}", json_schema_extra={"format": "date-time"}
    ),
) -> dict:
    since_t, until_t = query_time("since", since), query_time("until", until)
    Filters(source=source or None, since=since_t, until=until_t)
    return dict(
        embedder_id=embedder or None,
        threshold=threshold,
        min_size=min_size,
        source=source or None,
        since=since_t,
        until=until_t,
    )


UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["photo"],
                    "properties": {
                        "photo": {
                            "type": "string",
                            "format": "binary",
                            "description": "the photo (repeat the part for several photos of one person)",
                        }
                    },
                }
            }
        },
    }
}
UPLOAD_ERRORS = ERRORS | {code: {"model": Detail} for code in (413, 415, 503)}
