"""The audit trail in the web app: recording what requests do, every refused request, and the admin's view of it.

The trail is ``app.state.audit_trail`` (:func:`pipeline.web.app.create_app` sets the database's own,
:func:`pipeline.services.audit.trail_of`; ``serve`` replaces it with the head where the config keeps it). Routes
record their actions through one of two helpers, the actor being ``request.state.actor`` (set by the guard; a
request without one is ``anonymous``) and ``details.client`` the client's address:

- :func:`record` appends one entry (``record(request, "review", [ref], {"verdict": "confirm"})``);
- :func:`audited_request` wraps an action: ``with audited_request(request, "enroll", [name]) as action:`` (or
  ``async with`` in an ``async`` route: the entry is written off the event loop); the entry is appended when the
  block ends, ``ok`` (or what the block set in ``action.result``), ``denied`` for an ``HTTPException`` 401/403,
  ``failed`` for any other error, with ``details.reason``; ``action.objects`` and ``action.details`` may be filled
  in while it runs.

:class:`Denials` (ASGI middleware, outermost) appends a ``denied`` entry for every answer 401 or 403 that no route
recorded itself: action ``request``, the method, the path, the status, the credentials offered (``bearer``,
``session``, ``none``: never their value) and the actor when one was authenticated. :func:`router` serves
``GET /api/audit`` (JSON, the filters of ``query audit``) and the page ``GET /audit``, both for admins only.
"""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from gallery.audit_retention import AuditFilters, find_audit
from gallery.db import Database
from gallery.errors import QueryError
from pipeline.services.audit import Action, Trail, trail_of
from pipeline.web.access import ADMIN, Actor
from pipeline.web.common import ERRORS, Context
from pipeline.web.pages import PAGES, nav

logger = logging.getLogger(__name__)

__all__ = [
    "ANONYMOUS",
    "DENIAL_ACTION",
    "Denials",
    "audited_request",
    "install",
    "record",
    "router",
    "trail_for",
]

ANONYMOUS = ("anonymous", "anonymous")  # the actor of a request nobody was authenticated for
DENIED_STATUSES = frozenset({401, 403})
RECORDED_KEY = "facemoe.audited"  # in the ASGI scope: a route recorded this request's refusal itself
SELF_RECORDING = frozenset({"/login"})  # paths whose refusals their route records (as login.failed)
DENIAL_ACTION = "request"  # the action of a refused request's entry
MAX_PATH = 300  # characters of a path kept in a denial's entry
MAX_REASON = 500  # characters of a refusal's reason kept in an entry

AUDIT = PAGES.from_string(
    """{% extends "layout" %}{% block title %}Audit trail{% endblock %}
{% block body %}<h1>Audit trail</h1>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="get" action="/audit">
 <label>User <input type="text" name="user" value="{{ f.user or '' }}"></label>
 <label>Action <input type="text" name="action" value="{{ f.action or '' }}"></label>
 <label>Since <input type="text" name="since" value="{{ since or '' }}" placeholder="2026-03-01T10:00:00Z"></label>
 <label>Until <input type="text" name="until" value="{{ until or '' }}"></label>
 <button type="submit">Filter</button>
</form>
<table id="audit"><thead><tr><th>id</th><th>at</th><th>actor</th><th>action</th><th>result</th><th>objects</th>
<th>details</th></tr></thead><tbody>
{% for r in rows %}<tr><td>{{ r.id }}</td><td>{{ r.at[:19] | replace("T", " ") }}</td>
<td>{{ r.actor }} ({{ r.actor_kind }})</td><td>{{ r.action }}</td><td>{{ r.result }}</td>
<td>{{ r.objects | tojson }}</td><td>{{ r.details | tojson }}</td></tr>{% endfor %}
</tbody></table>
{% if more %}<p><a href="?{{ next }}">more</a></p>{% endif %}
{% endblock %}"""
)


def install(app, db: Database) -> None:
    """Give ``app`` the trail of ``db`` (the head beside a SQLite file) and :class:`Denials`; call it after the
    other middleware so that every refusal, the guard's included, passes through it."""
    app.state.audit_trail = trail_of(db)
    app.add_middleware(Denials)


def trail_for(request: Request) -> Trail:
    """The trail requests of this app append to (:func:`install` gave it)."""
    return request.app.state.audit_trail


