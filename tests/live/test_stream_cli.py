"""The ``stream`` command and the live runner on real RTSP streams of the friends clip, matched against the
friends gallery enrolled in SQLite: two cameras, server restarts, SIGTERM shutdown, bad usage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from gallery.models import Identity, MatchEvent, Run, Source, Track
from gallery.store import Gallery
from pipeline.build import build
from pipeline.config import load_config
from pipeline.live.cameras import LiveCameras
from pipeline.live.config import AlertConfig, CameraConfig, LiveConfig, ReconnectConfig, WebhookConfig
from pipeline.live.health import HealthRegistry
from pipeline.runners.live_runner import LiveRunner
from pipeline.sinks.alerts import WatchlistAlerts
from pipeline.sinks.sql_gallery import LoggedSource
from run_pipeline import main
from tests.conftest import ASSETS, ROOT, require
from tests.live.rtsp import free_port
from tests.live.test_alerts import Receiver

CONFIG = ROOT / "configs" / "test.yaml"
FRIENDS_GALLERY = ASSETS / "images" / "friends_gallery"
FRIENDS = {"Rachel", "Monica", "Ross", "Chandler", "Joey", "Phoebe"}


@pytest.fixture(scope="module")
def app_config():
    require(ASSETS / "models" / "scrfd_500m_bnkps.onnx")
    return load_config(CONFIG)  # the test config names the shared models relative to itself


@pytest.fixture(scope="module")
def gallery_db(tmp_path_factory, app_config):
    """A SQLite gallery with the six friends enrolled through the pipeline's stages (the ``enroll --dir`` rule)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'friends.db'}"
    with build(app_config, db_url=url, gallery_dir=require(FRIENDS_GALLERY)) as system:
        assert system.enrollment.count("enrolled") == len(FRIENDS)
    return url


def log_rows(url: str) -> dict:
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        runs = {name: status for name, status in s.execute(select(Source.name, Run.status).join(Run))}
        tracks = s.execute(
            select(Source.name, Track.track_id, Track.start_time, Track.end_time).join(
                Source, Track.source_id == Source.id
            )
        ).all()
        matched = s.execute(
            select(Source.name, Identity.name)
            .select_from(MatchEvent)
            .join(Identity, MatchEvent.identity_id == Identity.id)
            .join(Source, MatchEvent.source_id == Source.id)
        ).all()
        events = s.scalar(select(func.count()).select_from(MatchEvent))
    return {"runs": runs, "tracks": tracks, "matched": matched, "events": events}


def test_stream_two_cameras_and_sigterm_flushes_everything(rtsp_server, stream_clip, gallery_db, tmp_path):
    for mount in ("a", "b"):
        rtsp_server.publish(mount, stream_clip)
    hook = Receiver()
    port = free_port()
    live = tmp_path / "live.yaml"
    live.write_text(
        "transport: udp\nread_timeout_s: 2\nhealth: {status_interval_s: 2}\n"
        f"alerts: {{watchlist: [Joey, Rachel, Chandler], webhooks: [{{url: '{hook.url}'}}]}}\n"
    )
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(f"cameras:\n  - {{name: gate, url: '{rtsp_server.url('b')}'}}\n")
    started = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "run_pipeline.py",
            "-v",
            "stream",
            rtsp_server.url("a"),
            "--cameras",
            str(cameras),
            "--config",
            str(CONFIG),
            "--live-config",
            str(live),
            "--db",
            gallery_db,
            "--metrics-port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = ""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and metrics.count("camera_connected") < 2:
            time.sleep(1.0)
            try:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            metrics = "\n".join(m for m in metrics.splitlines() if m.endswith("} 1") and "_connected{" in m)
        time.sleep(6.0)  # both cameras attached: let a few tracks go through
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        hook.close()
    assert proc.returncode == 0, err[-2000:]
    assert "live run ends (stop requested)" in err
    assert 'camera="a"' in metrics and 'camera="gate"' in metrics  # both reported connected
    rows = log_rows(gallery_db)
    assert rows["runs"] == {"a": "finished", "gate": "finished"}
    per_camera = {name: {i for n, i in rows["matched"] if n == name} for name in ("a", "gate")}
    assert all(found and found <= FRIENDS for found in per_camera.values()), per_camera  # only the cast
    assert rows["events"] == len(rows["tracks"])  # one event per track, none twice
    printed = [line for line in out.splitlines() if " frames=" in line]
    assert len(printed) == len(rows["tracks"])  # the track lines on stdout are the match log's tracks
    assert not any("time unknown" in line for line in printed)  # each camera's frames carry the wall clock
    with Gallery.open(gallery_db) as gallery, gallery.db.session() as s:  # and so does the match log
        cols = (Track.seen_start, Track.seen_end, Track.time_origin, Track.start_time, Track.end_time)
        seen = s.execute(select(*cols)).all()
    assert seen and {origin for _, _, origin, _, _ in seen} == {"camera"}
    for first, last, _, start, end in seen:  # wall clock of this run, spanning what the stream times span
        assert started - 1 <= first.timestamp() <= last.timestamp() <= time.time()
        assert abs((last - first).total_seconds() - (end - start)) < 0.5
    assert all(":" in b["ref"] and b["seen_start"] for b in hook.bodies)  # alerts name the track and the time
    alerted = [(b["camera"], b["track_id"], b["identity"]) for b in hook.bodies]
    assert len(set(alerted)) == len(alerted)  # once per track and identity
    watched = {m for m in matched_tracks(gallery_db) if m[2] in {"Joey", "Rachel", "Chandler"}}
    assert watched <= set(alerted)  # every watched final match was alerted (at once or at its end)
    assert {i for _, _, i in alerted} <= {"Joey", "Rachel", "Chandler"}


