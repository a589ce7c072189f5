"""The stylesheet of every page (open) and, on a server with a token, its login and logout: ``GET`` and
``POST /login`` (the token in, a session cookie out, :mod:`pipeline.web.session`), ``POST /logout``."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pipeline.web.guard import root_of
from pipeline.web.pages import PAGES, STYLE
from pipeline.web.session import COOKIE, Sessions, cookie_header, token_matches

logger = logging.getLogger(__name__)

__all__ = ["router"]

MAX_LOGIN_BYTES = 4096  # the login form's body


def router(sessions: Sessions | None) -> APIRouter:
    """The stylesheet and, with ``sessions`` (a server with a token), the login and logout routes."""
    routes = APIRouter(include_in_schema=False)

    @routes.get("/style.css")
    def style() -> Response:
        return Response(STYLE, media_type="text/css")

    if sessions is None:
        return routes

    def login_page(status: int = 200, error: str = "") -> HTMLResponse:
        return HTMLResponse(PAGES.get_template("login").render(nav="", error=error), status_code=status)

    @routes.get("/login")
    def login_form() -> HTMLResponse:
        return login_page()

    @routes.post("/login")
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

    @routes.post("/logout")
    def logout(request: Request) -> Response:
        sessions.revoke(request.cookies.get(COOKIE, ""))
        root = root_of(request.scope)
        response = RedirectResponse(f"{root}login", status_code=303)
        response.headers.append("set-cookie", cookie_header("", 0, root, request.url.scheme == "https"))
        return response

    return routes
