"""``TrackMatching`` embeds an ending track's crops in rounds, best first: the second round only for the tracks whose
first-round match is not decisive, batched across them; every track is delivered with the template it used."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from core.types import Candidate, FaceCrop, MatchResult, Quality
from gallery.watchlists import ListRule
from pipeline.config import RunnerConfig
from pipeline.live.config import AlertConfig
from pipeline.runners.decisive import asked, decisive, rounds, thresholds_in_force
from pipeline.runners.engine import TrackMatching
from pipeline.runners.tracking import EndedTrack, RunStats, TrackJob
from pipeline.sinks.alerts import WatchlistAlerts
from stages.config import AggregateConfig
from stages.match import Matcher
from stages.track import TrackEnd
from tests.fakes import FixedIndex

NAMES = ("Joey", "Ross", "Monica")
NEAR = 0.55  # a crop of kind 4 scores this against Joey: within 0.1 of the 0.5 threshold
FEATS = np.array(
    [
        [1, 0, 0, 0],  # 0: Joey
        [0, 1, 0, 0],  # 1: Ross
        [0, 0, 1, 0],  # 2: Monica
        [0, 0, 0, 1],  # 3: nobody in the gallery (score 0)
        [NEAR, 0, 0, np.sqrt(1 - NEAR**2)],  # 4: Joey, barely
        [np.sqrt(0.5), np.sqrt(0.5), 0, 0],  # 5: Joey and Ross alike
        [0.9, 0, 0, np.sqrt(1 - 0.81)],  # 6: Joey at 0.9
    ],
    np.float32,
)


class TableEmbedder:
    """A crop filled with value k embeds to ``FEATS[k]``; records the size of every batch."""

    embedder_id = "table"
    dim = 4

    def __init__(self) -> None:
        self.batches: list[int] = []

    def embed(self, crops):
        self.batches.append(len(crops))
        return FEATS[[int(c[0, 0, 0]) for c in crops]], np.ones(len(crops), np.float32)


class Recorder:
    def __init__(self) -> None:
        self.tracks = []

    def on_track(self, template, result) -> None:
        self.tracks.append((template, result))

    def close(self) -> None:
        pass


class Wrapper:
    """A sink that forwards to others (as the resume filter does)."""

    def __init__(self, sinks) -> None:
        self.sinks = list(sinks)

    def on_track(self, template, result) -> None:
        for s in self.sinks:
            s.on_track(template, result)

    def close(self) -> None:
        pass


def ended(track_id: int, kinds: list[int], seconds: float = 10.0, source: str = "cam") -> EndedTrack:
    """A confirmed track of ``seconds`` ending with crops of ``kinds`` pooled, best first (quality falling)."""
    pooled = []
    for i, k in enumerate(kinds):
        image = np.full((112, 112, 3), k, np.uint8)
        crop = FaceCrop(source, track_id, i, i / 10, image, Quality(80.0, 0.9, 100.0, 0.1))
        pooled.append((crop, 0.9 - i * 0.01))
    return EndedTrack(TrackEnd(track_id, True, 1.0, 1.0 + seconds, 20), source, 20, None, pooled)


def matching(runner: RunnerConfig, sinks=(), top_k: int = 3):
    gallery = FixedIndex(NAMES, np.eye(4, dtype=np.float32)[:3], 0.5)
    matcher = Matcher(SimpleNamespace(threshold=None, top_k=top_k), gallery)
    log = Recorder()
    embedder = TableEmbedder()
    cfg = SimpleNamespace(aggregate=AggregateConfig(), runner=runner)
    return TrackMatching(cfg, embedder, matcher, [*sinks, log]), embedder, log


ON = RunnerConfig(best_k=5, first_crops=2, decisive_margin=0.1, crops_per_second=2.0)


def run(tm, tracks) -> RunStats:
    stats = RunStats()
    tm.handle([TrackJob(ends=tracks)], stats)
    return stats


def delivered(log) -> dict[int, tuple[str, int]]:
    return {t.track_id: (r.identity.name if r.identity else "unknown", t.num_crops) for t, r in log.tracks}


@pytest.mark.parametrize(
    "kinds, expected",
    [
        ([0, 0, 1, 1, 1], ("Joey", 2)),  # decisively above: Ross's crops never embedded
        ([3, 3, 0, 0, 0], ("unknown", 2)),  # decisively below
        ([4, 4, 0, 0, 0], ("Joey", 5)),  # 0.55, within the margin of 0.5: the rest decides
        ([5, 5, 0, 0, 0], ("Joey", 5)),  # above, but Ross is as close as Joey
    ],
)
def test_a_track_stops_after_the_first_round_only_when_decisive(kinds, expected):
    tm, embedder, log = matching(ON)
    stats = run(tm, [ended(1, kinds)])
    assert delivered(log) == {1: expected}
    assert embedder.batches == ([2] if expected[1] == 2 else [2, 3])
    assert stats.crops_embedded == expected[1] and stats.decisive_stops == (expected[1] == 2)
    assert stats.tracks == 1 and not tm._span


def test_the_second_round_is_one_batch_for_every_undecided_track():
    tm, embedder, log = matching(ON)
    stats = run(tm, [ended(1, [4, 4, 0, 0]), ended(2, [0, 0, 1, 1, 1]), ended(3, [5, 5, 1, 1, 1])])
    assert embedder.batches == [6, 5]  # round one: 2 per track; round two: tracks 1 and 3 only
    assert delivered(log) == {1: ("Joey", 4), 2: ("Joey", 2), 3: ("Ross", 5)}
    assert [t.track_id for t, _ in log.tracks] == [1, 2, 3]  # delivered in order
    assert stats.decisive_stops == 1 and stats.crops_embedded == 11


def test_the_delivered_result_is_the_match_of_the_delivered_template():
    tm, _, log = matching(ON)
    run(tm, [ended(1, [6, 6, 1, 1]), ended(2, [4, 4, 0])])
    for template, result in log.tracks:
        scores = np.eye(4, dtype=np.float32)[:3] @ template.embedding
        assert result.candidates[0].score == pytest.approx(float(scores.max()), abs=1e-6)
        assert template.num_crops == (2 if template.track_id == 1 else 3)


@pytest.mark.parametrize(
    "runner",
    [
        RunnerConfig(first_crops=2, decisive_margin=0.0),  # margin 0: off
        RunnerConfig(first_crops=2, decisive_margin=0.1, embed_all=True),  # the baseline: unchanged
        RunnerConfig(first_crops=5, decisive_margin=0.1),  # the first round holds them all
    ],
)
def test_one_round_of_all_crops(runner):
    tm, embedder, log = matching(runner)
    stats = run(tm, [ended(1, [0, 0, 0, 1, 1]), ended(2, [3, 3, 3])])
    assert embedder.batches == [8]
    assert delivered(log) == {1: ("Joey", 5), 2: ("unknown", 3)} and stats.decisive_stops == 0


@pytest.mark.parametrize("kinds, expected", [([], ("unknown", 0)), ([0], ("Joey", 1)), ([4], ("Joey", 1))])
def test_tracks_of_zero_or_one_crop(kinds, expected):
    tm, embedder, log = matching(ON)
    stats = run(tm, [ended(1, kinds)])
    assert delivered(log) == {1: expected}
    assert embedder.batches == ([len(kinds)] if kinds else []) and stats.tracks == 1


def test_open_tracks_crops_ride_along_in_the_first_round():
    tm, embedder, log = matching(ON)
    open_crop = ended(7, [0]).pooled
    stats = RunStats()
    tm.handle([TrackJob(crops=open_crop, ends=[ended(1, [4, 4, 0])])], stats)
    assert embedder.batches == [3, 1] and delivered(log) == {1: ("Joey", 3)}
    assert (("cam", 7) in tm._span) and tm.aggregator.state("cam", 7).crops == 1


@pytest.mark.parametrize(
    "kinds, seconds, batches, expected",
    [
        ([0, 0, 0, 1], 0.2, [1], ("Joey", 1)),  # a short track asks for one crop; decisive on it
        ([4, 0, 0, 1], 0.2, [1, 3], ("Joey", 4)),  # undecided on its one: the rest
        ([4, 4, 0, 0, 0], 1.5, [2, 1], ("Joey", 3)),  # asks for three: decisive on the third
        ([4, 4, 4, 0, 0], 1.5, [2, 1, 2], ("Joey", 5)),  # still undecided on three: the rest
    ],
)
def test_short_tracks_start_with_fewer_crops_and_go_on_only_while_undecided(
    kinds, seconds, batches, expected
):
    tm, embedder, log = matching(ON)
    run(tm, [ended(1, kinds, seconds)])
    assert embedder.batches == batches and delivered(log) == {1: expected}


def test_later_rounds_batch_only_the_tracks_still_undecided():
    tm, embedder, log = matching(ON)
    run(tm, [ended(1, [4, 4, 4, 0, 0], 1.5), ended(2, [4, 4, 0, 0, 0], 1.5), ended(3, [4, 0, 0], 0.2)])
    assert embedder.batches == [
        5,
        2 + 2,
        2,
    ]  # round 2: tracks 1 and 2 (one each), 3 (its last two); round 3: 1
    assert delivered(log) == {1: ("Joey", 5), 2: ("Joey", 3), 3: ("Joey", 3)}


@pytest.mark.parametrize(
    "seconds, rate, expected",
    [(0.0, 2.0, 1), (0.2, 2.0, 1), (0.5, 2.0, 1), (0.51, 2.0, 2), (1.5, 2.0, 3), (2.5, 2.0, 5), (60, 2.0, 5)]
    + [(0.2, 0.0, 5)],  # rate 0: best_k
)
def test_a_track_asks_for_more_crops_the_longer_it_lasted(seconds, rate, expected):
    assert asked(seconds, RunnerConfig(best_k=5, crops_per_second=rate)) == expected


@pytest.mark.parametrize(
    "crops, seconds, runner, expected",
    [
        (5, 10.0, ON, [2, 5]),
        (5, 1.5, ON, [2, 3, 5]),
        (5, 0.2, ON, [1, 5]),
        (2, 10.0, ON, [2]),
        (1, 0.2, ON, [1]),
        (0, 10.0, ON, [0]),
        (3, 1.0, ON, [2, 3]),  # asks for two of its three
        (5, 10.0, RunnerConfig(decisive_margin=0.0), [5]),
        (5, 10.0, RunnerConfig(decisive_margin=0.1, embed_all=True), [5]),
        (5, 10.0, RunnerConfig(decisive_margin=0.1, first_crops=9), [5]),
    ],
)
def test_round_ends(crops, seconds, runner, expected):
    assert rounds(crops, seconds, runner) == expected


def test_a_watch_list_threshold_near_the_score_keeps_the_track_asking():
    strict = SimpleNamespace(rules={"Joey": (ListRule("vip", 0.95),)}, on_track=lambda *a: None)
    for sinks, batches in (((), [2]), ((Wrapper([strict]),), [2, 2])):
        tm, embedder, log = matching(ON, sinks)
        run(tm, [ended(1, [6, 6, 0, 0])])  # Joey at 0.9: decisive against 0.5, not against 0.95
        assert embedder.batches == batches


def test_thresholds_in_force_gather_every_list_through_wrappers():
    lists = SimpleNamespace(
        rules={"a": (ListRule("x", 0.7), ListRule("default")), "b": (ListRule("y", 0.2),)}
    )
    assert thresholds_in_force(0.4, [Recorder(), Wrapper([lists])]) == (0.2, 0.4, 0.7)
    assert thresholds_in_force(0.4, []) == (0.4,)


def test_thresholds_in_force_read_the_alert_sinks_lists():
    rules = {"Joey": (ListRule("vip", 0.95), ListRule("default")), "Ross": (ListRule("door", 0.6),)}
    alerts = WatchlistAlerts(AlertConfig(watchlist=("Joey", "Ross")), rules=rules)
    assert thresholds_in_force(0.5, [alerts, Recorder()]) == (0.5, 0.6, 0.95)


def _result(*scores: float) -> MatchResult:
    cands = tuple(Candidate(i, f"p{i}", s) for i, s in enumerate(scores))
    return MatchResult("cam", 1, cands, "match" if cands and cands[0].score >= 0.5 else "unknown", 0.5)


@pytest.mark.parametrize(
    "scores, thresholds, margin, top_k, expected",
    [
        ((0.8, 0.3), (0.5,), 0.1, 3, True),
        ((0.8, 0.75), (0.5,), 0.1, 3, False),  # the runner-up could overtake
        ((0.55, 0.1), (0.5,), 0.1, 3, False),  # too close to the threshold
        ((0.3, 0.29), (0.5,), 0.1, 3, True),  # below: the identity does not matter
        ((0.8, 0.3), (0.5, 0.85), 0.1, 3, False),  # near a watch list's threshold
        ((0.8, 0.3), (0.5, 0.95), 0.1, 3, True),
        ((0.8,), (0.5,), 0.1, 3, True),  # one identity in the gallery
        ((0.8,), (0.5,), 0.1, 1, False),  # top_k 1: the runner-up is unknown
        ((), (0.5,), 0.1, 3, True),  # an empty gallery
        ((0.9, 0.1), (0.5,), 0.0, 3, False),  # margin 0: off
    ],
)
def test_decisive(scores, thresholds, margin, top_k, expected):
    assert decisive(_result(*scores), thresholds, margin, top_k) is expected
