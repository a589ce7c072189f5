"""The ``process`` command through run_pipeline.main: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
from sqlalchemy import func, select

import run_pipeline
from gallery.models import Identity, MatchEvent, Run, Source, Track
from gallery.store import Gallery
from tests.conftest import ASSETS, FIXTURES, ROOT, require

TEST_CONFIG = str(ROOT / "configs" / "test.yaml")
FRIENDS = ASSETS / "videos" / "friends_in_video.mp4"
CCTV = ASSETS / "videos" / "person_tracker_cctv.mp4"
GALLERY = ASSETS / "images" / "friends_gallery"


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'gallery.db'}"


@pytest.fixture
def process(db_url):
    """``process(*args)`` runs the command on the offline test config with a database of the test's own."""
    return lambda *args: run_pipeline.main(
        ["process", *args, "--config", TEST_CONFIG, "--no-progress", "--db", db_url]
    )


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _faceless_video(path, frames=12, size=(160, 96)):
    """A real video file of ``size`` (w, h) showing no face: mpeg4, or raw BGR frames for odd sizes."""
    w, h = size
    odd = w % 2 or h % 2
    with av.open(str(path), "w") as out:
        stream = out.add_stream("rawvideo" if odd else "mpeg4", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr24" if odd else "yuv420p"
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[:, :, 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
            img[:, :, 2] = 10 * i
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_missing_file(process, capsys, tmp_path):
    assert process(str(tmp_path / "nope.mp4")) == 2
    assert "video not found" in _one_error_line(capsys)


def test_zero_byte_file(process, capsys, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert process(str(tmp_path / "empty.mp4")) == 2
    assert "empty (0 bytes)" in _one_error_line(capsys)


def test_not_a_video(process, capsys, tmp_path):
    (tmp_path / "notes.mp4").write_text("these are not frames\n" * 50)
    assert process(str(tmp_path / "notes.mp4")) == 2
    assert "cannot read" in _one_error_line(capsys)


def test_truncated_with_index_at_the_end(process, capsys, tmp_path):
    data = require(FRIENDS).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert process(str(tmp_path / "cut.mp4")) == 2
    assert "cannot read" in _one_error_line(capsys)


def test_unknown_config_key(process, capsys):
    assert process(str(require(FRIENDS)), "--set", "detect.colour=red") == 2
    assert "unknown config key detect.colour" in _one_error_line(capsys)


def test_bad_gallery_folder(process, capsys, tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    assert process(str(require(FRIENDS)), "--gallery", str(tmp_path)) == 2
    assert "images named after people" in _one_error_line(capsys)


def test_video_without_faces_is_a_run_with_no_tracks(process, capsys, tmp_path, db_url):
    video = _faceless_video(tmp_path / "wall.mp4")
    out = tmp_path / "r.json"
    assert process(str(video), "--json", str(out)) == 0
    captured = capsys.readouterr()
    assert "no face tracks found" in captured.err and "error" not in captured.err
    assert "(no face tracks)" in captured.out
    assert json.loads(out.read_text())["tracks"] == []
    with Gallery.open(db_url) as gallery, gallery.db.session() as s:
        run = s.scalars(select(Run)).one()
        assert run.status == "finished" and run.frames_done == 12
        assert s.scalar(select(func.count()).select_from(Track)) == 0


@pytest.mark.parametrize("size", [(1920, 1), (1, 1080), (1, 1)])
def test_a_one_pixel_high_or_wide_video_is_a_run_with_no_tracks(process, capsys, tmp_path, db_url, size):
    video = _faceless_video(tmp_path / "line.avi", frames=5, size=size)
    assert process(str(video)) == 0
    assert "no face tracks found" in capsys.readouterr().err
    with Gallery.open(db_url) as gallery, gallery.db.session() as s:
        run = s.scalars(select(Run)).one()
        assert run.status == "finished" and run.frames_done == 5


@pytest.mark.slow
def test_truncated_with_index_first_is_processed_and_reported(process, capsys, tmp_path):
    data = require(CCTV).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    out = tmp_path / "r.json"
    code = process(
        str(tmp_path / "cut.mp4"),
        "--json",
        str(out),
        "--set",
        "source.stride=3",
        "--set",
        "detect.input_size=[640, 384]",
        "--set",
        "detect.score_threshold=0.4",
        "--set",
        "track.high_threshold=0.5",
        "--set",
        "track.new_track_threshold=0.5",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "is damaged" in captured.err and "ended early" in captured.err
    report = json.loads(out.read_text())
    (source,) = report["sources"]
    assert source["damaged"] and 250 < source["frames_decoded"] < 641
    assert report["tracks"]


@pytest.mark.slow
def test_process_window_with_all_outputs(process, capsys, tmp_path):
    code = process(
        str(require(FRIENDS)),
        "--gallery",
        str(require(GALLERY)),
        "--json",
        str(tmp_path / "r.json"),
        "--thumbnails",
        str(tmp_path / "th"),
        "--annotate",
        str(tmp_path / "video"),
        "--set",
        "source.end=4.0",
        "--set",
        "source.stride=3",
        "--set",
        "detect.input_size=[320, 320]",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = captured.out.splitlines()
    assert table[0].split()[:3] == ["ref", "source", "seen"] and len(table) == 3
    assert {line.split()[8] for line in table[1:]} == {"Joey", "Rachel"}
    assert {line.split()[2] for line in table[1:]} == {
        "unknown"
    }  # the clip says nothing of when it was recorded
    report = json.loads((tmp_path / "r.json").read_text())
    assert {t["identity"] for t in report["tracks"]} == {"Joey", "Rachel"}
    for track in report["tracks"]:
        assert track["thumbnail"] and (tmp_path / "th" / track["thumbnail"].split("/")[-1]).is_file()
        assert (
            track["candidates"][0]["name"] == track["identity"] and track["frames"] >= track["crops_embedded"]
        )
    with av.open(str(tmp_path / "video" / "friends_in_video_annotated.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == report["sources"][0]["frames_processed"]


@pytest.mark.slow
def test_facemoe_wiring_on_fixture_weights(process, capsys, tmp_path):
    if not (ROOT / "facemoe" / "embedder.py").exists():
        pytest.skip("facemoe/embedder.py is not in this checkout yet")
    state = require(FIXTURES / "fixtureA_state.pt")
    code = process(
        str(require(FRIENDS)),
        "--gallery",
        str(require(GALLERY)),
        "--json",
        str(tmp_path / "r.json"),
        "--set",
        "embed.backend=facemoe",
        "--set",
        f"embed.checkpoint={state}",
        "--set",
        "embed.batch_size=8",
        "--set",
        "source.end=2.0",
        "--set",
        "source.stride=4",
        "--set",
        "detect.input_size=[320, 320]",
        "--set",
        "runner.best_k=2",
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["embedder"].startswith("facemoe") and report["gallery_size"] == 6
    assert report["tracks"] and all(t["crops_embedded"] >= 1 for t in report["tracks"])


QUICK = ("--set", "source.end=2.0", "--set", "source.stride=4", "--set", "detect.input_size=[320, 320]")


def _log(db_url: str) -> dict:
    with Gallery.open(db_url) as gallery, gallery.db.session() as s:
        runs = s.execute(select(Source.name, Run.status, Run.frames_done).join(Run).order_by(Run.id)).all()
        tracks = s.scalar(select(func.count()).select_from(Track))
        events = s.execute(
            select(MatchEvent.decision, Identity.name).outerjoin(
                Identity, MatchEvent.identity_id == Identity.id
            )
        ).all()
        identities = [i.name for i in gallery.identities()]
    return {"runs": runs, "tracks": tracks, "events": events, "identities": identities}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_gallery_enrolled_once_and_the_clip_logged_once(backend, capsys, tmp_path, request):
    db_url = (
        f"sqlite:///{tmp_path / 'g.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_cluster").new_database()
    )
    argv = [
        "process",
        str(require(FRIENDS)),
        "--gallery",
        str(require(GALLERY)),
        "--config",
        TEST_CONFIG,
        "--no-progress",
        "--db",
        db_url,
        *QUICK,
    ]
    assert run_pipeline.main(argv) == 0
    first = capsys.readouterr()
    assert run_pipeline.main([*argv, "--reprocess"]) == 0  # processed again on purpose: a new run replaces it
    second = capsys.readouterr()
    assert run_pipeline.main(argv) == 0  # and once more without: nothing logged, the logged tracks shown
    third = capsys.readouterr()
    assert "processed already" in third.err and third.out == second.out

    def rows(out: str) -> list[list[str]]:  # the table without its reference column (the runs differ)
        return [line.split()[1:] for line in out.splitlines()]

    assert rows(first.out) == rows(second.out)  # same video, same gallery: same tracks and decisions
    assert {line.split()[0].split(":")[0] for line in second.out.splitlines()[1:]} == {"2"}  # run 2's tracks
    log = _log(db_url)
    assert sorted(log["identities"]) == sorted(p.stem for p in require(GALLERY).iterdir())
    assert [(status, frames) for _, status, frames in log["runs"]] == [("replaced", 12), ("finished", 12)]
    assert {name for name, _, _ in log["runs"]} == {str(require(FRIENDS))}
    printed = first.out.splitlines()[1:]
    assert log["tracks"] == len(log["events"]) == len(printed)  # logged once
    assert sorted(n for d, n in log["events"] if d == "match") == sorted(
        ln.split()[8] for ln in printed if ln.split()[7] == "match"
    )


@pytest.mark.slow
def test_null_threshold_takes_the_gallerys_calibration(process, capsys, tmp_path, db_url):
    out = tmp_path / "r.json"
    assert (
        process(
            str(require(FRIENDS)),
            "--gallery",
            str(require(GALLERY)),
            "--set",
            "match.threshold=null",
            "--json",
            str(out),
            *QUICK,
        )
        == 0
    )
    with Gallery.open(db_url) as gallery:
        (embedder_id,) = gallery.embedders()
        expected = gallery.threshold(embedder_id)
    report = json.loads(out.read_text())
    assert report["threshold"] == pytest.approx(expected) and report["gallery_size"] == 6
    assert all(
        t["decision"] == ("match" if t["candidates"][0]["score"] >= expected else "unknown")
        for t in report["tracks"]
    )


def test_database_that_does_not_connect(process, capsys, tmp_path):
    bad = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'g.db'}"
    assert (
        run_pipeline.main(
            ["process", str(require(FRIENDS)), "--config", TEST_CONFIG, "--no-progress", "--db", bad]
        )
        == 2
    )
    assert "g.db" in _one_error_line(capsys)


def test_default_config_offline_is_one_line(capsys, tmp_path, monkeypatch):
    from insightface.utils import storage

    def offline(*args, **kwargs):
        print("insightface download chatter")
        raise ConnectionError("no network")

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(storage, "download_file", offline)
    assert run_pipeline.main(["process", str(require(FRIENDS)), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ") and "could not be fetched" in line
