"""The clip cutter (pipeline/services/clips.py): real decoding and encoding with PyAV, checked with ffprobe.

Synthetic videos (a frame counter drawn into each frame, odd sizes, two segments with an offset) and the friends
clip: the window kept to a frame, a browser-playable MP4 (H.264, yuv420p, even size, index first, decodes to the
end), the track's box drawn where it was seen and nowhere else, the filter applied before the box, times clamped at
the file's start and end, nothing left behind on a failure.
"""

from __future__ import annotations

import json
import stat
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.services.clips import BOX_COLOUR, ClipError, ClipPart, cut_clip
from tests.conftest import ASSETS, require

FRIENDS = ASSETS / "videos" / "friends_in_video.mp4"
FPS = 25


def _video(path: Path, frames: int, size: tuple[int, int] = (161, 121), first: int = 0) -> Path:
    """An MPEG-4 file of ``frames`` grey frames at 25 fps whose level encodes the frame number."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            image = np.full((size[1], size[0], 3), 40 + 16 * ((first + i) % 12), np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _playable(path: Path) -> dict:
    """ffprobe's view of a clip a browser plays: H.264 yuv420p, even size, moov before mdat, 0600, decodes."""
    info = _probe(path)
    (video,) = info["streams"]
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
    assert video["width"] % 2 == 0 and video["height"] % 2 == 0
    head = path.read_bytes()[: 1 << 16]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    run = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True)
    assert run.returncode == 0 and not run.stderr, run.stderr[-500:]
    assert len(_decoded(path)) == int(video["nb_frames"])
    return info


@pytest.mark.parametrize(
    ("start", "end", "frames"),
    [(1.0, 2.0, 25), (0.0, 0.5, 13), (-3.0, 0.2, 5), (3.0, 99.0, 25)],  # clamped at the start and the end
)
def test_the_window_to_a_frame_in_an_even_sized_playable_mp4(tmp_path, start, end, frames):
    src = _video(tmp_path / "src.mp4", 4 * FPS)
    seen = []
    clip = cut_clip(
        [ClipPart(src)],
        start,
        end,
        tmp_path / "out" / "c.mp4",
        frame_filter=lambda im, t: seen.append(t) or im,
    )
    info = _playable(clip.path)
    assert (clip.width, clip.height) == (160, 120) and clip.frames == frames == len(seen)
    assert seen == sorted(seen) and seen[0] >= max(0.0, start) - 1e-6 and seen[-1] < end
    assert float(info["format"]["duration"]) == pytest.approx(frames / FPS, abs=0.05)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    levels = [int(round(f.mean())) for f in _decoded(clip.path)]
    first = round(seen[0] * FPS)
    assert levels == pytest.approx([40 + 16 * ((first + i) % 12) for i in range(frames)], abs=7)


def test_two_segments_with_offsets_are_one_clip(tmp_path):
    a = _video(tmp_path / "a.mp4", 2 * FPS)
    b = _video(tmp_path / "b.mp4", 2 * FPS, first=2 * FPS)
    clip = cut_clip([ClipPart(a, 10.0), ClipPart(b, 12.0)], 11.0, 13.0, tmp_path / "c.mp4")
    assert clip.frames == 2 * FPS and clip.start == pytest.approx(11.0) and clip.end == pytest.approx(12.96)
    levels = [int(round(f.mean())) for f in _decoded(clip.path)]
    assert levels == pytest.approx([40 + 16 * ((FPS + i) % 12) for i in range(2 * FPS)], abs=7)
    assert float(_playable(clip.path)["format"]["duration"]) == pytest.approx(2.0, abs=0.05)


def test_the_box_is_drawn_where_the_track_was_seen_and_only_there(tmp_path):
    src = _video(tmp_path / "src.mp4", 2 * FPS)
    boxes = np.array([[0.4, 20, 30, 80, 90], [0.6, 40, 30, 100, 90]], np.float32)  # seen 0.4-0.6 s
    clip = cut_clip([ClipPart(src)], 0.0, 1.0, tmp_path / "c.mp4", boxes)
    frames = _decoded(clip.path)
    assert clip.boxed == 6  # 0.40 .. 0.60
    green = [int(f[60, 20, 1]) > 150 and int(f[60, 20, 2]) < 120 for f in frames]  # the left edge at 0.4 s
    assert green[10] and not any(green[:9]) and not any(green[17:])
    middle = frames[12]  # 0.48 s: two fifths of the way, its left edge at x = 28
    assert middle[60, 28, 1] > 150 and abs(int(middle[60, 140, 1]) - int(middle[60, 140, 0])) < 10
    assert tuple(BOX_COLOUR) == (0, 220, 0)


def test_the_filter_runs_before_the_box(tmp_path):
    src = _video(tmp_path / "src.mp4", FPS)
    boxes = np.array([[0.0, 20, 20, 60, 60], [1.0, 20, 20, 60, 60]], np.float32)
    clip = cut_clip(
        [ClipPart(src)], 0.0, 0.4, tmp_path / "c.mp4", boxes, frame_filter=lambda im, t: np.zeros_like(im)
    )
    frame = _decoded(clip.path)[0]
    assert frame[40, 20, 1] > 150 and frame[100, 100].max() < 10


def test_nothing_in_the_window_leaves_nothing(tmp_path):
    src = _video(tmp_path / "src.mp4", FPS)
    out = tmp_path / "c.mp4"
    with pytest.raises(ClipError, match="no frame"):
        cut_clip([ClipPart(src)], 5.0, 6.0, out)
    with pytest.raises(ClipError, match="end is after"):
        cut_clip([ClipPart(src)], 1.0, 1.0, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mp4"]


def test_a_window_of_the_friends_clip_with_its_stream_start_offset(tmp_path):
    src = require(
        FRIENDS
    )  # its video stream starts at 1.7 s of the container: times count from its first frame
    clip = cut_clip([ClipPart(src)], 24.0, 30.0, tmp_path / "c.mp4")
    with av.open(str(src)) as c:
        s = c.streams.video[0]
        last = float((s.duration - 1001) * s.time_base)  # 632 frames of 1001/24000 s
        assert s.frames == 632
    assert clip.end == pytest.approx(last, abs=1e-3) and (clip.width, clip.height) == (1280, 720)
    info = _playable(clip.path)
    assert float(info["format"]["duration"]) == pytest.approx(last + 1001 / 24000 - 24.0, abs=0.1)
