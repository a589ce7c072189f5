"""Enrollment over HTTP (investigators; removing a person: admins), through the same service as the ``enroll``,
``remove`` and ``rename`` commands (:mod:`pipeline.services.enrollment`), so the rules and the one-line refusals are
the command line's:

- ``POST /api/identities``: ``multipart/form-data`` with a ``name`` field, ``photo`` parts (one or several photos
  of the person) and optional ``watchlist`` (``true``/``false``), ``external_id``, ``notes``: 201 with each
  photo's outcome;
- ``POST /api/identities/{name}/media``: more ``photo`` parts of that person;
- ``POST /api/identities/{name}/tracks``: JSON ``{"refs": ["RUN:TRACK", ...], "force": false}``, the logged tracks'
  templates added to the person (a track that looks like someone else is refused unless ``force``, as
  ``enroll --from-track`` without ``--yes``);
- ``DELETE /api/identities/{name}/media/{media}``: one photo or track of the person (``query media``'s id);
- ``PATCH /api/identities/{name}``: JSON ``{"name": NEW_NAME}`` renames, ``{"watchlist": true|false}`` puts the
  person on the default watch list or takes them off;
- ``DELETE /api/identities/{name}``: the person, with their media and templates (admin).

Refusals: 400 with the command's text (a bad name, a photo that does not decode, no usable face in any photo), 404
for an unknown person, 409 for a taken name or a doubtful track, 413/415/422 for an upload or a body that is not one
(:func:`pipeline.web.forensic.read_form`), 404 for a media id that is not a number, 404 when the server has no
models, 503 when the detector or embedder does not load. Every request past the role check appends one entry to the
audit trail with the user (:func:`pipeline.web.audit.audited_request`: ``enroll``, ``remove``, ``identity.update``;
``ok`` or ``failed`` with the reason), every refusal above included: what a request carries is read inside its
audited block (a refusal of the role check is the app's ``request`` entry, ``denied``). Photos are read in memory
(the search's limits); their names are kept as the media's path, their SHA-256 in the trail. One enrollment runs at
a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from core.errors import UserError
from gallery.enroll import Enroller, EnrollReport
from gallery.errors import IdentityExistsError, IdentityNotFoundError
from gallery.from_tracks import DoubtfulTrackError
from gallery.store import Gallery
from pipeline.build import face_extractor
from pipeline.services.audit import Action, sha256
from pipeline.services.enrollment import (
    UPDATE_ACTION,
    enroll_photos,
    enroll_tracks,
    nothing_enrolled,
    remove_identity,
    remove_media,
    rename,
    set_watchlist,
)
from pipeline.web.access import ADMIN, INVESTIGATOR
from pipeline.web.audit import audited_request
from pipeline.web.common import ERRORS, Context, Detail, SearchUnavailable
from pipeline.web.forensic import UPLOAD, read_form
from stages.quality import QualityScorer

logger = logging.getLogger(__name__)

__all__ = ["Enrolling", "enrolling_of", "router"]

MAX_LABEL = 200  # characters of an uploaded photo's name kept as its media path
ADD_ROUTE = "POST /api/identities/NAME/media"  # how refusals name "more photos of an existing person"
MAX_REFS = 100  # tracks of one request
MAX_ID_DIGITS = 18  # a media id's digits (below 2**63)
ENROLL_ERRORS = ERRORS | {code: {"model": Detail} for code in (409, 413, 415, 503)}
TRUE, FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no", "")


@dataclass(frozen=True)
class Enrolling:
    """What the enrollment routes need: the gallery, ``enroller()`` (an :class:`Enroller` with the loaded detector
    and embedder; raises :class:`SearchUnavailable` when they do not load), the configured operating threshold
    (None: the gallery's) and the upload limit."""

    gallery: Gallery
    enroller: Callable[[], Enroller]
    threshold: float | None = None
    max_upload_bytes: int = 10 * 2**20
    lock: threading.Lock = field(default_factory=threading.Lock)


def enrolling_of(system, models) -> Enrolling:
    """The enrollment of ``serve``: ``system``'s gallery (its config's operating threshold and upload limit), the
    detector and embedder of ``models`` (:class:`pipeline.web.serve.LazyModels`, loaded at the first use)."""
    cfg = system.cfg

    def enroller() -> Enroller:
        loaded = models.get()
        extract = face_extractor(loaded.detector, QualityScorer(cfg.quality))
        enroller = Enroller(system.gallery, extract, loaded.embedder)
        enroller.add_option = ADD_ROUTE
        return enroller

    return Enrolling(system.gallery, enroller, cfg.match.threshold, cfg.gallery.serve.max_upload_bytes)


class TracksBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refs: list[str] = Field(min_length=1, max_length=MAX_REFS, description="logged tracks, RUN:TRACK each")
    force: bool = Field(False, description="add tracks that look like someone else anyway (enroll --yes)")


class IdentityChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=10_000, description="the new name")
    watchlist: bool | None = Field(None, description="on the default watch list or not")


