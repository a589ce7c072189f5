from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest

from core.types import Candidate, FaceCrop, MatchResult, Quality, TrackTemplate
from pipeline.sinks.outputs import (
    ConsoleTableSink,
    JsonSink,
    ResultSink,
    ThumbnailSink,
    thumbnail_name,
    track_record,
)


def _track(tid, start, decision="match"):
    crop = FaceCrop(
        "videos/a b.mp4", tid, 3, start, np.full((112, 112, 3), tid, np.uint8), Quality(40.0, 0.9, 100.0, 0.1)
    )
    tpl = TrackTemplate(
        "videos/a b.mp4", tid, np.ones(4, np.float32) / 2, 2.0, 2, crop, start, start + 1.5, 12
    )
    cands = (Candidate(1, "Ann", 0.61234), Candidate(2, "Bob", 0.2))
    return tpl, MatchResult("videos/a b.mp4", tid, cands, decision, 0.4)


def test_record_fields(tmp_path):
    rec = track_record(*_track(5, 2.0), thumbnail_dir=tmp_path)
    assert rec["identity"] == "Ann" and rec["score"] == 0.6123 and rec["frames"] == 12
    assert rec["crops_embedded"] == 2 and rec["thumbnail"].endswith("a_b_track00005.jpg")
    assert track_record(*_track(5, 2.0, "unknown"))["identity"] is None


def test_table_sorted_by_start():
    out = io.StringIO()
    sink = ConsoleTableSink(out, {"videos/a b.mp4": 7})
    assert isinstance(sink, ResultSink)
    sink.on_track(*_track(2, 5.0, "unknown"))
    sink.on_track(*_track(1, 1.0))
    sink.close()
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:5] == ["ref", "source", "seen", "start", "end"]
    assert lines[1].split()[:4] == ["7:1", "a", "b.mp4", "unknown"]  # the source name "a b.mp4" is two words
    assert "Ann" in lines[1] and lines[2].startswith("7:2 ") and "(Ann)" in lines[2]


def test_sighting_times_in_record_and_table():
    template, result = _track(4, 2.0)
    template.wall_start, template.wall_end = 1772348402.0, 1772348403.5  # 2026-03-01T07:00:02Z + 1.5 s
    rec = track_record(template, result, run_ids={"videos/a b.mp4": 3})
    assert rec["ref"] == "3:4" and rec["seen_start"] == "2026-03-01T07:00:02.000+00:00"
    assert rec["seen_end"] == "2026-03-01T07:00:03.500+00:00" and rec["start_s"] == 2.0
    assert (
        track_record(*_track(4, 2.0))["ref"] is None and track_record(*_track(4, 2.0))["seen_start"] is None
    )
    out = io.StringIO()
    sink = ConsoleTableSink(out)
    sink.on_track(template, result)
    sink.close()
    assert out.getvalue().splitlines()[1].split()[:4] == ["-", "a", "b.mp4", "2026-03-01T07:00:02.000+00:00"]


def test_table_without_tracks():
    out = io.StringIO()
    ConsoleTableSink(out).close()
    assert "(no face tracks)" in out.getvalue()


def test_json_written_whole(tmp_path):
    target = tmp_path / "out" / "result.json"
    sink = JsonSink(target, extra={"embedder": "x"})
    sink.on_track(*_track(2, 5.0))
    sink.on_track(*_track(1, 1.0))
    assert not target.exists()
    sink.close()
    data = json.loads(target.read_text())
    assert data["embedder"] == "x" and [t["track_id"] for t in data["tracks"]] == [1, 2]
    assert list(target.parent.iterdir()) == [target]


def test_json_to_stdout(capsys):
    sink = JsonSink("-")
    sink.close()
    assert json.loads(capsys.readouterr().out) == {"tracks": []}


@pytest.mark.parametrize("size", [112, 64])
def test_thumbnails(tmp_path, size):
    sink = ThumbnailSink(tmp_path / "thumbs", size)
    sink.on_track(*_track(3, 0.0))
    sink.close()
    path = tmp_path / "thumbs" / thumbnail_name("videos/a b.mp4", 3)
    assert sink.written == [path] and cv2.imread(str(path)).shape == (size, size, 3)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700  # faces
