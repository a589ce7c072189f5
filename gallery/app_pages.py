"""The forensic views of the page (server-rendered, no script): search by photo, unknown groups, an identity's
timeline, and the match view of one track (its best crop beside the enrolled face it matched, with its times
within the video). The data are those of the JSON endpoints (:mod:`gallery.app_forensic`); errors of the GET
views answer JSON like the page's, the search form shows its own error above the form. Also the page's one
stylesheet (``/style.css``: the Content-Security-Policy allows no inline style) and its login and logout
(:func:`add_login`).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import DictLoader, Environment
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from gallery.app_common import PAGE_ERRORS, clock
from gallery.app_forensic import (
    Forensic,
    read_form,
    search_rows,
    timeline_page,
    track_view,
    unknown_groups,
    unknowns_options,
)
from gallery.app_guard import root_of
from gallery.app_models import SearchOptions
from gallery.app_session import COOKIE, Sessions, cookie_header, token_matches
from gallery.db import Database
from gallery.errors import GalleryError
from gallery.models import Identity, Source
from gallery.queries import MAX_PAGE, Filters
from gallery.refs import REF_PATTERN, REF_TEXT

__all__ = ["STYLE", "add_login", "add_pages", "nav"]

logger = logging.getLogger(__name__)

TRACKS_SHOWN = 24  # track thumbnails shown per unknown group
MAX_LOGIN_BYTES = 4096  # the login form's body

# the one stylesheet of every page (/style.css: the Content-Security-Policy allows no inline style)
STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ccc;padding:4px 10px;text-align:left}img.thumb{height:64px}
.match{color:#060;font-weight:bold}.unknown{color:#777}.error{color:#a00;font-weight:bold}
nav a{margin-right:1em}nav form{display:inline}.pair{display:flex;gap:2em}.pair figure{margin:0}
.pair img{height:224px}.group{border-top:1px solid #ccc;padding:.5em 0}.group img.best{height:112px}
"""

LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}{% endblock %}</title>
<link rel="stylesheet" href="/style.css"></head><body>
{{ nav | safe }}
{% block body %}{% endblock %}
</body></html>"""

WHEN = """{% macro when(r) %}{% if r.seen_start %}{{ r.seen_start[:19] | replace("T", " ") }} &ndash; {{
r.seen_end[11:19] }} UTC ({{ r.start_time | clock }} in the {{ "stream" if r.kind == "camera" else "file" }}){% else
%}time unknown ({{ r.start_time | clock }} &ndash; {{ r.end_time | clock }} in the file){% endif %}{% endmacro %}"""

SEARCH = """{% extends "layout" %}{% from "when" import when %}{% block title %}Search by photo{% endblock %}
{% block body %}<h1>Search by photo</h1>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/search" enctype="multipart/form-data">
 <label>Photo <input type="file" name="photo" accept="image/*" required></label>
 <label>Face <input type="number" name="face" min="1" value="{{ form.face or '' }}" size="3"></label>
 <label>Top <input type="number" name="top" min="1" max="1000" value="{{ form.top or 10 }}" size="4"></label>
 <label>Min score <input type="text" name="min_score" value="{{ form.min_score or '' }}" size="5"></label>
 <label>Source <select name="source"><option value="">any</option>
 {% for n in sources %}<option{% if n == form.source %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label>
 <label>Since <input type="text" name="since" value="{{ form.since or '' }}" placeholder="2026-03-01T10:00:00Z">
 </label><label>Until <input type="text" name="until" value="{{ form.until or '' }}"></label>
 <button type="submit">Search</button>
</form>
{% if rows is not none %}<h2>{{ rows | length }} tracks{% if photo %} like {{ photo }}{% endif %}</h2>
<table id="results"><thead><tr><th>Track</th><th>Face</th><th>Score</th><th>Source</th><th>Seen</th>
<th>Logged (UTC)</th><th>Decision</th><th></th></tr></thead><tbody>
{% for r in rows %}<tr class="row">
 <td class="ref">{{ r.ref }}</td>
 <td>{% if r.thumbnail_url %}<img class="thumb" alt="track {{ r.ref }}" src="{{ r.thumbnail_url }}">{% endif %}</td>
 <td>{{ "%.3f" | format(r.score) }}</td><td>{{ r.source }}</td><td>{{ when(r) }}</td>
 <td>{{ r.logged_at[:19] | replace("T", " ") }}</td>
 <td class="{{ r.decision }}">{{ r.identity or r.decision }}</td>
 <td><a class="view" href="/track/{{ r.ref }}">view</a></td></tr>
{% else %}<tr><td colspan="8">No track.</td></tr>{% endfor %}</tbody></table>{% endif %}
{% endblock %}"""

UNKNOWNS = """{% extends "layout" %}{% block title %}Unknown groups{% endblock %}
{% block body %}<h1>Unknown groups</h1>
<form method="get" action="/unknowns">
 <label>Source <select name="source"><option value="">any</option>
 {% for n in sources %}<option{% if n == source %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label>
 <label>Min size <input type="number" name="min_size" min="1" value="{{ min_size }}" size="3"></label>
 <button type="submit">Group</button>
</form>
<p>{{ doc.groups | length }} groups of {{ doc.min_size }}+ tracks out of {{ doc.tracks }} unknown tracks
({{ doc.singletons }} seen once){% if doc.threshold is not none %}, threshold {{ "%.3f" | format(doc.threshold)
}}{% endif %}.</p>
{% for g in doc.groups %}<div class="group" id="group{{ g.group }}">
 <h2>Group {{ g.group }}: {{ g.size }} tracks</h2>
 <p>{% if g.thumbnail_url %}<a href="/track/{{ g.best }}"><img class="best thumb" alt="group {{ g.group }}"
 src="{{ g.thumbnail_url }}"></a>{% endif %}
 {% if g.first_seen %}Seen {{ g.first_seen[:19] | replace("T", " ") }} to {{ g.last_seen[:19] | replace("T", " ")
 }} UTC{% else %}Seen at unknown times{% endif %} in {{ g.sources | join(", ") }}{% if g.mean_similarity is not none
 %}; mean similarity
 {{ "%.3f" | format(g.mean_similarity) }}{% endif %}</p>
 <p>{% for t in g.tracks[:shown] %}<a href="/track/{{ t.ref }}">{% if t.thumbnail_url %}<img class="thumb"
 alt="track {{ t.ref }}" title="{{ t.ref }} {{ t.source }} {{ t.seen_start or t.start_time | clock }}"
 src="{{ t.thumbnail_url }}">{% else %}{{ t.ref }}{% endif %}</a>
 {% endfor %}{% if g.size > shown %}(+{{ g.size - shown }}){% endif %}</p></div>
{% else %}<p>No group.</p>{% endfor %}
{% endblock %}"""

TIMELINE = """{% extends "layout" %}{% from "when" import when %}{% block title %}Timeline{% endblock %}
{% block body %}<h1>Timeline{% if name %} of {{ name }}{% endif %}</h1>
<form method="get" action="/timeline">
 <label>Identity <select name="name">
 {% for n in identities %}<option{% if n == name %} selected{% endif %}>{{ n }}</option>{% endfor %}
 </select></label> <button type="submit">Show</button>
</form>
{% if rows is not none %}<table id="timeline"><thead><tr><th>Track</th><th>Face</th><th>Seen</th><th>Source</th>
<th>Logged (UTC)</th><th>Score</th><th>Decision</th><th></th></tr></thead><tbody>
{% for r in rows %}<tr class="row">
 <td class="ref">{{ r.ref }}</td>
 <td>{% if r.thumbnail_url %}<img class="thumb" alt="track {{ r.ref }}" src="{{ r.thumbnail_url }}">{% endif %}</td>
 <td>{{ when(r) }}</td><td>{{ r.source }}</td><td>{{ (r.logged_at or "")[:19] | replace("T", " ") }}</td>
 <td>{{ "%.3f" | format(r.score) if r.score is not none else "" }}</td>
 <td class="match">match{% if r.retroactive %} (retroactive){% endif %}</td>
 <td><a class="view" href="/track/{{ r.ref }}">view</a></td></tr>
{% else %}<tr><td colspan="8">Not seen.</td></tr>{% endfor %}</tbody></table>
<p>{% if page > 1 %}<a href="?{{ prev }}">earlier</a>{% endif %}
{% if has_more %}<a id="later" href="?{{ next }}">later</a>{% endif %}</p>{% endif %}
{% endblock %}"""

TRACK = """{% extends "layout" %}{% from "when" import when %}{% block title %}Track {{ t.ref }}{% endblock %}
{% block body %}<h1>Track {{ t.ref }}</h1><p>{{ t.source }}, {{ when(t) }}</p>
<div class="pair">
 <figure>{% if t.thumbnail_url %}<img class="thumb crop" alt="best crop of the track" src="{{ t.thumbnail_url }}">
 {% else %}<p>No thumbnail.</p>{% endif %}<figcaption>Best crop of track {{ t.ref }}
 </figcaption></figure>
 {% if t.enrolled %}<figure>{% if t.enrolled.url %}<img class="enrolled" alt="enrolled face of {{
 t.enrolled.identity }}" src="{{ t.enrolled.url }}">{% else %}<p class="note">{{ t.enrolled.note }}</p>{% endif %}
 <figcaption>Enrolled: {{ t.enrolled.identity }}, {{ t.enrolled.enrolled_from }} (similarity
 {{ "%.3f" | format(t.enrolled.score) }})</figcaption></figure>{% endif %}