def body_schema(model: type[BaseModel]) -> dict:
    """The OpenAPI request body of a route that reads ``model`` as JSON itself (inside its audited block)."""
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": schema}}


def _status(exc: UserError) -> int:
    if isinstance(exc, IdentityNotFoundError):
        return 404
    if isinstance(exc, (IdentityExistsError, DoubtfulTrackError)):
        return 409
    return 400


def _media_id(text: str) -> int:
    """The ``{media}`` of a path (``query media``'s id); text that is not a whole number names no medium: 404."""
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS):
        raise HTTPException(
            404, f"path.media: expected a media id (a whole number, see 'query media'), got {text[:40]!r}"
        )
    return int(text)


def _flag(fields: dict[str, str], key: str) -> bool:
    text = fields.get(key, "").strip().lower()
    if text not in TRUE + FALSE:
        raise HTTPException(400, f"{key}: expected true or false, got {text[:40]!r}")
    return text in TRUE


def _outcomes(report: EnrollReport) -> dict:
    rows = [
        {"identity": o.identity, "photo": o.path, "status": o.status, "detail": o.detail}
        for o in report.outcomes
    ]
    counts = {s: report.count(s) for s in ("enrolled", "duplicate")}
    return {"outcomes": rows, **counts, "problems": len(report.problems)}


async def _body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The JSON body of ``request`` as ``model``: 422 (as FastAPI answers) for one that is not."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise RequestValidationError(
            exc.errors(include_url=False, include_context=False, include_input=False)
        ) from None