def matched_tracks(url: str) -> list[tuple[str, int, str]]:
    """(camera, track id, identity) of every track whose final decision is a match."""
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        return s.execute(
            select(Source.name, Track.track_id, Identity.name)
            .select_from(MatchEvent)
            .join(Track, MatchEvent.track_pk == Track.id)
            .join(Source, Track.source_id == Source.id)
            .join(Identity, MatchEvent.identity_id == Identity.id)
            .where(MatchEvent.decision == "match")
        ).all()


@pytest.mark.slow
def test_live_runner_survives_three_server_restarts(rtsp_server, stream_clip, gallery_db, app_config):
    rtsp_server.publish("cam", stream_clip)
    cfg = LiveConfig(
        transport="udp",
        read_timeout_s=1.0,
        open_timeout_s=3.0,
        reconnect=ReconnectConfig(initial_s=0.1, max_s=0.5),
    )
    cams = [CameraConfig(name="door", url=rtsp_server.url("cam"))]
    registry = HealthRegistry()
    cameras = LiveCameras(cams, cfg, registry, seed=0)
    with build(app_config, db_url=gallery_db) as system:
        sink = system.match_log([LoggedSource(c.name, "camera", c.url) for c in cams], batch_size=1)
        runner = LiveRunner(
            app_config, system.detector, system.embedder, system.matcher(), [sink], cameras, registry
        )
        stop = threading.Event()
        result = {}
        thread = threading.Thread(target=lambda: result.update(stats=runner.run(stop)), daemon=True)
        thread.start()
        health = registry.cameras["door"]
        try:
            assert _wait(lambda: health.frames_processed > 20, 30)
            first_kill = last_restart = 0.0
            for round_ in range(1, 4):
                first_kill = first_kill or cameras.now()
                rtsp_server.kill()
                assert _wait(lambda r=round_: cameras.sources[0].generation == r, 5)
                rtsp_server.start().publish("cam", stream_clip)
                last_restart = cameras.now()
                done = health.frames_processed
                assert _wait(
                    lambda r=round_, n=done: health.reconnects == r and health.frames_processed > n + 20, 20
                )
        finally:
            stop.set()
            thread.join(60)
            sink.close()
    assert not thread.is_alive() and "stats" in result
    stats = result["stats"]
    rows = log_rows(gallery_db)
    door = sorted((start, end, tid) for name, tid, start, end in rows["tracks"] if name == "door")
    assert stats.closed_at_loss >= 3 and stats.tracks == len(door)
    assert len({tid for _, _, tid in door}) == len(door)  # track ids stay unique across reconnects
    # tracks from every connection: before the first kill and after the last restart (the cameras' clock)
    assert door[0][0] < first_kill and door[-1][1] > last_restart
    assert {i for n, i in rows["matched"] if n == "door"} & FRIENDS
    assert rows["runs"]["door"] == "finished"


