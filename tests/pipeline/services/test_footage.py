"""What a logged track's clip is cut from (pipeline/services/footage.py): a camera track's recording segments with
their offsets, masks and gaps; a camera track no recording covers is one line, exit 2 from ``evidence`` and a 409
from the clip route's function; closing an unknown case is refused."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

import run_pipeline
from gallery.db import Database
from gallery.matchlog import MatchLogWriter
from gallery.recordings import RecordingStore, add_segment, close_segment
from gallery.thumbnails import ThumbnailStore
from pipeline.services.clips import ClipError
from pipeline.services.footage import GAP_S, footage_of, load_footage, track_clip
from tests.gallery.test_matchlog import record

T0 = datetime(2026, 6, 1, 10, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def camera_log(tmp_path):
    """A camera track (``1:1``, stream time 100-104 s, seen from T0 + 10 s) in a SQLite log; its URL and the
    recording store beside it."""
    url = f"sqlite:///{tmp_path / 'site.db'}"
    with Database(url) as db:
        with MatchLogWriter(db, source="gate", kind="camera", config_hash="c") as writer:
            rec = dataclasses.replace(
                record(1),
                start_time=100.0,
                end_time=104.0,
                seen_start=T0 + timedelta(seconds=10),
                seen_end=T0 + timedelta(seconds=14),
                time_origin="camera",
            )
            writer.record(rec)
    return url, RecordingStore(tmp_path / "site_recordings")


def _segment(db: Database, store: RecordingStore, start_s: float, end_s: float, masks=None) -> int:
    started = T0 + timedelta(seconds=start_s)
    rel = store.segment_path("gate", started)
    rec_id = add_segment(db, "gate", started, rel, masks)
    path = store.resolve(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    close_segment(db, rec_id, T0 + timedelta(seconds=end_s), 1)
    return rec_id


def test_segments_map_to_track_time_and_gaps_inside_the_window_are_reported(camera_log):
    url, store = camera_log
    mask = [{"name": "desk", "points": [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]}]
    with Database(url, create=False) as db:
        _segment(db, store, 0, 9)
        _segment(db, store, 9, 11.5, mask)
        _segment(db, store, 13, 30)  # a reconnect left 11.5-13 s uncovered
        (track,) = load_footage(db, ["1:1"])
        got = footage_of(db, track, 2.0, store)
    assert [p.offset for p in got.parts] == pytest.approx([90.0, 99.0, 103.0])  # 100 + (start - (T0 + 10 s))
    assert (got.start, got.end) == pytest.approx((98.0, 106.001))
    assert got.parts[0].frame_filter is None and got.parts[2].frame_filter is None
    image = np.full((4, 8, 3), 200, np.uint8)
    masked = got.parts[1].frame_filter(image.copy(), 99.5)
    assert masked[:, 4:].max() == 0 and masked[:, :4].min() == 200
    assert got.gaps == ((T0 + timedelta(seconds=11.5), T0 + timedelta(seconds=13)),)
    assert GAP_S < 1.5


def test_a_camera_track_no_recording_covers_is_one_line_exit_2_and_a_clip_error(camera_log, tmp_path, capsys):
    url, store = camera_log
    with Database(url, create=False) as db:
        _segment(db, store, 100, 200)  # another time
        with pytest.raises(ClipError, match="no recording covers this track"):
            track_clip(db, ThumbnailStore(tmp_path / "thumbs"), "1:1", recordings=store)
        seg = _segment(db, store, 5, 20)
        store.resolve(store.segment_path("gate", T0 + timedelta(seconds=5))).unlink()  # its file deleted
        assert seg
        with pytest.raises(ClipError, match=r"no recording covers this track \(1 segments .* not in "):
            track_clip(db, None, "1:1", recordings=store)
    capsys.readouterr()
    code = run_pipeline.main(["evidence", "1:1", "--out", str(tmp_path / "out"), "--db", url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no recording covers this track" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["evidence", "--close", "nope"], "not found"),
        (["evidence", "--close", "x", "1:1"], "expected no track reference"),
        (["evidence", "1:1"], "expected track references REF... and --out DIR"),
    ],
)
def test_evidence_close_and_export_arguments_are_refused_in_one_line(camera_log, capsys, argv, expected):
    url, _ = camera_log
    capsys.readouterr()
    code = run_pipeline.main([*argv, "--db", url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err, err
