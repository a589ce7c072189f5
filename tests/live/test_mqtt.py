"""Alerts published to a real MQTT broker (mosquitto on 127.0.0.1, a generated config, no persistence) and read
back by a paho subscriber: topics per camera and identity made topic-safe, the webhook's JSON with the evidence
URLs, QoS and retain; a broker that is down, or goes away and comes back, is logged once and counted; ``stream``
with a broker that is down keeps running and still delivers to its webhook; paho-mqtt missing: one line, exit 2."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from core.types import Candidate, FaceCrop, MatchResult, Quality, SceneSnapshot, TrackTemplate
from pipeline.live.config import AlertConfig, MqttConfig, WebhookConfig
from pipeline.sinks.alerts import WatchlistAlerts
from pipeline.sinks.mqtt import alert_topic, topic_level
from run_pipeline import main
from tests.live.rtsp import free_port, wait_port
from tests.live.test_alerts import Receiver
from tests.live.test_stream_cli import CONFIG, app_config, gallery_db, log_rows  # noqa: F401 (fixtures)

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the mqtt extra) is not installed")
import paho.mqtt.client as paho  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUALITY = Quality(face_size=60.0, det_score=0.9, sharpness=120.0, pose=0.1)
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
)


class Broker:
    """mosquitto listening on 127.0.0.1:``port`` (anonymous, nothing persisted); ``stop``/``start`` again on the
    same port."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.conf = folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it would drop to the 'mosquitto' user, who cannot read tmp_path
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port, 10)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Subscriber:
    """A paho client subscribed to ``topic``; ``messages``: (topic, payload as JSON, retain flag) as they come."""

    def __init__(self, port: int, topic: str = "facemoe/#") -> None:
        self.messages: list[tuple[str, dict, bool]] = []
        self.ready = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}-{time.monotonic_ns()}"
        )
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, json.loads(m.payload), m.retain)
        )
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=2)
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        assert self.ready.wait(10), "the subscriber did not subscribe"

    def wait(self, count: int, timeout: float = 10.0) -> list[tuple[str, dict, bool]]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (scripts/system-deps.sh installs it)")
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def subscriber(broker):
    sub = Subscriber(broker.port)
    yield sub
    sub.close()


def track(name: str | None, camera: str = "cam1", track_id: int = 1, scene: bool = True):
    crop = FaceCrop(camera, track_id, 3, 1.5, np.full((112, 112, 3), 90, np.uint8), QUALITY)
    template = TrackTemplate(camera, track_id, np.ones(4, np.float32) / 2, 1.0, 3, crop, 1.0, 2.5, 10)
    if scene:
        template.scene = SceneSnapshot(
            np.zeros((48, 64, 3), np.uint8), np.array([8, 8, 30, 40], np.float32), 1.5
        )
    cands = (Candidate(7, name, 0.61),) if name else ()
    return template, MatchResult(camera, track_id, cands, "match" if name else "unknown", 0.3)


def media(camera: str, track_id: int) -> tuple[str, str]:
    return f"source3/run4/track{track_id}.jpg", f"source3/run4/track{track_id}_scene.jpg"


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_each_alert_is_published_to_its_camera_and_identity_topic(broker, subscriber, qos):
    hook = Receiver()
    cfg = AlertConfig(
        watchlist=("Joey", "Rachel"),
        webhooks=(WebhookConfig(url=hook.url),),
        mqtt=MqttConfig(host="127.0.0.1", port=broker.port, qos=qos),
        base_url="https://cams.example:8443/app/",
    )
    sink = WatchlistAlerts(cfg, {"gate": 4, "door": 5})
    sink.media = media
    try:
        sink.on_track(*track("Joey", "gate", 1))
        sink.on_track(*track("Rachel", "door", 2, scene=False))
        sink.on_track(*track("Ross", "door", 3))  # not watched: nothing
        got = subscriber.wait(2)
    finally:
        sink.close()
        hook.close()
    assert sorted(t for t, _, _ in got) == ["facemoe/door/Rachel", "facemoe/gate/Joey"]
    assert sink.mqtt[0].delivered == 2 and sink.mqtt[0].failed == 0 and sink.mqtt[0].outages == 0
    by_topic = {t: body for t, body, retained in got if not retained}
    joey = by_topic["facemoe/gate/Joey"]
    assert joey == next(b for b in hook.bodies if b["identity"] == "Joey")  # the webhook's JSON, to the byte
    assert joey["ref"] == "4:1" and joey["zones"] is None and joey["track_ended"] is True
    assert joey["track_url"] == "https://cams.example:8443/app/track/4:1"
    assert joey["snapshot_url"] == "https://cams.example:8443/app/thumbnails/source3/run4/track1_scene.jpg"
    assert joey["crop_url"] == "https://cams.example:8443/app/thumbnails/source3/run4/track1.jpg"
    rachel = by_topic["facemoe/door/Rachel"]
    assert rachel["ref"] == "5:2" and rachel["snapshot_url"] is None  # no scene kept: no snapshot to link to
    assert rachel["crop_url"].endswith("/thumbnails/source3/run4/track2.jpg")