class EndTimes:
    """Sink noting when each finished track reached the sinks (``time.monotonic``)."""

    def __init__(self) -> None:
        self.ended: dict[tuple[str, int], tuple] = {}

    def on_track(self, template, result) -> None:
        self.ended[(template.source_id, template.track_id)] = (template, result, time.monotonic())

    def close(self) -> None:
        pass


@pytest.mark.slow
def test_watchlist_alert_arrives_while_the_track_is_open(rtsp_server, stream_clip, gallery_db, app_config):
    rtsp_server.publish("cam", stream_clip)
    hook = Receiver()
    cams = [CameraConfig(name="door", url=rtsp_server.url("cam"))]
    registry = HealthRegistry()
    cameras = LiveCameras(cams, LiveConfig(transport="udp", read_timeout_s=2.0), registry, seed=0)
    ends = EndTimes()
    alerts = WatchlistAlerts(
        AlertConfig(watchlist=tuple(sorted(FRIENDS)), webhooks=(WebhookConfig(url=hook.url),))
    )
    with build(app_config, db_url=gallery_db) as system:
        runner = LiveRunner(
            app_config, system.detector, system.embedder, system.matcher(), [alerts, ends], cameras, registry
        )
        try:
            stats = runner.run(threading.Event(), duration_s=14)
        finally:
            alerts.close()
            hook.close()
    offset = time.monotonic() - cameras.now()  # the cameras' clock: monotonic time minus this
    keys = [(b["camera"], b["track_id"], b["identity"]) for b in hook.bodies]
    assert keys and len(set(keys)) == len(keys)  # one alert per track and identity
    early = [(b, t) for b, t in zip(hook.bodies, hook.received) if not b["track_ended"]]
    assert early, hook.bodies
    ahead = []
    for body, received in early:
        template, _, ended_at = ends.ended[(body["camera"], body["track_id"])]
        assert received < ended_at and body["last_s"] <= template.last_timestamp
        ahead.append(template.last_timestamp - (received - offset))
    # at least one alert reached the webhook while the face was still being decoded, a second or more before
    # the track's last frame (and max_lost_s more before the track ended)
    assert max(ahead) > 1.0, ahead
    for body in hook.bodies:
        if body["track_ended"]:  # alerted only at the end: the final match says so
            assert ends.ended[(body["camera"], body["track_id"])][1].identity.name == body["identity"]
    assert stats.progress_matches >= len(early)


