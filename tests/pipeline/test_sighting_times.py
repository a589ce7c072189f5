"""Sighting times end to end: a file processed with ``--recorded-at`` (or a ``creation_time`` tag) is dated in every
row of ``query tracks``, ``query matches``, ``search``, ``query timeline`` and ``query unknowns``, and
``--since``/``--until`` select by those times, not by when the file was processed."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import datetime, timedelta

import pytest

import run_pipeline
from tests.conftest import ROOT
from tests.pipeline.runners.test_sources import needs_ffmpeg, remux

ASSETS = ROOT.parent / "shared" / "assets"
CLIP = ASSETS / "videos" / "friends_in_video.mp4"
GALLERY = ASSETS / "images" / "friends_gallery"
CONFIG = str(ROOT / "configs" / "test.yaml")
GIVEN = "2026-03-01T08:00:00+01:00"
FRAME_S = 1 / 23.976

pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason="../shared/assets is not here (a user's checkout)")


def _json(capsys, *args) -> dict:
    assert run_pipeline.main([*args, "--config", CONFIG]) == 0
    return json.loads(capsys.readouterr().out)


def _dated(rows: list[dict], origin: str, base: datetime) -> None:
    """Every row's sighting times are ``base`` plus its offsets within the file, to one frame."""
    assert rows
    for row in rows:
        assert row["time_origin"] == origin and ":" in row["ref"]
        start, end = (datetime.fromisoformat(row[k]) for k in ("seen_start", "seen_end"))
        assert abs((start - base).total_seconds() - row["start_time"]) <= FRAME_S
        assert abs((end - base).total_seconds() - row["end_time"]) <= FRAME_S


@pytest.fixture(scope="module")
def dated(tmp_path_factory):
    """The first 8 s of the friends clip processed with --recorded-at into an empty gallery (every track unknown:
    ``query unknowns`` JSON taken then), then the six people enrolled with --rematch (their tracks become
    retroactive matches): (database URL, the recording time, the unknown groups)."""
    db = f"sqlite:///{tmp_path_factory.mktemp('dated') / 'gallery.db'}"
    args = ["--db", db, "--config", CONFIG]
    video = ["process", str(CLIP), "--recorded-at", GIVEN, "--set", "source.end=8", "--no-progress"]
    assert run_pipeline.main([*video, *args]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_pipeline.main(["query", "unknowns", "--format", "json", "--min-size", "1", *args]) == 0
    assert run_pipeline.main(["enroll", "--dir", str(GALLERY), "--rematch", *args]) == 0
    return db, datetime.fromisoformat(GIVEN), json.loads(out.getvalue())


@pytest.mark.slow
def test_every_query_row_carries_the_sighting_time(dated, capsys):
    db, base, groups = dated
    capsys.readouterr()
    tracks = _json(capsys, "query", "tracks", "--db", db, "--format", "json")["rows"]
    _dated(tracks, "given", base)
    matches = _json(capsys, "query", "matches", "--db", db, "--format", "json")["rows"]
    _dated(matches, "given", base)
    assert {r["ref"] for r in matches} <= {t["ref"] for t in tracks}
    named = next(r["identity"] for r in matches if r["decision"] == "match")
    _dated(_json(capsys, "query", "timeline", named, "--db", db, "--format", "json")["rows"], "given", base)
    found = _json(capsys, "search", str(GALLERY / f"{named}.png"), "--db", db, "--format", "json")["rows"]
    _dated(found, "given", base)
    # the same tracks before anyone was enrolled: unknown, grouped; the group's first/last seen are sighting times
    rows = [t for g in groups["groups"] for t in g["tracks"]]
    assert sorted(r["ref"] for r in rows) == sorted(t["ref"] for t in tracks)
    _dated(rows, "given", base)
    for group in groups["groups"]:
        first, last = (datetime.fromisoformat(group[k]) for k in ("first_seen", "last_seen"))
        assert base <= first <= last and (last - base).total_seconds() < 8.5
        assert first == min(datetime.fromisoformat(t["seen_start"]) for t in group["tracks"])


@pytest.mark.slow
def test_since_and_until_select_by_sighting_time(dated, capsys):
    db, base, _ = dated
    capsys.readouterr()
    rows = _json(capsys, "query", "tracks", "--db", db, "--format", "json")["rows"]
    starts = sorted({datetime.fromisoformat(r["seen_start"]) for r in rows})
    assert len(starts) > 1, "the clip's first 8 s have tracks starting at different times"
    cut = starts[len(starts) // 2]
    since = {r["ref"] for r in rows if datetime.fromisoformat(r["seen_start"]) >= cut}
    until = {r["ref"] for r in rows} - since
    query = ["query", "tracks", "--db", db, "--format", "json"]
    assert {r["ref"] for r in _json(capsys, *query, "--since", cut.isoformat())["rows"]} == since
    assert {r["ref"] for r in _json(capsys, *query, "--until", cut.isoformat())["rows"]} == until
    # processing time selects nothing: the file was recorded months before it was processed
    today = (datetime.now(base.tzinfo) - timedelta(days=1)).isoformat()
    assert _json(capsys, *query, "--since", today)["rows"] == []
    matches = ["query", "matches", "--db", db, "--format", "json", "--since", cut.isoformat()]
    picked = _json(capsys, *matches)["rows"]
    assert picked and {r["ref"] for r in picked} <= since


@needs_ffmpeg
def test_a_container_creation_time_dates_the_tracks(tmp_path, capsys):
    video = remux(tmp_path / "clip.mp4", "2026-02-03T04:05:06Z")  # one second of the CCTV lobby
    db = f"sqlite:///{tmp_path / 'gallery.db'}"
    args = ["--db", db, "--config", CONFIG]
    assert (
        run_pipeline.main(["process", str(video), "--no-progress", "--set", "detect.min_face_px=8", *args])
        == 0
    )
    capsys.readouterr()
    rows = _json(capsys, "query", "tracks", "--db", db, "--format", "json")["rows"]
    if not rows:
        pytest.fail("the CCTV lobby's first second has faces to track")
    _dated(rows, "container", datetime.fromisoformat("2026-02-03T04:05:06+00:00"))


def test_a_file_without_recording_time_is_shown_as_unknown(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'gallery.db'}"
    args = ["--db", db, "--config", CONFIG]
    assert run_pipeline.main(["process", str(CLIP), "--set", "source.end=2", "--no-progress", *args]) == 0
    table = capsys.readouterr().out
    assert " unknown " in table.splitlines()[1]  # the seen column, never the processing time
    assert run_pipeline.main(["query", "tracks", *args]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].split()[:3] == ["ref", "seen_start", "seen_end"]
    assert all(line.split()[1:3] == ["unknown", "unknown"] for line in shown[1:])
    rows = _json(capsys, "query", "tracks", "--db", db, "--format", "json")["rows"]
    assert rows and all((r["seen_start"], r["time_origin"]) == (None, "unknown") for r in rows)
