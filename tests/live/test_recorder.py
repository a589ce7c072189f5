"""Camera recording (pipeline.live.recorder) on the loopback RTSP server: segments that abut and decode, a reconnect
that starts a new one, a clip cut across a segment boundary, SIGKILL during ``stream``, a folder that cannot be
written; and (slow) 60 s segments over three minutes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import av
import numpy as np
import pytest

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.queries import Filters
from gallery.recordings import RecordingStore, find_recordings, segments_for
from pipeline.live.config import CameraConfig, LiveConfig
from pipeline.live.recorder import record_cameras
from pipeline.services.clips import ClipPart, cut_clip
from run_pipeline import main
from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "test.yaml"
FPS = 24  # of the stream clip


def live(tmp_path: Path, segment_s: float) -> LiveConfig:
    return LiveConfig(
        transport="udp",
        read_timeout_s=2,
        open_timeout_s=3,
        reconnect={"initial_s": 0.2, "max_s": 1},
        recording={"enabled": True, "segment_s": segment_s, "dir": str(tmp_path / "rec")},
    )


def record(url: str, tmp_path: Path, segment_s: float, seconds: float, during=None) -> tuple[Database, list]:
    """Record camera ``gate`` at ``url`` for ``seconds`` (``during(elapsed)`` called every 0.5 s); the segments,
    oldest first."""
    db_url = f"sqlite:///{tmp_path / 'rec.db'}"
    cam = CameraConfig(name="gate", url=url)
    with record_cameras(live(tmp_path, segment_s), [cam], db_url, GalleryConfig()) as group:
        assert group is not None
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            if during is not None:
                during(elapsed)
            time.sleep(0.5)
    db = Database(db_url)
    return db, list(reversed(find_recordings(db, Filters(page_size=1000)).rows))


def frame_times(path: Path) -> list[float]:
    """Every frame's time (s), decoded to the end (a broken file raises)."""
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def check_segments(store: RecordingStore, rows: list[dict]) -> None:
    for row in rows:
        path = store.resolve(row["path"])
        times = frame_times(path)
        length = (_t(row["ended_at"]) - _t(row["started_at"])).total_seconds()
        assert times[0] == 0.0 and len(times) >= 0.9 * length * FPS, row
        assert times[-1] + 1 / FPS == pytest.approx(length, abs=0.1), row
        assert row["size"] == path.stat().st_size and path.stat().st_mode & 0o777 == 0o600
    assert not list(store.root.rglob("*.part"))


