"""pipeline/web/audit.py: what the web app appends to the audit trail, on a seeded SQLite match log with one user
per role. Logins, failed logins (the client and method, never the name or password typed), logouts; searches by
photo (each photo's SHA-256, the filters, the hits; refused ones with their reason); clips (from their start only)
and evidence exports; every refusal once, with the credentials offered but never their value; the contract of
``record``/``audited_request`` for routes that act; the admin's /audit page and /api/audit; the chain verifies."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from core.errors import UserError
from gallery.access_models import AuditEntry
from gallery.audit import verify
from gallery.db import Database
from gallery.thumbnails import ThumbnailStore
from gallery.track_search import TrackHit
from gallery.users import ROLES, add_user
from pipeline.web.app import create_app
from pipeline.web.audit import audited_request, record
from pipeline.web.common import Evidence, Forensic
from tests.gallery.helpers import seed_log

PASSWORD = "correct horse battery"
TOKEN = "audit-web-shared-token"
RED, BLUE = b"\x89PNG red photo bytes", b"\x89PNG blue photo bytes"


def _hits(photos, **options):
    if any(data == b"not an image" for _, data in photos):
        raise UserError("photo: expected an image with a face, got none")
    now = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
    return [
        TrackHit(0.9 - t / 10, "gate", "camera", 1, t, 0.0, 1.0, now, "match", "ann", None)
        for t in range(min(options["top"], 2))
    ]


def _clip(_ref: str):
    raise UserError("no source file in this test")


@pytest.fixture
def site(tmp_path):
    """An app over a seeded log with one user per role: yields (client, db, {role: token})."""
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        seed_log(db, store)
        tokens = {role: add_user(db, f"{role}-user", role, PASSWORD)[1] for role in ROLES}
        app = create_app(
            db,
            store,
            token=TOKEN,
            forensic=Forensic(search=_hits),
            evidence=Evidence(clip=_clip, export=_clip),
        )
        yield TestClient(app), db, tokens


def _entries(db: Database, after: int = 0) -> list[AuditEntry]:
    with db.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id)))


def _last(db: Database) -> int:
    rows = _entries(db)
    return rows[-1].id if rows else 0


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _whole_trail(db: Database) -> str:
    with db.engine.connect() as conn:
        return "\n".join(str(tuple(r)) for r in conn.execute(text("SELECT * FROM audit")))


def test_logins_failed_logins_and_logouts(site):
    client, db, tokens = site
    typed = "my-secret-typed-in-the-name-field"
    attempts = [
        ({"name": typed, "password": PASSWORD}, "password"),
        ({"name": "viewer-user", "password": typed}, "password"),
        ({"token": typed}, "token"),
        ({"name": "viewer-user"}, "none"),
    ]
    for fields, _ in attempts:
        assert client.post("/login", data=fields, follow_redirects=False).status_code == 401
    ok = client.post("/login", data={"name": "viewer-user", "password": PASSWORD}, follow_redirects=False)
    assert ok.status_code == 303
    client.post("/logout", follow_redirects=False)
    client.post("/logout", follow_redirects=False)  # no session any more: anonymous
    rows = _entries(db)
    assert [(r.action, r.result, r.actor) for r in rows] == [
        *[("login.failed", "failed", "anonymous")] * 4,
        ("login", "ok", "viewer-user"),
        ("logout", "ok", "viewer-user"),
        ("logout", "ok", "anonymous"),
    ]
    assert [r.details["method"] for r in rows[:4]] == [m for _, m in attempts]
    assert all(r.details["client"] == "testclient" and r.details["reason"] for r in rows[:4])
    assert rows[4].details == {"method": "password", "role": "viewer", "client": "testclient"}
    trail = _whole_trail(db)
    assert typed not in trail and PASSWORD not in trail and all(t not in trail for t in tokens.values())


def test_rate_limited_and_malformed_logins_are_failed_logins(site):
    client, db, _ = site
    client.post("/login", content=b"name=a&password=b", headers={"Content-Type": "text/plain"})
    statuses = [client.post("/login", data={"token": "x"}).status_code for _ in range(6)]
    assert 429 in statuses
    reasons = [r.details["reason"] for r in _entries(db)]
    assert reasons[0] == "not a form" and "too many attempts" in reasons and len(reasons) == 7


def test_search_by_photo_records_each_photos_sha256_the_filters_and_the_hits(site):
    client, db, tokens = site
    photos = [("photo", ("red.png", RED, "image/png")), ("photo", ("blue.png", BLUE, "image/png"))]
    answer = client.post(
        "/api/search?top=5&min_score=0.3&source=gate", files=photos, headers=_bearer(tokens["investigator"])
    )
    assert answer.status_code == 200 and len(answer.json()["rows"]) == 2
    bad = client.post(
        "/api/search", files={"photo": ("x.png", b"not an image")}, headers=_bearer(tokens["investigator"])
    )
    assert bad.status_code == 400
    page = client.post(
        "/search", files={"photo": ("red.png", RED)}, data={"top": "1"}, headers=_bearer(tokens["admin"])
    )
    assert page.status_code == 200
    empty = client.post("/api/search", headers=_bearer(tokens["investigator"]))  # no photo: refused, recorded
    assert empty.status_code == 415
    rows = _entries(db)
    assert [(r.action, r.result, r.actor) for r in rows] == [
        ("search", "ok", "investigator-user"),
        ("search", "failed", "investigator-user"),
        ("search", "ok", "admin-user"),
        ("search", "failed", "investigator-user"),
    ]
    first = rows[0]
    assert first.objects == [
        {"photo": "red.png", "sha256": hashlib.sha256(RED).hexdigest()},
        {"photo": "blue.png", "sha256": hashlib.sha256(BLUE).hexdigest()},
    ]
    assert first.details["filters"] | {} == {
        "face": None,
        "top": 5,
        "min_score": 0.3,
        "source": "gate",
        "since": None,
        "until": None,
    }
    assert first.details["hits"] == ["1:0", "1:1"] and first.details["hit_count"] == 2
    assert "with a face" in rows[1].details["reason"] and rows[1].objects[0]["photo"] == "x.png"
    assert rows[2].details["filters"]["top"] == 1 and rows[2].details["hit_count"] == 1
    assert "multipart/form-data" in rows[3].details["reason"] and rows[3].objects == []
    assert verify(db).ok


def test_clips_from_their_start_and_exports_are_recorded(site):
    client, db, tokens = site
    ref, who = "1:0", _bearer(tokens["investigator"])
    for headers in ({}, {"Range": "bytes=0-"}, {"Range": "bytes=1000-2000"}):
        assert client.get(f"/api/tracks/{ref}/clip", headers=who | headers).status_code == 409
    assert client.post(f"/api/tracks/{ref}/export", headers=who).status_code == 409
    assert client.post("/api/tracks/99:99/export", headers=who).status_code == 404
    rows = _entries(db)
    assert [(r.action, r.objects, r.details["kind"], r.result) for r in rows] == [
        ("export", [ref], "clip", "failed"),
        ("export", [ref], "clip", "failed"),
        ("export", [ref], "evidence", "failed"),
        ("export", ["99:99"], "evidence", "failed"),
    ]
    assert "no source file" in rows[0].details["reason"]


def test_every_refusal_is_recorded_once_without_the_credentials_value(site):
    client, db, tokens = site
    forged = "forged.token-value-never-kept"
    assert client.get("/api/matches", headers=_bearer(forged)).status_code == 401
    assert client.get("/api/matches", cookies={"facemoe_session": forged}).status_code == 401
    assert client.get("/api/matches").status_code == 401
    assert client.get("/api/users", headers=_bearer(tokens["viewer"])).status_code == 403
    assert client.get("/api/no-such-route", headers=_bearer(tokens["viewer"])).status_code == 404
    rows = _entries(db)
    assert [(r.action, r.result, r.actor, r.actor_kind, r.details["credentials"]) for r in rows] == [
        ("request", "denied", "anonymous", "anonymous", "bearer"),
        ("request", "denied", "anonymous", "anonymous", "session"),
        ("request", "denied", "anonymous", "anonymous", "none"),
        ("request", "denied", "viewer-user", "user", "bearer"),
    ]
    assert rows[3].details | {} == {
        "method": "GET",
        "path": "/api/users",
        "status": 403,
        "credentials": "bearer",
        "client": "testclient",
    }
    assert forged not in _whole_trail(db)


def test_record_and_audited_request_for_routes_that_act(site):
    """The helpers other routes call: ok with what the block filled in, denied (once) for 401/403, failed with
    the reason for any other error; sync and async."""
    client, db, tokens = site
    app = client.app

    @app.post("/test/act/{how}")
    def act(request: Request, how: str) -> dict:
        with audited_request(request, "review", ["1:0"], {"verdict": "confirm"}) as action:
            action.details["note"] = "filled in"
            if how == "forbidden":
                raise HTTPException(403, "expected a reviewer, got another")
            if how == "broken":
                raise ValueError("the track moved\nsecond line")
        record(request, "review.extra", ["1:0"])
        return {}

    @app.post("/test/async")
    async def act_async(request: Request) -> dict:
        async with audited_request(request, "enroll", ["ann"]) as action:
            action.objects.append("bob")
            raise HTTPException(409, "taken")

    who = _bearer(tokens["investigator"])
    assert client.post("/test/act/fine", headers=who).status_code == 200
    assert client.post("/test/act/forbidden", headers=who).status_code == 403
    with pytest.raises(ValueError):
        client.post("/test/act/broken", headers=who)
    assert client.post("/test/async", headers=who).status_code == 409
    got = [(r.action, r.result, r.objects, r.details.get("reason")) for r in _entries(db)]
    assert got == [
        ("review", "ok", ["1:0"], None),
        ("review.extra", "ok", ["1:0"], None),
        ("review", "denied", ["1:0"], "expected a reviewer, got another"),
        ("review", "failed", ["1:0"], "the track moved"),
        ("enroll", "failed", ["ann", "bob"], "taken"),
    ]
    assert _entries(db)[0].details == {"verdict": "confirm", "note": "filled in", "client": "testclient"}
    assert {r.actor for r in _entries(db)} == {"investigator-user"}


def test_the_audit_page_and_api_are_the_admins(site):
    client, db, tokens = site
    client.get("/api/users", headers=_bearer(tokens["viewer"]))  # a refusal to find
    assert client.get("/audit", headers=_bearer(tokens["investigator"])).status_code == 403
    before = _last(db)
    page = client.get("/audit?action=request", headers=_bearer(tokens["admin"]))
    assert page.status_code == 200 and 'href="/audit"' in page.text
    assert (
        page.text.count("<tr><td>") == 2 and "viewer-user" in page.text and "investigator-user" in page.text
    )
    doc = client.get("/api/audit?user=viewer-user", headers=_bearer(tokens["admin"])).json()
    assert [(r["action"], r["result"], r["details"]["path"]) for r in doc["rows"]] == [
        ("request", "denied", "/api/users")
    ]
    bad = client.get("/audit?since=yesterday", headers=_bearer(tokens["admin"]))
    assert bad.status_code == 400 and 'id="error"' in bad.text
    assert client.get("/api/audit?since=2026-03-01T10:00:00", headers=_bearer(TOKEN)).status_code == 400
    assert _last(db) == before  # reading the trail is not itself recorded
    assert 'href="/audit"' not in client.get("/", headers=_bearer(tokens["investigator"])).text
    assert verify(db).ok
