"""The live event feed: ``GET /api/feed`` (``text/event-stream``) and the page ``/feed``.

The feed tails the match log in the database (``stream`` runs in another process: the database is the channel):
every :data:`POLL_S` it looks for tracks with a larger id than the last one sent and sends each as an event
``track`` whose ``id`` is the track's row id (so ``Last-Event-ID`` resumes after it) and whose data is a JSON
object: ``ref``, sighting times, source, decision, identity, score, zones and the URLs of the context snapshot,
the best crop, the enrolled face it matched and the track page. Without ``Last-Event-ID`` it starts after the
newest track, ``backlog`` tracks before it sent first. A comment line every :data:`KEEPALIVE_S` keeps proxies
from closing an idle feed. A client that goes away ends its generator; at most ``max_feeds`` are open at once
(503 beyond).

The page's script is a file the app serves (``/feed.js``); the page's Content-Security-Policy allows scripts of
this origin (:data:`pipeline.web.guard.SCRIPT_PAGES`), no inline script, as every other page allows none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from importlib import resources

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from gallery.db import Database
from gallery.forensic import track_detail
from gallery.models import Track
from gallery.refs import track_ref
from pipeline.services.links import track_links
from pipeline.web.common import ERRORS, PAGE_ERRORS, Context, Detail
from pipeline.web.pages import render

logger = logging.getLogger(__name__)

__all__ = ["KEEPALIVE_S", "POLL_S", "feed_events", "router"]

POLL_S = 0.5  # how often the match log is looked at
KEEPALIVE_S = 15.0
BATCH = 50  # tracks read per look
MAX_ID = 2**63 - 1
STREAM = {200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}}


def newest_id(db: Database) -> int:
    """The row id of the newest track, 0 for none."""
    with db.session() as session:
        return int(session.scalar(select(func.max(Track.id))) or 0)


def feed_events(db: Database, after: int, media_dirs=(), limit: int = BATCH) -> list[tuple[int, dict]]:
    """``(row id, event)`` of at most ``limit`` tracks with a row id above ``after``, oldest first."""
    with db.session() as session:
        rows = session.execute(
            select(Track.id, Track.run_id, Track.track_id)
            .where(Track.id > after)
            .order_by(Track.id)
            .limit(limit)
        ).all()
    events = []
    for r in rows:
        ref = track_ref(r.run_id, r.track_id)
        t = track_detail(db, ref, media_dirs)
        if t is None:  # removed since
            continue
        enrolled = t.get("enrolled") or {}
        events.append(
            (
                r.id,
                {
                    "ref": ref,
                    "seen_start": t["seen_start"],
                    "seen_end": t["seen_end"],
                    "time_origin": t["time_origin"],
                    "start_time": t["start_time"],
                    "end_time": t["end_time"],
                    "source": t["source"],
                    "kind": t["kind"],
                    "decision": t["decision"],
                    "identity": t["identity"],
                    "score": t["score"],
                    "zones": None if t["zones"] is None else list(t["zones"]),
                    **track_links(ref, t["thumbnail"], t.get("snapshot")),
                    "enrolled_url": enrolled.get("url"),
                },
            )
        )
    return events


def _message(row_id: int, event: dict) -> str:
    return f"id: {row_id}\nevent: track\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def router(ctx: Context, max_feeds: int = 16) -> APIRouter:
    """``/api/feed``, ``/feed`` and ``/feed.js``, behind ``ctx.auth``; at most ``max_feeds`` feeds at once."""
    routes = APIRouter(dependencies=ctx.auth)
    db, media_dirs = ctx.db, ctx.forensic.media_dirs
    script = resources.files(__package__).joinpath("static/feed.js").read_bytes()
    open_feeds = [0]
    lock = threading.Lock()

    async def events(request: Request, after: int) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        with lock:
            open_feeds[0] += 1
        try:
            yield "retry: 1000\n\n"
            while not await request.is_disconnected():
                batch = await run_in_threadpool(feed_events, db, after, media_dirs)
                for row_id, event in batch:
                    yield _message(row_id, event)
                    after = row_id
                if batch:
                    quiet_since = loop.time()
                elif loop.time() - quiet_since >= KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    quiet_since = loop.time()
                await asyncio.sleep(POLL_S)
        finally:
            with lock:
                open_feeds[0] -= 1
            logger.debug("feed closed after track row %d", after)

    refused = {503: {"model": Detail}}

    @routes.get("/api/feed", response_class=StreamingResponse, responses=STREAM | ERRORS | refused)
    async def api_feed(
        request: Request,
        backlog: int = Query(0, ge=0, le=BATCH, description="tracks before the newest sent first"),
        last_event_id: str | None = Header(None, max_length=20, description="resume after this event id"),
    ) -> StreamingResponse:
        if last_event_id is not None and last_event_id.strip():
            text = last_event_id.strip()
            if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
                raise HTTPException(400, f"Last-Event-ID: expected an event id of this feed, got {text!r}")
            after = int(text)
        else:
            after = max(0, await run_in_threadpool(newest_id, db) - backlog)
        with lock:
            if open_feeds[0] >= max_feeds:
                raise HTTPException(503, f"feed: {max_feeds} are open already; close one or try again later")
        headers = {"X-Accel-Buffering": "no"}
        return StreamingResponse(events(request, after), media_type="text/event-stream", headers=headers)

    @routes.get("/feed", response_class=HTMLResponse, responses=PAGE_ERRORS)
    def feed_page() -> HTMLResponse:
        return render(ctx, "feed")

    @routes.get("/feed.js", include_in_schema=False)
    def feed_script() -> Response:
        return Response(script, media_type="text/javascript")

    return routes
