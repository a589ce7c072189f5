"""pipeline/web/feed.py: the live event feed over a seeded match log; a track written by another writer (as
``stream`` writes it from its own process) appears on the /feed page in headless Chromium within 2 s; the events'
fields; a bad ``Last-Event-ID`` is refused."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gallery.db import Database
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.thumbnails import ThumbnailStore
from pipeline.web.app import create_app
from pipeline.web.feed import feed_events, newest_id
from pipeline.web.guard import SCRIPT_CSP
from tests.gallery.helpers import seed_log, unit
from tests.pipeline.web.test_app import csp_violations, log_in, served_in_chromium

TOKEN = "feed-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def log(db_url, tmp_path):
    db = Database(db_url)
    store = ThumbnailStore(tmp_path / "thumbs")
    seed_log(db, store)
    yield db, store
    db.close()


def _write_track(db, store, track_id: int, seen: datetime) -> None:
    """One unknown track of camera ``door``, logged now (a writer of its own, as another process's would be)."""
    writer = MatchLogWriter(
        db, source="door", kind="camera", config_hash="feed", thumbnails=store, keep_thumbnails=True
    )
    writer.record(
        TrackRecord(
            track_id=track_id,
            start_time=3.0,
            end_time=4.5,
            frames=9,
            crops_embedded=3,
            template=unit(np.random.default_rng(track_id), 1, 4)[0],
            embedder_id="e4",
            candidates=[],
            decision="unknown",
            threshold=0.5,
            thumbnail=np.full((48, 40, 3), 200, np.uint8),
            at=seen,
            seen_start=seen,
            seen_end=seen,
            time_origin="camera",
        )
    )
    writer.close()


def test_events_carry_the_sighting_and_urls_and_resume_after_an_id(log):
    db, store = log
    events = feed_events(db, 0)
    assert sorted(int(e["ref"].split(":")[1]) for _, e in events) == list(range(8))
    ids = [i for i, _ in events]
    assert ids == sorted(ids) and newest_id(db) == ids[-1]
    first = dict(events)[ids[0]]
    assert first["source"] in ("gate", "lobby") and first["seen_start"].startswith("2026-03-01T10:")
    assert first["crop_url"].startswith("/thumbnails/") and first["track_url"] == f"/track/{first['ref']}"
    assert {e["decision"] for _, e in events} == {"match", "unknown"}
    assert [i for i, _ in feed_events(db, ids[4])] == ids[5:]  # Last-Event-ID resumes after it
    assert feed_events(db, ids[-1]) == []


@pytest.mark.parametrize("header", ["x", "-1", "1.5", "99999999999999999999"])
def test_a_bad_last_event_id_is_refused(log, header):
    db, store = log
    client = TestClient(create_app(db, store, token=TOKEN))
    answer = client.get("/api/feed", headers=AUTH | {"Last-Event-ID": header})
    assert answer.status_code == 400 and "Last-Event-ID" in answer.json()["detail"]


def test_the_feed_needs_the_token_and_only_its_page_may_run_a_script(log):
    db, store = log
    client = TestClient(create_app(db, store, token=TOKEN))
    assert client.get("/api/feed").status_code == 401
    page = client.get("/feed", headers=AUTH)
    assert page.status_code == 200 and page.headers["content-security-policy"] == SCRIPT_CSP
    assert '<script src="/feed.js"></script>' in page.text and "<script>" not in page.text
    assert "script-src 'none'" in client.get("/", headers=AUTH).headers["content-security-policy"]
    script = client.get("/feed.js", headers=AUTH)
    assert script.status_code == 200 and "EventSource" in script.text


def test_a_new_track_shows_on_the_feed_page_within_2_s(log, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    db, store = log
    app = create_app(db, store, token=TOKEN)
    with served_in_chromium(app, tmp_path, monkeypatch) as (chrome, base):
        log_in(chrome, base, TOKEN)
        chrome.get(f"{base}/feed")
        WebDriverWait(chrome, 20).until(lambda d: d.find_element(By.ID, "state").text == "live")
        assert chrome.find_elements(By.CSS_SELECTOR, "#events li") == []  # only what comes from now on
        for n, track_id in enumerate((41, 42)):
            _write_track(db, store, track_id, datetime(2026, 3, 2, 9, n, tzinfo=timezone.utc))
            ended = time.monotonic()
            WebDriverWait(chrome, 5, poll_frequency=0.05).until(
                lambda d, n=n: len(d.find_elements(By.CSS_SELECTOR, "#events li")) == n + 1
            )
            delay = time.monotonic() - ended
            assert delay < 2.0, f"the feed showed the track {delay:.2f} s after it was logged"
        items = chrome.find_elements(By.CSS_SELECTOR, "#events li")
        assert [i.get_attribute("data-ref").split(":")[1] for i in items] == ["42", "41"]  # newest first
        assert "door" in items[0].text and "2026-03-02 09:01:00 UTC" in items[0].text
        crop = items[0].find_element(By.CSS_SELECTOR, "img.crop")
        WebDriverWait(chrome, 5).until(
            lambda d: d.execute_script("return arguments[0].naturalWidth", crop) == 40
        )
        link = items[0].find_element(By.CSS_SELECTOR, "a.view")
        ref = items[0].get_attribute("data-ref")
        link.click()
        WebDriverWait(chrome, 10).until(lambda d: d.current_url == f"{base}/track/{ref}")
        assert csp_violations(chrome) == []