@pytest.mark.slow
def test_live_runner_over_rtsp_tcp_tracks_and_reconnects(
    tcp_rtsp_server, stream_clip, gallery_db, app_config
):
    tcp_rtsp_server.publish("cam", stream_clip)
    cams = [CameraConfig(name="tcp", url=tcp_rtsp_server.url("cam"))]
    cfg = LiveConfig(
        transport="tcp",
        read_timeout_s=1.5,
        open_timeout_s=3.0,
        reconnect=ReconnectConfig(initial_s=0.1, max_s=0.5),
    )
    registry = HealthRegistry()
    cameras = LiveCameras(cams, cfg, registry, seed=0)
    ends = EndTimes()
    with build(app_config, db_url=gallery_db) as system:
        runner = LiveRunner(
            app_config, system.detector, system.embedder, system.matcher(), [ends], cameras, registry
        )
        stop = threading.Event()
        result = {}
        thread = threading.Thread(target=lambda: result.update(stats=runner.run(stop)), daemon=True)
        thread.start()
        health = registry.cameras["tcp"]
        try:
            assert _wait(lambda: health.frames_processed > 20, 40), health.snapshot()
            time.sleep(4.0)  # tracks confirmed and embedded (the looped clip keeps them open until the drop)
            tcp_rtsp_server.drop()  # every connection closed: the stream ends
            assert _wait(lambda: cameras.sources[0].generation == 1, 5)
            dropped_at = cameras.now()  # after the last frame of the first connection
            tcp_rtsp_server.start()
            back = health.frames_processed
            assert _wait(lambda: health.reconnects == 1 and health.frames_processed > back + 20, 20)
            time.sleep(3.0)
        finally:
            stop.set()
            thread.join(60)
    assert not thread.is_alive() and "stats" in result
    spans = [(t.first_timestamp, t.last_timestamp) for t, _, _ in ends.ended.values()]
    assert any(last < dropped_at for _, last in spans) and any(first > dropped_at for first, _ in spans), (
        spans
    )
    assert {r.identity.name for _, r, _ in ends.ended.values() if r.identity} & FRIENDS
    assert result["stats"].closed_at_loss >= 1 and tcp_rtsp_server.sessions == 2


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["stream", "--gallery", "g"], "expected camera URLs"),
        (["stream", "rtsp://127.0.0.1/a", "--gallery", "g", "--duration", "0"], "--duration"),
        (
            ["stream", "rtsp://127.0.0.1/a", "--gallery", "g", "--cameras", "missing.yaml"],
            "cameras file not found",
        ),
        (
            ["stream", "rtsp://127.0.0.1/a", "--gallery", "g", "--live-config", "missing.yaml"],
            "live config file",
        ),
        (["stream", "rtsp://127.0.0.1/a", "--gallery", "g", "--engine", "ray"], "expected --db URL"),
        (
            ["stream", "rtsp://127.0.0.1/a", "--gallery", "g", "--address", "127.0.0.1:6379"],
            "--address is for",
        ),
        (["stream", "rtsp://127.0.0.1/a"], "expected --db URL or --gallery DIR"),
        (
            ["stream", "rtsp://127.0.0.1/a", "rtsp://127.0.0.1/a", "--gallery", "g"],
            "duplicates ['127.0.0.1-a']",
        ),
        (["stream", "rtsp://h1/a", "rtsp://h2/a?token=SECRET", "rtsp://h1/a", "--gallery", "g"], "['h1-a']"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv, fragment, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert main(argv + ["--config", str(CONFIG)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err


def test_help_says_db_has_no_default(capsys):
    with pytest.raises(SystemExit):
        main(["stream", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    db_help = text.split("--db URL ", 1)[1].split(" --", 1)[0]
    assert "no default" in db_help and "(default" not in db_help and "facemoe.db" not in db_help


def test_gallery_with_db_enrolls_into_the_db_once(tmp_path, capsys):
    """``--db`` with ``--gallery`` enrolls the folder into that database (the ``enroll --dir`` rule: images
    already enrolled are skipped), then streams against it; here a camera that refuses connections."""
    db = f"sqlite:///{tmp_path / 'g.db'}"
    live = tmp_path / "live.yaml"
    live.write_text("open_timeout_s: 1\nreconnect: {initial_s: 0.1, max_s: 0.2}\n")
    argv = [
        "stream",
        f"rtsp://127.0.0.1:{free_port()}/a",
        "--db",
        db,
        "--gallery",
        str(require(FRIENDS_GALLERY)),
        "--config",
        str(CONFIG),
        "--live-config",
        str(live),
        "--duration",
        "1",
    ]
    for _ in range(2):
        assert main(argv) == 0, capsys.readouterr().err
    with Gallery.open(db) as gallery, gallery.db.session() as s:
        names = s.scalars(select(Identity.name)).all()
        runs = s.execute(select(Source.name, Run.status).join(Run)).all()
    assert sorted(names) == sorted(FRIENDS)  # enrolled once, not twice
    assert runs == [("a", "finished")] * 2


def test_stream_matches_the_people_the_file_pipeline_finds(
    rtsp_server, stream_clip, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(ROOT)
    gallery = str(require(ASSETS / "images" / "friends_gallery"))
    out = tmp_path / "file.json"
    assert (
        main(
            [
                "process",
                str(stream_clip),
                "--gallery",
                gallery,
                "--config",
                str(CONFIG),
                "--json",
                str(out),
                "--no-progress",
                "--db",
                f"sqlite:///{tmp_path / 'file.db'}",
            ]
        )
        == 0
    )
    in_file = {t["identity"] for t in json.loads(out.read_text())["tracks"] if t["decision"] == "match"}
    rtsp_server.publish("cam", stream_clip)
    live = tmp_path / "live.yaml"
    live.write_text("transport: udp\nread_timeout_s: 2\n")
    capsys.readouterr()
    assert (
        main(
            [
                "stream",
                rtsp_server.url("cam"),
                "--gallery",
                gallery,
                "--config",
                str(CONFIG),
                "--live-config",
                str(live),
                "--duration",
                "12",
            ]
        )
        == 0
    )
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if " frames=" in line]
    live_ids = {parts[-2] for parts in lines if parts[-1] != "unknown"}
    assert in_file <= FRIENDS and live_ids, (in_file, lines)
    assert live_ids <= in_file  # the live run (which skips frames) finds no one the file run does not