def test_retained_alerts_reach_a_later_subscriber(broker):
    cfg = AlertConfig(watchlist=("Joey",), mqtt=MqttConfig(host="127.0.0.1", port=broker.port, retain=True))
    sink = WatchlistAlerts(cfg)
    sink.on_track(*track("Joey", "gate"))
    sink.close()
    assert sink.mqtt[0].delivered == 1
    late = Subscriber(broker.port)
    try:
        got = late.wait(1)
    finally:
        late.close()
    assert [(t, b["identity"], r) for t, b, r in got] == [("facemoe/gate/Joey", "Joey", True)]
    assert "track_url" not in got[0][1]  # no base_url: no links


@pytest.mark.parametrize(
    "name, level",
    [
        ("Joey", "Joey"),
        ("a/b", "a_b"),
        ("x+y#z", "x_y_z"),
        ("nul\x00here", "nul_here"),
        ("tab\tline\n", "tab_line_"),
        ("Zoë Ünal", "Zoë Ünal"),
        ("", "_"),
        (None, "unknown"),
    ],
)
def test_topic_levels_are_topic_safe(name, level):
    assert topic_level(name) == level
    topic = alert_topic("site/facemoe", {"camera": "gate/2", "identity": name})
    assert topic == f"site/facemoe/gate_2/{level}" and topic.count("/") == 3


def test_unsafe_names_arrive_on_a_safe_topic(broker, subscriber):
    cfg = AlertConfig(
        watchlist=("A/B+#C",), mqtt=MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="x/y")
    )
    sink = WatchlistAlerts(cfg)
    sub = Subscriber(broker.port, "x/y/#")
    try:
        sink.on_track(*track("A/B+#C", "gate"))
        got = sub.wait(1)
    finally:
        sink.close()
        sub.close()
    assert [(t, b["identity"]) for t, b, _ in got] == [("x/y/gate/A_B__C", "A/B+#C")]


@pytest.mark.parametrize("prefix", ["", "a/+", "#", "/lead", "trail/", "nul\x00"])
def test_bad_topic_prefix_is_refused(prefix):
    with pytest.raises(ValidationError, match="topic_prefix"):
        MqttConfig(host="127.0.0.1", topic_prefix=prefix)


