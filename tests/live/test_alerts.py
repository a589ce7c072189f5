"""Watchlist alerts: log lines and webhook POSTs (with retries and timeouts) to a receiver on loopback, their links
to the track page, snapshot and crop under ``base_url``; the shutdown deadline against endpoints that refuse or
never answer; tokens and auth headers never logged."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from core.types import Candidate, MatchResult, TrackTemplate
from pipeline.live.config import AlertConfig, WebhookConfig
from pipeline.sinks.alerts import WatchlistAlerts, alert_record
from tests.live.rtsp import SilentServer, free_port


class Receiver:
    """A webhook endpoint on 127.0.0.1 answering with the scripted statuses (then 200); ``delay`` stalls it."""

    def __init__(self, statuses=(), delay: float = 0.0) -> None:
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []  # request headers of each attempt
        self.paths: list[str] = []  # request path (with query) of each attempt
        self.received: list[float] = []  # time.monotonic() of each body
        self.attempts = 0
        script = list(statuses)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.attempts += 1
                outer.headers.append(dict(self.headers))
                outer.paths.append(self.path)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if delay:
                    time.sleep(delay)
                status = script.pop(0) if script else 200
                if status == 200:
                    outer.bodies.append(json.loads(body))
                    outer.received.append(time.monotonic())
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver_factory():
    made = []

    def make(**kw) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def track(name: str | None, score: float = 0.6, track_id: int = 1) -> tuple[TrackTemplate, MatchResult]:
    template = TrackTemplate("cam1", track_id, np.ones(4, np.float32) / 2, 1.0, 3, None, 1.0, 2.5, 10)
    cands = (Candidate(7, name, score),) if name else ()
    return template, MatchResult("cam1", track_id, cands, "match" if name else "unknown", 0.3)


@pytest.mark.parametrize("name, alerted", [("Joey", True), ("Ross", False), (None, False)])
def test_only_watchlisted_matches_alert(name, alerted, caplog):
    sink = WatchlistAlerts(AlertConfig(watchlist=("Joey", "Phoebe")))
    with caplog.at_level(logging.WARNING, logger="pipeline.sinks.alerts"):
        sink.on_track(*track(name))
    sink.close()
    assert sink.raised == int(alerted)
    assert ("ALERT watchlist match: Joey on camera cam1 track 1" in caplog.text) == alerted


def test_unknown_decision_never_alerts_even_with_a_watchlisted_candidate():
    sink = WatchlistAlerts(AlertConfig(watchlist=("Joey",)))
    template, _ = track("Joey")
    sink.on_track(template, MatchResult("cam1", 1, (Candidate(7, "Joey", 0.2),), "unknown", 0.3))
    sink.close()
    assert sink.raised == 0
    with pytest.raises(ValueError, match="matched track"):
        alert_record(template, MatchResult("cam1", 1, (), "unknown", 0.3))


def test_webhook_receives_each_alert_once(receiver_factory):
    rx = receiver_factory()
    sink = WatchlistAlerts(
        AlertConfig(watchlist=("Joey",), webhooks=(WebhookConfig(url=rx.url),)), {"cam1": 4}
    )
    for tid in (1, 2, 3):
        template, result = track("Joey", track_id=tid)
        template.wall_start, template.wall_end = 1772348401.0, 1772348402.5
        sink.on_track(template, result)
    sink.close()
    assert [b["track_id"] for b in rx.bodies] == [1, 2, 3]
    assert rx.bodies[0] | {"sent_at": None} == {
        "ref": "4:1",
        "camera": "cam1",
        "track_id": 1,
        "seen_start": "2026-03-01T07:00:01.000+00:00",
        "seen_end": "2026-03-01T07:00:02.500+00:00",
        "identity": "Joey",
        "identity_id": 7,
        "score": 0.6,
        "threshold": 0.3,
        "first_s": 1.0,
        "last_s": 2.5,
        "track_ended": True,
        "zones": None,
        "sent_at": None,
        "watchlists": ["default"],
    }
    assert sink.webhooks[0].delivered == 3 and sink.webhooks[0].failed == 0


def test_webhook_retries_server_errors_then_delivers(receiver_factory):
    rx = receiver_factory(statuses=(503, 500))
    hook = WebhookConfig(url=rx.url, retries=3, backoff_s=0.05)
    sink = WatchlistAlerts(AlertConfig(watchlist=("Joey",), webhooks=(hook,)))
    sink.on_track(*track("Joey"))
    sink.close()
    assert rx.attempts == 3 and len(rx.bodies) == 1 and sink.webhooks[0].delivered == 1


def test_webhook_client_error_is_not_retried(receiver_factory):
    rx = receiver_factory(statuses=(400,))
    sink = WatchlistAlerts(AlertConfig(watchlist=("Joey",), webhooks=(WebhookConfig(url=rx.url, retries=3),)))
    sink.on_track(*track("Joey"))
    sink.close()
    assert rx.attempts == 1 and sink.webhooks[0].failed == 1


def test_a_hanging_webhook_is_timed_out_and_does_not_block_the_pipeline(receiver_factory):
    slow = receiver_factory(delay=2.0)
    fast = receiver_factory()
    hooks = (
        WebhookConfig(url=slow.url, timeout_s=0.3, retries=1, backoff_s=0.05),
        WebhookConfig(url=fast.url),
    )
    sink = WatchlistAlerts(AlertConfig(watchlist=("Joey",), webhooks=hooks))
    t0 = time.monotonic()
    sink.on_track(*track("Joey"))
    assert time.monotonic() - t0 < 0.1  # delivery happens on the webhooks' threads
    sink.close()
    assert time.monotonic() - t0 < 2 * 0.3 + 0.05 + 1.5
    assert sink.webhooks[0].failed == 1 and slow.attempts == 2
    assert sink.webhooks[1].delivered == 1 and len(fast.bodies) == 1


def test_unreachable_webhook_fails_after_its_retries(caplog):
    hook = WebhookConfig(url=f"http://127.0.0.1:{free_port()}/hook", retries=2, backoff_s=0.01, timeout_s=1.0)
    sink = WatchlistAlerts(AlertConfig(watchlist=("Joey",), webhooks=(hook,)))
    with caplog.at_level(logging.WARNING, logger="pipeline.sinks.alerts"):
        sink.on_track(*track("Joey"))
        sink.close()
    assert sink.webhooks[0].failed == 1
    assert "not delivered after 3 attempts" in caplog.text


@pytest.mark.parametrize("endpoint", ["refused", "silent"])
def test_shutdown_is_bounded_by_the_deadline_and_counts_what_it_drops(endpoint, caplog):
    """Long retries and backoff (hours with these values) against a port that refuses or a server that never
    answers: close ends within the deadline (+2 s), the same one for both webhooks, every alert dropped is
    counted and logged once per webhook."""
    silent = SilentServer() if endpoint == "silent" else None
    port = silent.port if silent else free_port()
    hook = WebhookConfig(url=f"http://127.0.0.1:{port}/hook", timeout_s=60, retries=50, backoff_s=30)
    sink = WatchlistAlerts(AlertConfig(watchlist=("Joey",), webhooks=(hook, hook), shutdown_timeout_s=1.5))
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.sinks.alerts"):
            for tid in range(4):
                sink.on_track(*track("Joey", track_id=tid))
            time.sleep(0.3)  # the first alert is in flight (silent) or waiting to retry (refused)
            t0 = time.monotonic()
            sink.close()
            elapsed = time.monotonic() - t0
            sink.close()  # a second close changes nothing
    finally:
        if silent:
            silent.close()
    assert elapsed < 1.5 + 2.0, elapsed
    for delivery in sink.webhooks:
        assert delivery.abandoned == 4 and delivery.delivered == delivery.failed == 0
    dropped = [r for r in caplog.records if "shutdown deadline passed" in r.getMessage()]
    assert len(dropped) == 2 and all("4 alerts dropped" in r.getMessage() for r in dropped)


def test_queued_alerts_are_delivered_before_the_deadline(receiver_factory):
    rx = receiver_factory(statuses=(503,))
    hook = WebhookConfig(url=rx.url, retries=2, backoff_s=0.2)
    sink = WatchlistAlerts(AlertConfig(watchlist=("Joey",), webhooks=(hook,), shutdown_timeout_s=5))
    for tid in range(3):
        sink.on_track(*track("Joey", track_id=tid))
    sink.close()  # right away: the retry and the queue still fit in the deadline
    assert sorted(b["track_id"] for b in rx.bodies) == [0, 1, 2] and sink.webhooks[0].abandoned == 0


def test_webhook_token_and_auth_header_are_sent_never_logged(receiver_factory, caplog, monkeypatch):
    monkeypatch.setenv("FACEMOE_TEST_HOOK_AUTH", "Bearer HDR-SECRET-42")
    rx = receiver_factory(statuses=(503,))
    hook = WebhookConfig(
        url=f"{rx.url}?token=URL-SECRET-42",
        auth_header_env="FACEMOE_TEST_HOOK_AUTH",
        retries=1,
        backoff_s=0.05,
    )
    refused = WebhookConfig(
        url=f"http://op:PW-SECRET-42@127.0.0.1:{free_port()}/h?sig=SIG-SECRET-42", retries=1
    )
    sink = WatchlistAlerts(AlertConfig(watchlist=("Joey",), webhooks=(hook, refused)))
    with caplog.at_level(logging.DEBUG):  # every logger, httpx's request lines included
        sink.on_track(*track("Joey"))
        sink.close()
    assert rx.attempts == 2 and len(rx.bodies) == 1
    assert all(h["Authorization"] == "Bearer HDR-SECRET-42" for h in rx.headers)
    assert all(p.endswith("?token=URL-SECRET-42") for p in rx.paths)
    assert "retry 1 of 1" in caplog.text and "token=***" in caplog.text and "sig=***" in caplog.text
    assert "SECRET-42" not in caplog.text


def test_unset_auth_header_variable_is_a_config_error(monkeypatch):
    from core.errors import ConfigError

    monkeypatch.delenv("FACEMOE_TEST_UNSET", raising=False)
    hook = WebhookConfig(url="http://127.0.0.1:9/hook", auth_header_env="FACEMOE_TEST_UNSET")
    with pytest.raises(ConfigError, match="FACEMOE_TEST_UNSET"):
        WatchlistAlerts(AlertConfig(watchlist=("Joey",), webhooks=(hook,)))


@pytest.mark.parametrize("ended", [True, False])
def test_webhook_alert_links_to_the_track_page_snapshot_and_crop(receiver_factory, ended):
    """With ``base_url`` each alert carries the URLs the web app's feed gives the track (one function makes both),
    below the app's address; an open track's alert links where its crop and snapshot will be."""
    from pipeline.services.links import track_links

    rx = receiver_factory()
    cfg = AlertConfig(
        watchlist=("Joey",), webhooks=(WebhookConfig(url=rx.url),), base_url="http://nvr.lan:8000/app/"
    )
    sink = WatchlistAlerts(cfg, {"cam1": 4})
    sink.media = lambda camera, track_id: (
        f"source2/run4/track{track_id}.jpg",
        f"source2/run4/track{track_id}_s.jpg",
    )
    template, result = track("Joey", track_id=9)
    template.zones = ("door",)
    (sink.on_track if ended else sink.on_progress)(template, result)
    sink.close()
    body = rx.bodies[0]
    assert body["ref"] == "4:9" and body["track_ended"] is ended and body["seen_start"] is None
    assert body["zones"] == ["door"]
    assert body["track_url"] == "http://nvr.lan:8000/app/track/4:9"
    if ended:  # this track kept no best crop and no snapshot: nothing to link to
        assert body["crop_url"] is None and body["snapshot_url"] is None
    else:
        assert body["crop_url"] == "http://nvr.lan:8000/app/thumbnails/source2/run4/track9.jpg"
        assert body["snapshot_url"] == "http://nvr.lan:8000/app/thumbnails/source2/run4/track9_s.jpg"
    relative = track_links("4:9", "source2/run4/track9.jpg", "source2/run4/track9_s.jpg")
    assert (
        relative["track_url"] == "/track/4:9"
        and relative["crop_url"] == "/thumbnails/source2/run4/track9.jpg"
    )


def test_without_base_url_alerts_carry_no_links(receiver_factory):
    rx = receiver_factory()
    sink = WatchlistAlerts(
        AlertConfig(watchlist=("Joey",), webhooks=(WebhookConfig(url=rx.url),)), {"cam1": 4}
    )
    sink.media = lambda camera, track_id: ("a.jpg", "b.jpg")
    sink.on_track(*track("Joey"))
    sink.close()
    assert not {"track_url", "snapshot_url", "crop_url"} & set(rx.bodies[0])


@pytest.mark.parametrize(
    "url, ok",
    [
        ("http://nvr.lan:8000/app", True),
        ("https://cams.example.org/", True),
        ("ftp://nvr.lan/app", False),
        ("nvr.lan:8000", False),
        ("http://", False),
        ("http://nvr.lan/app?x=1", False),
        ("http://nvr.lan/app#top", False),
        ("http://op:pw@nvr.lan/app", False),
    ],
)
def test_base_url_must_be_an_http_url(url, ok):
    from pydantic import ValidationError

    if ok:
        assert AlertConfig(base_url=url).base_url == url.rstrip("/")
    else:
        with pytest.raises(ValidationError, match="base_url"):
            AlertConfig(base_url=url)
