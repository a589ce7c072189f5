"""``TrackMatching`` on scripted embed batches: watchlist alerts come from an open track's running template, at the
first batch that matches, once per track and identity; the final match still reaches every sink once."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from core.types import FaceCrop, MatchResult, Quality, TrackTemplate
from pipeline.config import RunnerConfig
from pipeline.live.config import AlertConfig, WebhookConfig
from pipeline.runners.engine import ProgressSink, TrackMatching
from pipeline.runners.tracking import EndedTrack, RunStats, TrackJob
from pipeline.sinks.alerts import WatchlistAlerts
from stages.config import AggregateConfig
from stages.match import Matcher
from stages.track import TrackEnd
from tests.fakes import FixedIndex
from tests.live.test_alerts import receiver_factory  # noqa: F401 (fixture)

NAMES = ("Joey", "Ross", "Monica")


class OneHotEmbedder:
    """Crop filled with value k -> unit feature e_k (k = 3: halfway between Joey and Ross)."""

    embedder_id = "one-hot"
    dim = 4

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, crops):
        self.calls += 1
        feats = np.zeros((len(crops), self.dim), np.float32)
        for i, crop in enumerate(crops):
            k = int(crop[0, 0, 0])
            if k == 3:
                feats[i, :2] = np.sqrt(0.5)
            else:
                feats[i, k] = 1.0
        return feats, np.ones(len(crops), np.float32)


class Recorder:
    """Sink keeping every final match in arrival order."""

    def __init__(self) -> None:
        self.tracks: list[tuple[TrackTemplate, MatchResult]] = []

    def on_track(self, template, result) -> None:
        self.tracks.append((template, result))

    def close(self) -> None:
        pass


def crop(track_id: int, t: float, who: int, source: str = "cam") -> tuple[FaceCrop, float]:
    image = np.full((112, 112, 3), who, np.uint8)
    return FaceCrop(source, track_id, int(t * 10), t, image, Quality(80.0, 0.9, 100.0, 0.1)), 0.8


def end(track_id: int, first: float, last: float, pooled=(), source: str = "cam") -> EndedTrack:
    return EndedTrack(TrackEnd(track_id, True, first, last, 20), source, 20, None, list(pooled))


def matching(watchlist=("Joey", "Monica"), threshold: float = 0.8, webhooks=()):
    gallery = FixedIndex(NAMES, np.eye(4, dtype=np.float32)[:3], threshold)
    matcher = Matcher(SimpleNamespace(threshold=None, top_k=3), gallery)
    alerts = WatchlistAlerts(AlertConfig(watchlist=watchlist, webhooks=webhooks))
    log = Recorder()
    return (
        TrackMatching(
            SimpleNamespace(aggregate=AggregateConfig(), runner=RunnerConfig()),
            OneHotEmbedder(),
            matcher,
            [alerts, log],
            lambda: 0.0,
        ),
        alerts,
        log,
    )


def test_alert_is_raised_at_the_first_matching_batch_once(caplog):
    tm, alerts, log = matching()
    stats = RunStats()
    assert isinstance(alerts, ProgressSink) and tm.watchers == [alerts]
    with caplog.at_level(logging.WARNING, logger="pipeline.sinks.alerts"):
        tm.handle([TrackJob([crop(1, 1.0, 0)])], stats)  # Joey's first embedded crop
        assert alerts.raised == 1 and not log.tracks  # alerted while the track is open
        assert (
            "ALERT watchlist match: Joey on camera cam track 1" in caplog.text and "track open" in caplog.text
        )
        tm.handle([TrackJob([crop(1, 2.0, 0)])], stats)  # the template improves: still Joey, no new alert
        tm.handle([TrackJob(ends=[end(1, 0.9, 4.0, [crop(1, 3.0, 0)])])], stats)
    assert alerts.raised == 1 and caplog.text.count("ALERT") == 1
    assert len(log.tracks) == 1 and log.tracks[0][1].identity.name == "Joey"
    template = log.tracks[0][0]
    assert (template.first_timestamp, template.last_timestamp, template.num_crops) == (0.9, 4.0, 3)
    assert stats.progress_matches == 2 and stats.tracks == 1
    assert not tm._span and not alerts._alerted  # nothing kept for ended tracks


def test_alert_body_of_an_open_track_has_the_embedded_span(receiver_factory):  # noqa: F811
    rx = receiver_factory()
    tm, alerts, _ = matching(webhooks=(WebhookConfig(url=rx.url),))
    stats = RunStats()
    tm.handle([TrackJob([crop(4, 1.5, 0), crop(4, 1.0, 0)])], stats)
    tm.handle([TrackJob(ends=[end(4, 0.5, 6.0)])], stats)
    alerts.close()
    assert len(rx.bodies) == 1
    body = rx.bodies[0]
    assert (body["track_id"], body["identity"], body["first_s"], body["last_s"], body["track_ended"]) == (
        4,
        "Joey",
        1.0,
        1.5,
        False,
    )


@pytest.mark.parametrize(
    "batches, pooled, expected",
    [
        # unknown at first (a crop between Joey and Ross), Joey once Joey's crops outweigh it
        ([[3], [0], [0, 0]], [0, 0, 0], [("Joey", False)]),
        # Joey, then Monica outweighs Joey, then Joey again at the end: one alert per identity
        ([[0], [2, 2, 2]], [0, 0, 0], [("Joey", False), ("Monica", False)]),
        # Ross is matched but not watched: no alert
        ([[1], [1]], [1], []),
        # only the pooled crops at the end make it Joey: the alert comes with the final match
        ([[3]], [0, 0, 0], [("Joey", True)]),
    ],
)
def test_alerts_follow_the_running_template(batches, pooled, expected):
    tm, alerts, _ = matching(threshold=0.75)
    raised = []
    alerts.webhooks = [SimpleNamespace(submit=raised.append, close=lambda: None)]
    stats = RunStats()
    for i, whos in enumerate(batches):
        tm.handle([TrackJob([crop(7, i + j / 10, w) for j, w in enumerate(whos)])], stats)
    tm.handle(
        [TrackJob(ends=[end(7, 0.0, 9.0, [crop(7, 8.0 + j / 10, w) for j, w in enumerate(pooled)])])], stats
    )
    alerts.close()
    assert [(a["identity"], a["track_ended"]) for a in raised] == expected


def test_tracks_are_alerted_apart_and_a_track_ending_in_the_same_batch_is_matched_once():
    tm, alerts, log = matching()
    raised = []
    alerts.webhooks = [SimpleNamespace(submit=raised.append, close=lambda: None)]
    stats = RunStats()
    # two cameras, same track id: separate tracks; track 2 gets crops and ends in one group
    tm.handle(
        [
            TrackJob([crop(1, 1.0, 0, "a"), crop(1, 1.0, 0, "b")]),
            TrackJob([crop(2, 1.0, 2, "a")], ends=[end(2, 0.5, 1.0, source="a")]),
        ],
        stats,
    )
    assert sorted((a["camera"], a["track_id"], a["track_ended"]) for a in raised) == [
        ("a", 1, False),
        ("a", 2, True),
        ("b", 1, False),
    ]
    assert stats.progress_matches == 2 and [(t.source_id, t.track_id) for t, _ in log.tracks] == [("a", 2)]


def test_nothing_is_matched_early_without_a_watchlist():
    tm, alerts, log = matching(watchlist=())
    stats = RunStats()
    tm.handle([TrackJob([crop(1, 1.0, 0)])], stats)
    tm.handle([TrackJob(ends=[end(1, 0.0, 2.0)])], stats)
    assert not alerts.watching and stats.progress_matches == 0 and alerts.raised == 0 and len(log.tracks) == 1
