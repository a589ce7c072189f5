from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone

import av
import numpy as np
import pytest

from pipeline.config import SourceConfig
from pipeline.errors import SourceError
from pipeline.runners.sources import FileSource
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


# --- MPEG-TS restarts and wraps: every decodable frame, monotonic times ---------------------------------------

WRAP_S = 2**33 / 90000  # MPEG-TS presentation time wraps after 2**33 ticks of 90 kHz (26.5 hours)
needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe are not installed (scripts/system-deps.sh)",
)


def ts_clip(dst, start: float, seconds: float, offset: float | None = None):
    """``seconds`` of the friends clip from ``start``, 320 px wide, as MPEG-TS with SPS/PPS at every keyframe;
    ``offset`` shifts its presentation times (``-output_ts_offset``)."""
    cmd = ["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-i", str(require(FRIENDS)), "-t", str(seconds)]
    cmd += ["-an", "-vf", "scale=320:-2", "-c:v", "libx264", "-preset", "veryfast"]
    cmd += ["-x264-params", "repeat-headers=1"]
    cmd += [] if offset is None else ["-output_ts_offset", str(offset)]
    subprocess.run([*cmd, "-f", "mpegts", str(dst)], check=True, timeout=120)
    return dst


def joined(dst, *parts):
    """``cat parts > dst``."""
    dst.write_bytes(b"".join(p.read_bytes() for p in parts))
    return dst


def ffprobe_frames(path) -> int:
    """Frames ffprobe decodes in ``path`` (``-count_frames``: nb_read_frames)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"]
        + ["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return int(out.split()[0])


@pytest.fixture(scope="module")
def ts_parts(tmp_path_factory):
    """Three MPEG-TS clips each starting near 0 (the TS muxer's 1.4 s): a, b, and w whose presentation time wraps
    past 2**33 ticks 2 s into it."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe are not installed (scripts/system-deps.sh)")
    folder = tmp_path_factory.mktemp("ts")
    a = ts_clip(folder / "a.ts", 2.0, 3.0)
    b = ts_clip(folder / "b.ts", 10.0, 3.0)
    w = ts_clip(folder / "w.ts", 5.0, 4.0, offset=WRAP_S - 1.4 - 2.0)
    return a, b, w


def test_joined_ts_keeps_every_frame_on_one_monotonic_timeline(ts_parts, tmp_path, caplog):
    a, b, _ = ts_parts
    both = joined(tmp_path / "joined.ts", a, b)
    src = FileSource(both, SourceConfig())
    with caplog.at_level("WARNING", logger="pipeline.runners.sources"):
        frames = list(src)
    times = np.array([f.timestamp for f in frames])
    first = len(list(FileSource(a, SourceConfig())))
    assert len(frames) == ffprobe_frames(both) == first + ffprobe_frames(b) and src.report.kept == len(frames)
    assert np.all(np.diff(times) > 0) and np.all(np.diff([f.index for f in frames]) > 0)
    step = 1 / src.fps
    assert times[first] - times[first - 1] == pytest.approx(step, abs=1e-3)  # one frame after the first part
    assert times[first] > times[:first].max()  # the second clip is no longer on top of the first one's times
    assert src.report.discontinuities == 1 and "restarted 1 times" in caplog.text


def test_wrap_of_presentation_time_is_seamless(ts_parts, tmp_path):
    a, b, w = ts_parts
    with av.open(str(w)) as c:  # the middle clip really wraps (FFmpeg shows the times before the wrap < 0)
        pts = [p.pts for p in c.demux(video=0) if p.pts is not None]
    assert min(pts) < 0 < max(pts)
    three = joined(tmp_path / "three.ts", a, w, b)
    src = FileSource(three, SourceConfig())
    times = np.array([f.timestamp for f in src])
    assert len(times) == ffprobe_frames(three)
    steps = np.diff(times)
    assert np.all(steps == pytest.approx(1 / src.fps, abs=1e-3))  # exact across the wrap and both joins
    assert src.report.discontinuities == 2  # the two joins; the wrap is no discontinuity