</div>
<table id="track">
<tr><th>Decision</th><td class="{{ t.decision }}">{{ t.identity or t.decision }}{% if t.retroactive %}
 (retroactive, rematch {{ t.rematch_id }}){% endif %}{% if t.score is not none %}, score {{ "%.3f" | format(t.score)
 }}{% endif %}</td></tr>
{% if t.retroactive %}<tr><th>Logged decision</th><td>{{ t.logged_identity or t.logged_decision }}</td></tr>{% endif %}
<tr><th>Seen</th><td id="seen">{% if t.seen_start %}{{ t.seen_start }} &ndash; {{ t.seen_end }} ({{ t.time_origin
 }}){% else %}time unknown{% endif %}</td></tr>
<tr><th>Within the {{ "stream" if t.kind == "camera" else "file" }}</th><td>{{ t.start_time | clock }} &ndash;
 {{ t.end_time | clock }}</td></tr>
<tr><th>Logged (UTC)</th><td>{{ (t.logged_at or "")[:19] | replace("T", " ") }}</td></tr>
<tr><th>Frames, crops embedded</th><td>{{ t.frames }}, {{ t.crops_embedded }}</td></tr>
<tr><th>Reference</th><td>{{ t.ref }}</td></tr>
</table>
{% endblock %}"""

LOGIN = """{% extends "layout" %}{% block title %}Log in{% endblock %}
{% block body %}<h1>Log in</h1>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/login">
 <label>API token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
 <button type="submit">Log in</button>