def test_a_broker_that_is_down_is_logged_once_and_counted(caplog):
    cfg = AlertConfig(
        watchlist=("Joey",),
        mqtt=MqttConfig(host="127.0.0.1", port=free_port(), retries=2, backoff_s=0.05, timeout_s=0.5),
        shutdown_timeout_s=5,
    )
    with caplog.at_level(logging.DEBUG, logger="pipeline.sinks.mqtt"):
        sink = WatchlistAlerts(cfg)
        t0 = time.monotonic()
        for tid in range(3):
            sink.on_track(*track("Joey", track_id=tid))
        assert time.monotonic() - t0 < 0.1  # publishing happens on the delivery thread
        sink.close()
    delivery = sink.mqtt[0]
    assert delivery.failed + delivery.abandoned == 3 and delivery.delivered == 0 and delivery.outages == 1
    down = [r for r in caplog.records if "broker unreachable" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.ERROR
    assert "not delivered after 3 attempts" in caplog.text


def test_a_broker_that_comes_back_gets_the_next_alerts(tmp_path, caplog):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (scripts/system-deps.sh installs it)")
    broker = Broker(tmp_path).start()
    cfg = AlertConfig(
        watchlist=("Joey",),
        mqtt=MqttConfig(host="127.0.0.1", port=broker.port, retries=8, backoff_s=0.5, timeout_s=1.0),
    )
    sub = None
    try:
        with caplog.at_level(logging.INFO, logger="pipeline.sinks.mqtt"):
            sink = WatchlistAlerts(cfg)
            assert sink.mqtt[0].connected.wait(10)
            broker.stop()
            deadline = time.monotonic() + 10
            while sink.mqtt[0].connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            sink.on_track(*track("Joey", track_id=1))  # waits for the broker, retrying
            time.sleep(1.0)
            broker.start()
            sub = Subscriber(broker.port)
            got = sub.wait(1, timeout=20)
            sink.close()
    finally:
        if sub is not None:
            sub.close()
        broker.stop()
    assert [b["track_id"] for _, b, _ in got] == [1]
    assert sink.mqtt[0].outages == 1 and sink.mqtt[0].delivered == 1
    assert len([r for r in caplog.records if "connection lost" in r.getMessage()]) == 1
    assert "connected again" in caplog.text


def test_missing_paho_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    for name in ("paho", "paho.mqtt", "paho.mqtt.client"):
        monkeypatch.setitem(sys.modules, name, None)  # import paho.mqtt.client raises ImportError
    live = tmp_path / "live.yaml"
    live.write_text("alerts: {watchlist: [Joey], mqtt: {host: 127.0.0.1}}\n")
    db = f"sqlite:///{tmp_path / 'g.db'}"
    code = main(["stream", "rtsp://127.0.0.1:9/x", "--live-config", str(live), "--db", db])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: alerts.mqtt:") and "pip install 'facemoe-surveillance[mqtt]'" in err[0]
    assert not (tmp_path / "g.db").exists()  # refused before anything started


def test_unset_password_variable_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FACEMOE_TEST_MQTT_PW", raising=False)
    live = tmp_path / "live.yaml"
    live.write_text(
        "alerts: {watchlist: [Joey], mqtt: {host: 127.0.0.1, username: cam, password_env: FACEMOE_TEST_MQTT_PW}}\n"
    )
    code = main(
        ["stream", "rtsp://127.0.0.1:9/x", "--live-config", str(live), "--db", f"sqlite:///{tmp_path}/g.db"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "FACEMOE_TEST_MQTT_PW" in err[0], err


def test_stream_goes_on_when_the_broker_is_down(rtsp_server, stream_clip, gallery_db, tmp_path):  # noqa: F811
    """A real ``stream`` of the friends clip whose MQTT broker is down: it runs to its end (exit 0), logs the
    tracks, delivers its alerts to the webhook, and says once that the broker is unreachable."""
    rtsp_server.publish("cam", stream_clip)
    hook = Receiver()
    port = free_port()
    live = tmp_path / "live.yaml"
    live.write_text(
        "transport: udp\nread_timeout_s: 2\n"
        "alerts: {watchlist: [Joey, Rachel, Chandler, Monica, Ross, Phoebe], shutdown_timeout_s: 3, "
        f"webhooks: [{{url: '{hook.url}'}}], "
        f"mqtt: {{host: 127.0.0.1, port: {port}, timeout_s: 0.5, retries: 1, backoff_s: 0.1}}}}\n"
    )
    args = ["stream", rtsp_server.url("cam"), "--config", str(CONFIG), "--live-config", str(live)]
    try:
        proc = subprocess.run(
            [sys.executable, "run_pipeline.py", *args, "--db", gallery_db, "--duration", "12"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        hook.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = log_rows(gallery_db)
    assert rows["runs"].get("cam") == "finished" and rows["tracks"]
    assert hook.bodies, "the webhook got no alert"
    down = [
        line
        for line in proc.stderr.splitlines()
        if f"mqtt mqtt://127.0.0.1:{port}: broker unreachable" in line
    ]
    assert len(down) == 1, proc.stderr[-3000:]
