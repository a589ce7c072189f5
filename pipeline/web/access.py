"""Who a request comes from and what their role allows.

:class:`Access` turns credentials into an :class:`Actor`: the shared API token (``FACEMOE_API_TOKEN``, an admin,
kind ``token``), a user's token or name and password (:mod:`gallery.users`, kind ``user``), or a session cookie of
either (:mod:`pipeline.web.session`; a user's session stops at the next request once the user is disabled or
rotated, and follows the user's current role). A server with neither a token nor users is open (loopback only):
every request is the local admin, kind ``open``. :class:`pipeline.web.guard.Guard` sets the actor as
``request.state.actor`` (and :data:`CURRENT` for the pages) before any route runs.

Each route requires a minimum role (:data:`gallery.users.ROLES`: viewer < investigator < admin) through
:func:`require`: 401 without an actor, 403 with a role too low. ``docs/access.md`` lists every route's role.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request

from gallery.db import Database
from gallery.users import ROLES, Account, authenticate_password, authenticate_token, find_user, rank
from pipeline.web.session import Sessions, token_matches

logger = logging.getLogger(__name__)

__all__ = [
    "ADMIN",
    "CURRENT",
    "INVESTIGATOR",
    "VIEWER",
    "Access",
    "Actor",
    "allows",
    "require",
    "route_roles",
]

TOKEN_ACTOR_NAME = "api-token"


@dataclass(frozen=True)
class Actor:
    """Who made a request: ``name`` (a user's name, ``api-token``, ``local``), ``kind`` (``user``, ``token``: the
    shared API token, ``open``: a server without credentials), ``role`` (one of :data:`gallery.users.ROLES`)."""

    name: str
    kind: str
    role: str
    user_id: int | None = None


CURRENT: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("facemoe_actor", default=None)
OPEN = Actor("local", "open", "admin")
TOKEN_ACTOR = Actor(TOKEN_ACTOR_NAME, "token", "admin")


def _user_actor(account: Account) -> Actor:
    return Actor(account.name, "user", account.role, account.id)


class Access:
    """The credentials a server accepts: ``token`` (the shared API token, None: none) and the users of ``db``;
    ``sessions`` issues and checks the browsers' session cookies."""

    def __init__(self, db: Database, token: str | None, sessions: Sessions) -> None:
        self.db, self.token, self.sessions = db, token, sessions

    def bearer(self, credential: str) -> Actor | None:
        """The actor of a token (the shared one or a user's), None for none of them."""
        if self.token is not None and token_matches(credential, self.token):
            return TOKEN_ACTOR
        account = authenticate_token(self.db, credential)
        return _user_actor(account) if account is not None else None

    def password(self, name: str, password: str) -> Actor | None:
        """The user ``name`` if ``password`` is theirs (and they are enabled), else None."""
        account = authenticate_password(self.db, name, password)
        return _user_actor(account) if account is not None else None

    def issue(self, actor: Actor) -> str:
        """A session cookie value for ``actor``."""
        return self.sessions.issue("t" if actor.kind == "token" else f"u{actor.user_id}")

    def session(self, value: str) -> tuple[Actor | None, str | None]:
        """``(actor, None)`` for a valid session cookie value, else ``(None, why not)``."""
        problem, session = self.sessions.verify(value)
        if session is None:
            return None, problem
        if session.subject == "t":
            if self.token is None:
                return None, "session of an API token this server no longer has"
            return TOKEN_ACTOR, None
        account = find_user(self.db, int(session.subject[1:])) if session.subject[1:].isdigit() else None
        if account is None:
            return None, "session of a user who no longer exists"
        if account.disabled_at is not None:
            return None, "session of a disabled user"
        if account.rotated_at is not None and account.rotated_at.timestamp() >= session.issued:
            return None, "session from before the user's token was rotated"
        return _user_actor(account), None


def require(role: str):
    """A FastAPI dependency refusing a request without an actor (401) or whose actor's role is below ``role``
    (403); its ``minimum_role`` is ``role``."""
    needed = rank(role)

    def check(request: Request) -> Actor:
        actor = request.scope.get("state", {}).get("actor")
        if actor is None:
            raise HTTPException(
                401, "expected the API token (Authorization: Bearer <token>) or a session, got none"
            )
        if rank(actor.role) < needed:
            raise HTTPException(403, f"expected the role {role} or above, got {actor.name!r} as {actor.role}")
        return actor

    check.minimum_role = role  # type: ignore[attr-defined]
    return Depends(check)


def allows(role: str) -> bool:
    """Whether the actor of the request being answered has ``role`` or above (pages hide what it cannot use)."""
    actor = CURRENT.get()
    return actor is not None and rank(actor.role) >= rank(role)


VIEWER, INVESTIGATOR, ADMIN = ([require(role)] for role in ROLES)


def _roles_of(dependant) -> list[str]:
    found = []
    for dep in dependant.dependencies:
        role = getattr(dep.call, "minimum_role", None)
        found += [role] if role is not None else []
        found += _roles_of(dep)
    return found


def route_roles(app) -> dict[tuple[str, str], str | None]:
    """``{(method, path): minimum role}`` of every route of ``app`` (None: open to anyone), the highest
    :func:`require` among its dependencies and its routers'."""
    from fastapi.routing import iter_route_contexts

    table: dict[tuple[str, str], str | None] = {}
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        roles = _roles_of(dependant) if dependant is not None else []
        role = max(roles, key=rank) if roles else None
        for method in sorted(route.methods or ()):
            table[(method, route.path)] = role
    return table