</form>
{% endblock %}"""

NAV = """<nav>{% for url, text in links %}<a href="{{ url }}">{{ text }}</a>{% endfor %}{% if logout %}
<form method="post" action="/logout"><button type="submit" id="logout">Log out</button></form>{% endif %}</nav>"""

PAGES = Environment(
    autoescape=True,
    loader=DictLoader(
        {
            "nav": NAV,
            "login": LOGIN,
            "layout": LAYOUT,
            "when": WHEN,
            "search": SEARCH,
            "unknowns": UNKNOWNS,
            "timeline": TIMELINE,
            "track": TRACK,
        }
    ),
)
PAGES.filters["clock"] = clock


def nav(forensic: Forensic, logout: bool = False) -> str:
    """The links between the views this server has, as HTML (shown with ``| safe``); ``logout``: with a log out
    button (a server with a token)."""
    links = [("/", "Recent matches")]
    links += [("/search", "Search by photo")] if forensic.search is not None else []
    links += [("/unknowns", "Unknown groups")] if forensic.unknowns is not None else []
    links += [("/timeline", "Timelines")]
    return PAGES.get_template("nav").render(links=links, logout=logout)


def _names(db: Database, column) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(column).order_by(column).limit(1000)))


def _one_line(error: dict) -> str:
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def add_login(app: FastAPI, sessions: Sessions | None) -> None:
    """Add the stylesheet of every page and, with ``sessions`` (a server with a token), the login page (``GET``
    and ``POST /login``: the token in, a session cookie out, :mod:`gallery.app_session`) and ``POST /logout``."""

    @app.get("/style.css", include_in_schema=False)
    def style() -> Response:
        return Response(STYLE, media_type="text/css")

    if sessions is None:
        return

    def login_page(status: int = 200, error: str = "") -> HTMLResponse:
        return HTMLResponse(PAGES.get_template("login").render(nav="", error=error), status_code=status)

    @app.get("/login", include_in_schema=False)
    def login_form() -> HTMLResponse:
        return login_page()

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return login_page(
                415, f"login: expected a form (application/x-www-form-urlencoded), got {content_type!r}"
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BYTES:
                return login_page(413, f"login: expected at most {MAX_LOGIN_BYTES:,} bytes, got more")
        try:
            fields = dict(
                parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=10)
            )
        except ValueError:
            return login_page(400, "login: expected a form with a token field, got too many fields")
        if not token_matches(fields.get("token", ""), sessions.token):
            logger.warning("login refused: not the API token")
            return login_page(401, "token: not this server's API token")
        root = root_of(request.scope)
        response = RedirectResponse(root, status_code=303)
        secure = request.url.scheme == "https"
        response.headers.append(
            "set-cookie", cookie_header(sessions.issue(), sessions.max_age_s, root, secure)
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        sessions.revoke(request.cookies.get(COOKIE, ""))
        root = root_of(request.scope)
        response = RedirectResponse(f"{root}login", status_code=303)
        response.headers.append("set-cookie", cookie_header("", 0, root, request.url.scheme == "https"))
        return response


def add_pages(
    app: FastAPI, db: Database, forensic: Forensic, authorised, page_size: int, logout: bool = False
) -> None:
    """Add the forensic views to ``app``'s page, each behind the ``authorised`` dependency; ``logout``: their
    links end with a log out button."""
    auth = [Depends(authorised)]
    bar = nav(forensic, logout)

    def render(template: str, status: int = 200, **values) -> HTMLResponse:
        return HTMLResponse(PAGES.get_template(template).render(nav=bar, **values), status_code=status)

    @app.get("/timeline", dependencies=auth, response_class=HTMLResponse, responses=PAGE_ERRORS)
    def timeline(
        name: str = Query("", max_length=200),
        page: int = Query(1, ge=1, le=MAX_PAGE),
    ) -> HTMLResponse:
        identities = _names(db, Identity.name)
        if not name:
            return render("timeline", identities=identities, name="", rows=None)
        result = timeline_page(db, Filters(identity=name, page=page, page_size=page_size))
        return render(
            "timeline",
            identities=identities,
            name=name,
            rows=result.rows,
            page=page,
            has_more=result.has_more,
            prev=urlencode({"name": name, "page": page - 1}),
            next=urlencode({"name": name, "page": page + 1}),
        )

    @app.get("/track/{ref}", dependencies=auth, response_class=HTMLResponse, responses=PAGE_ERRORS)
    def track_page(
        ref: str = PathParam(max_length=40, pattern=REF_PATTERN, description=REF_TEXT),
    ) -> HTMLResponse:
        return render("track", t=track_view(db, forensic, ref))

    if forensic.unknowns is not None:

        @app.get("/unknowns", dependencies=auth, response_class=HTMLResponse, responses=PAGE_ERRORS)
        def unknowns(options: dict = Depends(unknowns_options)) -> HTMLResponse:
            doc = unknown_groups(forensic, **options)
            return render(
                "unknowns",
                doc=doc,
                sources=_names(db, Source.name),
                source=options["source"] or "",
                min_size=doc["min_size"],
                shown=TRACKS_SHOWN,
            )

    if forensic.search is not None:

        @app.get("/search", dependencies=auth, response_class=HTMLResponse, responses=PAGE_ERRORS)
        def search_form() -> HTMLResponse:
            return render("search", sources=_names(db, Source.name), form={}, rows=None)

        @app.post("/search", dependencies=auth, response_class=HTMLResponse, include_in_schema=False)
        async def search_page(request: Request) -> HTMLResponse:
            form: dict[str, str] = {}
            sources = await run_in_threadpool(_names, db, Source.name)
            try:
                photos, form = await read_form(request, forensic.max_upload_bytes)
                given = {k: v for k, v in form.items() if k in SearchOptions.model_fields and v.strip()}
                try:
                    options = SearchOptions.model_validate(given)
                except ValidationError as exc:
                    raise RequestValidationError(exc.errors()) from None
                rows = await run_in_threadpool(search_rows, db, forensic, photos, options)
            except HTTPException as exc:
                status, error = exc.status_code, exc.detail
            except RequestValidationError as exc:
                status, error = 422, _one_line(exc.errors()[0])
            except GalleryError as exc:
                status, error = 400, str(exc)
            else:
                return render("search", sources=sources, form=form, rows=rows, photo=photos[0][0])
            return render("search", status, sources=sources, form=form, rows=None, error=error)
