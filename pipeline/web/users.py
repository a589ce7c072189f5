"""The users, for an admin: ``GET /api/users`` (name, role, when made, rotated and disabled, whether a password is
set; never a token nor a hash). Users are added, disabled and rotated with ``run_pipeline.py users``."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gallery.users import list_users
from pipeline.web.access import ADMIN
from pipeline.web.common import ERRORS, Context

__all__ = ["router"]


class UserRow(BaseModel):
    name: str
    role: str = Field(description="viewer, investigator or admin")
    created_at: str
    rotated_at: str | None = Field(description="when the token was last rotated; null: never")
    disabled_at: str | None = Field(description="when the user was disabled; null: enabled")
    password: bool = Field(description="whether the user can log in with a password")


class UserList(BaseModel):
    rows: list[UserRow]


def router(ctx: Context) -> APIRouter:
    """``/api/users``, behind ``ctx.auth`` and the admin role."""
    routes = APIRouter(dependencies=ctx.auth + ADMIN)

    @routes.get("/api/users", response_model=UserList, responses=ERRORS | {403: ERRORS[401]})
    def api_users() -> dict:
        return {"rows": [account.as_dict() for account in list_users(ctx.db)]}

    return routes
