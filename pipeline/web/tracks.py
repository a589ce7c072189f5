"""Tracks and their evidence: ``GET /api/tracks`` (the filters of ``query tracks``), ``GET /api/tracks/{ref}``
(one track, its current decision and the enrolled face it matched; ``ref``: ``RUN:TRACK``), the track page
``/track/{ref}``, ``/thumbnails/<path>`` (files of the thumbnail store only) and ``/media/{id}`` (an enrolled face
as an image, :func:`gallery.forensic.enrolled_photo`; 404 with the reason when it cannot be shown)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response

from gallery.errors import ThumbnailPathError
from gallery.forensic import MediaUnavailable, enrolled_photo
from gallery.queries import Filters, find_tracks
from gallery.refs import REF_PATTERN, REF_TEXT

from .common import ERRORS, PAGE_ERRORS, Context
from .forensic import MAX_ID, track_view
from .matches import filters
from .models import TrackDetail, TrackPage
from .pages import render

__all__ = ["router"]

JPEG = {200: {"content": {"image/jpeg": {}}, "description": "the JPEG image"}}


def router(ctx: Context) -> APIRouter:
    """The track list, one track (JSON and page), thumbnails and enrolled faces, behind ``ctx.auth``."""
    routes = APIRouter(dependencies=ctx.auth)
    ref_param = PathParam(max_length=40, pattern=REF_PATTERN, description=REF_TEXT)

    @routes.get("/api/tracks", response_model=TrackPage, responses=ERRORS)
    def api_tracks(f: Filters = Depends(filters)) -> dict:
        return find_tracks(ctx.db, f).as_dict()

    @routes.get("/api/tracks/{ref}", response_model=TrackDetail, responses=ERRORS)
    def api_track(ref: str = ref_param) -> dict:
        return track_view(ctx.db, ctx.forensic, ref)

    @routes.get("/track/{ref}", response_class=HTMLResponse, responses=PAGE_ERRORS)
    def track_page(ref: str = ref_param) -> HTMLResponse:
        return render(ctx, "track", t=track_view(ctx.db, ctx.forensic, ref))

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
