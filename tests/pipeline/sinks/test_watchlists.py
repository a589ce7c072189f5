"""Watch lists with their own threshold and cameras (gallery/watchlists.py, the ``watchlist`` command) deciding the
live alerts (pipeline/sinks/alerts.py): a stricter high-risk list alerts only at its threshold, a list limited to one
camera never alerts from another, the default list is the identities' watch-list flag; refusals are one line, exit
2, nothing changed; every change is in the audit trail."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from sqlalchemy import select

import run_pipeline
from core.types import Candidate, MatchResult, TrackTemplate
from gallery.access_models import AuditEntry
from gallery.store import Gallery
from gallery.watchlists import list_members, watch_rules
from pipeline.live.config import AlertConfig
from pipeline.sinks.alerts import watchlist_alerts
from tests.conftest import ROOT

CONFIG = str(ROOT / "configs" / "test.yaml")
OPERATING = 0.30  # the threshold in force of the decisions below


@pytest.fixture
def gallery(tmp_path):
    """A SQLite gallery with three people (no media: lists need none)."""
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    with Gallery.open(url) as g:
        for name in ("Vera", "Hank", "Lou"):
            g.add_identity(name, watchlist=name == "Lou")
        g.url = url
        yield g


def _cli(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    code = run_pipeline.main(["watchlist", *argv, "--db", url, "--config", CONFIG])
    out, err = capsys.readouterr()
    return code, out, err


def _match(name: str, score: float, camera: str, track_id: int) -> tuple[TrackTemplate, MatchResult]:
    template = TrackTemplate(camera, track_id, np.ones(4, np.float32) / 2, 1.0, 3, None, 1.0, 2.5, 10)
    return template, MatchResult(camera, track_id, (Candidate(7, name, score),), "match", OPERATING)


def _alerts(gallery, caplog, cases) -> list[tuple[str, str, float, list]]:
    """The alerts raised for ``cases`` (name, score, camera): (identity, camera, score, lists) each."""
    caplog.clear()
    sink = watchlist_alerts(AlertConfig(), gallery)
    sent: list[dict] = []
    sink.deliver = sent.append
    with caplog.at_level(logging.WARNING, logger="pipeline.sinks.alerts"):
        for i, (name, score, camera) in enumerate(cases):
            sink.on_track(*_match(name, score, camera, i))
    sink.close()
    assert sink.raised == len(sent) == sum("ALERT watchlist match" in r.message for r in caplog.records)
    return [(a["identity"], a["camera"], a["score"], a["watchlists"]) for a in sent]


def test_a_stricter_list_alerts_only_at_its_threshold(gallery, capsys, caplog):
    url = gallery.url
    assert _cli(capsys, url, "add", "high-risk", "--threshold", "0.45")[0] == 0
    assert _cli(capsys, url, "join", "high-risk", "Vera")[0] == 0
    scores = [0.31, 0.44, 0.45, 0.62]  # all matches at the operating threshold 0.30
    alerts = _alerts(gallery, caplog, [("Vera", s, "gate") for s in scores])
    assert alerts == [("Vera", "gate", 0.45, ["high-risk"]), ("Vera", "gate", 0.62, ["high-risk"])]
    # Hank is on no list: no alert at any score; Lou (flagged) is on the default list: the threshold in force
    assert _alerts(gallery, caplog, [("Hank", 0.9, "gate"), ("Lou", 0.31, "gate")]) == [
        ("Lou", "gate", 0.31, ["default"])
    ]


def test_a_list_limited_to_one_camera_does_not_alert_from_another(gallery, capsys, caplog):
    url = gallery.url
    assert _cli(capsys, url, "add", "lobby-only", "--camera", "lobby")[0] == 0
    assert _cli(capsys, url, "join", "lobby-only", "Hank")[0] == 0
    cases = [("Hank", 0.7, "lobby"), ("Hank", 0.7, "gate"), ("Hank", 0.7, "lobby2")]
    assert _alerts(gallery, caplog, cases) == [("Hank", "lobby", 0.7, ["lobby-only"])]
    # on a second list for every camera, he alerts everywhere, each alert naming the lists that applied
    assert _cli(capsys, url, "add", "everywhere", "--threshold", "0.5")[0] == 0
    assert _cli(capsys, url, "join", "everywhere", "Hank")[0] == 0
    assert _alerts(gallery, caplog, cases[:2]) == [
        ("Hank", "lobby", 0.7, ["lobby-only", "everywhere"]),
        ("Hank", "gate", 0.7, ["everywhere"]),
    ]


def test_the_default_list_is_the_flag_and_takes_a_threshold(gallery, capsys, caplog):
    url = gallery.url
    assert _cli(capsys, url, "join", "default", "Vera")[0] == 0
    assert list_members(gallery.db, "default") == ["Lou", "Vera"]
    assert {i.name for i in gallery.identities() if i.watchlist} == {"Lou", "Vera"}
    assert _cli(capsys, url, "add", "default", "--threshold", "0.5", "--camera", "gate")[0] == 0
    cases = [("Vera", 0.4, "gate"), ("Vera", 0.55, "gate"), ("Lou", 0.55, "yard")]
    assert _alerts(gallery, caplog, cases) == [("Vera", "gate", 0.55, ["default"])]
    assert _cli(capsys, url, "leave", "default", "Vera", "Lou")[0] == 0
    assert watch_rules(gallery.db) == {}
    assert set(watch_rules(gallery.db, ["Hank"])) == {"Hank"}  # live.alerts.watchlist: the default list too
    code, out, _ = _cli(capsys, url, "list", "--format", "json")
    rows = json.loads(out)["rows"]
    assert code == 0 and rows == [{"name": "default", "threshold": 0.5, "cameras": ["gate"], "members": 0}]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["add", "x", "--threshold", "1.5"], "expected a cosine score in [-1, 1], got 1.5"),
        (["add", "x", "--threshold", "nan"], "expected a cosine score in [-1, 1]"),
        (["add", "bad\nname"], "watch list name: expected printable text"),
        (["add", "x", "--camera", "a\x1bb"], "camera name: expected printable text"),
        (["add", "taken"], "watch list 'taken' already exists"),
        (["join", "nowhere", "Vera"], "watch list 'nowhere': expected an existing list"),
        (["join", "taken", "Vera", "Nobody"], "identity 'Nobody': not in the gallery"),
        (["members", "nowhere"], "watch list 'nowhere': expected an existing list"),
        (["remove", "nowhere"], "watch list 'nowhere': expected an existing list"),
    ],
)
def test_refusals_are_one_line_and_change_nothing(gallery, capsys, argv, message):
    url = gallery.url
    assert _cli(capsys, url, "add", "taken")[0] == 0
    before = _cli(capsys, url, "list", "--format", "json")[1], list_members(gallery.db, "taken")
    code, out, err = _cli(capsys, url, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert (_cli(capsys, url, "list", "--format", "json")[1], list_members(gallery.db, "taken")) == before


def test_every_change_is_audited(gallery, capsys):
    url = gallery.url
    for argv in (["add", "vip", "--camera", "gate"], ["join", "vip", "Vera"], ["leave", "vip", "Vera"]):
        assert _cli(capsys, url, *argv)[0] == 0
    assert _cli(capsys, url, "join", "vip", "Nobody")[0] == 2
    assert _cli(capsys, url, "remove", "vip")[0] == 0
    with gallery.db.session() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        trail = [(e.action, e.objects, e.result, e.actor_kind) for e in rows]
    assert trail == [
        ("watchlist.add", ["vip"], "ok", "os"),
        ("watchlist.join", ["vip", "Vera"], "ok", "os"),
        ("watchlist.leave", ["vip", "Vera"], "ok", "os"),
        ("watchlist.join", ["vip", "Nobody"], "failed", "os"),
        ("watchlist.remove", ["vip"], "ok", "os"),
    ]
    assert _cli(capsys, url, "members", "vip")[0] == 2