def _client(scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def record(
    request: Request,
    action: str,
    objects=(),
    details: dict | None = None,
    result: str = "ok",
    *,
    actor: Actor | None = None,
) -> None:
    """Append the entry of ``action`` by ``actor`` (default: the request's, else ``anonymous``), with the client's
    address in ``details.client``. A failure to write it is logged, not raised (the answer is already decided).
    Blocking: from an ``async`` route, call it through ``run_in_threadpool``."""
    actor = actor or getattr(request.state, "actor", None)
    name, kind = (actor.name, actor.kind) if actor is not None else ANONYMOUS
    if result == "denied":
        request.scope[RECORDED_KEY] = True
    try:
        trail_for(request).append(
            name, kind, action, objects, {**(details or {}), "client": _client(request.scope)}, result
        )
    except Exception:
        logger.warning("audit entry of %s by %s not written", action, name, exc_info=True)


class audited_request:  # noqa: N801 (used as a function: ``with audited_request(...) as action``)
    """Record ``action`` of ``request`` once the block ends (see the module's description); a plain ``with`` in a
    sync route, ``async with`` in an ``async`` one."""

    def __init__(self, request: Request, action: str, objects=(), details: dict | None = None) -> None:
        self.request, self.action = request, action
        self.entry = Action(list(objects), dict(details or {}))

    def __enter__(self) -> Action:
        return self.entry

    def _settle(self, exc: BaseException | None) -> None:
        if exc is not None:
            if isinstance(exc, RequestValidationError):
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()))
                self.entry.result, reason = "failed", f"{where}: {first.get('msg', 'invalid')}"
            elif isinstance(exc, HTTPException):
                denied = exc.status_code in DENIED_STATUSES
                self.entry.result, reason = ("denied" if denied else "failed"), exc.detail
            else:
                self.entry.result, reason = "failed", str(exc).strip() or type(exc).__name__
            text = reason if isinstance(reason, str) else str(reason)
            self.entry.details["reason"] = text.splitlines()[0][:MAX_REASON] if text else ""
        e = self.entry
        record(self.request, self.action, e.objects, e.details, e.result)

    def __exit__(self, _type, exc, _tb) -> None:
        self._settle(exc)

    async def __aenter__(self) -> Action:
        return self.entry

    async def __aexit__(self, _type, exc, _tb) -> None:
        await run_in_threadpool(self._settle, exc)


def _credentials(scope) -> str:
    """Which credentials a request offered (never their value)."""
    names = {name for name, _ in scope.get("headers", ())}
    if b"authorization" in names:
        return "bearer"
    return "session" if b"cookie" in names else "none"


class Denials:
    """ASGI middleware appending a ``denied`` entry for each answer 401 or 403 no route recorded itself."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in SELF_RECORDING:
            await self.app(scope, receive, send)
            return

        async def send_recorded(message) -> None:
            if (
                message["type"] == "http.response.start"
                and message["status"] in DENIED_STATUSES
                and not scope.get(RECORDED_KEY)
            ):
                await run_in_threadpool(self._record, scope, message["status"])
            await send(message)

        await self.app(scope, receive, send_recorded)

    @staticmethod
    def _record(scope, status: int) -> None:
        actor = scope.get("state", {}).get("actor")
        name, kind = (actor.name, actor.kind) if actor is not None else ANONYMOUS
        details = {
            "method": scope["method"],
            "path": scope["path"][:MAX_PATH],
            "status": status,
            "credentials": _credentials(scope),
            "client": _client(scope),
        }
        try:
            scope["app"].state.audit_trail.append(name, kind, DENIAL_ACTION, [], details, "denied")
        except Exception:
            logger.warning("audit entry of a refused %s %s not written", scope["method"], scope["path"][:100])
        scope[RECORDED_KEY] = True


def _time(text: str | None, what: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{what}: expected ISO 8601 like 2026-03-01T10:00:00Z, got {text!r}") from None
    if value.tzinfo is None:
        raise QueryError(f"{what}: expected a timezone (Z or +HH:MM), got {text!r}")
    return value


def router(ctx: Context) -> APIRouter:
    """``/api/audit`` and ``/audit``, admins only."""
    routes = APIRouter(dependencies=[*ctx.auth, *ADMIN])

    def filters(user, action, since, until, page) -> AuditFilters:
        return AuditFilters(
            user=user or None,
            action=action or None,
            since=_time(since, "since"),
            until=_time(until, "until"),
            page=page,
            page_size=ctx.page_size,
        )

    @routes.get("/api/audit", responses=ERRORS | {403: ERRORS[401]})
    def api_audit(
        user: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page: int = Query(1, ge=1),
    ) -> dict:
        return find_audit(ctx.db, filters(user, action, since, until, page)).as_dict()

    @routes.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(
        request: Request,
        user: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page: int = Query(1, ge=1),
    ) -> HTMLResponse:
        error, rows, more, f = "", [], False, AuditFilters()
        try:
            f = filters(user, action, since, until, page)
            found = find_audit(ctx.db, f)
            rows, more = found.rows, found.has_more
        except QueryError as exc:
            error = str(exc)
        query = request.query_params.multi_items()
        following = urlencode([(k, v) for k, v in query if k != "page"] + [("page", page + 1)])
        html = AUDIT.render(
            nav=nav(ctx.forensic, ctx.logout),
            rows=rows,
            more=more,
            next=following,
            f=f,
            since=since,
            until=until,
            error=error,
        )
        return HTMLResponse(html, status_code=400 if error else 200)

    return routes
