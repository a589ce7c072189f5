"""Reviews in the web app (:mod:`gallery.reviews`), for investigators: ``POST /api/tracks/{ref}/review`` records the
actor's verdict on a track (JSON ``{"verdict", "identity", "note"}``, or the track page's form, answered by a
redirect back to the page), ``GET /api/reviews`` lists reviews newest first, ``GET /api/reviews/open`` the matches
nobody confirmed or rejected yet (best score first, with their counts) and ``GET /reviews`` is the review queue page.
Every review request appends one ``review`` entry to the audit trail, a refused one included.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gallery.errors import GalleryError
from gallery.queries import Filters
from gallery.refs import REF_PATTERN, REF_TEXT
from gallery.reviews import MAX_NOTE, VERDICTS, TrackNotLogged, add_review, find_reviews, open_items
from pipeline.services.links import thumbnail_url
from pipeline.web.access import INVESTIGATOR
from pipeline.web.audit import audited_request
from pipeline.web.common import ERRORS, Context
from pipeline.web.pages import PAGES, nav

logger = logging.getLogger(__name__)

__all__ = ["router"]

ALIASES = {"confirm": "confirmed", "reject": "rejected", "ack": "acknowledged", "name": "named"}
MAX_BODY = 16 * 1024
FORM = "application/x-www-form-urlencoded"

QUEUE = PAGES.from_string(
    """{% extends "layout" %}{% block title %}Review queue{% endblock %}
{% block body %}<h1>Review queue</h1>
<p id="counts">{{ counts.total }} matches to review: {{ counts.match }} logged, {{ counts.retro }} retroactive.</p>
<table id="queue"><thead><tr><th>Track</th><th>Face</th><th>Identity</th><th>Score</th><th>Source</th>
<th>Seen (UTC)</th><th></th></tr></thead><tbody>
{% for r in rows %}<tr class="row"><td class="ref">{{ r.ref }}</td>
 <td>{% if r.thumbnail_url %}<img class="thumb" alt="track {{ r.ref }}" src="{{ r.thumbnail_url }}">{% endif %}</td>
 <td>{{ r.identity }}{% if r.retroactive %} (retroactive){% endif %}</td><td>{{ "%.3f" | format(r.score) }}</td>
 <td>{{ r.source }}</td><td>{{ r.seen_start[:19] | replace("T", " ") if r.seen_start else "time unknown" }}</td>
 <td><a class="view" href="/track/{{ r.ref }}">review</a></td></tr>
{% else %}<tr><td colspan="7">Nothing to review.</td></tr>{% endfor %}</tbody></table>
<p>{% if page > 1 %}<a href="?{{ prev }}">previous</a>{% endif %}
{% if has_more %}<a id="next" href="?{{ next }}">next</a>{% endif %}</p>
<h2>Recent reviews</h2>
<table id="reviews"><thead><tr><th>Track</th><th>Verdict</th><th>Identity</th><th>Reviewer</th><th>At (UTC)</th>
<th>Note</th></tr></thead><tbody>
{% for r in recent %}<tr class="review"><td><a href="/track/{{ r.ref }}">{{ r.ref }}</a></td><td>{{ r.verdict }}</td>
 <td>{{ r.identity or "" }}</td><td>{{ r.reviewer }}</td><td>{{ r.at[:19] | replace("T", " ") }}</td>
 <td>{{ r.note }}</td></tr>{% else %}<tr><td colspan="6">No review yet.</td></tr>{% endfor %}</tbody></table>
{% endblock %}"""
)


def _fields(body: bytes, content_type: str) -> dict:
    """The review's fields from a JSON or form body; 400 with the reason for anything else."""
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"review: expected a body of at most {MAX_BODY} bytes, got {len(body)}")
    try:
        if content_type.startswith(FORM):
            data = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        else:
            data = json.loads(body or b"null")
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "review: expected a JSON object or a form, got an unreadable body") from None
    if not isinstance(data, dict):
        raise HTTPException(400, 'review: expected a JSON object like {"verdict": "confirmed"}, got none')
    verdict = data.get("verdict")
    verdict = ALIASES.get(verdict, verdict) if isinstance(verdict, str) else verdict
    if verdict not in VERDICTS:
        raise HTTPException(400, f"review verdict: expected one of {', '.join(VERDICTS)}, got {verdict!r}")
    identity, note = data.get("identity") or None, data.get("note") or ""
    if not (identity is None or isinstance(identity, str)) or not isinstance(note, str):
        raise HTTPException(400, "review: expected identity and note as text")
    if len(note) > MAX_NOTE:
        raise HTTPException(400, f"review note: expected at most {MAX_NOTE} characters, got {len(note)}")
    return {"verdict": verdict, "identity": identity, "note": note}


