"""Finding a person: search by photo (``POST /api/search`` and the page ``/search``), an identity's timeline
(``GET /api/timeline?name=NAME``, 404 for an unknown name, and ``/timeline``), recurring unknowns
(``GET /api/unknowns`` and ``/unknowns``: the groups of ``query unknowns``). Search and grouping need the
injected callables of :class:`pipeline.web.common.Forensic`; without them their routes are absent.

``POST /api/search`` takes a ``multipart/form-data`` body with a ``photo`` part (or several, of one person) and
the filters of ``search`` as query parameters (:func:`pipeline.web.forensic.read_form`); rows as the command's
JSON, with each track's ``thumbnail_url``. The page's form shows its own error above the form. Each search by photo,
through the API or the page, is in the audit trail as the command's (``search``: ``{"photo", "sha256"}`` of each
photo, ``details.filters``, ``details.hits`` the references found and ``details.hit_count``; a refused one
``failed`` with its reason).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from gallery.errors import GalleryError
from gallery.models import Identity, Source
from gallery.queries import MAX_PAGE, MAX_PAGE_SIZE, Filters
from pipeline.services.audit import Action, sha256
from pipeline.web.access import INVESTIGATOR
from pipeline.web.audit import audited_request
from pipeline.web.common import ERRORS, PAGE_ERRORS, TIME, Context, query_time
from pipeline.web.forensic import (
    UPLOAD,
    UPLOAD_ERRORS,
    read_form,
    search_rows,
    timeline_page,
    unknown_groups,
    unknowns_options,
)
from pipeline.web.models import SearchOptions, SearchPage, TimelinePage, UnknownsResult
from pipeline.web.pages import names, one_line, render

__all__ = ["router"]

TRACKS_SHOWN = 24  # track thumbnails shown per unknown group


def _searched(action: Action, photos: list[tuple[str, bytes]], options: SearchOptions | dict) -> None:
    """What the audit entry of a search names: each photo's name and SHA-256, the filters."""
    action.objects[:] = [{"photo": name, "sha256": sha256(data)} for name, data in photos]
    action.details["filters"] = options.model_dump() if isinstance(options, SearchOptions) else dict(options)


def _found(action: Action, rows: list[dict]) -> None:
    action.details["hits"] = [row["ref"] for row in rows]
    action.details["hit_count"] = len(rows)


def router(ctx: Context) -> APIRouter:
    """Timelines, and with the injected callables search by photo and unknown groups, behind ``ctx.auth``."""
    routes = APIRouter(dependencies=ctx.auth)
    db, forensic = ctx.db, ctx.forensic

    @routes.get("/api/timeline", response_model=TimelinePage, responses=ERRORS)
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

    @routes.get("/timeline", response_class=HTMLResponse, responses=PAGE_ERRORS)
    def timeline(
        name: str = Query("", max_length=200),
        page: int = Query(1, ge=1, le=MAX_PAGE),
    ) -> HTMLResponse:
        identities = names(db, Identity.name)
        if not name:
            return render(ctx, "timeline", identities=identities, name="", rows=None)
        result = timeline_page(db, Filters(identity=name, page=page, page_size=ctx.page_size))
        return render(
            ctx,
            "timeline",
            identities=identities,
            name=name,
            rows=result.rows,
            page=page,
            has_more=result.has_more,
            prev=urlencode({"name": name, "page": page - 1}),
            next=urlencode({"name": name, "page": page + 1}),
        )

    if forensic.unknowns is not None:

        @routes.get(
            "/api/unknowns", response_model=UnknownsResult, responses=ERRORS, dependencies=INVESTIGATOR
        )
        def api_unknowns(options: dict = Depends(unknowns_options)) -> dict:
            return unknown_groups(forensic, **options)

        @routes.get(
            "/unknowns", response_class=HTMLResponse, responses=PAGE_ERRORS, dependencies=INVESTIGATOR
        )
        def unknowns(options: dict = Depends(unknowns_options)) -> HTMLResponse:
            doc = unknown_groups(forensic, **options)
            return render(
                ctx,
                "unknowns",
                doc=doc,
                sources=names(db, Source.name),
                source=options["source"] or "",
                min_size=doc["min_size"],
                shown=TRACKS_SHOWN,
            )

    if forensic.search is not None:

        @routes.post(
            "/api/search",
            response_model=SearchPage,
            responses=UPLOAD_ERRORS,
            openapi_extra=UPLOAD,
            dependencies=INVESTIGATOR,
        )
        async def api_search(request: Request, options: Annotated[SearchOptions, Query()]) -> dict:
            async with audited_request(
                request, "search", details={"filters": options.model_dump()}
            ) as action:
                photos, _ = await read_form(request, forensic.max_upload_bytes)
                _searched(action, photos, options)
                rows = await run_in_threadpool(search_rows, db, forensic, photos, options)
                _found(action, rows)
            return {"rows": rows, "page": 1, "page_size": options.top, "has_more": False}

        @routes.get("/search", response_class=HTMLResponse, responses=PAGE_ERRORS, dependencies=INVESTIGATOR)
        def search_form() -> HTMLResponse:
            return render(ctx, "search", sources=names(db, Source.name), form={}, rows=None)

        @routes.post(
            "/search", response_class=HTMLResponse, include_in_schema=False, dependencies=INVESTIGATOR
        )
        async def search_page(request: Request) -> HTMLResponse:
            form: dict[str, str] = {}
            sources = await run_in_threadpool(names, db, Source.name)
            try:
                async with audited_request(request, "search") as action:
                    photos, form = await read_form(request, forensic.max_upload_bytes)
                    given = {k: v for k, v in form.items() if k in SearchOptions.model_fields and v.strip()}
                    _searched(action, photos, given)
                    try:
                        options = SearchOptions.model_validate(given)
                    except ValidationError as exc:
                        raise RequestValidationError(exc.errors()) from None
                    _searched(action, photos, options)
                    rows = await run_in_threadpool(search_rows, db, forensic, photos, options)
                    _found(action, rows)
            except HTTPException as exc:
                status, error = exc.status_code, exc.detail
            except RequestValidationError as exc:
                status, error = 422, one_line(exc.errors()[0])
            except GalleryError as exc:
                status, error = 400, str(exc)
            else:
                return render(ctx, "search", sources=sources, form=form, rows=rows, photo=photos[0][0])
            return render(ctx, "search", status, sources=sources, form=form, rows=None, error=error)

    return routes
