"""HTTP API and page over the gallery and the match log (FastAPI).

JSON endpoints ``/api/matches``, ``/api/tracks``, ``/api/identities`` take the filters of ``query`` as query
parameters; ``/thumbnails/<path>`` serves files of the thumbnail store only; ``/`` is a page of recent matches
with their thumbnails and scores, filterable by identity and camera.

With a token, every request needs ``Authorization: Bearer <token>`` or the ``facemoe_token`` cookie; opening
``/?token=<token>`` once in a browser sets that cookie. Without a token the server must listen on loopback
only (see ``pipeline.commands.gallery_admin.check_bind``).
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment
from sqlalchemy import select

from gallery.db import Database
from gallery.errors import GalleryError, IdentityNotFoundError, ThumbnailPathError
from gallery.models import Identity, Source
from gallery.queries import MAX_PAGE_SIZE, Filters, find_identities, find_matches, find_tracks
from gallery.thumbnails import ThumbnailStore

logger = logging.getLogger(__name__)

__all__ = ["create_app", "COOKIE"]

COOKIE = "facemoe_token"

PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Recent matches</title>
<style>
body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ccc;padding:4px 10px;text-align:left}img{height:64px}
.match{color:#060;font-weight:bold}.unknown{color:#777}
</style></head><body>
<h1>Recent matches</h1>
<form method="get" action="/">
 <label>Identity <select name="identity"><option value="">any</option>
 {% for n in identities %}<option{% if n == identity %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label>
 <label>Camera <select name="source"><option value="">any</option>
 {% for n in sources %}<option{% if n == source %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label>
 <label>Decision <select name="decision"><option value="">any</option>
 {% for d in ["match", "unknown"] %}<option{% if d == decision %} selected{% endif %}>{{ d }}</option>{%
 endfor %}
 </select></label>
 <button type="submit">Filter</button>
</form>
<table id="matches"><thead><tr><th>Face</th><th>Time (UTC)</th><th>Camera</th><th>Track</th><th>Identity</th>
<th>Score</th><th>Decision</th></tr></thead><tbody>
{% for r in rows %}<tr class="row">
 <td>{% if r.thumbnail %}<img class="thumb" alt="track {{ r.track_id }}" src="/thumbnails/{{ r.thumbnail_url
 }}">
 {% endif %}</td>
 <td>{{ r.at[:19] | replace("T", " ") }}</td><td>{{ r.source }}</td><td>{{ r.track_id }}</td>
 <td>{{ r.identity or ("nearest: " ~ r.candidates[0].name if r.candidates else "") }}</td>
 <td>{{ "%.3f" | format(r.score) if r.score is not none else "" }}</td>
 <td class="{{ r.decision }}">{{ r.decision }}</td></tr>
{% else %}<tr><td colspan="7">No matches.</td></tr>{% endfor %}
</tbody></table>
<p>{% if page > 1 %}<a href="?{{ prev }}">newer</a>{% endif %}
{% if has_more %}<a id="older" href="?{{ next }}">older</a>{% endif %}</p>
</body></html>""")


def _filters(
    identity: str | None = None,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    decision: str | None = None,
    min_score: float | None = None,
    watchlist: bool | None = None,
    page: int = Query(1, ge=1),
    page_size: int = Query(50, ge=1, le=MAX_PAGE_SIZE),
) -> Filters:
    return Filters(
        identity=identity or None,
        source=source or None,
        since=since,
        until=until,
        decision=decision or None,
        min_score=min_score,
        watchlist=watchlist,
        page=page,
        page_size=page_size,
    )


def create_app(
    db: Database, thumbnails: ThumbnailStore | None, *, token: str | None = None, page_size: int = 50
) -> FastAPI:
    """The app over ``db``; ``thumbnails`` None serves no thumbnails; ``token`` None disables auth."""
    app = FastAPI(title="FaceMoE gallery and match log", docs_url=None, redoc_url=None, openapi_url=None)

    def authorised(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "invalid or missing API token (Authorization: Bearer <token>)")

    @app.exception_handler(GalleryError)
    def _gallery_error(_request: Request, exc: GalleryError) -> JSONResponse:
        status = 404 if isinstance(exc, IdentityNotFoundError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.get("/api/matches", dependencies=[Depends(authorised)])
    def api_matches(f: Filters = Depends(_filters)) -> dict:
        return find_matches(db, f).as_dict()

    @app.get("/api/tracks", dependencies=[Depends(authorised)])
    def api_tracks(f: Filters = Depends(_filters)) -> dict:
        return find_tracks(db, f).as_dict()

    @app.get("/api/identities", dependencies=[Depends(authorised)])
    def api_identities(f: Filters = Depends(_filters)) -> dict:
        return find_identities(db, f).as_dict()

    @app.get("/thumbnails/{rel:path}", dependencies=[Depends(authorised)])
    def thumbnail(rel: str) -> FileResponse:
        if thumbnails is None:
            raise HTTPException(404, "this server has no thumbnail store")
        try:
            path = thumbnails.resolve(rel)
        except ThumbnailPathError as exc:
            raise HTTPException(400, str(exc)) from None
        if not path.is_file():
            raise HTTPException(404, f"thumbnail {rel!r}: not in the store")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/", response_class=HTMLResponse)
    def page(
        request: Request,
        identity: str = "",
        source: str = "",
        decision: str = "",
        page: int = Query(1, ge=1),
        token_param: str | None = Query(None, alias="token"),
    ):
        if token is not None and token_param is not None:
            if not hmac.compare_digest(token_param.encode(), token.encode()):
                raise HTTPException(401, "invalid API token")
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        authorised(request)
        f = Filters(
            identity=identity or None,
            source=source or None,
            decision=decision or None,
            page=page,
            page_size=page_size,
        )
        result = find_matches(db, f)
        for row in result.rows:
            row["thumbnail_url"] = quote(row["thumbnail"]) if row["thumbnail"] else ""
        with db.session() as session:
            names = session.scalars(select(Identity.name).order_by(Identity.name).limit(1000)).all()
            sources = session.scalars(select(Source.name).order_by(Source.name).limit(1000)).all()
        keep = {"identity": identity, "source": source, "decision": decision}
        return PAGE.render(
            rows=result.rows,
            identities=names,
            sources=sources,
            page=page,
            has_more=result.has_more,
            prev=urlencode(keep | {"page": page - 1}),
            next=urlencode(keep | {"page": page + 1}),
            **keep,
        )

    return app