def router(ctx: Context) -> APIRouter:
    """The review routes, investigators and above."""
    routes = APIRouter(dependencies=[*ctx.auth, *INVESTIGATOR])
    ref_param = PathParam(max_length=40, pattern=REF_PATTERN, description=REF_TEXT)

    @routes.post(
        "/api/tracks/{ref}/review", responses=ERRORS | {303: {"description": "back to the track page"}}
    )
    async def review_track(request: Request, ref: str = ref_param) -> Response:
        """Record the actor's review of track ``ref``: ``verdict`` (``confirmed``, ``rejected``, ``acknowledged``,
        ``named``), ``identity`` (the match judged, default the current one; the name given to an unknown track),
        ``note``. Answers the review with ``offer`` (the from-track enrollment of a confirmed or named track); a
        form is answered by a redirect to the track page."""
        content_type = request.headers.get("content-type", "")
        async with audited_request(request, "review", [ref]) as entry:
            fields = _fields(await request.body(), content_type)
            entry.details.update(fields)
            actor = request.state.actor
            try:
                done = await run_in_threadpool(
                    add_review,
                    ctx.db,
                    ref,
                    fields["verdict"],
                    actor.name,
                    identity=fields["identity"],
                    note=fields["note"],
                )
            except TrackNotLogged as exc:
                raise HTTPException(404, str(exc)) from None
            except GalleryError as exc:
                raise HTTPException(400, str(exc)) from None
            entry.details.update(review_id=done["id"], kind=done["kind"], identity=done["identity"])
        if content_type.startswith(FORM):
            return RedirectResponse(f"/track/{ref}#review", status_code=303)
        return JSONResponse(done)

    def filters(identity, source, page) -> Filters:
        return Filters(identity=identity or None, source=source or None, page=page, page_size=ctx.page_size)

    @routes.get("/api/reviews", responses=ERRORS)
    def api_reviews(
        identity: str | None = Query(None, max_length=200),
        source: str | None = Query(None, max_length=500),
        page: int = Query(1, ge=1, le=10**6),
    ) -> dict:
        """Reviews, newest first (the rows of ``query reviews``)."""
        return find_reviews(ctx.db, filters(identity, source, page)).as_dict()

    @routes.get("/api/reviews/open", responses=ERRORS)
    def api_open(
        identity: str | None = Query(None, max_length=200),
        source: str | None = Query(None, max_length=500),
        page: int = Query(1, ge=1, le=10**6),
    ) -> dict:
        """Matches nobody confirmed or rejected yet, best score first, with ``counts``."""
        return open_items(ctx.db, filters(identity, source, page))

    @routes.get("/reviews", response_class=HTMLResponse, include_in_schema=False)
    def queue_page(request: Request, page: int = Query(1, ge=1, le=10**6)) -> HTMLResponse:
        found = open_items(ctx.db, filters(None, None, page))
        rows = [r | {"thumbnail_url": thumbnail_url(r["thumbnail"])} for r in found["rows"]]
        recent = find_reviews(ctx.db, Filters(page_size=20)).rows
        base = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
        html = QUEUE.render(
            nav=nav(ctx.forensic, ctx.logout),
            rows=rows,
            recent=recent,
            counts=found["counts"],
            page=page,
            has_more=found["has_more"],
            next=urlencode(base + [("page", page + 1)]),
            prev=urlencode(base + [("page", page - 1)]),
        )
        return HTMLResponse(html)

    return routes
