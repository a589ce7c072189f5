"""Tracks and their evidence: ``GET /api/tracks`` (the filters of ``query tracks``), ``GET /api/tracks/{ref}``
(one track, its current decision and the enrolled face it matched; ``ref``: ``RUN:TRACK``), the track page
``/track/{ref}``, ``/thumbnails/<path>`` (files of the thumbnail store only) and ``/media/{id}`` (an enrolled face
as an image, :func:`gallery.forensic.enrolled_photo`; 404 with the reason when it cannot be shown).

Evidence, through the injected :class:`pipeline.web.common.Evidence`: ``GET /api/tracks/{ref}/clip`` the track's
clip (``video/mp4``, byte ranges answered 206 so a browser can seek), cut on demand; ``POST
/api/tracks/{ref}/export`` its evidence export (``application/zip``, every file listed in its ``manifest.json``
with its SHA-256). A track not in the match log: 404; a clip or export that cannot be made (source file gone or
changed, no recording): 409 with the reason; a server without them: 404. The track page plays the clip from the
sighting (a ``#t=`` media fragment) and has the export button (a form: no script). Both are in the audit trail as
``export`` of the track (``details.kind``: ``clip`` or ``evidence``; a refused one ``failed`` with its reason); of
a clip's byte ranges only those from its start (``Range: bytes=0-`` or none) are recorded, not a player's seeks."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.background import BackgroundTask

from core.errors import UserError
from gallery.errors import ThumbnailPathError
from gallery.forensic import MediaUnavailable, enrolled_photo
from gallery.queries import Filters, find_tracks
from gallery.refs import REF_PATTERN, REF_TEXT
from pipeline.web.access import INVESTIGATOR, allows
from pipeline.web.audit import audited_request
from pipeline.web.common import ERRORS, PAGE_ERRORS, Context, Detail
from pipeline.web.forensic import MAX_ID, track_view
from pipeline.web.matches import filters
from pipeline.web.models import TrackDetail, TrackPage
from pipeline.web.pages import render

logger = logging.getLogger(__name__)

__all__ = ["router"]

JPEG = {200: {"content": {"image/jpeg": {}}, "description": "the JPEG image"}}
MP4 = {
    200: {"content": {"video/mp4": {}}, "description": "the clip"},
    206: {"description": "a byte range of it"},
}
ZIP = {200: {"content": {"application/zip": {}}, "description": "the evidence export"}}
EVIDENCE_ERRORS = ERRORS | {409: {"model": Detail}}
MAX_MAKING = 2  # clips or exports made at once; more wait
WAIT_S = 120.0  # for one of them to end; then 503


def _made(make: Callable[[str], Path], ref: str, slots: threading.BoundedSemaphore, what: str) -> Path:
    """``make(ref)``, at most :data:`MAX_MAKING` at once (503 after waiting :data:`WAIT_S` for one), its refusal a
    409 with the reason."""
    if not slots.acquire(timeout=WAIT_S):
        raise HTTPException(503, f"{what}: {MAX_MAKING} are being made; try again shortly")
    try:
        return make(ref)
    except UserError as exc:
        raise HTTPException(409, f"{what} of track {ref}: {exc}") from None
    finally:
        slots.release()


def _served(path: Path, keep: Path | None, media_type: str, filename: str | None = None) -> FileResponse:
    """``path`` as the answer; unless it lies under ``keep`` (the thumbnail store's cache), its folder is removed
    once sent."""
    cached = keep is not None and path.resolve().is_relative_to(keep.resolve())
    task = None if cached else BackgroundTask(shutil.rmtree, path.parent, ignore_errors=True)
    return FileResponse(path, media_type=media_type, filename=filename, background=task)


def _from_start(range_header: str | None) -> bool:
    """Whether a request for a clip asks for it from its first byte (no range, or ``bytes=0-...``)."""
    return range_header is None or range_header.replace(" ", "").lower().startswith("bytes=0-")


def router(ctx: Context) -> APIRouter:
    """The track list, one track (JSON and page), thumbnails and enrolled faces, behind ``ctx.auth``."""
    routes = APIRouter(dependencies=ctx.auth)
    ref_param = PathParam(max_length=40, pattern=REF_PATTERN, description=REF_TEXT)

    @routes.get("/api/tracks", response_model=TrackPage, responses=ERRORS)
    def api_tracks(f: Filters = Depends(filters)) -> dict:
        return find_tracks(ctx.db, f).as_dict()

    evidence, slots = ctx.evidence, threading.BoundedSemaphore(MAX_MAKING)
    root = ctx.thumbnails.root if ctx.thumbnails is not None else None

    @routes.get("/api/tracks/{ref}", response_model=TrackDetail, responses=ERRORS)
    def api_track(ref: str = ref_param) -> dict:
        return track_view(ctx.db, ctx.forensic, ref, evidence)

    @routes.get("/track/{ref}", response_class=HTMLResponse, responses=PAGE_ERRORS)
    def track_page(ref: str = ref_param) -> HTMLResponse:
        t = track_view(ctx.db, ctx.forensic, ref, evidence)
        if not allows("investigator"):  # a viewer's page offers no clip nor export
            t = t | {"clip_url": None, "export_url": None}
        return render(ctx, "track", t=t)

    @routes.get(
        "/api/tracks/{ref}/clip",
        response_class=FileResponse,
        responses=MP4 | EVIDENCE_ERRORS,
        dependencies=INVESTIGATOR,
    )
    def track_clip(request: Request, ref: str = ref_param) -> FileResponse:
        if not _from_start(request.headers.get("range")):
            return _clip(ref)
        with audited_request(request, "export", [ref], {"kind": "clip"}):
            return _clip(ref)

    def _clip(ref: str) -> FileResponse:
        track_view(ctx.db, ctx.forensic, ref)  # 404 for a track not in the log
        if evidence.clip is None:
            raise HTTPException(404, "this server cuts no clips (pipeline.services.clips not available)")
        return _served(_made(evidence.clip, ref, slots, "clip"), root, "video/mp4")

    @routes.post(
        "/api/tracks/{ref}/export",
        response_class=FileResponse,
        responses=ZIP | EVIDENCE_ERRORS,
        dependencies=INVESTIGATOR,
    )
    def track_export(request: Request, ref: str = ref_param) -> FileResponse:
        with audited_request(request, "export", [ref], {"kind": "evidence"}):
            track_view(ctx.db, ctx.forensic, ref)
            if evidence.export is None:
                raise HTTPException(
                    404, "this server exports no evidence (pipeline.services.evidence not available)"
                )
            path = _made(evidence.export, ref, slots, "evidence export")
        logger.info("evidence of track %s exported over HTTP", ref)
        return _served(path, None, "application/zip", path.name)

    @routes.get("/thumbnails/{rel:path}", response_class=FileResponse, responses=JPEG | ERRORS)
    def thumbnail(rel: str) -> FileResponse:
        if ctx.thumbnails is None:
            raise HTTPException(404, "this server has no thumbnail store")
        try:
            path = ctx.thumbnails.resolve(rel)
        except ThumbnailPathError as exc:
            raise HTTPException(400, str(exc)) from None
        if not path.is_file():
            raise HTTPException(404, f"thumbnail {rel!r}: not in the store")
        return FileResponse(path, media_type="image/jpeg")

    @routes.get("/media/{media}", response_class=Response, responses=JPEG | ERRORS)
    def media_image(media: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        try:
            image = enrolled_photo(ctx.db, ctx.thumbnails, ctx.forensic.media_dirs, media)
        except MediaUnavailable as exc:
            raise HTTPException(404, str(exc)) from None
        if isinstance(image, bytes):
            return Response(image, media_type="image/jpeg")
        return FileResponse(image, media_type="image/jpeg")

    return routes
