"""HTTP API and page over the gallery and the match log (FastAPI).

JSON endpoints ``/api/matches``, ``/api/tracks``, ``/api/identities`` take the filters of ``query`` as query
parameters; ``/thumbnails/<path>`` serves files of the thumbnail store only; ``/`` is a page of recent matches
with their thumbnails and scores, filterable by identity and camera.

With a token, every request needs ``Authorization: Bearer <token>`` or a session cookie, which a browser gets by
logging in with the token at ``/login`` (:mod:`gallery.app_session`; ``POST /logout`` ends it). Authentication
comes before any other check of a request, and every answer carries the security headers
(:mod:`gallery.app_guard`). Without a token the server must listen on loopback only (see
``pipeline.commands.gallery_admin.check_bind``). The OpenAPI schema is ``/openapi.json``, behind the token too.

With ``allowed_hosts`` every request must name one of those hosts in its ``Host`` header, else it gets 400:
a page of another site whose name was re-pointed at this address (DNS rebinding) cannot read the API.
:func:`trusted_hosts` derives the set from the listen address.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Literal
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jinja2 import Environment
from pydantic import BaseModel, Field
from sqlalchemy import select

from gallery.app_common import ERRORS, PAGE_ERRORS, TIME, query_time
from gallery.app_forensic import Forensic, add_api
from gallery.app_guard import Guard, require_authenticated
from gallery.app_models import TrackFields
from gallery.app_pages import add_login, add_pages, nav
from gallery.app_session import COOKIE, DEFAULT_MAX_AGE_S, Sessions
from gallery.db import Database
from gallery.errors import GalleryError, IdentityNotFoundError, ThumbnailPathError
from gallery.models import Identity, Source
from gallery.queries import MAX_PAGE, MAX_PAGE_SIZE, Filters, find_identities, find_matches, find_tracks
from gallery.thumbnails import ThumbnailStore

logger = logging.getLogger(__name__)

__all__ = ["create_app", "trusted_hosts", "host_name", "COOKIE", "LOOPBACK_NAMES"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class Candidate(BaseModel):
    identity_id: int = Field(description="identity id at the time of the match")
    name: str = Field(description="identity name at the time of the match")
    score: float = Field(description="cosine similarity")


class MatchRow(TrackFields):
    id: int = Field(description="match event id")
    at: str | None = Field(description="time of the decision, ISO 8601 UTC")
    source: str = Field(description="file or camera name")
    identity: str | None = Field(description="matched identity, none for unknown")
    identity_id: int | None = Field(description="matched identity id")
    score: float | None = Field(description="best candidate's score")
    decision: Literal["match", "unknown"] = Field(description="open-set decision")
    threshold: float | None = Field(description="operating threshold of the decision")
    candidates: list[Candidate] | None = Field(description="top-k candidates, best first")
    thumbnail: str | None = Field(description="thumbnail path under /thumbnails/")
    retroactive: bool = Field(
        False, description="named later by a rematch (the track's match event is unchanged)"
    )
    rematch_id: int | None = Field(None, description="the rematch that named it (retroactive matches)")


class TrackRow(TrackFields):
    source: str = Field(description="file or camera name")
    frames: int = Field(description="frames in the track")
    crops_embedded: int = Field(description="crops embedded into the template")
    embedder_id: str = Field(description="embedder of the template")
    decision: Literal["match", "unknown"] | None = Field(description="open-set decision")
    score: float | None = Field(description="best candidate's score")
    identity: str | None = Field(description="matched identity")
    thumbnail: str | None = Field(description="thumbnail path under /thumbnails/")
    retroactive: bool = Field(False, description="the decision is a retroactive match (a later rematch)")
    logged_decision: Literal["match", "unknown"] | None = Field(None, description="what was decided then")
    logged_identity: str | None = Field(None, description="who was matched then")


class IdentityRow(BaseModel):
    id: int = Field(description="identity id")
    name: str = Field(description="identity name")
    external_id: str | None = Field(description="id in another system")
    watchlist: bool = Field(description="on the watch list")
    notes: str | None = Field(description="free text")
    media: int = Field(ge=0, description="enrolled images")
    created_at: str | None = Field(description="time of enrollment, ISO 8601 UTC")
    embedders: list[str] = Field(description="embedders with a template of this identity")


class _Page(BaseModel):
    page: int = Field(ge=1, description="page number, from 1")
    page_size: int = Field(ge=1, le=MAX_PAGE_SIZE, description="rows per page")
    has_more: bool = Field(description="another page follows")


class MatchPage(_Page):
    rows: list[MatchRow] = Field(description="match events, newest first")


class TrackPage(_Page):
    rows: list[TrackRow] = Field(description="tracks, newest first")


class IdentityPage(_Page):
    rows: list[IdentityRow] = Field(description="identities, newest first")


def host_name(header: str) -> str:
    """The host of a ``Host`` header, lower case, without port or trailing dot: ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        header = header[1 : header.find("]")] if "]" in header else header[1:]
    elif header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