def _t(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


def gaps(rows: list[dict]) -> list[float]:
    return [(_t(b["started_at"]) - _t(a["ended_at"])).total_seconds() for a, b in zip(rows, rows[1:])]


def test_segments_abut_decode_to_the_end_and_start_on_their_first_frame(rtsp_server, stream_clip, tmp_path):
    rtsp_server.publish("gate", stream_clip)
    db, rows = record(rtsp_server.url("gate"), tmp_path, 2.0, 9.0)
    assert len(rows) >= 3
    assert all(abs(g) < 0.05 for g in gaps(rows)), gaps(rows)
    assert all(1.9 <= (_t(r["ended_at"]) - _t(r["started_at"])).total_seconds() <= 3.0 for r in rows[:-1])
    check_segments(RecordingStore(tmp_path / "rec"), rows)


def test_a_reconnect_closes_the_segment_and_starts_a_new_one(rtsp_server, stream_clip, tmp_path):
    rtsp_server.publish("gate", stream_clip)
    restarted = []

    def restart(elapsed: float) -> None:
        if elapsed > 4 and not restarted:
            restarted.append(time.time())
            rtsp_server.kill()  # a server that crashes and comes back
            time.sleep(1)
            rtsp_server.start().publish("gate", stream_clip)

    db, rows = record(rtsp_server.url("gate"), tmp_path, 30.0, 20.0, restart)
    assert len(rows) == 2, rows  # segments of 30 s: only the reconnect cuts
    assert _t(rows[0]["ended_at"]).timestamp() <= restarted[0] + 0.5
    assert gaps(rows)[0] > 1.0
    check_segments(RecordingStore(tmp_path / "rec"), rows)


def test_a_window_across_a_segment_boundary_is_one_continuous_clip(rtsp_server, stream_clip, tmp_path):
    rtsp_server.publish("gate", stream_clip)
    db, rows = record(rtsp_server.url("gate"), tmp_path, 2.0, 7.0)
    boundary = _t(rows[1]["started_at"])
    start, end = boundary - timedelta(seconds=1), boundary + timedelta(seconds=1)
    segments = segments_for(db, "gate", start, end)
    assert [s.path for s in segments] == [rows[0]["path"], rows[1]["path"]]
    store = RecordingStore(tmp_path / "rec")
    parts = [ClipPart(store.resolve(s.path), (s.started_at - start).total_seconds()) for s in segments]
    clip = cut_clip(parts, 0.0, 2.0, tmp_path / "clip.mp4")
    times = frame_times(clip.path)
    assert clip.frames == len(times) >= 2 * FPS - 2
    steps = [b - a for a, b in zip(times, times[1:])]
    assert max(steps) < 1.5 / FPS and clip.start < 1.01 / FPS and clip.end > 2.0 - 1.5 / FPS


def stream_cmd(url: str, db_url: str, live_yaml: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_pipeline.py"), "stream", url, "--config", str(CONFIG)] + [
        "--db",
        db_url,
        "--live-config",
        str(live_yaml),
        *extra,
    ]


def listed(db_url: str, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["query", "recordings", "--db", db_url, "--format", "json", "--page-size", "1000"]) == 0
    return json.loads(capsys.readouterr().out)["rows"]


def test_sigkill_during_recording_leaves_no_broken_segment(rtsp_server, stream_clip, tmp_path, capsys):
    rtsp_server.publish("gate", stream_clip)
    db_url = f"sqlite:///{tmp_path / 'site.db'}"
    live_yaml = tmp_path / "live.yaml"
    live_yaml.write_text(
        f"transport: udp\nread_timeout_s: 2\nrecording: {{enabled: true, segment_s: 3, dir: '{tmp_path / 'rec'}'}}\n"
    )
    log = open(tmp_path / "stream.log", "wb")
    proc = subprocess.Popen(stream_cmd(rtsp_server.url("gate"), db_url, live_yaml), stdout=log, stderr=log)
    store = RecordingStore(tmp_path / "rec")
    deadline = time.monotonic() + 90
    while len(list(store.root.rglob("*.mp4"))) < 2:  # two done segments, a third being written
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stream.log").read_text()
        time.sleep(0.2)
    time.sleep(1.5)  # mid-segment
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert list(store.root.rglob(".*.part"))  # the killed segment's prefix
    before = listed(db_url, capsys)
    assert len(before) >= 2
    for row in before:
        assert frame_times(store.resolve(row["path"]))
    # the next start recovers the killed segment, then records on
    again = subprocess.run(
        stream_cmd(rtsp_server.url("gate"), db_url, live_yaml, "--duration", "5"),
        capture_output=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    after = listed(db_url, capsys)
    assert {r["path"] for r in before} < {r["path"] for r in after}
    assert len(after) >= len(before) + 2  # the recovered one and at least one of the new run
    check_segments(store, [r for r in after if r["path"] not in {b["path"] for b in before}][:1])
    for row in after:
        assert len(frame_times(store.resolve(row["path"]))) >= FPS // 2
    assert not list(store.root.rglob(".*.part"))
    assert main(["purge", "--older-than", "1", "--db", db_url]) == 0  # purge recovers and applies retention


def test_a_recording_folder_that_cannot_be_written_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    live_yaml = tmp_path / "live.yaml"
    live_yaml.write_text(f"recording: {{enabled: true, dir: '{blocker / 'rec'}'}}\n")
    argv = [
        "stream",
        "rtsp://127.0.0.1:9/gate",
        "--config",
        str(CONFIG),
        "--db",
        f"sqlite:///{tmp_path / 'x.db'}",
    ]
    assert main(argv + ["--live-config", str(live_yaml)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "recording folder" in err[-1] and "expected a writable folder" in err[-1]
    assert not any("Traceback" in line for line in err)


@pytest.mark.slow
def test_three_minutes_in_60_s_segments_cover_the_time_and_a_track_across_a_boundary_is_one_clip(
    rtsp_server, stream_clip, tmp_path
):
    rtsp_server.publish("gate", stream_clip)
    t0 = time.time()
    db, rows = record(rtsp_server.url("gate"), tmp_path, 60.0, 190.0)
    t1 = time.time()
    assert len(rows) == 4 and all(abs(g) < 0.05 for g in gaps(rows))
    assert all(59.9 <= (_t(r["ended_at"]) - _t(r["started_at"])).total_seconds() <= 61 for r in rows[:3])
    assert _t(rows[0]["started_at"]).timestamp() - t0 < 5 and t1 - _t(rows[-1]["ended_at"]).timestamp() < 3
    check_segments(RecordingStore(tmp_path / "rec"), rows)
    boundary = _t(rows[2]["started_at"])
    start, end = boundary - timedelta(seconds=3), boundary + timedelta(seconds=3)
    store = RecordingStore(tmp_path / "rec")
    parts = [
        ClipPart(store.resolve(s.path), (s.started_at - start).total_seconds())
        for s in segments_for(db, "gate", start, end)
    ]
    assert len(parts) == 2
    clip = cut_clip(parts, 0.0, 6.0, tmp_path / "clip.mp4")
    times = frame_times(clip.path)
    assert len(times) >= 6 * FPS - 2 and max(b - a for a, b in zip(times, times[1:])) < 1.5 / FPS


RIGHT_HALF = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_masked_camera_tracks_clip_spans_segments_and_its_case_holds_them_until_closed(
    rtsp_server, stream_clip, tmp_path, capsys
):
    """``stream`` records camera ``gate`` (2 s segments, the right half a privacy mask); the clip of its longest
    track is one continuous clip over two or more segments, black in the mask while the segments are not; its
    evidence holds those segments against a 1-byte disk cap until the case is closed; then no recording covers it."""
    from gallery.evidence_models import CaseHold, Recording
    from gallery.recordings import apply_retention

    rtsp_server.publish("gate", stream_clip)
    db_url = f"sqlite:///{tmp_path / 'site.db'}"
    live_yaml = tmp_path / "live.yaml"
    live_yaml.write_text(
        "transport: udp\nread_timeout_s: 2\nrecording: {enabled: true, segment_s: 2}\n"
        f"cameras:\n  - name: gate\n    url: {rtsp_server.url('gate')}\n    zones:\n"
        f"      - {{name: right, points: {RIGHT_HALF}, mask: true}}\n"
    )
    cmd = [sys.executable, str(ROOT / "run_pipeline.py"), "stream", "--config", str(CONFIG), "--db", db_url]
    done = subprocess.run(
        cmd + ["--live-config", str(live_yaml), "--duration", "12"], capture_output=True, timeout=180
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    store = RecordingStore(
        tmp_path / "site_recordings"
    )  # beside the database: evidence finds it unconfigured
    db = Database(db_url)
    with db.session() as s:
        recs = s.query(Recording).all()
    assert len(recs) >= 4 and all(r.masks == [{"name": "right", "points": RIGHT_HALF}] for r in recs)

    code, out, _ = _cli(capsys, "query", "tracks", "--db", db_url, "--format", "json", "--page-size", "100")
    tracks = json.loads(out)["rows"]
    assert code == 0 and tracks
    longest = max(tracks, key=lambda t: t["end_time"] - t["start_time"])
    assert longest["end_time"] - longest["start_time"] >= 1.0, tracks
    ref = longest["ref"]

    out_dir = tmp_path / "case1"
    code, _, err = _cli(
        capsys, "evidence", ref, "--out", str(out_dir), "--db", db_url, "--config", str(CONFIG)
    )
    assert code == 0, err
    folder = next(out_dir.glob("track_*"))
    record = json.loads((folder / "record.json").read_text())["recording"]
    used = record["segments"]
    assert record["camera"] == "gate" and len(used) >= 2 and all(u["masks"] == ["right"] for u in used)
    inner = (_t(used[0]["started_at"]), _t(used[-1]["ended_at"]))
    assert all(_t(b) <= inner[0] or _t(a) >= inner[1] for a, b in record["gaps"]), record  # none inside
    margin = 2.0
    uncovered = sum((_t(b) - _t(a)).total_seconds() for a, b in record["gaps"])
    span = longest["end_time"] - longest["start_time"] + 2 * margin

    times, frames = [], []
    with av.open(str(folder / "clip.mp4")) as c:
        for f in c.decode(video=0):
            times.append(float(f.time))
            frames.append(f.to_ndarray(format="bgr24"))
    steps = [b - a for a, b in zip(times, times[1:])]
    assert max(steps) < 1.5 / FPS  # one continuous clip: no frame missing across the boundaries
    assert times[-1] + 1 / FPS >= span - uncovered - 0.3, (times[-1], span, uncovered)
    width = frames[0].shape[1]
    right = np.stack([f[:, int(width * 0.52) :] for f in frames])
    assert right.max() <= 12 and right.mean() < 1.0, (right.max(), right.mean())  # masked: black
    left = np.stack([f[:, : int(width * 0.48)] for f in frames])
    assert left.mean() > 20  # the picture is there
    for u in used:  # the segments themselves are stored as the camera sent them
        with av.open(str(store.resolve(u["path"]))) as c:
            raw = next(c.decode(video=0)).to_ndarray(format="bgr24")
        assert raw[:, int(raw.shape[1] * 0.52) :].mean() > 20

    held = {u["id"] for u in used}
    with db.session() as s:
        assert {h.recording_id for h in s.query(CaseHold).all()} == held
    code, out, _ = _cli(capsys, "query", "cases", "--db", db_url, "--format", "json")
    (case,) = json.loads(out)["rows"]
    assert code == 0 and case["name"] == "case1" and case["closed_at"] is None
    assert case["held_segments"] == len(held)

    deleted = apply_retention(db, store, None, 1)  # a 1-byte cap: everything that is not held goes
    assert {d.id for d in deleted} == {r.id for r in recs} - held
    assert all(store.resolve(u["path"]).is_file() for u in used)
    assert main(["purge", "--older-than", "3650", "--db", db_url]) == 0  # purge's retention keeps them too
    assert all(store.resolve(u["path"]).is_file() for u in used)

    code, _, err = _cli(capsys, "evidence", "--close", "case1", "--db", db_url)
    assert code == 0 and "closed" in err
    code, _, err = _cli(capsys, "evidence", "--close", "case1", "--db", db_url)
    assert code == 2 and err.count("\n") == 1 and "closed already" in err
    assert {d.id for d in apply_retention(db, store, None, 1)} == held
    assert not any(store.resolve(u["path"]).exists() for u in used)

    code, _, err = _cli(capsys, "evidence", ref, "--out", str(tmp_path / "case2"), "--db", db_url)
    assert code == 2 and err.count("\n") == 1 and "no recording covers this track" in err, err
    assert not (tmp_path / "case2").exists()
    db.close()
