"""Live sources against a real RTSP server on loopback: attach, stall, wrong path, silence, restarts, drops."""

from __future__ import annotations

import random
import time

import av
import numpy as np
import pytest

from pipeline.live.cameras import (
    LiveCameras,
    LiveSource,
    WallClock,
    backoff_delay,
    open_options,
    rtsp_timeout_option,
)
from pipeline.live.config import CameraConfig, LiveConfig, ReconnectConfig
from pipeline.live.health import CameraHealth, HealthRegistry


def live_config(**kw) -> LiveConfig:
    reconnect = ReconnectConfig(**{"initial_s": 0.1, "max_s": 0.5, "jitter": 0.1, **kw.pop("reconnect", {})})
    return LiveConfig(
        **{"transport": "udp", "open_timeout_s": 3.0, "read_timeout_s": 1.5, **kw}, reconnect=reconnect
    )


def wait_until(cond, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def drain(source: LiveSource, seconds: float) -> list:
    frames, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        f = source.read()
        if f is None:
            time.sleep(0.01)
        else:
            frames.append(f)
    return frames


@pytest.mark.parametrize(
    "attempt, low, high", [(0, 0.9, 1.1), (1, 1.8, 2.2), (3, 7.2, 8.8), (10, 9.0, 10.0), (500, 9.0, 10.0)]
)
def test_backoff_grows_is_capped_and_jittered(attempt, low, high):
    cfg = ReconnectConfig(initial_s=1.0, max_s=10.0, multiplier=2.0, jitter=0.1)
    rng = random.Random(7)
    delays = [backoff_delay(attempt, cfg, rng) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > 0.1 * (high - low)  # jitter spreads the waits


def test_backoff_is_reproducible_with_a_seed():
    cfg = ReconnectConfig()
    assert [backoff_delay(i, cfg, random.Random(3)) for i in range(5)] == [
        backoff_delay(i, cfg, random.Random(3)) for i in range(5)
    ]


@pytest.mark.parametrize(
    "url, transport, expected",
    [
        ("rtsp://127.0.0.1/a", "tcp", {"rtsp_transport": "tcp", "timeout": "2500000"}),
        ("RTSP://127.0.0.1/a", "udp", {"rtsp_transport": "udp", "timeout": "2500000"}),
        ("rtsp://127.0.0.1/a", "auto", {"timeout": "2500000"}),
        ("http://127.0.0.1/a.ts", "tcp", {"rw_timeout": "2500000"}),
    ],
)
def test_open_options(url, transport, expected):
    assert av.library_versions["libavformat"][0] >= 59  # the FFmpeg linked by PyAV here
    assert rtsp_timeout_option() == "timeout"
    assert open_options(url, transport, 2.5) == expected


def test_attaches_and_decodes(rtsp_server, stream_clip):
    rtsp_server.publish("cam", stream_clip)
    health = CameraHealth("cam")
    src = LiveSource(CameraConfig(name="cam", url=rtsp_server.url("cam")), live_config(), health).start()
    try:
        assert wait_until(lambda: health.frames_in > 0, 20), health.snapshot()
        frames = drain(src, 1.5)
    finally:
        src.stop()
        assert src.join(5)
    assert frames and frames[0].image.shape == (360, 640, 3)
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    snap = health.snapshot()
    assert snap.failures == 0 and snap.frames_in > 20 and snap.fps_in > 5
    assert snap.state == "stopped"


def test_camera_frames_carry_the_wall_clock(rtsp_server, stream_clip):
    """Each frame's wall_time is the camera's clock (RTCP sender reports; the publisher here shares this machine's
    clock) or its arrival: within a fraction of a second of time.time() when read, strictly increasing."""
    rtsp_server.publish("cam", stream_clip)
    health = CameraHealth("cam")
    src = LiveSource(CameraConfig(name="cam", url=rtsp_server.url("cam")), live_config(), health).start()
    seen = []
    try:
        assert wait_until(lambda: health.frames_in > 0, 20), health.snapshot()
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            f = src.read()
            if f is None:
                time.sleep(0.005)
            else:
                seen.append((f, time.time()))
    finally:
        src.stop()
        assert src.join(5)
    assert len(seen) > 20 and src.time_origin == "camera"
    assert all(-1.0 < read_at - f.wall_time < 1.0 for f, read_at in seen), [r - f.wall_time for f, r in seen]
    assert np.all(np.diff([f.wall_time for f, _ in seen]) > 0)
    assert abs(src.recorded_at.timestamp() + seen[0][0].timestamp - seen[0][0].wall_time) < 1.0


@pytest.mark.parametrize("max_skew, camera_clock", [(300.0, True), (1e-6, False)])
def test_rtcp_camera_clock_is_used_unless_it_is_off(rtsp_server, stream_clip, caplog, max_skew, camera_clock):
    """With stream timestamps, frames timed by the camera's clock (RTCP) keep wall_time - timestamp constant; a
    camera clock further off than camera_clock_max_skew_s is warned about and frames get their arrival."""
    rtsp_server.publish("cam", stream_clip)
    health = CameraHealth("cam")
    cfg = live_config(
        timestamps="stream", drop_frames=False, buffer_frames=64, camera_clock_max_skew_s=max_skew
    )
    src = LiveSource(CameraConfig(name="cam", url=rtsp_server.url("cam")), cfg, health)
    with caplog.at_level("WARNING", logger="pipeline.live.cameras"):
        src.start()
        try:
            assert wait_until(lambda: health.frames_in > 0, 20), health.snapshot()
            frames = drain(src, 8.0)  # the publisher sends a sender report at most every 5 s
        finally:
            src.stop()
            assert src.join(5)
    late = np.array([f.wall_time - f.timestamp for f in frames[-40:]])  # after the first sender report
    assert len(frames) > 120 and np.all(np.diff([f.wall_time for f in frames]) > 0)
    assert (np.ptp(late) < 1e-4) == camera_clock, np.ptp(late)
    assert ("its clock is" in caplog.text) == (not camera_clock)


def test_wall_clock_is_strictly_increasing_and_slews_back():
    now, mono = [1000.0], [5.0]
    clock = WallClock(lambda: now[0], lambda: mono[0])
    assert clock.stamp() == 1000.0
    now[0], mono[0] = 1001.0, 6.0
    assert clock.stamp() == 1001.0  # follows the local clock
    now[0], mono[0] = 900.0, 7.0  # the local clock is stepped back 101 s
    assert clock.stamp() == 1001.5  # advances at half pace instead
    now[0], mono[0] = 1500.0, 8.0  # stepped forward: followed
    assert clock.stamp() == 1500.0
    assert clock.stamp(1400.0) == pytest.approx(1500.000001)  # a camera time not after the last one
    mono[0] = 9.0
    assert clock.stamp(1501.25) == 1501.25  # the camera's own time


@pytest.mark.parametrize("kind", ["silent", "refused"])
def test_unreachable_camera_retries_then_gives_up_within_the_timeouts(kind, silent_server):
    port = silent_server.port if kind == "silent" else _closed_port()
    health = CameraHealth("dead")
    cfg = live_config(
        open_timeout_s=1.0, read_timeout_s=1.0, reconnect={"max_attempts": 3, "initial_s": 0.05}
    )
    t0 = time.monotonic()
    src = LiveSource(CameraConfig(name="dead", url=f"rtsp://127.0.0.1:{port}/cam"), cfg, health).start()
    assert src.join(3 * (1.0 + 1.0) + 6)  # three attempts of at most open + read timeout, waits, slack
    elapsed = time.monotonic() - t0
    snap = health.snapshot()
    assert snap.state == "failed" and snap.failures == 3 and snap.frames_in == 0
    if kind == "silent":
        assert "timed out" in snap.last_error and elapsed >= 2.0
    else:
        assert "refused" in snap.last_error.lower() and elapsed < 5.0


def _closed_port() -> int:
    from tests.live.rtsp import free_port

    return free_port()


def test_wrong_path_on_a_live_server_is_reported_per_camera(rtsp_server, stream_clip):
    rtsp_server.publish("cam", stream_clip)
    registry = HealthRegistry()
    cfg = live_config(reconnect={"max_attempts": 2})
    cams = LiveCameras(
        [
            CameraConfig(name="good", url=rtsp_server.url("cam")),
            CameraConfig(name="typo", url=rtsp_server.url("nope")),
        ],
        cfg,
        registry,
        seed=1,
    ).start()
    try:
        assert wait_until(lambda: registry.cameras["typo"].state == "failed", 15)
        assert wait_until(lambda: registry.cameras["good"].frames_in > 10, 15)
    finally:
        assert cams.stop(5)
    typo = registry.cameras["typo"].snapshot()
    assert typo.failures == 2 and typo.frames_in == 0
    assert "404" in typo.last_error or "not found" in typo.last_error.lower()
    assert registry.cameras["good"].snapshot().failures == 0


def test_publisher_stall_is_a_disconnect_and_the_stream_recovers(rtsp_server, stream_clip):
    rtsp_server.publish("cam", stream_clip)
    health = CameraHealth("cam")
    cfg = live_config(read_timeout_s=1.0)
    src = LiveSource(CameraConfig(name="cam", url=rtsp_server.url("cam")), cfg, health).start()
    try:
        assert wait_until(lambda: health.frames_in > 5, 20)
        assert health.failures == 0
        rtsp_server.stall("cam")
        t_stall = time.monotonic()
        assert wait_until(lambda: health.failures >= 1, 8)
        detected = time.monotonic() - t_stall
        assert "timed out" in health.last_error
        assert src.generation == 1
        frames_at_stall = health.frames_in
        # still stalled: further attempts fail (each within the timeouts) and are counted, no frames
        assert wait_until(lambda: health.failures >= 2, 2 * (3.0 + 1.0 + 1.0))
        assert health.frames_in <= frames_at_stall + 2
        rtsp_server.resume("cam")
        assert wait_until(lambda: health.reconnects >= 1 and health.frames_in > frames_at_stall + 10, 10)
    finally:
        src.stop()
        assert src.join(5)
    assert detected < 1.0 + 3.0  # the read timeout plus slack for a loaded machine


@pytest.mark.slow
def test_server_killed_and_restarted_three_times_reconnects_each_time(rtsp_server, stream_clip):
    rtsp_server.publish("cam", stream_clip)
    health = CameraHealth("cam")
    src = LiveSource(
        CameraConfig(name="cam", url=rtsp_server.url("cam")), live_config(read_timeout_s=1.0), health
    ).start()
    try:
        assert wait_until(lambda: health.frames_in > 5, 20)
        for round_ in range(1, 4):
            rtsp_server.kill()
            assert wait_until(lambda r=round_: src.generation == r, 8), (round_, health.snapshot())
            time.sleep(0.3)
            rtsp_server.start().publish("cam", stream_clip)
            seen = health.frames_in
            assert wait_until(
                lambda r=round_, n=seen: health.reconnects == r and health.frames_in > n + 5, 20
            ), (round_, health.snapshot())
    finally:
        src.stop()
        assert src.join(5)
    assert health.snapshot().reconnects == 3 and src.generation == 3


def test_slow_consumer_gets_the_newest_frames_and_drops_are_counted(rtsp_server, stream_clip):
    rtsp_server.publish("cam", stream_clip)
    health = CameraHealth("cam")
    src = LiveSource(CameraConfig(name="cam", url=rtsp_server.url("cam")), live_config(), health).start()
    lags = []
    try:
        assert wait_until(lambda: health.frames_in > 0, 20)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            f = src.read()
            if f is None:
                time.sleep(0.01)
                continue
            lags.append(src.now() - f.timestamp)
            time.sleep(0.2)  # a consumer at 5 fps behind a ~24 fps camera
            health.frame_processed()
    finally:
        src.stop()
        assert src.join(5)
    snap = health.snapshot()
    assert snap.dropped > 2 * snap.frames_processed  # most frames were dropped at the source
    assert snap.dropped + snap.frames_processed <= snap.frames_in  # at most one frame still buffered
    assert snap.frames_in - snap.dropped - snap.frames_processed <= 1
    # a first-in-first-out queue would age by ~0.16 s per step here (2 s after 12 steps); the newest-frame
    # buffer keeps every frame within about one consumer step of live
    assert len(lags) >= 8 and max(lags) < 1.0
    assert sum(lags[-4:]) / 4 < sum(lags[:4]) / 4 + 0.3


def test_a_camera_down_at_start_up_does_not_stop_the_others(rtsp_server, stream_clip, silent_server):
    rtsp_server.publish("cam", stream_clip)
    registry = HealthRegistry()
    cfg = live_config(open_timeout_s=1.0)
    cams = LiveCameras(
        [
            CameraConfig(name="down", url=f"rtsp://127.0.0.1:{silent_server.port}/x"),
            CameraConfig(name="up", url=rtsp_server.url("cam")),
        ],
        cfg,
        registry,
        seed=2,
    ).start()
    got = []
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            cams.wait(0.2)
            got += cams.poll()
    finally:
        assert cams.stop(5)
    assert {f.source_id for f in got} == {"up"} and len(got) > 20
    assert registry.cameras["down"].snapshot().failures >= 1
    assert "down: " in registry.status_line() and "up: " in registry.status_line()


def test_tcp_transport_is_interleaved_and_udp_is_refused_by_a_tcp_only_server(tcp_rtsp_server, stream_clip):
    tcp_rtsp_server.publish("cam", stream_clip)
    registry = HealthRegistry()
    cfg = live_config(reconnect={"max_attempts": 1})
    cams = LiveCameras(
        [
            CameraConfig(name="tcp", url=tcp_rtsp_server.url("cam"), transport="tcp"),
            CameraConfig(name="udp", url=tcp_rtsp_server.url("cam")),
        ],
        cfg,
        registry,
        seed=3,
    ).start()
    got = []
    try:
        assert wait_until(lambda: registry.cameras["udp"].state == "failed", 10)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            cams.wait(0.2)
            got += cams.poll()
    finally:
        assert cams.stop(5)
    tcp = registry.cameras["tcp"].snapshot()
    assert tcp.failures == 0 and tcp.frames_in > 30 and {f.source_id for f in got} == {"tcp"}
    assert got[0].image.shape == (360, 640, 3)
    assert (
        tcp_rtsp_server.sessions == 1 and tcp_rtsp_server.refused_udp == 1
    )  # the transport reached the server