def trusted_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host names a server listening on ``bind`` answers to: the address itself, the loopback names when it is
    loopback, this machine's names and addresses when it is every interface, plus ``extra``."""
    names = {host_name(bind)} | {host_name(e) for e in extra}
    if host_name(bind) in LOOPBACK_NAMES:
        names |= LOOPBACK_NAMES
    elif host_name(bind) in WILDCARDS:
        names |= LOOPBACK_NAMES | {socket.gethostname().lower(), socket.getfqdn().lower()}
        try:
            names |= {info[4][0].lower() for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError as exc:
            logger.warning("addresses of this machine unknown (%s): list them in allowed_hosts", exc)
    return frozenset(names - WILDCARDS)


class TrustedHosts:
    """ASGI middleware: 400 for a request whose ``Host`` names none of ``allowed`` (``*`` allows any)."""

    def __init__(self, app, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(raw) not in self.allowed:
                shown = ", ".join(sorted(self.allowed))
                detail = f"Host header: expected one of {shown}, got {raw[:100]!r}"
                await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Recent matches</title>
<link rel="stylesheet" href="/style.css"></head><body>
{{ nav | safe }}
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
<table id="matches"><thead><tr><th>Track</th><th>Face</th><th>Seen (UTC)</th><th>Camera</th><th>Identity</th>
<th>Score</th><th>Decision</th></tr></thead><tbody>
{% for r in rows %}<tr class="row">
 <td class="ref"><a class="view" href="/track/{{ r.ref }}">{{ r.ref }}</a></td>
 <td>{% if r.thumbnail %}<img class="thumb" alt="track {{ r.ref }}" src="/thumbnails/{{ r.thumbnail_url
 }}">
 {% endif %}</td>
 <td>{{ r.seen_start[:19] | replace("T", " ") if r.seen_start else "time unknown" }}</td><td>{{ r.source }}</td>
 <td>{{ r.identity or ("nearest: " ~ r.candidates[0].name if r.candidates else "") }}</td>
 <td>{{ "%.3f" | format(r.score) if r.score is not none else "" }}</td>
 <td class="{{ r.decision }}">{{ r.decision }}{% if r.retroactive %} (retroactive){% endif %}</td></tr>
{% else %}<tr><td colspan="7">No matches.</td></tr>{% endfor %}
</tbody></table>
<p>{% if page > 1 %}<a href="?{{ prev }}">newer</a>{% endif %}
{% if has_more %}<a id="older" href="?{{ next }}">older</a>{% endif %}</p>
</body></html>""")


def _filters(
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


def create_app(
    db: Database,
    thumbnails: ThumbnailStore | None,
    *,
    token: str | None = None,
    page_size: int = 50,
    allowed_hosts: Iterable[str] | None = None,
    forensic: Forensic | None = None,
    session_max_age_s: int = DEFAULT_MAX_AGE_S,
) -> FastAPI:
    """The app over ``db``; ``thumbnails`` None serves no thumbnails; ``token`` None disables auth;
    ``allowed_hosts`` None accepts any ``Host`` header (see :func:`trusted_hosts`); ``forensic``: what search by
    photo and the unknown groups need (:mod:`gallery.app_forensic`; None: those views are absent);
    ``session_max_age_s``: how long a browser's login lasts."""
    forensic = forensic or Forensic()
    sessions = Sessions(token, session_max_age_s) if token is not None else None
    app = FastAPI(title="FaceMoE gallery and match log", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHosts, allowed=frozenset(host_name(h) for h in allowed_hosts))
    app.add_middleware(Guard, sessions=sessions)  # added last: outermost, so authentication comes first
    bearer = HTTPBearer(
        auto_error=False, description=f"the API token (browsers: the {COOKIE} cookie of /login)"
    )

    def authorised(request: Request, _credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
        """The Guard authenticated the request; ``bearer`` only names the scheme in the OpenAPI schema."""
        require_authenticated(request)

    @app.exception_handler(GalleryError)
    def _gallery_error(_request: Request, exc: GalleryError) -> JSONResponse:
        status = 404 if isinstance(exc, IdentityNotFoundError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorised)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/api/matches", dependencies=[Depends(authorised)], response_model=MatchPage, responses=ERRORS)
    def api_matches(f: Filters = Depends(_filters)) -> dict:
        return find_matches(db, f).as_dict()

    @app.get("/api/tracks", dependencies=[Depends(authorised)], response_model=TrackPage, responses=ERRORS)
    def api_tracks(f: Filters = Depends(_filters)) -> dict:
        return find_tracks(db, f).as_dict()

    @app.get(
        "/api/identities", dependencies=[Depends(authorised)], response_model=IdentityPage, responses=ERRORS
    )
    def api_identities(f: Filters = Depends(_filters)) -> dict:
        return find_identities(db, f).as_dict()

    @app.get(
        "/thumbnails/{rel:path}",
        dependencies=[Depends(authorised)],
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}, "description": "the JPEG thumbnail"}} | ERRORS,
    )
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

    @app.get("/", dependencies=[Depends(authorised)], response_class=HTMLResponse, responses=PAGE_ERRORS)
    def page(
        identity: str = "",
        source: str = "",
        decision: Literal["", "match", "unknown"] = "",
        page: int = Query(1, ge=1, le=MAX_PAGE),
    ):
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
            nav=nav(forensic, logout=sessions is not None),
            rows=result.rows,
            identities=names,
            sources=sources,
            page=page,
            has_more=result.has_more,
            prev=urlencode(keep | {"page": page - 1}),
            next=urlencode(keep | {"page": page + 1}),
            **keep,
        )

    add_api(app, db, thumbnails, forensic, authorised)
    add_pages(app, db, forensic, authorised, page_size, logout=sessions is not None)
    add_login(app, sessions)
    return app