def test_window_of_a_joined_ts_is_read_on_the_unwrapped_timeline(ts_parts, tmp_path):
    a, b, _ = ts_parts
    both = joined(tmp_path / "joined.ts", a, b)
    everything = [(f.index, f.timestamp) for f in FileSource(both, SourceConfig())]
    start, end = 3.5, 5.0  # in the second clip
    window = [(f.index, f.timestamp) for f in FileSource(both, SourceConfig(start=start, end=end))]
    assert window == [(i, t) for i, t in everything if start - 1e-6 <= t <= end + 1e-6] and len(window) > 30


# --- the wall clock of every frame --------------------------------------------------------------------------

GIVEN = datetime(2026, 5, 4, 9, 30, 0, tzinfo=timezone.utc)
TAGGED = datetime(2026, 3, 1, 10, 0, 0, tzinfo=timezone.utc)  # MP4 keeps whole seconds


def remux(dst, creation_time: str | None = None):
    """One second of the CCTV clip copied into ``dst``, with a ``creation_time`` tag when given."""
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(require(CCTV)), "-t", "1", "-c", "copy"]
    cmd += ["-map_metadata", "-1"] + (
        [] if creation_time is None else ["-metadata", f"creation_time={creation_time}"]
    )
    subprocess.run([*cmd, str(dst)], check=True, timeout=60)
    return dst


@needs_ffmpeg
@pytest.mark.parametrize(
    "name, tag, given, pattern, origin, expected",
    [
        ("clip.mp4", "2026-03-01T10:00:00Z", None, None, "container", TAGGED),
        (
            "cam1_20260301_111500.mp4",
            "2026-03-01T10:00:00Z",
            None,
            "%Y%m%d_%H%M%S",
            "container",
            TAGGED,
        ),
        ("clip.mp4", "2026-03-01T10:00:00Z", GIVEN, None, "given", GIVEN),
        (
            "cam1_20260301_111500.mp4",
            None,
            None,
            "%Y%m%d_%H%M%S",
            "filename",
            datetime(2026, 3, 1, 10, 15, tzinfo=timezone.utc),
        ),
        (
            "gate-2026-03-01T111500+0200.mp4",
            None,
            None,
            "%Y-%m-%dT%H%M%S%z",
            "filename",
            datetime(2026, 3, 1, 9, 15, tzinfo=timezone.utc),
        ),
        ("export.mp4", None, None, "%Y%m%d_%H%M%S", "unknown", None),
        ("clip.mp4", None, None, None, "unknown", None),
    ],
)
def test_recording_time_and_wall_clock_of_frames(tmp_path, name, tag, given, pattern, origin, expected):
    path = remux(tmp_path / name, tag)
    zone = "Europe/Paris" if pattern and "%z" not in pattern else None
    cfg = SourceConfig(end=0.5, recorded_at_pattern=pattern, recorded_at_zone=zone)
    src = FileSource(path, cfg, recorded_at=given)
    assert (src.time_origin, src.recorded_at) == (origin, expected)
    frames = list(src)
    assert len(frames) >= 10
    for f in frames:
        if expected is None:
            assert f.wall_time is None
        else:
            assert f.wall_time == pytest.approx(expected.timestamp() + f.timestamp, abs=1e-6)


@needs_ffmpeg
def test_a_resumed_window_keeps_the_given_recording_time(tmp_path):
    src = FileSource(remux(tmp_path / "clip.mp4"), SourceConfig(), recorded_at=GIVEN)
    later = src.windowed(SourceConfig(start=0.5))
    first = next(iter(later))
    assert later.time_origin == "given" and first.timestamp >= 0.5 - 0.034
    assert first.wall_time == pytest.approx(GIVEN.timestamp() + first.timestamp)


def test_a_given_time_without_zone_is_refused():
    with pytest.raises(SourceError, match="expected a time with a timezone"):
        FileSource(require(CCTV), SourceConfig(), recorded_at=datetime(2026, 3, 1, 10, 0))
