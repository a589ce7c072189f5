"""pipeline/web/enrollment.py refuses before the gallery is touched (no models on the server, models that do not load,
an upload or a body that is not one, a media id that is not a number, a request that asks for nothing) and every
such refusal is one audit entry of the route's action, ``failed`` with the reason, by the investigator who asked;
nothing is enrolled. A viewer's attempt is the app's ``request`` entry, ``denied``. Real SQLite gallery, no models
needed: every refusal here comes before them."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import run_pipeline
from gallery.access_models import AuditEntry
from gallery.models import Identity
from gallery.store import Gallery
from gallery.users import add_user
from pipeline.web.app import create_app
from pipeline.web.common import SearchUnavailable
from pipeline.web.enrollment import Enrolling
from tests.conftest import ASSETS, ROOT, require

CONFIG = str(ROOT / "configs" / "test.yaml")
PHOTO = ASSETS / "images" / "friends_gallery" / "Rachel.png"
PASSWORD = "correct horse battery"
LIMIT = 4096  # max_upload_bytes of the server below: Rachel.png is larger
NO_MODELS = "enrollment unavailable: this server has no gallery models"


def _not_loading():
    raise SearchUnavailable("the detector model does not load: models/missing.onnx")


@pytest.fixture
def server(tmp_path):
    """A gallery with Ross enrolled and an investigator and a viewer: yields a function giving a client of the app
    (``models``: ``none`` no enrollment, ``broken`` models that do not load), the gallery and the auth headers."""
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    with Gallery.open(url) as gallery:
        heads = {
            role: {"Authorization": f"Bearer {add_user(gallery.db, f'{role}-ines', role, PASSWORD)[1]}"}
            for role in ("investigator", "viewer")
        }
        gallery.add_identity("Ross")

        def client(models: str) -> TestClient:
            enrolling = None if models == "none" else Enrolling(gallery, _not_loading, max_upload_bytes=LIMIT)
            return TestClient(create_app(gallery.db, None, enrolling=enrolling))

        yield client, gallery, heads


def _photo(data: bytes | None = None) -> list:
    return [("photo", ("Rachel.png", data if data is not None else require(PHOTO).read_bytes(), "image/png"))]


SMALL = b"\x89PNG not decoded before the models load"
CASES = {  # case: (models, method, path, request arguments, status, action, objects, reason)
    "no models": (
        "none",
        "post",
        "/api/identities",
        {"data": {"name": "Rachel"}, "files": _photo(SMALL)},
        404,
        "enroll",
        [],
        NO_MODELS,
    ),
    "no models, more photos": (
        "none",
        "post",
        "/api/identities/Ross/media",
        {"files": _photo(SMALL)},
        404,
        "enroll",
        ["Ross"],
        NO_MODELS,
    ),
    "no models, removing a photo": (
        "none",
        "delete",
        "/api/identities/Ross/media/3",
        {},
        404,
        "remove",
        ["Ross"],
        NO_MODELS,
    ),
    "models that do not load": (
        "broken",
        "post",
        "/api/identities",
        {"data": {"name": "Rachel"}, "files": _photo(SMALL)},
        503,
        "enroll",
        ["Rachel"],
        "enrollment unavailable: the detector model does not load",
    ),
    "not multipart": (
        "broken",
        "post",
        "/api/identities",
        {"json": {"name": "Rachel"}},
        415,
        "enroll",
        [],
        "body: expected multipart/form-data, got 'application/json'",
    ),
    "upload too large": (
        "broken",
        "post",
        "/api/identities",
        {"data": {"name": "Rachel"}, "files": _photo()},
        413,
        "enroll",
        [],
        f"upload: expected at most {LIMIT:,} bytes of photos",
    ),
    "no photo part": (
        "broken",
        "post",
        "/api/identities/Ross/media",
        {"files": [("picture", ("x.png", SMALL, "image/png"))]},
        422,
        "enroll",
        ["Ross"],
        "body.photo: expected a 'photo' part (an image file), got none",
    ),
    "bad watch-list flag": (
        "broken",
        "post",
        "/api/identities",
        {"data": {"name": "Rachel", "watchlist": "maybe"}, "files": _photo(SMALL)},
        400,
        "enroll",
        ["Rachel"],
        "watchlist: expected true or false, got 'maybe'",
    ),
    "media id not a number": (
        "broken",
        "delete",
        "/api/identities/Ross/media/abc",
        {},
        404,
        "remove",
        ["Ross"],
        "path.media: expected a media id (a whole number, see 'query media'), got 'abc'",
    ),
    "negative media id": (
        "broken",
        "delete",
        "/api/identities/Ross/media/-1",
        {},
        404,
        "remove",
        ["Ross"],
        "path.media: expected a media id",
    ),
    "tracks body not JSON": (
        "broken",
        "post",
        "/api/identities/Ross/tracks",
        {"content": b"{refs", "headers": {"Content-Type": "application/json"}},
        422,
        "enroll",
        ["Ross"],
        "Invalid JSON",
    ),
    "no tracks": (
        "broken",
        "post",
        "/api/identities/Ross/tracks",
        {"json": {"refs": []}},
        422,
        "enroll",
        ["Ross"],
        "refs: List should have at least 1 item",
    ),
    "a change of nothing": (
        "broken",
        "patch",
        "/api/identities/Ross",
        {"json": {}},
        400,
        "identity.update",
        ["Ross"],
        "expected 'name' (rename) or 'watchlist' (true or false), got neither",
    ),
}


def _entries(gallery) -> list[AuditEntry]:
    with gallery.db.session() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        session.expunge_all()
        return rows


def _identities(gallery) -> int:
    with gallery.db.session() as session:
        return session.scalar(select(func.count()).select_from(Identity))


@pytest.mark.parametrize("case", list(CASES))
def test_each_refusal_is_one_failed_entry(server, case):
    make, gallery, heads = server
    models, method, path, kwargs, status, action, objects, reason = CASES[case]
    kwargs = dict(kwargs)
    headers = heads["investigator"] | kwargs.pop("headers", {})
    before = len(_entries(gallery))
    answer = getattr(make(models), method)(path, headers=headers, **kwargs)
    assert answer.status_code == status, answer.text
    new = _entries(gallery)[before:]
    assert [(e.actor, e.actor_kind, e.action, e.objects, e.result) for e in new] == [
        ("investigator-ines", "user", action, objects, "failed")
    ]
    assert reason in new[0].details["reason"], new[0].details
    detail = answer.json()["detail"]
    shown = detail if isinstance(detail, str) else detail[0]["msg"]
    assert shown in new[0].details["reason"]  # what the answer says, as recorded
    assert _identities(gallery) == 1  # Ross only


def test_uploads_refused_keep_each_photos_sha256(server):
    """A refused upload still names what was sent: each photo's name and SHA-256 (never its bytes)."""
    make, gallery, heads = server
    answer = make("broken").post(
        "/api/identities",
        data={"name": "Rachel", "watchlist": "maybe"},
        files=_photo(SMALL),
        headers=heads["investigator"],
    )
    assert answer.status_code == 400
    [entry] = _entries(gallery)[-1:]
    assert entry.details["inputs"] == [{"photo": "Rachel.png", "sha256": hashlib.sha256(SMALL).hexdigest()}]


def test_a_viewer_is_denied_as_a_request(server):
    make, gallery, heads = server
    answer = make("broken").post(
        "/api/identities", data={"name": "Rachel"}, files=_photo(SMALL), headers=heads["viewer"]
    )
    assert answer.status_code == 403
    [entry] = _entries(gallery)[-1:]
    assert (entry.actor, entry.action, entry.result) == ("viewer-ines", "request", "denied")
    assert entry.details["path"] == "/api/identities" and entry.details["method"] == "POST"


def test_the_refusals_keep_the_chain(server):
    make, gallery, heads = server
    for case in ("no models", "media id not a number", "not multipart"):
        models, method, path, kwargs, *_ = CASES[case]
        getattr(make(models), method)(path, headers=heads["investigator"], **kwargs)
    code = run_pipeline.main(["audit", "verify", "--db", str(gallery.db.engine.url), "--config", CONFIG])
    assert code == 0
    assert [e.result for e in _entries(gallery)] == ["failed"] * 3
