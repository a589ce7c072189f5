"""Context snapshots and per-frame boxes through the real command line (SCRFD, the ONNX embedder, PyAV, SQLite):
every logged track has a JPEG of its best crop's full frame, owner-only, at most 1280 px wide, with the face boxed
where one of the track's boxes is, and a box for every frame within its times; ``--reprocess`` and ``purge``
delete the snapshots with their tracks."""

from __future__ import annotations

import stat
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select

from core.types import SCENE_MAX_WIDTH
from gallery.db import Database
from gallery.forensic import track_detail
from gallery.models import MatchEvent, Track
from gallery.refs import track_ref
from gallery.scenes import MATCH_COLOR, UNKNOWN_COLOR
from gallery.track_boxes import unpack_boxes
from run_pipeline import main
from tests.conftest import ASSETS, ROOT, require

CONFIG = str(ROOT / "configs" / "test.yaml")
FRIENDS = ASSETS / "videos" / "friends_in_video.mp4"  # 1280x720
CROWD = ASSETS / "videos" / "facenet_pytorch_video.mp4"  # 1920x1080: downscaled to 1280x720
PEOPLE = ASSETS / "images" / "friends_gallery"
QUICK = ("--set", "source.end=2.5", "--set", "source.stride=2", "--no-progress")
COLOR_TOLERANCE = 60  # JPEG: a drawn pixel stays within this of its color on every channel


def _process(url: str, video: Path, *extra: str) -> None:
    argv = [
        "process",
        str(require(video)),
        "--gallery",
        str(require(PEOPLE)),
        "--db",
        url,
        "--config",
        CONFIG,
    ]
    assert main([*argv, *QUICK, *extra]) == 0


def _tracks(url: str) -> list[tuple[Track, str]]:
    with Database(url, create=False) as db, db.session() as session:
        rows = session.execute(
            select(Track, MatchEvent.decision).join(MatchEvent, MatchEvent.track_pk == Track.id)
        )
        return [(t, d) for t, d in rows.all()]


def _edge_share(image: np.ndarray, box: np.ndarray, color: tuple[int, int, int]) -> float:
    """The share of the pixels on the edges of ``box`` that have ``color``."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, x2 = np.clip([x1, x2], 0, w - 1)
    y1, y2 = np.clip([y1, y2], 0, h - 1)
    near = np.abs(image.astype(np.int16) - np.array(color, np.int16)).max(axis=2) <= COLOR_TOLERANCE
    ys, xs = np.arange(y1, y2 + 1), np.arange(x1, x2 + 1)
    edges = np.concatenate([near[ys, x1], near[ys, x2], near[y1, xs], near[y2, xs]])
    return float(edges.mean())


def _check_snapshots(url: str, store: Path, source_width: int) -> list[Path]:
    """Every logged track's snapshot and boxes as the module says; returns the snapshot files."""
    tracks = _tracks(url)
    assert tracks
    files = []
    for t, decision in tracks:
        assert t.snapshot == f"source{t.source_id}/run{t.run_id}/track{t.track_id}_scene.jpg"
        path = store / t.snapshot
        files.append(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        data = path.read_bytes()
        assert data[:3] == b"\xff\xd8\xff"  # JPEG
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[1] == min(source_width, SCENE_MAX_WIDTH)

        boxes = unpack_boxes(t.boxes)
        assert len(boxes) == t.frames
        assert (boxes[:, 0] >= t.start_time - 1e-4).all() and (boxes[:, 0] <= t.end_time + 1e-4).all()
        assert (boxes[:, 3] > boxes[:, 1]).all() and (boxes[:, 4] > boxes[:, 2]).all()

        color = MATCH_COLOR if decision == "match" else UNKNOWN_COLOR
        scaled = boxes[:, 1:] * (image.shape[1] / source_width)
        shares = [_edge_share(image, b, color) for b in scaled]
        best = int(np.argmax(shares))
        assert shares[best] >= 0.9, (t.track_id, max(shares))  # the face is boxed where the track was
        moved = scaled[best] + np.array([30, 30, 30, 30], np.float32)
        assert _edge_share(image, moved, color) < 0.5  # and nowhere else
    return files


def test_every_track_has_its_snapshot_and_boxes_and_reprocess_and_purge_delete_them(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = tmp_path / "g_thumbnails"
    _process(url, FRIENDS)
    first = _check_snapshots(url, store, 1280)
    assert {d for _, d in _tracks(url)} == {"match"}
    with Database(url, create=False) as db:
        t = _tracks(url)[0][0]
        assert track_detail(db, track_ref(t.run_id, t.track_id))["snapshot"] == t.snapshot

    _process(url, FRIENDS, "--reprocess")
    assert not any(p.exists() for p in first)  # the replaced run's snapshots are deleted
    second = _check_snapshots(url, store, 1280)
    assert set(second).isdisjoint(first)

    assert main(["purge", "--older-than", "0", "--db", url, "--config", CONFIG]) == 0
    assert not any(p.exists() for p in second)
    assert not list(store.rglob("*.jpg"))


def test_a_larger_frame_is_downscaled_with_its_boxes(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    _process(url, CROWD)
    assert len(_check_snapshots(url, tmp_path / "g_thumbnails", 1920)) >= 2
