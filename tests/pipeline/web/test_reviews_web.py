"""pipeline/web/reviews.py on the seeded match log (tests/gallery/helpers.py seed_log: ann's matches on even tracks,
bob's on track 3), SQLite and PostgreSQL: a review posted as JSON or by the track page's form is stored under the
actor's name, shown by the matches and tracks APIs, the timeline, the track page and the lists; the review queue
orders the open matches by score and counts them; viewers may not review; each request one audit entry."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gallery.access_models import AuditEntry, Review
from gallery.db import Database
from gallery.queries import Filters, find_tracks
from gallery.thumbnails import ThumbnailStore
from gallery.users import add_user
from pipeline.web.app import create_app
from tests.gallery.helpers import seed_log

PASSWORD = "correct horse battery"


@pytest.fixture
def web(db_url, tmp_path):
    """(client, db, {track_id: ref}, {role: auth header})."""
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db:
        seed_log(db, store)
        heads = {
            role: {"Authorization": f"Bearer {add_user(db, f'{role}-user', role, PASSWORD)[1]}"}
            for role in ("viewer", "investigator")
        }
        refs = {r["track_id"]: r["ref"] for r in find_tracks(db, Filters(page_size=100)).rows}
        yield TestClient(create_app(db, store)), db, refs, heads


def _actions(db) -> list[tuple]:
    with db.session() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.action == "review").order_by(AuditEntry.id))
        return [(e.actor, e.result, e.objects, e.details.get("verdict")) for e in rows]


def test_reviews_by_api_and_form_show_everywhere(web):
    client, db, refs, heads = web
    inv = heads["investigator"]
    before = client.get("/api/reviews/open", headers=inv).json()
    assert before["counts"] == {"match": 5, "retro": 0, "total": 5}
    scores = [r["score"] for r in before["rows"]]
    assert scores == sorted(scores, reverse=True) and before["rows"][0]["track_id"] == 6

    answer = client.post(
        f"/api/tracks/{refs[3]}/review", json={"verdict": "reject", "note": "not him"}, headers=inv
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["verdict"], body["identity"], body["reviewer"], body["offer"]) == (
        "rejected",
        "bob",
        "investigator-user",
        None,
    )
    form = client.post(
        f"/api/tracks/{refs[4]}/review",
        content="verdict=confirmed&identity=ann&note=",
        headers=inv | {"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert form.status_code == 303 and form.headers["location"] == f"/track/{refs[4]}#review"

    matches = {r["track_id"]: r for r in client.get("/api/matches", headers=inv).json()["rows"]}
    assert matches[3]["reviewed"] == "rejected" and matches[3]["review"]["note"] == "not him"
    assert matches[4]["reviewed"] == "confirmed" and matches[2]["reviewed"] is None
    tracks = {r["track_id"]: r["reviewed"] for r in client.get("/api/tracks", headers=inv).json()["rows"]}
    assert (tracks[3], tracks[4], tracks[5]) == ("rejected", "confirmed", None)
    timeline = client.get("/api/timeline", params={"name": "ann"}, headers=inv).json()["rows"]
    assert {r["track_id"]: r["reviewed"] for r in timeline}[4] == "confirmed"
    detail = client.get(f"/api/tracks/{refs[3]}", headers=inv).json()
    assert (detail["identity"], detail["reviewed"], detail["review"]["reviewer"]) == (
        "bob",
        "rejected",
        "investigator-user",
    )

    page = client.get(f"/track/{refs[3]}", headers=inv).text
    assert re.search(r'id="reviewed" class="rejected">rejected \(not bob\) by investigator-user', page), page
    assert 'id="name"' in page and 'id="confirm"' not in page  # rejected: it may be named
    page = client.get(f"/track/{refs[4]}", headers=inv).text
    assert f"--from-track {refs[4]}" in page and 'id="confirm"' in page
    assert (
        "(rejected)" in client.get("/", headers=inv).text
        and "(confirmed)" in client.get("/tracks", headers=inv).text
    )
    queue = client.get("/reviews", headers=inv).text
    assert (
        "3 matches to review: 3 logged, 0 retroactive." in queue and refs[3] not in queue.split("Recent")[0]
    )
    after = client.get("/api/reviews/open", headers=inv).json()
    assert after["counts"]["total"] == 3 and {r["track_id"] for r in after["rows"]} == {0, 2, 6}
    listed = client.get("/api/reviews", headers=inv).json()["rows"]
    assert [(r["ref"], r["verdict"]) for r in listed] == [(refs[4], "confirmed"), (refs[3], "rejected")]
    assert _actions(db) == [
        ("investigator-user", "ok", [refs[3]], "rejected"),
        ("investigator-user", "ok", [refs[4]], "confirmed"),
    ]


@pytest.mark.parametrize(
    "track,body,status,message",
    [
        (5, {"verdict": "confirmed"}, 400, "expected a match or a retroactive match on the track, got none"),
        (
            5,
            {"verdict": "named", "identity": "zed"},
            400,
            "expected an enrolled identity to name it, got 'zed'",
        ),
        (4, {"verdict": "maybe"}, 400, "expected one of confirmed, rejected, acknowledged, named"),
        (4, {"verdict": "rejected", "identity": "bob"}, 400, "expected a match to one of ann, got 'bob'"),
        (4, {"verdict": "rejected", "note": "x" * 2001}, 400, "at most 2000 characters"),
        (4, None, 400, "expected a JSON object"),
        (None, {"verdict": "rejected"}, 404, "expected a track of the match log"),
    ],
)
def test_refused_reviews_are_one_line_audited_and_write_nothing(web, track, body, status, message):
    client, db, refs, heads = web
    ref = refs[track] if track is not None else "999:1"
    answer = client.post(f"/api/tracks/{ref}/review", json=body, headers=heads["investigator"])
    assert answer.status_code == status and message in answer.json()["detail"], answer.text
    with db.session() as s:
        assert s.scalar(select(Review.id)) is None
    assert [(a, r) for a, r, *_ in _actions(db)] == [("investigator-user", "failed")]


def test_viewers_may_not_review(web):
    client, db, refs, heads = web
    viewer = heads["viewer"]
    assert (
        client.post(f"/api/tracks/{refs[3]}/review", json={"verdict": "rejected"}, headers=viewer).status_code
        == 403
    )
    assert client.get("/reviews", headers=viewer).status_code == 403
    page = client.get(f"/track/{refs[3]}", headers=viewer).text
    assert 'id="reject"' not in page and "/reviews" not in page
    with db.session() as s:
        assert s.scalar(select(Review.id)) is None
