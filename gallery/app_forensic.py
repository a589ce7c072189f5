"""Forensic search in the HTTP API: search by photo, recurring unknowns, an identity's timeline, one track beside
the enrolled face it matched, and that enrolled face.

- ``POST /api/search``: a ``multipart/form-data`` body with a ``photo`` part (or several, of one person: fused), at
  most ``gallery.serve.max_upload_bytes`` in all (413 above, told by ``Content-Length`` before anything is read,
  else counted while reading); the filters of ``search`` as query parameters. Rows as the command's JSON, with
  the track's ``id`` and ``thumbnail_url``. A photo that does not decode, shows no face, or several faces without
  ``face=N``: 400. The form is read flat in one pass (:mod:`gallery.multipart`): a nested multipart part, more
  than 64 parts or overlong part headers: 400. Nothing is written; the upload stays in memory.
- ``GET /api/unknowns``: the groups of ``query unknowns`` (same options), with thumbnail URLs.
- ``GET /api/timeline?name=NAME``: ``query timeline`` (404 for an unknown name).
- ``GET /api/tracks/{id}``: one track, its current decision and the enrolled face it matched
  (``ref``: ``RUN:TRACK``, :func:`gallery.forensic.track_detail`); ``GET /media/{id}``: that face as an image
  (:func:`gallery.forensic.enrolled_photo`), 404 with the reason when it cannot be shown.

Search and grouping need the detector, the embedder and the matcher's threshold, which this package does not
build: the caller passes them in a :class:`Forensic` (``serve`` does, :mod:`pipeline.forensic_api`); without them
their endpoints are not there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from core.errors import UserError
from gallery.app_common import ERRORS, TIME, Detail, query_time, thumbnail_url
from gallery.app_models import SearchOptions, SearchPage, TimelinePage, TrackDetail, UnknownsResult
from gallery.db import Database
from gallery.forensic import MediaUnavailable, enrolled_photo, track_detail
from gallery.multipart import FormRefused, MalformedForm, parse_form
from gallery.queries import MAX_PAGE, MAX_PAGE_SIZE, Filters, Page
from gallery.refs import REF_PATTERN, REF_TEXT, TrackRefError
from gallery.thumbnails import ThumbnailStore
from gallery.timeline import find_timeline
from gallery.track_search import TrackHit
from gallery.unknowns import Grouping

logger = logging.getLogger(__name__)

__all__ = [
    "Forensic",
    "SearchUnavailable",
    "add_api",
    "read_form",
    "search_rows",
    "timeline_page",
    "track_view",
    "unknown_groups",
]

MAX_PHOTOS = 10  # photo parts of one search
FORM_OVERHEAD = 64 * 1024  # room for the multipart headers and boundaries beyond the photos themselves
MAX_ID = 2**31 - 1  # ids are SQL integers


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


def _invalid(message: str) -> RequestValidationError:
    """A body that is not what the schema says: 422 like every other request that breaks the schema."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", "photo"), "msg": message, "input": None}]
    )


def _multipart(content_type: str, body: bytes) -> list[tuple[str, str | None, bytes]]:
    """``(field name, file name, content)`` of each part of a flat ``multipart/form-data`` body (one linear pass,
    :mod:`gallery.multipart`): 422 for a body that is not one, 400 for nested parts or too many."""
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


def track_view(db: Database, forensic: Forensic, ref: str) -> dict:
    """The track ``ref`` (``RUN:TRACK``) as the track page and ``GET /api/tracks/{ref}`` show it; another form of
    reference: 422; none such: 404."""
    try:
        row = track_detail(db, ref, forensic.media_dirs)
    except TrackRefError as exc:
        raise HTTPException(422, str(exc)) from None
    if row is None:
        raise HTTPException(404, f"track {ref}: not in the match log")
    return row | {"thumbnail_url": thumbnail_url(row["thumbnail"])}


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


def add_api(
    app: FastAPI, db: Database, thumbnails: ThumbnailStore | None, forensic: Forensic, authorised
) -> None:
    """Add the forensic JSON endpoints and ``/media/{id}`` to ``app``, each behind the ``authorised`` dependency."""
    auth = [Depends(authorised)]

    @app.get("/api/timeline", dependencies=auth, response_model=TimelinePage, responses=ERRORS)
    def api_timeline(
        name: str = Query(min_length=1, max_length=200, description="the identity"),
        source: str | None = Query(None, max_length=500, description="only tracks of this source"),
        since: str | None = Query(
            None, description=f"from this {TIME}", json_schema_extra={"format": "date-time"}
        ),
        until: str | None = Query(
            None, description=f"before this {TIME}", json_schema_extra={"format": "date-time"}
        ),
        min_score: float | None = None,
        page: int = Query(1, ge=1, le=MAX_PAGE),
        page_size: int = Query(50, ge=1, le=MAX_PAGE_SIZE),
    ) -> dict:
        f = Filters(
            identity=name,
            source=source or None,
            since=query_time("since", since),
            until=query_time("until", until),
            min_score=min_score,
            page=page,
            page_size=page_size,
        )
        return timeline_page(db, f).as_dict()

    @app.get("/api/tracks/{ref}", dependencies=auth, response_model=TrackDetail, responses=ERRORS)
    def api_track(ref: str = PathParam(max_length=40, pattern=REF_PATTERN, description=REF_TEXT)) -> dict:
        return track_view(db, forensic, ref)

    @app.get(
        "/media/{media}",
        dependencies=auth,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "the enrolled face, JPEG"}} | ERRORS,
    )
    def media_image(media: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        try:
            image = enrolled_photo(db, thumbnails, forensic.media_dirs, media)
        except MediaUnavailable as exc:
            raise HTTPException(404, str(exc)) from None
        if isinstance(image, bytes):
            return Response(image, media_type="image/jpeg")
        return FileResponse(image, media_type="image/jpeg")

    if forensic.unknowns is not None:

        @app.get("/api/unknowns", dependencies=auth, response_model=UnknownsResult, responses=ERRORS)
        def api_unknowns(options: dict = Depends(unknowns_options)) -> dict:
            return unknown_groups(forensic, **options)

    if forensic.search is not None:

        @app.post(
            "/api/search",
            dependencies=auth,
            response_model=SearchPage,
            responses=UPLOAD_ERRORS,
            openapi_extra=UPLOAD,
        )
        async def api_search(request: Request, options: Annotated[SearchOptions, Query()]) -> dict:
            photos, _ = await read_form(request, forensic.max_upload_bytes)
            rows = await run_in_threadpool(search_rows, db, forensic, photos, options)
            return {"rows": rows, "page": 1, "page_size": options.top, "has_more": False}
