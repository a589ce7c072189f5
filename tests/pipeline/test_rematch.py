"""Retroactive matching through the real command line: the friends clip processed with an empty gallery
(configs/test.yaml), Rachel enrolled afterwards with ``--rematch`` (SQLite and PostgreSQL), enrollment from every
logged track by its reference (media that know their track), a track matched to someone else refused without
``--yes``, rematches undone (the decisions exactly as before), timelines, bad input, retroactive watchlist alerts."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select

import run_pipeline
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.models import Identity, Media, Rematch, RetroMatch, Track
from gallery.queries import Filters, find_tracks
from gallery.refs import parse_track_ref, track_ref
from gallery.store import Gallery
from tests.conftest import ASSETS, ROOT, require
from tests.gallery.helpers import copy_sqlite, logged_tracks, media, unit
from tests.live.test_alerts import Receiver

CONFIG = str(ROOT / "configs" / "test.yaml")
CLIP = ASSETS / "videos" / "friends_in_video.mp4"
STILLS = ASSETS / "images" / "friends_gallery"


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = run_pipeline.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _process(url: str) -> None:
    argv = ["process", str(require(CLIP)), "--db", url, "--config", CONFIG, "--no-progress"]
    assert run_pipeline.main(argv) == 0


def _json(capsys, *argv: str) -> list[dict]:
    code, out, err = _main(capsys, *argv, "--format", "json")
    assert code == 0, err
    return json.loads(out)["rows"]


@pytest.fixture(scope="module")
def empty_log(tmp_path_factory):
    """The clip processed once with an empty gallery: every track logged unknown."""
    folder = tmp_path_factory.mktemp("rematch")
    url = f"sqlite:///{folder / 'empty.db'}"
    _process(url)
    return url, folder


@pytest.fixture(scope="module")
def labels(empty_log):
    """Who each track is by the same open-set rule with all six people enrolled: {track id: name}."""
    url, folder = empty_log
    six = copy_sqlite(url, folder, "six")
    argv = ["enroll", "--db", six, "--config", CONFIG, "--dir", str(require(STILLS)), "--rematch"]
    assert run_pipeline.main(argv) == 0
    with Gallery.open(six) as g:
        rows = find_tracks(g.db, Filters(page_size=1000)).rows
    return {r["track_id"]: r["identity"] for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_rachel_enrolled_afterwards_gets_her_earlier_tracks(
    backend, empty_log, labels, request, tmp_path, capsys
):
    if backend == "sqlite":
        url = copy_sqlite(empty_log[0], tmp_path, "rachel")
    else:
        url = request.getfixturevalue("pg_cluster").new_database()
        _process(url)
    before = logged_tracks(url)
    assert before and all(decision == "unknown" for *_, decision, _, _ in before)
    rachel = str(require(STILLS) / "Rachel.png")
    code, out, err = _main(
        capsys, "enroll", "--db", url, "--config", CONFIG, "--name", "Rachel", rachel, "--rematch"
    )
    expected = {track for track, name in labels.items() if name == "Rachel"}
    assert code == 0 and f"{len(expected)} new retroactive matches" in err, err
    assert len(expected) >= 2 and out.count("Rachel") >= 1 + len(expected)
    timeline = _json(capsys, "query", "timeline", "Rachel", "--db", url)
    assert {r["track_id"] for r in timeline} == expected  # hers, and nobody else's
    assert all(r["retroactive"] and r["kind"] == "file" and r["score"] >= 0.3 for r in timeline)
    assert [r["logged_at"] for r in timeline] == sorted(r["logged_at"] for r in timeline)
    assert logged_tracks(url) == before  # what was decided then stays as it was
    tracks = {r["track_id"]: r for r in _json(capsys, "query", "tracks", "--db", url, "--page-size", "1000")}
    for track in expected:
        assert (tracks[track]["identity"], tracks[track]["retroactive"]) == ("Rachel", True)
        assert tracks[track]["logged_decision"] == "unknown"
    matches = _json(capsys, "query", "matches", "--db", url, "--identity", "Rachel")
    assert len(matches) == len(expected) and all(m["retroactive"] and m["rematch_id"] for m in matches)
    hits = _json(capsys, "search", rachel, "--db", url, "--config", CONFIG, "--top", "3")
    assert (hits[0]["track_id"], hits[0]["identity"], hits[0]["retroactive"]) in {
        (t, "Rachel", True) for t in expected
    }  # search shows the current decision
    code, out, err = _main(capsys, "rematch", "--db", url, "--config", CONFIG, "--format", "json")
    assert code == 0 and json.loads(out)["rows"] == [] and "0 new retroactive matches" in err
    with Gallery.open(url) as g, g.db.session() as s:
        assert s.scalar(select(func.count()).select_from(RetroMatch)) == len(expected)
        assert [(r.cause, r.identities) for r in s.scalars(select(Rematch))] == [("enroll", ["Rachel"])]


@pytest.mark.slow
def test_enroll_from_a_track_names_the_others(empty_log, labels, tmp_path, capsys):
    url = copy_sqlite(empty_log[0], tmp_path, "from_track")
    rachel = str(require(STILLS) / "Rachel.png")
    best = _json(capsys, "search", rachel, "--db", url, "--config", CONFIG, "--top", "1")[0]
    ref = best.get("ref") or track_ref(best["run_id"], best["track_id"])
    code, out, err = _main(
        capsys, "enroll", "--db", url, "--config", CONFIG, "--name", "R", "--from-track", ref, "--rematch"
    )
    assert code == 0 and f"track {ref} (" in out, err
    named = {r["track_id"] for r in _json(capsys, "query", "timeline", "R", "--db", url)}
    assert best["track_id"] in named and named == {t for t, n in labels.items() if n == "Rachel"}
    code, _, err = _main(
        capsys, "enroll", "--db", url, "--config", CONFIG, "--name", "R", "--from-track", ref, "--add"
    )
    assert code == 0 and "already enrolled 1" in err


def _ref(row: dict) -> str:
    """The reference a table row shows (``ref``; built from run and track where a row has none)."""
    return row.get("ref") or track_ref(row["run_id"], row["track_id"])


def _track_media(url: str, name: str) -> list[tuple[str, int | None, tuple[int, int] | None]]:
    """The media of ``name``: (kind, track_pk, (run, track) of that track row)."""
    with Gallery.open(url) as g, g.db.session() as s:
        stmt = (
            select(Media.kind, Media.track_pk, Track.run_id, Track.track_id)
            .join(Identity, Identity.id == Media.identity_id)
            .outerjoin(Track, Track.id == Media.track_pk)
            .where(Identity.name == name)
        )
        return [(k, pk, None if run is None else (run, t)) for k, pk, run, t in s.execute(stmt)]


@pytest.mark.slow
def test_enroll_from_each_displayed_track_reference(empty_log, tmp_path, capsys):
    url = copy_sqlite(empty_log[0], tmp_path, "each")
    rows = _json(capsys, "query", "tracks", "--db", url, "--page-size", "1000")
    assert len(rows) >= 6
    for i, row in enumerate(rows):  # later tracks of one person match the earlier enrolled: --yes
        name, ref = f"P{i}", _ref(row)
        code, out, err = _main(
            capsys, "enroll", "--db", url, "--config", CONFIG, "--name", name, "--from-track", ref, "--yes"
        )
        assert code == 0 and out.startswith("enrolled") and f"track {ref} (" in out, err
        ((kind, pk, shown),) = _track_media(url, name)
        assert (kind, shown) == ("track", parse_track_ref(ref)) and pk is not None  # the stored fact
    code, out, err = _main(
        capsys, "enroll", "--db", url, "--config", CONFIG, "--name", "Q", "--from-track", "1"
    )
    assert code == 2 and "got a bare number" in err and not out  # a number read off a table names no track


@pytest.mark.slow
def test_enrolling_a_track_matched_to_someone_else_needs_yes(empty_log, labels, tmp_path, capsys):
    six = copy_sqlite(f"sqlite:///{empty_log[1] / 'six.db'}", tmp_path, "six")
    rows = _json(capsys, "query", "tracks", "--db", six, "--page-size", "1000")
    ross = next(r for r in rows if r["identity"] == "Ross")
    before = logged_tracks(six), _track_media(six, "Joey")
    argv = ["enroll", "--db", six, "--config", CONFIG, "--name", "Joey", "--from-track", _ref(ross), "--add"]
    code, out, err = _main(capsys, *argv, "--rematch")
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and not out, err
    assert f"track {_ref(ross)} is matched to 'Ross' (score 0." in err and "--yes" in err
    assert (logged_tracks(six), _track_media(six, "Joey")) == before  # nothing written
    with Gallery.open(six) as g, g.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Rematch)) == 1  # the six stills' pass only
    code, out, err = _main(capsys, *argv, "--yes")
    assert code == 0 and "enrolled 1" in err, err
    assert ("track", parse_track_ref(_ref(ross))) in [(k, t) for k, _, t in _track_media(six, "Joey")]


@pytest.mark.slow
def test_undo_a_rematch_restores_the_decisions_exactly(empty_log, tmp_path, capsys):
    url = copy_sqlite(empty_log[0], tmp_path, "undo")
    views = ("tracks", "matches")

    def snapshot():
        return [_json(capsys, "query", v, "--db", url, "--page-size", "1000") for v in views]

    before, logged = snapshot(), logged_tracks(url)
    rachel = str(require(STILLS) / "Rachel.png")
    code, out, err = _main(
        capsys, "enroll", "--db", url, "--config", CONFIG, "--name", "Rachel", rachel, "--rematch"
    )
    assert code == 0 and "rematch --undo " in err, err
    rid = int(err.split("rematch --undo ")[1].split()[0])
    assert snapshot() != before
    (listed,) = _json(capsys, "query", "rematches", "--db", url)
    assert (listed["id"], listed["cause"], listed["undone_at"]) == (rid, "enroll", None)
    assert listed["current"] == listed["matches"] >= 2
    code, out, err = _main(capsys, "rematch", "--db", url, "--undo", str(rid), "--format", "json")
    assert (
        code == 0 and f"rematch {rid} undone: {listed['matches']} retroactive matches deleted (Rachel)" in err
    )
    assert json.loads(out)["rows"][0]["removed"] == listed["matches"]
    assert snapshot() == before and logged_tracks(url) == logged  # exactly as decided before the pass
    (listed,) = _json(capsys, "query", "rematches", "--db", url)
    assert listed["undone_at"] is not None and listed["current"] == 0
    code, _, err = _main(capsys, "rematch", "--db", url, "--undo", str(rid))  # twice: a no-op, said so
    assert code == 0 and f"rematch {rid}: already undone at" in err and snapshot() == before
    code, out, err = _main(capsys, "rematch", "--db", url, "--config", CONFIG, "--identity", "Rachel")
    assert code == 0 and snapshot() != before  # named again by a new pass ...
    code, _, err = _main(capsys, "rematch", "--db", url, "--undo", "--identity", "Rachel")
    assert code == 0 and "undone" in err and snapshot() == before  # ... and taken back by her name
    code, _, err = _main(capsys, "rematch", "--db", url, "--undo", "--identity", "Rachel")
    assert code == 0 and "nothing to undo: no retroactive match names Rachel" in err


@pytest.fixture
def small(tmp_path, capsys):
    """A gallery with Ross enrolled and no match log yet."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    assert (
        run_pipeline.main(
            ["enroll", "--db", url, "--config", CONFIG, "--name", "Ross", str(require(STILLS) / "Ross.png")]
        )
        == 0
    )
    capsys.readouterr()
    return url


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["enroll", "--name", "X", "--from-track", "999"],
            "track '999': expected a track reference RUN:TRACK",
        ),
        (["enroll", "--name", "X", "--from-track", "999"], "got a bare number"),
        (["enroll", "--name", "X", "--from-track", "7:abc"], "RUN:TRACK"),
        (
            ["enroll", "--name", "X", "--from-track", "999:1"],
            "track 999:1: expected a track of the match log",
        ),
        (["enroll", "--name", "X", "{ross}", "--yes"], "--yes: expected it with --from-track"),
        (["rematch", "--undo", "999"], "rematch 999: expected the id of a rematch"),
        (["rematch", "--undo"], "expected a rematch id (--undo ID) or --identity NAME, got neither"),
        (["rematch", "--undo", "1", "--identity", "Ross"], "got both"),
        (["rematch", "--undo", "--identity", "zed"], "identity 'zed': not in the gallery"),
        (["rematch", "--undo", "1", "--since", "2026-01-01T00:00:00Z"], "expected no --since or --source"),
        (["remove", "Ross", "--media", "999"], "media 999: expected an enrolled media id"),
        (["remove", "Ross", "--track", "5"], "got a bare number"),
        (["remove", "Ross", "--track", "5:5"], "track 5:5: expected a track 'Ross' was enrolled from"),
        (["remove", "Ross", "--media", "1"], "would leave it none"),
        (["query", "media", "--source", "cam"], "source do not apply"),
        (["enroll", "--name", "X", "{wall}", "--rematch"], "nothing enrolled: {wall}: no face found"),
        (["enroll", "--name", "X", "{corrupt}", "--rematch"], "expected a decodable image"),
        (["enroll", "--name", "X", "{wall}", "--from-track", "1"], "expected either IMAGE files"),
        (["enroll", "--name", "X", "{ross}", "--since", "2026-01-01T00:00:00Z"], "need --rematch"),
        (["enroll", "--name", "X", "{ross}", "--rematch", "--source", "nowhere"], "source 'nowhere'"),
        (["enroll", "--name", "X", "{ross}", "--rematch", "--since", "noon"], "expected ISO 8601"),
        (["rematch", "--identity", "zed"], "identity 'zed': not in the gallery"),
        (["query", "timeline", "zed"], "identity 'zed': not in the gallery"),
        (["query", "timeline"], "expected an identity"),
        (["query", "matches", "Ross"], "expected no NAME"),
        (["query", "timeline", "Ross", "--decision", "match"], "do not apply"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(small, tmp_path, capsys, argv, message):
    wall, corrupt = tmp_path / "wall.png", tmp_path / "corrupt.jpg"
    cv2.imwrite(str(wall), np.full((120, 160, 3), 127, np.uint8))
    corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg")
    files = {"{wall}": str(wall), "{corrupt}": str(corrupt), "{ross}": str(STILLS / "Ross.png")}
    argv = [files.get(a, a) for a in argv]
    code, out, err = _main(capsys, *argv, "--db", small, "--config", CONFIG)
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert message.format(wall=wall) in err
    assert out == "" or out.startswith("no_face")  # enroll lists what it did with each image
    with Gallery.open(small) as g, g.db.session() as s:
        assert [(i.name, i.media) for i in g.identities()] == [("Ross", 1)]
        assert s.scalar(select(func.count()).select_from(Rematch)) == 0


def test_rematch_of_a_gallery_without_templates(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    Gallery.open(url).close()
    code, out, err = _main(capsys, "rematch", "--db", url)
    assert code == 0 and "no templates" in err and "identity" in out.splitlines()[0].split()


@pytest.mark.parametrize("enabled", [False, True])
def test_retroactive_watchlist_alerts_are_a_setting(tmp_path, capsys, enabled):
    rng = np.random.default_rng(3)
    ann, bob = unit(rng, 2, 8)
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with Gallery.open(url) as g:
        with MatchLogWriter(g.db, source="gate", kind="camera", config_hash="t", keep_thumbnails=False) as w:
            for t, template in enumerate((ann, bob, ann)):
                w.record(TrackRecord(t, 2.0 * t, 2.0 * t + 1, 5, 2, template, "e8", [], "unknown", 0.5))
        g.add_media("ann", "e8", media("ann", ann[None]), create=True, watchlist=True)
        g.add_media("bob", "e8", media("bob", bob[None]), create=True)
    receiver = Receiver()
    try:
        hooks = json.dumps([{"url": receiver.url, "retries": 0}])
        settings = [f"live.alerts.retroactive={str(enabled).lower()}", f"live.alerts.webhooks={hooks}"]
        rows = _json(capsys, "rematch", "--db", url, *(a for kv in settings for a in ("--set", kv)))
    finally:
        receiver.close()
    assert sorted((r["identity"], r["track_id"], r["was"]) for r in rows) == [
        ("ann", 0, "unknown"),
        ("ann", 2, "unknown"),
        ("bob", 1, "unknown"),
    ]
    if not enabled:
        assert receiver.bodies == []
        return
    assert sorted(b["track_id"] for b in receiver.bodies) == [0, 2]  # ann only: the watchlisted one
    body = receiver.bodies[0]
    assert body["retroactive"] is True and body["identity"] == "ann" and body["camera"] == "gate"
    assert body["rematch_id"] and body["kind"] == "camera" and body["score"] == pytest.approx(1.0)
