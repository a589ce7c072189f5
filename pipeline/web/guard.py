"""What every request to the app goes through before it reaches a route, and what every answer carries (ASGI
middleware; :func:`pipeline.web.app.create_app` installs it outermost).

1. Authentication, before any other check: ``Authorization: Bearer <token>`` (the shared API token or a user's),
   or the session cookie of a browser that logged in (:mod:`pipeline.web.session`); who it is, an
   :class:`pipeline.web.access.Actor`, becomes ``request.state.actor`` (each route then checks its role). Only the
   login page, logout and the stylesheet are open. Without valid credentials: 401 with the reason (a browser
   opening a page, ``Accept: text/html``: 303 to the login page); a bad session cookie is cleared. Without a token
   and without users (loopback only) everyone is the local admin.
2. Limits, each a single pass over the request: at most :data:`MAX_HEADERS` header lines and
   :data:`MAX_HEADER_BYTES` of them (431), :data:`MAX_QUERY_PARAMS` query parameters (400; counted before they
   are parsed), :data:`MAX_QUERY_BYTES` of query string (414), every query parameter given once (400: which of
   several values would apply is ambiguous).

Every answer, errors and redirects included, carries :data:`SECURITY_HEADERS`: a Content-Security-Policy with
no script (a page of :data:`SCRIPT_PAGES`: scripts of this origin only, never inline) and no inline style (the
pages use ``/style.css``), no framing, ``nosniff``, no referrer, and
``Cache-Control: no-store`` (faces and match logs are not kept in caches).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response

from pipeline.web.access import CURRENT, OPEN, Access, Actor
from pipeline.web.session import COOKIE, Sessions, cookie_header

__all__ = [
    "AUTH_KEY",
    "CSP",
    "Guard",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_QUERY_BYTES",
    "MAX_QUERY_PARAMS",
    "OPEN_PATHS",
    "SCRIPT_CSP",
    "SCRIPT_PAGES",
    "SECURITY_HEADERS",
    "require_authenticated",
    "root_of",
]

AUTH_KEY = "facemoe.auth"  # in the ASGI scope: how the request was authenticated
OPEN_PATHS = frozenset({"/login", "/logout", "/style.css"})
MAX_HEADERS = 64
MAX_HEADER_BYTES = 16 * 1024  # as uvicorn's h11 server allows for the whole request head
MAX_QUERY_PARAMS = 100
MAX_QUERY_BYTES = 8 * 1024
CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SCRIPT_PAGES = frozenset({"/feed"})  # pages whose script is a file of this origin (never inline)
SCRIPT_CSP = CSP.replace("script-src 'none'", "script-src 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_REPLACED = frozenset(name for name, _ in SECURITY_HEADERS)


def root_of(scope) -> str:
    """The app's root path with a trailing slash (``/`` unless it is mounted under a prefix)."""
    return scope.get("root_path", "").rstrip("/") + "/"


def require_authenticated(request: Request) -> None:
    """FastAPI dependency of every protected route: the request passed :class:`Guard`'s authentication (a route
    reached without the guard is refused)."""
    if request.scope.get(AUTH_KEY) is None:
        raise HTTPException(
            401, "expected the API token (Authorization: Bearer <token>) or a session, got none"
        )


def _session_cookie(values: list[bytes]) -> str | None:
    """The value of the session cookie among ``Cookie`` header values (the first one wins), None for none."""
    for header in values:
        for pair in header.decode("latin-1").split(";"):
            name, eq, value = pair.partition("=")
            if eq and name.strip() == COOKIE:
                return value.strip()
    return None


class Guard:
    """ASGI middleware: authentication through ``access`` (``sessions`` None: none needed, everyone is the local
    admin), then the request limits, then ``app``; the security headers on every answer."""

    def __init__(self, app, sessions: Sessions | None, access: Access | None = None) -> None:
        self.app, self.sessions, self.access = app, sessions, access

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":  # the app has none: never let one past the authentication
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send, scope["path"] in SCRIPT_PAGES)
        refusal = await self._authenticate(scope) or _limits(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        reset = CURRENT.set(scope.get("state", {}).get("actor"))
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT.reset(reset)

    @staticmethod
    def _admit(scope, how: str, actor: Actor) -> None:
        scope[AUTH_KEY] = how
        scope.setdefault("state", {})["actor"] = actor

    async def _authenticate(self, scope) -> Response | None:
        if self.sessions is None or self.access is None:
            self._admit(scope, "open", OPEN)
            return None
        if scope["path"] in OPEN_PATHS:
            return None
        authorization, cookies, accept = None, [], b""
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"cookie":
                cookies.append(value)
            elif name == b"accept":
                accept = value
        session, bad_session = _session_cookie(cookies), False
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(" ")
            actor = None
            if scheme.lower() == "bearer" and credentials.strip():
                actor = await run_in_threadpool(self.access.bearer, credentials.strip())
            if actor is not None:
                self._admit(scope, "bearer", actor)
                return None
            why = "Authorization: expected 'Bearer <token>' with the API token or a user's token, got another"
        elif session is not None:
            actor, problem = await run_in_threadpool(self.access.session, session)
            if actor is not None:
                self._admit(scope, "session", actor)
                return None
            why = f"session cookie: {problem}; log in again at /login or send Authorization: Bearer <token>"
            bad_session = True
        else:
            why = "expected the API token (Authorization: Bearer <token>) or a session (log in at /login), got none"
        root = root_of(scope)
        if scope["method"] in ("GET", "HEAD") and b"text/html" in accept and authorization is None:
            response: Response = RedirectResponse(f"{root}login", status_code=303)
        else:
            response = JSONResponse({"detail": why}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if bad_session:  # a cookie that is no (longer a) session: the browser drops it
            response.headers.append("set-cookie", cookie_header("", 0, root, scope.get("scheme") == "https"))
        return response


def _limits(scope) -> Response | None:
    headers = scope["headers"]
    if len(headers) > MAX_HEADERS:
        return _refuse(431, f"headers: expected at most {MAX_HEADERS}, got {len(headers)}")
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if size > MAX_HEADER_BYTES:
        return _refuse(431, f"headers: expected at most {MAX_HEADER_BYTES:,} bytes, got {size:,}")
    query = scope.get("query_string", b"")
    if not query:
        return None
    count = query.count(b"&") + 1
    if count > MAX_QUERY_PARAMS:
        return _refuse(400, f"query: expected at most {MAX_QUERY_PARAMS} parameters, got {count:,}")
    if len(query) > MAX_QUERY_BYTES:
        return _refuse(414, f"query: expected at most {MAX_QUERY_BYTES:,} bytes, got {len(query):,}")
    seen: set[str] = set()
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):  # as Starlette reads it
        if name in seen:
            return _refuse(400, f"query parameter {name[:100]}: expected one value, got several")
        seen.add(name)
    return None


def _refuse(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)


def _with_security_headers(send, script: bool = False):
    """``send`` with :data:`SECURITY_HEADERS` on every answer; ``script``: a page of :data:`SCRIPT_PAGES`, whose
    policy allows the scripts of this origin."""
    added = SECURITY_HEADERS
    if script:
        added = [(n, SCRIPT_CSP.encode() if n == b"content-security-policy" else v) for n, v in added]

    async def send_secured(message) -> None:
        if message["type"] == "http.response.start":
            kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in _REPLACED]
            message = {**message, "headers": kept + added}
        await send(message)

    return send_secured
