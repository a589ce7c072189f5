"""The ``process`` command through run_pipeline.main: exit codes, one-line errors, outputs."""
from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest

import run_pipeline
from tests.conftest import ASSETS, FIXTURES, ROOT, require

TEST_CONFIG = str(ROOT / "configs" / "test.yaml")
FRIENDS = ASSETS / "videos" / "friends_in_video.mp4"
CCTV = ASSETS / "videos" / "person_tracker_cctv.mp4"
GALLERY = ASSETS / "images" / "friends_gallery"


def _process(*args: str) -> int:
    return run_pipeline.main(["process", *args, "--config", TEST_CONFIG, "--no-progress"])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _faceless_video(path, frames=12):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for i in range(frames):
            img = np.zeros((96, 160, 3), np.uint8)
            img[:, :, 1] = np.linspace(0, 255, 160, dtype=np.uint8)[None, :]
            img[:, :, 2] = 10 * i
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_missing_file(capsys, tmp_path):
    assert _process(str(tmp_path / "nope.mp4")) == 2
    assert "video not found" in _one_error_line(capsys)


def test_zero_byte_file(capsys, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _process(str(tmp_path / "empty.mp4")) == 2
    assert "empty (0 bytes)" in _one_error_line(capsys)


def test_not_a_video(capsys, tmp_path):
    (tmp_path / "notes.mp4").write_text("these are not frames\n" * 50)
    assert _process(str(tmp_path / "notes.mp4")) == 2
    assert "cannot read" in _one_error_line(capsys)


def test_truncated_with_index_at_the_end(capsys, tmp_path):
    data = require(FRIENDS).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert _process(str(tmp_path / "cut.mp4")) == 2
    assert "cannot read" in _one_error_line(capsys)


def test_unknown_config_key(capsys):
    assert _process(str(require(FRIENDS)), "--set", "detect.colour=red") == 2
    assert "unknown config key detect.colour" in _one_error_line(capsys)


def test_bad_gallery_folder(capsys, tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    assert _process(str(require(FRIENDS)), "--gallery", str(tmp_path)) == 2
    assert "holds no images" in _one_error_line(capsys)


def test_video_without_faces(capsys, tmp_path):
    video = _faceless_video(tmp_path / "wall.mp4")
    out = tmp_path / "r.json"
    assert _process(str(video), "--json", str(out)) == 2
    assert "no face tracks found" in _one_error_line(capsys)
    assert not out.exists()  # nothing half-written


@pytest.mark.slow
def test_truncated_with_index_first_is_processed_and_reported(capsys, tmp_path):
    data = require(CCTV).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    out = tmp_path / "r.json"
    code = _process(str(tmp_path / "cut.mp4"), "--json", str(out), "--set", "source.stride=3",
                    "--set", "detect.input_size=[640, 384]", "--set", "detect.score_threshold=0.4",
                    "--set", "track.high_threshold=0.5", "--set", "track.new_track_threshold=0.5")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "is damaged" in captured.err and "ended early" in captured.err
    report = json.loads(out.read_text())
    (source,) = report["sources"]
    assert source["damaged"] and 250 < source["frames_decoded"] < 641
    assert report["tracks"]


@pytest.mark.slow
def test_process_window_with_all_outputs(capsys, tmp_path):
    code = _process(str(require(FRIENDS)), "--gallery", str(require(GALLERY)), "--json", str(tmp_path / "r.json"),
                    "--thumbnails", str(tmp_path / "th"), "--annotate", str(tmp_path / "video"),
                    "--set", "source.end=4.0", "--set", "source.stride=3", "--set", "detect.input_size=[320, 320]")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = captured.out.splitlines()
    assert table[0].split()[:2] == ["source", "track"] and len(table) == 3
    assert {line.split()[7] for line in table[1:]} == {"Joey", "Rachel"}
    report = json.loads((tmp_path / "r.json").read_text())
    assert {t["identity"] for t in report["tracks"]} == {"Joey", "Rachel"}
    for track in report["tracks"]:
        assert track["thumbnail"] and (tmp_path / "th" / track["thumbnail"].split("/")[-1]).is_file()
        assert track["candidates"][0]["name"] == track["identity"] and track["frames"] >= track["crops_embedded"]
    with av.open(str(tmp_path / "video" / "friends_in_video_annotated.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == report["sources"][0]["frames_processed"]


@pytest.mark.slow
def test_facemoe_wiring_on_fixture_weights(capsys, tmp_path):
    if not (ROOT / "facemoe" / "embedder.py").exists():
        pytest.skip("facemoe/embedder.py is not in this checkout yet")
    state = require(FIXTURES / "fixtureA_state.pt")
    code = _process(str(require(FRIENDS)), "--gallery", str(require(GALLERY)), "--json", str(tmp_path / "r.json"),
                    "--set", "embed.backend=facemoe", "--set", f"embed.checkpoint={state}",
                    "--set", "embed.batch_size=8", "--set", "source.end=2.0", "--set", "source.stride=4",
                    "--set", "detect.input_size=[320, 320]", "--set", "runner.best_k=2")
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["embedder"].startswith("facemoe") and report["gallery_size"] == 6
    assert report["tracks"] and all(t["crops_embedded"] >= 1 for t in report["tracks"])


def test_gallery_needs_a_threshold(capsys):
    assert _process(str(require(FRIENDS)), "--gallery", str(require(GALLERY)), "--set", "match.threshold=null") == 2
    assert "set match.threshold" in _one_error_line(capsys)


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
