"""bench/live.py: the 1080p camera clips it prepares (real ffmpeg, checked with PyAV) and its tables on a tiny run
over a loopback RTSP camera."""

from __future__ import annotations

import json

import av
import pytest

from tests.bench.conftest import load_bench
from tests.conftest import ASSETS, require
from tests.live.rtsp import tools_missing

VIDEOS = ASSETS / "videos"


@pytest.fixture(scope="module")
def media():
    if tools_missing():
        pytest.skip(tools_missing())
    require(VIDEOS / "person_tracker_cctv.mp4")
    load_bench("live")  # puts the project root on sys.path for bench.live_media
    from bench import live_media

    return live_media


def nal_types(packet: bytes) -> set[int]:
    """NAL unit types of an MP4 (length-prefixed) H.264 packet."""
    out, i = set(), 0
    while i + 4 < len(packet):
        size = int.from_bytes(packet[i : i + 4], "big")
        out.add(packet[i + 4] & 0x1F)
        i += 4 + size
    return out


@pytest.mark.parametrize("name", ["cctv", "crowd"])
def test_1080p_clip_is_streamable_and_made_once(media, name, tmp_path):
    clip = media.prepare_clip(VIDEOS, name, "1080p", tmp_path, seconds=2)
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 1920, 1080)
        assert float(stream.average_rate) == 25.0
        keys = [p for p in c.demux(stream) if p.size and p.is_keyframe]
    assert len(keys) >= 2  # a keyframe every second
    assert all({7, 8, 5} <= nal_types(bytes(p)) for p in keys)  # SPS and PPS in band before every IDR
    mtime = clip.stat().st_mtime_ns
    assert media.prepare_clip(VIDEOS, name, "1080p", tmp_path, seconds=2) == clip
    assert clip.stat().st_mtime_ns == mtime and not list(tmp_path.glob("*.part.*"))


@pytest.mark.parametrize("n, expected", [(1, ["cctv"]), (5, ["cctv", "cctv", "cctv", "crowd", "cctv"])])
def test_camera_mix(media, n, expected):
    assert media.camera_clips(n, "1080p") == expected
    assert media.camera_clips(n, "source") == ["friends"] * n


@pytest.mark.slow
def test_tiny_1080p_run_prints_machine_decoder_and_both_tables(tmp_path, capsys):
    if tools_missing():
        pytest.skip(tools_missing())
    require(ASSETS / "models" / "scrfd_500m_bnkps.onnx")
    out_json = tmp_path / "live.json"
    argv = ["--resolution", "1080p", "--streams", "1", "--engines", "local", "--seconds", "3"]
    argv += ["--clip-seconds", "4", "--cache", str(tmp_path / "cache"), "--json", str(out_json)]
    assert load_bench("live").main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU ") and lines[1].startswith("decode: cpu (")
    setting = next(i for i, line in enumerate(lines) if line.startswith("| engine | cameras | keeping up"))
    assert lines[setting].count("|") == 13 and lines[setting + 2].startswith("| local | 1 | ")
    camera = next(i for i, line in enumerate(lines) if line.startswith("| engine | cameras | camera |"))
    row = [c.strip() for c in lines[camera + 2].strip("|").split("|")]
    assert row[:4] == ["local", "1", "cam0", "cctv"] and row[-1] in ("yes", "no")
    assert 20 <= float(row[4]) <= 30  # frames in per second of a 25 fps camera
    run = json.loads(out_json.read_text())["runs"][0]
    assert run["cpu"]["decode"] > 0 and run["cpu"]["detect"] > 0
    assert run["cameras"][0]["fps_processed"] > 0 and 0 <= run["cameras"][0]["drop_rate"] <= 1


def test_batching_bench_compares_both_ways_on_the_same_frames(tmp_path, capsys):
    if tools_missing():
        pytest.skip(tools_missing())
    require(ASSETS / "models" / "scrfd_500m_bnkps.onnx")
    argv = ["--cameras", "2", "--rounds", "4", "--block", "2", "--clip-seconds", "2"]
    assert load_bench("live_batching").main(argv + ["--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 cameras at 1080p (cctv, cctv), detect.batch_size 4, 4 rounds" in out
    assert "| per frame |" in out and "| per round |" in out
    assert "same face counts in 4 of 4 rounds" in out  # both ways see the same faces
    assert "letterboxed whole frames only (2 frames, canvas 640 wide)" in out