def router(ctx: Context, enrolling: Enrolling | None) -> APIRouter:
    """The identity routes over ``enrolling`` (None: each answers 404, as a server without clips does), behind
    ``ctx.auth``. Every request that reaches a route appends one entry to the audit trail, refusals included."""
    routes = APIRouter(dependencies=ctx.auth)

    def door() -> Enrolling:
        if enrolling is None:
            raise HTTPException(404, "enrollment unavailable: this server has no gallery models")
        return enrolling

    def run(entry: Action, work: Callable[[Enrolling], dict]) -> dict:
        """Run ``work`` (one at a time), its gallery errors as 4xx, filling ``entry`` from its answer's
        ``_objects`` and ``_details``."""
        found = door()
        try:
            with found.lock:
                answer = work(found)
        except SearchUnavailable as exc:
            raise HTTPException(503, f"enrollment unavailable: {exc}") from None
        except UserError as exc:
            raise HTTPException(_status(exc), str(exc)) from None
        entry.objects = answer.pop("_objects", entry.objects)
        entry.details |= answer.pop("_details", {})
        return answer

    def photos(name: str, uploads, add: bool, fields: dict[str, str]) -> Callable[[Enrolling], dict]:
        watchlist = _flag(fields, "watchlist")  # refused before anything is done

        def work(found: Enrolling) -> dict:
            report = enroll_photos(
                found.enroller(),
                name,
                uploads,
                add=add,
                watchlist=watchlist,
                external_id=fields.get("external_id") or None,
                notes=fields.get("notes", ""),
            )
            answer = _outcomes(report)
            counts = {k: answer[k] for k in ("enrolled", "duplicate", "problems")}
            refused = nothing_enrolled(report)
            if refused is not None:
                raise refused
            return answer | {"identity": report.outcomes[0].identity, "_details": counts}

        return work

    async def upload(request: Request, entry: Action) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
        found = door()
        uploads, fields = await read_form(request, found.max_upload_bytes)
        uploads = [(label[:MAX_LABEL], data) for label, data in uploads]
        entry.details["inputs"] = [{"photo": label, "sha256": sha256(data)} for label, data in uploads]
        return uploads, fields

    @routes.post(
        "/api/identities",
        status_code=201,
        responses=ENROLL_ERRORS,
        openapi_extra=UPLOAD,
        dependencies=INVESTIGATOR,
    )
    async def api_enroll(request: Request) -> dict:
        async with audited_request(request, "enroll", [], {"variant": "upload", "add": False}) as entry:
            uploads, fields = await upload(request, entry)
            name = fields.get("name", "")
            entry.objects = [name]
            entry.details["watchlist"] = _flag(fields, "watchlist")
            return await run_in_threadpool(run, entry, photos(name, uploads, False, fields))

    @routes.post(
        "/api/identities/{name}/media",
        status_code=201,
        responses=ENROLL_ERRORS,
        openapi_extra=UPLOAD,
        dependencies=INVESTIGATOR,
    )
    async def api_add_photos(request: Request, name: str) -> dict:
        async with audited_request(request, "enroll", [name], {"variant": "upload", "add": True}) as entry:
            uploads, _ = await upload(request, entry)
            return await run_in_threadpool(run, entry, photos(name, uploads, True, {}))

    @routes.post(
        "/api/identities/{name}/tracks",
        status_code=201,
        responses=ENROLL_ERRORS,
        openapi_extra=body_schema(TracksBody),
        dependencies=INVESTIGATOR,
    )
    async def api_add_tracks(request: Request, name: str) -> dict:
        async with audited_request(
            request, "enroll", [name], {"variant": "from-track", "add": True}
        ) as entry:
            body = await _body(request, TracksBody)
            entry.details |= {"inputs": body.refs, "force": body.force}

            def work(found: Enrolling) -> dict:
                report = enroll_tracks(
                    found.enroller(), name, body.refs, threshold=found.threshold, force=body.force, add=True
                )
                answer = _outcomes(report)
                return answer | {"identity": name, "_details": {"enrolled": answer["enrolled"]}}

            return await run_in_threadpool(run, entry, work)

    @routes.delete("/api/identities/{name}/media/{media}", responses=ENROLL_ERRORS, dependencies=INVESTIGATOR)
    def api_remove_media(request: Request, name: str, media: str) -> dict:
        with audited_request(request, "remove", [name], {"media": [media[:40]], "tracks": []}) as entry:
            media_id = _media_id(media)
            entry.details["media"] = [media_id]

            def work(found: Enrolling) -> dict:
                removed = remove_media(found.gallery, name, [media_id])
                return {
                    "identity": name,
                    "removed": removed,
                    "_details": {"removed": [r["id"] for r in removed]},
                }

            return run(entry, work)

    @routes.patch(
        "/api/identities/{name}",
        responses=ENROLL_ERRORS,
        openapi_extra=body_schema(IdentityChange),
        dependencies=INVESTIGATOR,
    )
    async def api_change(request: Request, name: str) -> dict:
        async with audited_request(request, UPDATE_ACTION, [name]) as entry:
            body = await _body(request, IdentityChange)
            entry.details |= body.model_dump(exclude_none=True)
            if body.name is None and body.watchlist is None:
                raise HTTPException(
                    400, "expected 'name' (rename) or 'watchlist' (true or false), got neither"
                )

            def work(found: Enrolling) -> dict:
                who = name
                if body.name is not None:
                    who = rename(found.gallery, name, body.name)
                answer = {"identity": who, "_objects": list(dict.fromkeys([name, who]))}
                if body.watchlist is not None:
                    changed = set_watchlist(found.gallery, who, body.watchlist)
                    answer |= {"watchlist": body.watchlist, "_details": {"watchlist_changed": changed}}
                return answer

            return await run_in_threadpool(run, entry, work)

    @routes.delete("/api/identities/{name}", responses=ENROLL_ERRORS, dependencies=ADMIN)
    def api_remove_identity(request: Request, name: str) -> dict:
        with audited_request(request, "remove", [name], {"media": [], "tracks": []}) as entry:

            def work(found: Enrolling) -> dict:
                remove_identity(found.gallery, name)
                return {"identity": name, "removed": True}

            return run(entry, work)

    return routes
