"""The web app over the gallery and the match log (FastAPI), composed of one router per concern: recent matches
(:mod:`pipeline.web.matches`), finding a person (:mod:`pipeline.web.search`), tracks and their evidence
(:mod:`pipeline.web.tracks`), the live feed (:mod:`pipeline.web.feed`), identities (:mod:`pipeline.web.admin`), login
(:mod:`pipeline.web.login`). The
database, the thumbnail store and the loaded models (as callables, :class:`pipeline.web.common.Forensic`) are
given to :func:`create_app`; ``serve`` builds them (:mod:`pipeline.web.serve`).

With a token or users (:mod:`gallery.users`), every request needs ``Authorization: Bearer <token>`` (the shared
token, an admin, or a user's) or a session cookie, which a browser gets by logging in with a token or a user's name
and password at ``/login`` (:mod:`pipeline.web.session`; ``POST /logout`` ends it). Authentication comes before any
other check of a request, and every answer carries the security headers (:mod:`pipeline.web.guard`); then each
route checks the actor's role (:mod:`pipeline.web.access`; the matrix is ``docs/access.md``). Without a token and
without users the server must listen on loopback only (see ``pipeline.commands.gallery_admin.check_bind``). The
OpenAPI schema is ``/openapi.json``, behind the authentication too.

With ``allowed_hosts`` every request must name one of those hosts in its ``Host`` header, else it gets 400
(:mod:`pipeline.web.hosts`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gallery.db import Database
from gallery.errors import GalleryError, IdentityNotFoundError
from gallery.thumbnails import ThumbnailStore
from gallery.users import any_users
from pipeline.web import admin, audit, enrollment, feed, login, matches, reviews, search, tracks, users
from pipeline.web.access import VIEWER, Access
from pipeline.web.common import Context, Evidence, Forensic
from pipeline.web.guard import Guard
from pipeline.web.hosts import LOOPBACK_NAMES, TrustedHosts, host_name, trusted_hosts
from pipeline.web.session import COOKIE, DEFAULT_MAX_AGE_S, Sessions

logger = logging.getLogger(__name__)

__all__ = ["create_app", "trusted_hosts", "host_name", "COOKIE", "LOOPBACK_NAMES"]


def create_app(
    db: Database,
    thumbnails: ThumbnailStore | None,
    *,
    token: str | None = None,
    page_size: int = 50,
    allowed_hosts: Iterable[str] | None = None,
    forensic: Forensic | None = None,
    session_max_age_s: int = DEFAULT_MAX_AGE_S,
    evidence: Evidence | None = None,
    enrolling: enrollment.Enrolling | None = None,
) -> FastAPI:
    """The app over ``db``; ``thumbnails`` None serves no thumbnails; ``token``: the shared API token (an admin;
    None: none; without users too, no authentication);
    ``allowed_hosts`` None accepts any ``Host`` header (see :func:`trusted_hosts`); ``forensic``: what search by
    photo and the unknown groups need (None: those views are absent); ``session_max_age_s``: how long a browser's
    login lasts; ``evidence``: the clip maker and the evidence export (None: those routes answer 404);
    ``enrolling``: what enrollment over HTTP needs (:mod:`pipeline.web.enrollment`; None: those routes answer 503)."""
    forensic = forensic or Forensic()
    has_users = any_users(db)
    sessions = Sessions(token, session_max_age_s) if token is not None or has_users else None
    access = Access(db, token, sessions) if sessions is not None else None
    if token is not None and has_users:
        logger.warning("the shared API token acts as an admin beside the users; prefer users' own tokens")
    app = FastAPI(title="FaceMoE gallery and match log", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHosts, allowed=frozenset(host_name(h) for h in allowed_hosts))
    # added last: outermost, so authentication comes first
    app.add_middleware(Guard, sessions=sessions, access=access)
    # outside the guard: every refusal, the guard's 401 included, is in the audit trail (pipeline.web.audit)
    audit.install(app, db)
    bearer = HTTPBearer(
        auto_error=False, description=f"the API token (browsers: the {COOKIE} cookie of /login)"
    )

    def authorised(request: Request, _credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
        """The Guard authenticated the request (any role); ``bearer`` only names the scheme in the OpenAPI
        schema."""
        return viewer(request)

    viewer = VIEWER[0].dependency
    authorised.minimum_role = "viewer"  # type: ignore[attr-defined]

    auth = [Depends(authorised)]
    ctx = Context(
        db,
        thumbnails,
        forensic,
        page_size,
        logout=access is not None,
        auth=auth,
        evidence=evidence or Evidence(),
    )

    @app.exception_handler(GalleryError)
    def _gallery_error(_request: Request, exc: GalleryError) -> JSONResponse:
        status = 404 if isinstance(exc, IdentityNotFoundError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    for module in (matches, tracks, admin, search, feed, users, audit, reviews):
        app.include_router(module.router(ctx))
    app.include_router(enrollment.router(ctx, enrolling))
    app.include_router(login.router(access))
    return app
