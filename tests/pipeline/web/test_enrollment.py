"""pipeline/web/enrollment.py over ``serve``'s app (configs/test.yaml: the real SCRFD detector and MobileFaceNet
embedder): an investigator enrolls a person with two photos, the gallery's search names them from a third photo,
one photo is removed, an admin removes the person; each step is in the audit trail with the user who did it. The
API refuses with the command line's texts (a bad name, a photo with no face, a taken name), writing nothing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import run_pipeline
from gallery.access_models import AuditEntry
from gallery.db import Database
from gallery.media import find_media
from gallery.models import Identity, Media
from gallery.queries import Filters
from gallery.users import add_user
from pipeline.build import build
from pipeline.config import load_config
from pipeline.services.search import query_template
from pipeline.web.enrollment import ADD_ROUTE
from pipeline.web.serve import LazyModels, serve_app
from tests.conftest import ASSETS, ROOT, require

CONFIG = ROOT / "configs" / "test.yaml"
FACES = ASSETS / "images" / "deepface"
STILLS = ASSETS / "images" / "friends_gallery"
PERSON = "Angelina Jolie"
PHOTOS = ("img1.jpg", "img2.jpg")  # two photos of her (assets' identities.json)
PROBE = "img10.jpg"  # a third one
PASSWORD = "correct horse battery"


@pytest.fixture
def served(tmp_path):
    """A gallery database with an investigator and an admin, served with its models: yields (client, system,
    models, {role: auth header})."""
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    with Database(url) as db:
        tokens = {role: add_user(db, f"{role}-ines", role, PASSWORD)[1] for role in ("investigator", "admin")}
    cfg = load_config(CONFIG)
    with (
        build(cfg, db_url=url, detector=False, embedder=False, create=False) as system,
        LazyModels(cfg) as models,
    ):
        client = TestClient(serve_app(system, models))
        client.url = url
        yield client, system, models, {r: {"Authorization": f"Bearer {t}"} for r, t in tokens.items()}


def _photos(*names: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("photo", (n, require(FACES / n).read_bytes(), "image/jpeg")) for n in names]


def _best(system, models, photo: str) -> list[tuple[str, float]]:
    """The gallery's best candidate (name, score) for ``photo``, through the FAISS index: [] when it is empty."""
    loaded = models.get()
    template = query_template(loaded, [(photo, require(FACES / photo).read_bytes())], None)
    found = system.gallery.search(template[None], 1, loaded.embedder.embedder_id)[0]
    return [(name, score) for _, name, score in found]


def _trail(db: Database) -> list[tuple[str, str, str, list, str]]:
    """(actor, kind, action, objects, result) of every entry, oldest first."""
    with db.session() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(e.actor, e.actor_kind, e.action, e.objects, e.result) for e in rows]


@pytest.mark.slow
def test_enroll_search_remove_a_photo_then_the_person_each_step_audited(served):
    client, system, models, auth = served
    db = system.gallery.db
    response = client.post(
        "/api/identities",
        data={"name": PERSON, "watchlist": "true"},
        files=_photos(*PHOTOS),
        headers=auth["investigator"],
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["identity"], body["enrolled"], body["problems"]) == (PERSON, 2, 0)
    assert [o["photo"] for o in body["outcomes"]] == list(PHOTOS)
    listed = client.get("/api/identities", headers=auth["investigator"]).json()["rows"]
    assert [(r["name"], r["media"], r["watchlist"]) for r in listed] == [(PERSON, 2, True)]
    # the gallery's search (FAISS, rebuilt from SQL) names her from a photo it was not given
    ((name, score),) = _best(system, models, PROBE)
    assert name == PERSON and score > 0.3

    media = find_media(db, Filters(identity=PERSON)).rows
    assert [m["path"] for m in media] == list(PHOTOS)
    template_two = system.gallery.template(PERSON, models.get().embedder.embedder_id)
    gone = client.delete(f"/api/identities/{PERSON}/media/{media[0]['id']}", headers=auth["investigator"])
    assert gone.status_code == 200 and [r["id"] for r in gone.json()["removed"]] == [media[0]["id"]]
    assert [m["path"] for m in find_media(db, Filters(identity=PERSON)).rows] == [PHOTOS[1]]
    template_one = system.gallery.template(PERSON, models.get().embedder.embedder_id)
    assert not np.allclose(template_one, template_two)  # re-fused from the photo left
    assert [n for n, _ in _best(system, models, PROBE)] == [PERSON]

    # the last photo cannot go (the person would have none), nor can an investigator remove the person
    last = client.delete(f"/api/identities/{PERSON}/media/{media[1]['id']}", headers=auth["investigator"])
    assert last.status_code == 400 and "would leave it none" in last.json()["detail"]
    denied = client.delete(f"/api/identities/{PERSON}", headers=auth["investigator"])
    assert denied.status_code == 403
    removed = client.delete(f"/api/identities/{PERSON}", headers=auth["admin"])
    assert removed.status_code == 200
    assert _best(system, models, PROBE) == []  # the index follows SQL
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Media)) == 0

    steps = [e for e in _trail(db) if e[2] in ("enroll", "remove", "request")]
    investigator, admin = ("investigator-ines", "user"), ("admin-ines", "user")
    assert steps == [
        (*investigator, "enroll", [PERSON], "ok"),
        (*investigator, "remove", [PERSON], "ok"),
        (*investigator, "remove", [PERSON], "failed"),
        (*investigator, "request", [], "denied"),
        (*admin, "remove", [PERSON], "ok"),
    ]
    assert run_pipeline.main(["audit", "verify", "--db", client.url, "--config", str(CONFIG)]) == 0


