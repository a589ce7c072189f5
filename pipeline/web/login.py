"""The stylesheet of every page (open) and, on a server with a token or users, its login and logout: ``GET`` and
``POST /login`` (a token, or a user's name and password, in; a session cookie out, :mod:`pipeline.web.session`),
``POST /logout``. Login attempts are limited per client address (:data:`ATTEMPTS` a second, then 429).

Each attempt is in the audit trail (:mod:`pipeline.web.audit`): ``login`` by the actor who logged in, or
``login.failed`` by ``anonymous`` with the client address, the method tried (``token``, ``password``, ``none``)
and the reason, never the name, token or password given (people type passwords into name fields); each ``POST
/logout`` as ``logout`` by the session's actor (``anonymous`` without a valid session)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline.web.access import Access, Actor
from pipeline.web.audit import record
from pipeline.web.guard import root_of
from pipeline.web.pages import PAGES, STYLE
from pipeline.web.session import COOKIE, cookie_header

logger = logging.getLogger(__name__)

__all__ = ["Attempts", "router"]

MAX_LOGIN_BYTES = 4096  # the login form's body
ATTEMPTS = 5  # login attempts per client address per second
MAX_CLIENTS = 10_000  # addresses remembered; the oldest are forgotten first


class Attempts:
    """At most ``per_second`` login attempts per client address in any second (thread-safe)."""

    def __init__(self, per_second: int = ATTEMPTS, clock=time.monotonic) -> None:
        self.per_second, self.clock = per_second, clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = self.clock()
        with self._lock:
            times = self._seen.pop(client, None) or deque()
            while times and times[0] <= now - 1.0:
                times.popleft()
            allowed = len(times) < self.per_second
            if allowed:
                times.append(now)
            self._seen[client] = times  # most recent last
            while len(self._seen) > MAX_CLIENTS:
                del self._seen[next(iter(self._seen))]
            return allowed


def router(access: Access | None, attempts: Attempts | None = None) -> APIRouter:
    """The stylesheet and, with ``access`` (a server with a token or users), the login and logout routes."""
    routes = APIRouter(include_in_schema=False)

    @routes.get("/style.css")
    def style() -> Response:
        return Response(STYLE, media_type="text/css")

    if access is None:
        return routes
    sessions, attempts = access.sessions, attempts or Attempts()

    def login_page(status: int = 200, error: str = "") -> HTMLResponse:
        return HTMLResponse(PAGES.get_template("login").render(nav="", error=error), status_code=status)

    def check(fields: dict[str, str]) -> tuple[Actor | None, str, str]:
        """The actor the form names, the method tried and what to log about a refusal (never a credential)."""
        token, name, password = fields.get("token", ""), fields.get("name", ""), fields.get("password", "")
        if token:
            actor = access.bearer(token.strip())
            return actor, "token", "not a token of this server"
        if name and password:
            return access.password(name, password), "password", "wrong name or password"
        return None, "none", "no token and no name with a password"

    async def failed(request: Request, method: str, reason: str) -> None:
        details = {"method": method, "reason": reason}
        await run_in_threadpool(record, request, "login.failed", (), details, "failed")

    @routes.get("/login")
    def login_form() -> HTMLResponse:
        return login_page()

    @routes.post("/login")
    async def login(request: Request) -> Response:
        client = request.client.host if request.client is not None else "?"
        if not attempts.allow(client):
            logger.warning(
                "login refused: more than %d attempts a second from %s", attempts.per_second, client
            )
            await failed(request, "none", "too many attempts")
            return login_page(
                429, f"login: at most {attempts.per_second} attempts a second; wait and try again"
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            await failed(request, "none", "not a form")
            return login_page(
                415, f"login: expected a form (application/x-www-form-urlencoded), got {content_type!r}"
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BYTES:
                await failed(request, "none", "form too large")
                return login_page(413, f"login: expected at most {MAX_LOGIN_BYTES:,} bytes, got more")
        try:
            fields = dict(
                parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=10)
            )
        except ValueError:
            await failed(request, "none", "too many fields")
            return login_page(400, "login: expected a form with a token field, got too many fields")
        actor, method, why = await run_in_threadpool(check, fields)
        if actor is None:
            logger.warning("login refused from %s: %s", client, why)
            await failed(request, method, why)
            return login_page(
                401, "token: not this server's API token nor a user's; or wrong name or password"
            )
        logger.info("login: %s (%s, %s) from %s", actor.name, actor.kind, actor.role, client)
        details = {"method": method, "role": actor.role}
        await run_in_threadpool(record, request, "login", (), details, actor=actor)
        root = root_of(request.scope)
        response = RedirectResponse(root, status_code=303)
        secure = request.url.scheme == "https"
        response.headers.append(
            "set-cookie", cookie_header(access.issue(actor), sessions.max_age_s, root, secure)
        )
        return response

    @routes.post("/logout")
    def logout(request: Request) -> Response:
        value = request.cookies.get(COOKIE, "")
        actor = access.session(value)[0] if value else None
        sessions.revoke(value)
        record(request, "logout", actor=actor)
        root = root_of(request.scope)
        response = RedirectResponse(f"{root}login", status_code=303)
        response.headers.append("set-cookie", cookie_header("", 0, root, request.url.scheme == "https"))
        return response

    return routes
