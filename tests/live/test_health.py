"""Per-camera health counters, the status line and the Prometheus endpoint on loopback."""

from __future__ import annotations

import httpx
import pytest

from pipeline.live.health import CameraHealth, HealthRegistry, MetricsServer


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rates_are_averaged_over_the_window_and_expire():
    clock = FakeClock()
    cam = CameraHealth("a", fps_window_s=2.0, clock=clock)
    for _ in range(40):  # 20 fps for 2 s
        cam.frame_in()
        clock.t += 0.05
    cam.frame_processed(10)
    snap = cam.snapshot()
    assert snap.fps_in == pytest.approx(20.0, abs=0.5)
    assert snap.fps_processed == pytest.approx(5.0)
    assert snap.last_frame_age_s == pytest.approx(0.05)
    clock.t += 5.0
    snap = cam.snapshot()
    assert snap.fps_in == 0.0 and snap.fps_processed == 0.0 and snap.frames_in == 40


@pytest.mark.parametrize("cams", [[], ["a"], ["a", 'b"quote']])
def test_status_line_and_prometheus_text(cams):
    clock = FakeClock()
    reg = HealthRegistry(clock=clock)
    for name in cams:
        h = reg.add(name)
        h.set_state("connected")
        h.frame_in()
        h.frame_dropped(3)
        h.failure("timed out")
        h.reconnected()
    text = reg.prometheus_text()
    line = reg.status_line()
    if not cams:
        assert line == "no cameras"
        assert "facemoe_camera_connected" in text and "camera=" not in text
        return
    assert line.count("connected in=") == len(cams) and "dropped=3 reconnects=1" in line
    assert 'facemoe_camera_frames_dropped_total{camera="a"} 3' in text
    assert 'facemoe_camera_reconnects_total{camera="a"} 1' in text
    assert 'facemoe_camera_connected{camera="a"} 1' in text
    if len(cams) == 2:
        assert 'camera="b\\"quote"' in text


def test_duplicate_camera_names_are_refused():
    reg = HealthRegistry()
    reg.add("a")
    with pytest.raises(ValueError, match="unique"):
        reg.add("a")


def test_metrics_endpoint_serves_prometheus_text_on_loopback():
    reg = HealthRegistry()
    reg.add("cam1").frame_in()
    server = MetricsServer(reg, "127.0.0.1", 0).start()
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        base = f"http://127.0.0.1:{server.port}"
        metrics = httpx.get(f"{base}/metrics", timeout=5)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert 'facemoe_camera_frames_in_total{camera="cam1"} 1' in metrics.text
        assert httpx.get(f"{base}/healthz", timeout=5).text.startswith("cam1: connecting")
        assert httpx.get(f"{base}/other", timeout=5).status_code == 404
    finally:
        server.close()


def test_polled_camera_shows_the_latest_snapshot_and_a_failure_keeps_its_counters():
    reg = HealthRegistry()
    polled = reg.add_polled("remote")
    assert (
        reg.status_line().startswith("remote: connecting")
        and 'frames_in_total{camera="remote"} 0' in reg.prometheus_text()
    )
    clock = FakeClock()
    cam = CameraHealth("remote", clock=clock)
    cam.set_state("connected")
    for _ in range(5):
        cam.frame_in()
    cam.frame_processed(4)
    polled.update(cam.snapshot())
    assert 'facemoe_camera_frames_processed_total{camera="remote"} 4' in reg.prometheus_text()
    polled.failed("camera actor failed: ActorDiedError")
    snap = polled.snapshot()
    assert (snap.state, snap.connected, snap.frames_in, snap.failures) == ("failed", False, 5, 1)
    assert 'facemoe_camera_connected{camera="remote"} 0' in reg.prometheus_text()
    with pytest.raises(ValueError, match="unique"):
        reg.add_polled("remote")
    with pytest.raises(ValueError, match="expected, got 'other'"):
        polled.update(CameraHealth("other").snapshot())


def test_error_texts_and_labels_are_redacted():
    reg = HealthRegistry()
    cam = reg.add("door")
    cam.failure("ConnectionRefusedError: 'rtsp://op:PW-LEAK@127.0.0.1:9/a?token=TK-LEAK'")
    polled = reg.add_polled("rtsp://u:PW-LEAK@h/x")
    polled.failed("actor died reading http://h/?sig=TK-LEAK")
    text = reg.prometheus_text() + "".join(str(s.last_error) for s in reg.snapshots())
    assert "LEAK" not in text and "rtsp://op:***@127.0.0.1:9/a?token=***" in cam.snapshot().last_error
