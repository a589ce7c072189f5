"""Every view of a track shows the camera zones it entered (``tracks.zones``): the JSON of ``/api/matches``,
``/api/tracks`` and ``/api/tracks/{ref}``, the text and CSV tables of ``query``, the track page, the matches and
tracks pages and the feed's events. The matches, tracks and timeline pages link each row to its track page and
paginate (a page's links lead to the next and back, each row on exactly one page)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from gallery.db import Database
from gallery.models import Track
from gallery.queries import Filters, find_matches, find_tracks
from gallery.thumbnails import ThumbnailStore
from pipeline.commands.tables import render
from pipeline.web.app import create_app
from pipeline.web.feed import feed_events
from tests.gallery.helpers import seed_log

TOKEN = "lists-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# seed_log's tracks 0-7 (run of gate: even tracks, of lobby: odd ones); zones set here: a list where the camera has
# zones (empty: it entered none), None where it has none
ZONES = {0: ["door", "till"], 1: [], 2: ["door"]}


@pytest.fixture
def log(db_url, tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    with Database(db_url) as db:
        seed_log(db, store)
        with db.session() as session:
            for track_id, zones in ZONES.items():
                session.execute(update(Track).where(Track.track_id == track_id).values(zones=zones))
        yield db, store


def _by_track(rows: list[dict]) -> dict[int, object]:
    return {r["track_id"]: r["zones"] for r in rows}


def _expected(track_id: int):
    return ZONES.get(track_id)


def test_zones_in_the_json_of_every_track_endpoint_and_the_feed(log):
    db, store = log
    client = TestClient(create_app(db, store, token=TOKEN))
    matches = client.get("/api/matches", params={"page_size": 100}, headers=AUTH).json()["rows"]
    tracks = client.get("/api/tracks", params={"page_size": 100}, headers=AUTH).json()["rows"]
    assert len(tracks) == 8 and matches
    for rows in (matches, tracks):
        assert _by_track(rows) == {r["track_id"]: _expected(r["track_id"]) for r in rows}
    for row in tracks:
        detail = client.get(f"/api/tracks/{row['ref']}", headers=AUTH).json()
        assert detail["zones"] == _expected(row["track_id"])
    events = [e for _, e in feed_events(db, 0)]
    assert {e["ref"]: e["zones"] for e in events} == {r["ref"]: _expected(r["track_id"]) for r in tracks}


@pytest.mark.parametrize("kind, find", [("matches", find_matches), ("tracks", find_tracks)])
def test_zones_column_of_the_text_and_csv_tables(log, kind, find):
    db, _ = log
    page = find(db, Filters(page_size=100))
    text = render(kind, page, "text").splitlines()
    header = text[0].split()
    assert "zones" in header
    start = text[0].index("zones")
    cells = {r["ref"]: line[start:].split("  ")[0].strip() for r, line in zip(page.rows, text[1:])}
    want = {r["ref"]: ",".join(_expected(r["track_id"]) or []) for r in page.rows}
    assert cells == want and "door,till" in cells.values()
    table = list(csv.DictReader(io.StringIO(render(kind, page, "csv"))))
    assert {r["ref"]: r["zones"] for r in table} == want


def test_the_track_page_and_the_lists_show_zones(log):
    db, store = log
    client = TestClient(create_app(db, store, token=TOKEN))
    refs = {r["track_id"]: r["ref"] for r in find_tracks(db, Filters(page_size=100)).rows}
    page = client.get(f"/track/{refs[0]}", headers=AUTH).text
    assert re.search(r'<td id="zones">door, till</td>', page)
    assert '<td id="zones">none</td>' in client.get(f"/track/{refs[1]}", headers=AUTH).text
    assert 'id="zones"' not in client.get(f"/track/{refs[5]}", headers=AUTH).text  # camera without zones
    for url in ("/", "/tracks"):
        cells = re.findall(r'<td class="zones">([^<]*)</td>', client.get(url, headers=AUTH).text)
        assert "door, till" in cells and "door" in cells


def _rows_and_next(client, url: str) -> tuple[list[tuple[str, str]], str | None, str | None]:
    """The (ref, link) of each row of a list page, its ``older``/``later`` link and its back link."""
    text = client.get(url, headers=AUTH).text
    rows = re.findall(r'<td class="ref"><a class="view" href="([^"]+)">([^<]+)</a></td>', text)
    rows += re.findall(r'<td class="ref">([^<]+)</td>[\s\S]*?<a class="view" href="([^"]+)">view</a>', text)
    rows = [(a, b) if a.startswith("/track/") else (b, a) for a, b in rows]
    nxt = re.search(r'<a id="(?:older|later)" href="([^"]+)"', text)
    back = re.search(r'<a id="newer" href="([^"]+)"', text) or re.search(r'<a href="(\?[^"]+)">earlier', text)
    return (
        [(ref, link) for link, ref in rows],
        nxt and nxt.group(1).replace("&amp;", "&"),
        back and back.group(1).replace("&amp;", "&"),
    )


@pytest.mark.parametrize(
    "path, query, expected",
    [
        ("/", "", 8),
        ("/", "identity=ann", 4),
        ("/tracks", "", 8),
        ("/tracks", "decision=unknown", 3),
        ("/timeline", "name=ann", 4),
    ],
)
def test_list_pages_link_each_row_to_its_track_page_and_paginate(log, path, query, expected):
    db, store = log
    client = TestClient(create_app(db, store, token=TOKEN, page_size=3))
    seen, url, pages = [], f"{path}?{query}", 0
    while url is not None:
        rows, nxt, back = _rows_and_next(client, url)
        assert 0 < len(rows) <= 3 and (back is None) == (pages == 0)
        for ref, link in rows:
            assert link == f"/track/{ref}"
            assert client.get(link, headers=AUTH).status_code == 200
        seen += [ref for ref, _ in rows]
        pages += 1
        url = None if nxt is None else path + nxt
    assert len(seen) == len(set(seen)) == expected and pages == -(-expected // 3)
