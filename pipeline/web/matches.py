"""Recent matches: ``GET /api/matches`` (the filters of ``query`` as query parameters) and the page ``/`` (recent
matches with their thumbnails, scores and zones, filterable by identity, camera and decision, paginated, each row
linking to its track page); the page ``/tracks`` lists the tracks (``GET /api/tracks``) the same way.
:func:`filters` is the query parameters every list endpoint takes."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from gallery.models import Identity, Source
from gallery.queries import MAX_PAGE, MAX_PAGE_SIZE, Filters, find_matches, find_tracks
from pipeline.services.links import thumbnail_url
from pipeline.web.common import ERRORS, PAGE_ERRORS, TIME, Context, query_time
from pipeline.web.models import MatchPage
from pipeline.web.pages import names, render

__all__ = ["filters", "router"]


def filters(
    identity: str | None = None,
    source: str | None = None,
    since: str | None = Query(
        None, description=f"from this {TIME}", json_schema_extra={"format": "date-time"}
    ),
    until: str | None = Query(
        None, description=f"before this {TIME}", json_schema_extra={"format": "date-time"}
    ),
    decision: Literal["", "match", "unknown"] | None = None,
    min_score: float | None = None,
    watchlist: bool | None = None,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    page_size: int = Query(50, ge=1, le=MAX_PAGE_SIZE),
) -> Filters:
    return Filters(
        identity=identity or None,
        source=source or None,
        since=query_time("since", since),
        until=query_time("until", until),
        decision=decision or None,
        min_score=min_score,
        watchlist=watchlist,
        page=page,
        page_size=page_size,
    )


def router(ctx: Context) -> APIRouter:
    """``/api/matches`` and the pages ``/`` and ``/tracks``, behind ``ctx.auth``."""
    routes = APIRouter(dependencies=ctx.auth)

    @routes.get("/api/matches", response_model=MatchPage, responses=ERRORS)
    def api_matches(f: Filters = Depends(filters)) -> dict:
        return find_matches(ctx.db, f).as_dict()

    def listing(template: str, find, decorate, identity: str, source: str, decision: str, page: int):
        """A page of ``find``'s rows under the filters, each row ``decorate``d, with newer/older links."""
        f = Filters(
            identity=identity or None,
            source=source or None,
            decision=decision or None,
            page=page,
            page_size=ctx.page_size,
        )
        result = find(ctx.db, f)
        keep = {"identity": identity, "source": source, "decision": decision}
        return render(
            ctx,
            template,
            rows=[decorate(row) for row in result.rows],
            identities=names(ctx.db, Identity.name),
            sources=names(ctx.db, Source.name),
            page=page,
            has_more=result.has_more,
            prev=urlencode(keep | {"page": page - 1}),
            next=urlencode(keep | {"page": page + 1}),
            **keep,
        )

    @routes.get("/", response_class=HTMLResponse, responses=PAGE_ERRORS)
    def page(
        identity: str = "",
        source: str = "",
        decision: Literal["", "match", "unknown"] = "",
        page: int = Query(1, ge=1, le=MAX_PAGE),
    ):
        def decorate(row: dict) -> dict:
            return row | {"thumbnail_url": quote(row["thumbnail"]) if row["thumbnail"] else ""}

        return listing("matches", find_matches, decorate, identity, source, decision, page)

    @routes.get("/tracks", response_class=HTMLResponse, responses=PAGE_ERRORS)
    def tracks_page(
        identity: str = "",
        source: str = "",
        decision: Literal["", "match", "unknown"] = "",
        page: int = Query(1, ge=1, le=MAX_PAGE),
    ):
        def decorate(row: dict) -> dict:
            return row | {"thumbnail_url": thumbnail_url(row["thumbnail"])}

        return listing("tracks", find_tracks, decorate, identity, source, decision, page)

    return routes
