"""The gallery's identities: ``GET /api/identities`` (the filters of ``query identities``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from gallery.queries import Filters, find_identities
from pipeline.web.common import ERRORS, Context
from pipeline.web.matches import filters
from pipeline.web.models import IdentityPage

__all__ = ["router"]


def router(ctx: Context) -> APIRouter:
    """``/api/identities``, behind ``ctx.auth``."""
    routes = APIRouter(dependencies=ctx.auth)

    @routes.get("/api/identities", response_model=IdentityPage, responses=ERRORS)
    def api_identities(f: Filters = Depends(filters)) -> dict:
        return find_identities(ctx.db, f).as_dict()

    return routes
