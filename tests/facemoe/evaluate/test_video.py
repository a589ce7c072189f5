"""facemoe.evaluate.video: ground-truth reading, overlap assignment, metric wiring (the pipeline side of ``eval video``
is tested in tests/pipeline/test_eval_video.py)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from facemoe.evaluate import metrics
from facemoe.evaluate.data import ProtocolError
from facemoe.evaluate.video import (
    GroundTruthSpan,
    ScoredTrack,
    assign_identities,
    evaluate_tracks,
    format_tracks,
    read_ground_truth,
    video_keys,
)

DATA = Path(__file__).parent / "data"
FRIENDS_GT = DATA / "friends_in_video_gt.csv"


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gt.csv"
    path.write_text(text)
    return path


def _track(
    start: float, end: float, scores=None, video: str = "a.mp4", track_id: int = 0, centre=None
) -> ScoredTrack:
    return ScoredTrack(
        video, track_id, start, end, None if scores is None else np.asarray(scores, np.float64), centre
    )


def _span(
    identity: str, start: float = 0.0, end: float = math.inf, video: str = "a.mp4", x=(-math.inf, math.inf)
) -> GroundTruthSpan:
    return GroundTruthSpan(video, identity, start, end, x[0], x[1])


# ---------------------------------------------------------------- ground-truth file


def test_read_ground_truth_defaults_and_names(tmp_path):
    path = _csv(
        tmp_path, "Identity,VIDEO,end_s,start_s\nAnn,clips/a.mp4,,\nBob,b.mp4,12.5,3\n,,,\nCid,b.mp4,4,\n"
    )
    spans = read_ground_truth(path)
    assert spans == [
        GroundTruthSpan("a.mp4", "Ann", 0.0, math.inf),
        GroundTruthSpan("b.mp4", "Bob", 3.0, 12.5),
        GroundTruthSpan("b.mp4", "Cid", 0.0, 4.0),
    ]


def test_read_ground_truth_time_columns_are_optional(tmp_path):
    assert read_ground_truth(_csv(tmp_path, "video,identity\na.mp4,Ann\n")) == [_span("Ann")]


def test_read_ground_truth_regions(tmp_path):
    spans = read_ground_truth(
        _csv(tmp_path, "video,identity,x_min,x_max,y_max\na.mp4,Ann,10,200,\na.mp4,Bob,,50,90\n")
    )
    assert spans == [
        GroundTruthSpan("a.mp4", "Ann", 0.0, math.inf, 10.0, 200.0),
        GroundTruthSpan("a.mp4", "Bob", 0.0, math.inf, -math.inf, 50.0, -math.inf, 90.0),
    ]
    assert spans[0].holds((10.0, 5.0)) and not spans[0].holds((201.0, 5.0)) and spans[0].holds(None)
    assert not spans[1].holds((40.0, 95.0))


def test_friends_ground_truth_fixture_reads():
    spans = read_ground_truth(FRIENDS_GT)
    assert {s.identity for s in spans} == {"Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross"}
    assert {s.video for s in spans} == {"friends_in_video.mp4"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("video,person,start_s,end_s\na.mp4,Ann,0,1\n", "expected columns video, identity, start_s, end_s"),
        ("video,identity,start,end_s\na.mp4,Ann,0,1\n", "got video, identity, start, end_s"),
        ("video,identity,video\na.mp4,Ann,a.mp4\n", "expected columns"),
        ("", "got none"),
        ("video,identity,start_s,end_s\n", "expected at least one ground-truth row"),
        ("video,identity,start_s,end_s\na.mp4,,0,1\n", "line 2: expected values for identity"),
        ("video,identity,start_s,end_s\na.mp4,Ann,zero,1\n", "line 2 start_s: expected seconds"),
        ("video,identity,start_s,end_s\na.mp4,Ann,-1,1\n", "expected a finite number of seconds >= 0"),
        ("video,identity,start_s,end_s\na.mp4,Ann,0,nan\n", "expected a finite number of seconds >= 0"),
        (
            "video,identity,start_s,end_s\na.mp4,Ann,0,1\nb.mp4,Bob,5,5\n",
            "line 3: expected end_s after start_s",
        ),
        ("video,identity,x_min,x_max\na.mp4,Ann,50,20\n", "line 2: expected x_min < x_max and y_min < y_max"),
        ("video,identity,x_min\na.mp4,Ann,left\n", "line 2 x_min: expected pixels"),
    ],
)
def test_read_ground_truth_rejects(tmp_path, text, message):
    with pytest.raises(ProtocolError, match=message):
        read_ground_truth(_csv(tmp_path, text))


def test_read_ground_truth_missing_file(tmp_path):
    with pytest.raises(ProtocolError, match="ground-truth file not found"):
        read_ground_truth(tmp_path / "nope.csv")


def test_video_keys_match_by_file_name(caplog):
    spans = [_span("Ann", video="a.mp4")]
    with caplog.at_level(logging.WARNING):
        keys = video_keys(["x/a.mp4", Path("y/b.mp4")], spans)
    assert keys == {"x/a.mp4": "a.mp4", "y/b.mp4": "b.mp4"}
    assert "b.mp4 has no ground-truth row" in caplog.text


@pytest.mark.parametrize(
    "videos, message",
    [
        (["x/a.mp4", "y/a.mp4"], "two given videos are called a.mp4"),
        (["x/b.mp4"], r"names 1 video\(s\) that are not given: a.mp4 \(given: b.mp4\)"),
    ],
)
def test_video_keys_rejects(videos, message):
    with pytest.raises(ProtocolError, match=message):
        video_keys(videos, [_span("Ann", video="a.mp4")])


# ---------------------------------------------------------------- overlap assignment


def _ids(tracks, spans, tol=0.1):
    return [a.identity for a in assign_identities(tracks, spans, tol)]


@pytest.mark.parametrize(
    "track, spans, expected",
    [
        ((2, 4), [_span("A", 0, 10)], "A"),
        ((0, 10), [_span("A", 0, 8), _span("B", 6, 10)], "A"),  # 8 s against 4 s
        (
            (0, 10),
            [_span("A", 0, 3), _span("A", 7, 10), _span("B", 3, 7)],
            "A",
        ),  # spans of one identity add up
        ((0, 10), [_span("A", 0, 4), _span("B", 4, 10)], "B"),
        ((5, 6), [_span("A", 0, 5), _span("B", 6, 9)], None),  # only touching
        ((3, 4), [_span("A", 0, 2)], None),
        ((3, 4), [_span("A", video="b.mp4")], None),  # other video
        ((4, 4), [_span("A", 0, 2), _span("B", 3, 5)], "B"),  # a single-frame track inside a span
        ((0, 10), [_span("A")], "A"),  # whole video
    ],
)
def test_assignment_by_most_overlap(track, spans, expected):
    assert _ids([_track(*track, scores=[0.0, 0.0, 0.0])], spans) == [expected]


def test_assignment_tie_is_ambiguous_whatever_the_scores():
    spans = [_span("A", 0, 10), _span("B", 0, 10)]
    for scores in ([0.1, 0.6, 0.0], [0.9, 0.0, 0.0], None):
        (a,) = assign_identities([_track(1, 9, scores)], spans)
        assert a.identity is None and a.tied == ("A", "B") and a.ambiguous


@pytest.mark.parametrize("tolerance, expected", [(0.1, None), (0.0, "A")])
def test_assignment_tie_tolerance(tolerance, expected):
    # A overlaps 10 s, B 9.5 s: within 10 % of the 10 s track they are tied
    spans = [_span("A", 0, 10), _span("B", 0.5, 10)]
    assert _ids([_track(0, 10, [0.1, 0.6, 0.0])], spans, tol=tolerance) == [expected]


def test_assignment_regions_separate_people_on_screen_together():
    spans = [_span("A", 0, 10, x=(0, 300)), _span("B", 0, 10, x=(300, 640))]
    tracks = [
        _track(0, 10, track_id=1, centre=(120.0, 200.0)),
        _track(0, 10, track_id=2, centre=(500.0, 180.0)),
        _track(0, 10, track_id=3, centre=(700.0, 180.0)),
        _track(0, 10, track_id=4),
    ]
    out = assign_identities(tracks, spans)
    assert [a.identity for a in out] == ["A", "B", None, None]
    assert [a.ambiguous for a in out] == [False, False, False, True]  # outside every region: nobody known


def test_assignment_rejects_bad_tolerance():
    with pytest.raises(ValueError, match=r"tie_tolerance must be in \[0, 1\), got 1.5"):
        assign_identities([], [], 1.5)


def test_ambiguous_tracks_are_left_out_of_the_figures():
    spans = [_span("A", 0, 10), _span("B", 0, 10), _span("C", 20, 30)]
    tracks = [_track(0, 10, [0.9, 0.1, 0.0], track_id=1), _track(20, 30, [0.1, 0.2, 0.8], track_id=2)]
    res = evaluate_tracks(tracks, spans, ["A", "B", "C"])
    assert res.counts["ambiguous_tracks"] == 1 and res.counts["scored_tracks"] == 1
    assert res.metrics["rank-1"] == 1.0 and res.tracks[0]["tied"] == ["A", "B"]
    assert any("left out of the figures" in n for n in res.notes)


# ---------------------------------------------------------------- metric wiring on synthetic tracks

NAMES = ["A", "B", "C"]


@pytest.fixture
def synthetic():
    """Six scored tracks (four mated, two non-mated), one without a template, one of a person not enrolled."""
    spans = [
        _span("A", 0, 10),
        _span("B", 10, 20),
        _span("C", 20, 30),
        _span("A", 30, 40),
        _span("Z", 50, 60),
    ]
    tracks = [
        _track(0, 10, [0.9, 0.1, 0.2], track_id=1),  # A, rank 1, strong
        _track(10, 12, [0.6, 0.5, 0.1], track_id=2),  # B, rank 2
        _track(20, 24, [0.1, 0.2, 0.4], track_id=3),  # C, rank 1, weak
        _track(30, 38, [0.7, 0.0, 0.1], track_id=4),  # A, rank 1
        _track(50, 56, [0.3, 0.45, 0.0], track_id=5),  # Z: not enrolled -> non-mated
        _track(70, 72, [0.2, 0.1, 0.35], track_id=6),  # nobody in the ground truth -> non-mated
        _track(31, 33, None, track_id=7),  # no crop embedded: listed, not scored
    ]
    return tracks, spans


def test_evaluate_tracks_metrics(synthetic, caplog):
    tracks, spans = synthetic
    with caplog.at_level(logging.WARNING):
        res = evaluate_tracks(
            tracks, spans, NAMES, ranks=(1, 2), fpir_targets=(0.5, 1.0), operating_threshold=0.4
        )
    assert "not in the gallery" in caplog.text and "Z" in caplog.text
    assert res.counts == {
        "videos": 1,
        "tracks": 7,
        "scored_tracks": 6,
        "mated_tracks": 4,
        "non_mated_tracks": 2,
        "ambiguous_tracks": 0,
        "gallery_identities": 3,
    }
    m = res.metrics
    assert m["rank-1"] == pytest.approx(3 / 4) and m["rank-2"] == 1.0
    # durations of the mated tracks: 10, 2, 4, 8
    assert m["rank-1 time-weighted"] == pytest.approx(22 / 24)
    # non-mated top scores 0.45 and 0.35: FPIR 0.5 allows one false alarm -> threshold 0.35; 1.0 allows both
    assert res.thresholds["tpir@fpir=5e-1"] == pytest.approx(0.35)
    assert m["tpir@fpir=5e-1"] == pytest.approx(3 / 4)  # A 0.9, C 0.4, A 0.7 are above 0.35
    assert m["tpir@fpir=5e-1 time-weighted"] == pytest.approx(22 / 24)
    assert m["tpir@fpir=1e+00"] == pytest.approx(3 / 4)
    # operating point: accepted when top >= 0.4 and right: A, C (0.4), A; non-mated 0.45 accepted, 0.35 not
    assert m["tpir@operating threshold"] == pytest.approx(3 / 4)
    assert m["fpir@operating threshold"] == pytest.approx(1 / 2)
    assert any("1 tracks had no embedded crop" in n for n in res.notes)


def test_evaluate_tracks_open_set_agrees_with_metrics_module(synthetic):
    tracks, spans = synthetic
    res = evaluate_tracks(tracks, spans, NAMES, fpir_targets=(0.5,))
    scored = [t for t in tracks if t.scores is not None]
    sim = np.stack([t.scores for t in scored])
    labels = np.array(["A", "B", "C", "A", None, None], dtype=object)
    ref = metrics.tpir_at_fpir(sim, labels, np.array(NAMES, dtype=object), (0.5,))[0.5]
    assert (
        res.metrics["tpir@fpir=5e-1"] == ref["tpir"] and res.thresholds["tpir@fpir=5e-1"] == ref["threshold"]
    )
    ranks = [r["rank"] for r in res.tracks]
    assert ranks == [1, 2, 1, 1, None, None, None]
    assert [r["mated"] for r in res.tracks] == [True, True, True, True, False, False, False]
    assert res.tracks[4]["ground_truth"] == "Z" and res.tracks[5]["ground_truth"] is None
    assert res.tracks[1]["candidates"][:2] == [{"name": "A", "score": 0.6}, {"name": "B", "score": 0.5}]


def test_evaluate_tracks_without_non_mated(synthetic):
    tracks, spans = synthetic
    res = evaluate_tracks(tracks[:4], spans, NAMES, operating_threshold=None)
    assert res.metrics["rank-1"] == pytest.approx(3 / 4)
    assert res.metrics["tpir@fpir=1e-2"] is None and res.metrics["tpir@fpir=1e-2 time-weighted"] is None
    assert res.metrics["tpir@operating threshold"] is None
    assert any("got 4 mated and 0 non-mated" in n for n in res.notes)
    assert any("match.threshold is null" in n for n in res.notes)


def test_evaluate_tracks_without_mated(synthetic):
    tracks, spans = synthetic
    res = evaluate_tracks(tracks[4:6], spans, NAMES, operating_threshold=0.4)
    assert res.metrics["rank-1"] is None and res.metrics["rank-1 time-weighted"] is None
    assert res.metrics["tpir@operating threshold"] is None and res.metrics["fpir@operating threshold"] == 0.5


def test_evaluate_tracks_no_tracks_at_all():
    res = evaluate_tracks([], [_span("A")], NAMES, operating_threshold=0.3)
    assert res.counts["tracks"] == 0 and res.tracks == []
    assert all(v is None for v in res.metrics.values())


def test_evaluate_tracks_rejects_bad_scores():
    with pytest.raises(ValueError, match=r"expected 3 scores, got \(2,\)"):
        evaluate_tracks([_track(0, 1, [0.1, 0.2])], [_span("A")], NAMES)
    with pytest.raises(ProtocolError, match="at least one identity"):
        evaluate_tracks([_track(0, 1, [])], [_span("A")], [])


def test_result_json_and_track_table(synthetic):
    tracks, spans = synthetic
    res = evaluate_tracks(tracks, spans, NAMES)
    data = json.loads(json.dumps(res.to_dict()))
    assert data["protocol"] == "video" and len(data["tracks"]) == 7 and "operating" in data["thresholds"]
    lines = format_tracks(res).splitlines()
    assert lines[0].split() == ["video", "track", "start", "end", "truth", "best", "score", "rank"]
    assert lines[5].split() == ["a.mp4", "5", "50.00", "56.00", "Z", "(not", "enrolled)", "B", "0.450", "-"]
    assert lines[7].split()[-3:] == ["-", "-", "-"]
