from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from pipeline.config import SourceConfig
from pipeline.errors import SourceError
from pipeline.sources import FileSource
from tests.conftest import ASSETS, require

CCTV = ASSETS / "videos" / "person_tracker_cctv.mp4"  # 640x360, 29.97 fps, 641 frames, index at the front
FRIENDS = ASSETS / "videos" / "friends_in_video.mp4"  # 23.976 fps, index at the end


def _frames(path, **kw):
    src = FileSource(require(path), SourceConfig(**kw))
    return src, list(src)


def test_window_and_timestamps():
    src, frames = _frames(CCTV, start=2.0, end=3.0)
    times = [f.timestamp for f in frames]
    assert times[0] == pytest.approx(2.0, abs=0.034) and times[-1] <= 3.0 + 1e-6
    assert len(frames) == 30 and np.all(np.diff(times) > 0)
    assert frames[0].image.shape == (360, 640, 3) and frames[0].index == round(times[0] * 30000 / 1001)
    assert src.report.kept == 30 and not src.report.damaged


@pytest.mark.parametrize(
    "kw,count",
    [
        ({"stride": 10, "end": 2.0}, 6),
        ({"target_fps": 5.0, "end": 2.0}, 10),
        ({"stride": 2, "target_fps": 100.0, "end": 1.0}, 15),
    ],
)
def test_stride_and_rate(kw, count):
    src, frames = _frames(CCTV, **kw)
    assert len(frames) == count
    assert abs(src.expected_frames() - count) <= 1


def test_source_id_and_early_stop_do_not_hang():
    src = FileSource(require(FRIENDS), SourceConfig(queue_size=2), source_id="cam-a")
    for n, frame in enumerate(src):
        assert frame.source_id == "cam-a"
        if n == 3:
            break  # the decoder thread, blocked on a full queue, must end


def test_missing_empty_and_not_video(tmp_path):
    with pytest.raises(SourceError, match="video not found"):
        FileSource(tmp_path / "none.mp4", SourceConfig())
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        FileSource(tmp_path / "empty.mp4", SourceConfig())
    (tmp_path / "notes.mp4").write_text("hello " * 200)
    with pytest.raises(SourceError, match="cannot read .* as video"):
        FileSource(tmp_path / "notes.mp4", SourceConfig())
    with pytest.raises(SourceError, match="not a file"):
        FileSource(tmp_path, SourceConfig())


def test_truncated_file_delivers_what_decodes(tmp_path):
    data = require(CCTV).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    src = FileSource(cut, SourceConfig())
    frames = list(src)
    assert 200 < len(frames) < 641 and src.report.damaged and src.report.ended_early
    assert any("truncated" in e for e in src.report.errors)


def test_truncated_file_with_index_at_the_end_is_rejected(tmp_path):
    data = require(FRIENDS).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="cannot read"):
        FileSource(cut, SourceConfig())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (scripts/system-deps.sh)")
def test_rotation_metadata_is_honoured(tmp_path):
    rotated = tmp_path / "rot.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(require(CCTV)),
            "-t",
            "0.2",
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=90",
            str(rotated),
        ],
        check=True,
    )
    upright = next(iter(FileSource(require(CCTV), SourceConfig()))).image
    turned = next(iter(FileSource(rotated, SourceConfig()))).image
    assert turned.shape == (640, 360, 3)
    np.testing.assert_array_equal(turned, np.rot90(upright, k=1))  # the way ffmpeg itself shows it


def test_decoding_stays_a_bounded_distance_ahead():
    import time

    src = FileSource(require(CCTV), SourceConfig(queue_size=4, end=3.0))
    for n, _ in enumerate(src, start=1):
        time.sleep(0.01)  # a slow consumer
        assert src.report.decoded - n <= 4 + 2  # queue plus the frame in hand and the one being put
