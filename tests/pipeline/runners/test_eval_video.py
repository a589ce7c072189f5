"""``eval video`` end to end: the pipeline's tracks (pipeline/runners/eval_video.py) scored by
facemoe.evaluate.video; bad inputs through the command line, and the real clip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import run_pipeline
from facemoe.evaluate.video import ScoredTrack, evaluate_tracks, read_ground_truth
from pipeline.runners.eval_video import run_tracks
from tests.conftest import ASSETS, ROOT, on_the_fridge, require

FRIENDS_GT = ROOT / "tests" / "facemoe" / "evaluate" / "data" / "friends_in_video_gt.csv"
FRIENDS_VIDEO = ASSETS / "videos" / "friends_in_video.mp4"
FRIENDS_GALLERY = ASSETS / "images" / "friends_gallery"
TEST_CONFIG = ROOT / "configs" / "test.yaml"


def _csv(tmp_path, text: str):
    path = tmp_path / "gt.csv"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- command line: bad inputs (no model is loaded)


def _eval_video(tmp_path, gt: Path, videos=None, gallery=None, extra=()):
    videos = videos if videos is not None else [str(FRIENDS_VIDEO)]
    gallery = gallery if gallery is not None else str(FRIENDS_GALLERY)
    return run_pipeline.main(
        [
            "eval",
            "video",
            *videos,
            "--ground-truth",
            str(gt),
            "--gallery",
            str(gallery),
            "--config",
            str(TEST_CONFIG),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "case, message",
    [
        ("bad_columns", "expected columns video, identity, start_s, end_s"),
        ("gt_video_not_given", "names 1 video(s) that are not given: other.mp4"),
        ("missing_video", "video not found"),
        ("missing_gallery", "gallery folder not found"),
        ("empty_gallery", "expected identity subfolders or images named after people"),
        ("bad_override", "unknown config key source.strid"),
        ("missing_gt", "ground-truth file not found"),
    ],
)
def test_cli_bad_inputs_one_line_exit_2(case, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    gt = _csv(tmp_path, "video,identity,start_s,end_s\nfriends_in_video.mp4,Ross,,\n")
    kwargs: dict = {}
    if case == "bad_columns":
        gt = _csv(tmp_path, "video,name\nfriends_in_video.mp4,Ross\n")
    elif case == "gt_video_not_given":
        gt = _csv(tmp_path, "video,identity\nfriends_in_video.mp4,Ross\nother.mp4,Ross\n")
    elif case == "missing_video":
        kwargs["videos"] = [str(tmp_path / "friends_in_video.mp4")]
    elif case == "missing_gallery":
        kwargs["gallery"] = tmp_path / "nobody"
    elif case == "empty_gallery":
        (tmp_path / "empty").mkdir()
        kwargs["gallery"] = tmp_path / "empty"
    elif case == "bad_override":
        kwargs["extra"] = ["--set", "source.strid=2"]
    elif case == "missing_gt":
        gt = tmp_path / "nope.csv"
    if case in ("missing_gallery", "empty_gallery"):  # these get as far as opening the video
        require(FRIENDS_VIDEO)
    assert _eval_video(tmp_path, gt, **kwargs) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


# ---------------------------------------------------------------- the real clip, end to end


def _on_the_fridge(tracks) -> list:
    """The tracks of the photo on the fridge (tests.conftest.FRIDGE_PHOTO): no ground truth, non-mated."""
    return [t for t in tracks if on_the_fridge(t.centre)]


@pytest.fixture(scope="module")
def friends_tracks():
    """The pipeline (SCRFD-500M + MobileFaceNet, offline) over the Friends clip, scored against its six people."""
    video, gallery = require(FRIENDS_VIDEO), require(FRIENDS_GALLERY)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        return run_tracks([str(video)], read_ground_truth(FRIENDS_GT), gallery, TEST_CONFIG)


@pytest.mark.slow
def test_friends_clip_closed_set(friends_tracks):
    tracks, names, threshold = friends_tracks
    assert names == ["Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross"] and threshold == 0.3
    res = evaluate_tracks(tracks, read_ground_truth(FRIENDS_GT), names, operating_threshold=threshold)
    # every face track is of one of the six (six shots of two or three people) but for the photo on the fridge
    photo = _on_the_fridge(tracks)
    assert len(photo) <= 1 and res.counts["non_mated_tracks"] == len(photo)
    assert res.counts["tracks"] >= 10 and res.counts["mated_tracks"] == res.counts["tracks"] - len(photo)
    assert res.counts["ambiguous_tracks"] == 0  # the regions tell apart the people of each shot
    assert res.metrics["rank-1"] >= 0.75 and res.metrics["rank-5"] >= 0.9
    assert res.metrics["rank-1 time-weighted"] >= 0.85  # the misses are short side tracks
    assert (res.metrics["tpir@fpir=1e-1"] is None) == (not photo)  # open-set figures need a non-mated track
    found = {r["ground_truth"] for r in res.tracks if r["rank"] == 1}
    assert found == set(names)


@pytest.mark.slow
def test_friends_clip_open_set_without_one_person(friends_tracks, caplog):
    tracks, names, threshold = friends_tracks
    keep = [j for j, n in enumerate(names) if n != "Monica"]
    reduced = [
        ScoredTrack(
            t.video, t.track_id, t.start, t.end, None if t.scores is None else t.scores[keep], t.centre
        )
        for t in tracks
    ]
    with caplog.at_level(logging.WARNING):
        res = evaluate_tracks(
            reduced, read_ground_truth(FRIENDS_GT), [names[j] for j in keep], operating_threshold=threshold
        )
    assert "Monica" in caplog.text
    monica = [r for r in res.tracks if r["ground_truth"] == "Monica"]
    assert len(monica) >= 2 and res.counts["non_mated_tracks"] == len(monica) + len(_on_the_fridge(tracks))
    assert res.metrics["rank-1"] >= 0.75
    assert res.metrics["tpir@fpir=1e-1"] is not None and res.metrics["tpir@fpir=1e-1"] >= 0.5


@pytest.mark.slow
def test_cli_eval_video_json(tmp_path, capsys, monkeypatch):
    video = require(FRIENDS_VIDEO)
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for image in sorted(require(FRIENDS_GALLERY).iterdir()):
        if image.stem != "Monica":  # one person left out: her tracks are the non-mated probes
            (gallery / image.name).symlink_to(image)
    monkeypatch.chdir(ROOT)
    argv = [
        "eval",
        "video",
        str(video),
        "--ground-truth",
        str(FRIENDS_GT),
        "--gallery",
        str(gallery),
        "--config",
        str(TEST_CONFIG),
        "--set",
        "source.stride=2",
        "--format",
        "json",
        "--out",
        str(tmp_path),
    ]
    assert run_pipeline.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "video.json").read_text())
    assert printed["counts"]["gallery_identities"] == 5 and printed["counts"]["non_mated_tracks"] >= 1
    assert printed["metrics"]["rank-1"] >= 0.7 and printed["metrics"]["tpir@fpir=1e-1"] is not None
    assert all(t["video"] == "friends_in_video.mp4" for t in printed["tracks"])