@pytest.mark.slow
def test_rename_and_watchlist_keep_the_person_searchable(served):
    client, system, models, auth = served
    db = system.gallery.db
    created = client.post(
        "/api/identities", data={"name": PERSON}, files=_photos(PHOTOS[0]), headers=auth["admin"]
    )
    assert created.status_code == 201
    more = client.post(f"/api/identities/{PERSON}/media", files=_photos(PHOTOS[1]), headers=auth["admin"])
    assert more.status_code == 201 and more.json()["enrolled"] == 1
    changed = client.patch(
        f"/api/identities/{PERSON}", json={"name": "AJ", "watchlist": True}, headers=auth["admin"]
    )
    assert changed.status_code == 200 and changed.json() == {"identity": "AJ", "watchlist": True}
    assert [n for n, _ in _best(system, models, PROBE)] == ["AJ"]  # the index's names follow the rename
    with db.session() as session:
        assert session.scalar(select(Identity.watchlist).where(Identity.name == "AJ")) is True
    off = client.patch("/api/identities/AJ", json={"watchlist": False}, headers=auth["investigator"])
    assert off.status_code == 200 and off.json()["watchlist"] is False
    for body, status in (({}, 400), ({"colour": "red"}, 422), ({"name": "a\nb"}, 400), ({"name": "AJ"}, 200)):
        assert client.patch("/api/identities/AJ", json=body, headers=auth["admin"]).status_code == status
    assert (
        client.patch("/api/identities/nobody", json={"watchlist": True}, headers=auth["admin"]).status_code
        == 404
    )
    actions = [(e[2], e[3], e[4]) for e in _trail(db) if e[2] == "identity.update"]
    assert actions[:2] == [("identity.update", [PERSON, "AJ"], "ok"), ("identity.update", ["AJ"], "ok")]
    assert [a[2] for a in actions[2:]] == ["failed", "failed", "failed", "ok", "failed"]


def _counts(url: str) -> dict:
    with Database(url) as db, db.session() as session:
        return {
            "identities": session.scalar(select(func.count()).select_from(Identity)),
            "media": session.scalar(select(func.count()).select_from(Media)),
        }


def _cli_error(capsys, url: str, *argv: str) -> str:
    code = run_pipeline.main(["enroll", "--db", url, "--config", str(CONFIG), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ")
    return err[-1].removeprefix("error: ")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["bad name", "no face", "taken name"])
def test_refusals_are_the_commands(served, tmp_path, capsys, case):
    client, system, _, auth = served
    url = client.url
    rachel = require(STILLS / "Rachel.png")
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((240, 320, 3), 127, np.uint8))
    if case == "taken name":
        assert (
            run_pipeline.main(
                ["enroll", "--db", url, "--config", str(CONFIG), "--name", "Rachel", str(rachel)]
            )
            == 0
        )
        capsys.readouterr()
    name, photo = {
        "bad name": ("Ra\x1bchel", rachel),
        "no face": ("Wall", wall),
        "taken name": ("Rachel", rachel),
    }[case]
    before = _counts(url)
    cli = _cli_error(capsys, url, "--name", name, str(photo))
    # the upload named as the command line names the file: the same text
    files = [("photo", (str(photo), photo.read_bytes(), "image/png"))]
    response = client.post("/api/identities", data={"name": name}, files=files, headers=auth["investigator"])
    assert response.status_code == (409 if case == "taken name" else 400)
    assert response.json()["detail"] == cli.replace("--add", ADD_ROUTE)
    assert _counts(url) == before
    entry = _trail(system.gallery.db)[-1]
    assert entry[:3] == ("investigator-ines", "user", "enroll") and entry[4] == "failed"
