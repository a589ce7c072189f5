"""``process`` on files whose presentation time restarts, and the wall clock of its tracks (``--recorded-at``)."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

import run_pipeline
from tests.conftest import ROOT
from tests.pipeline.runners.test_sources import ffprobe_frames, joined, remux, ts_clip

TEST_CONFIG = str(ROOT / "configs" / "test.yaml")


@pytest.fixture
def process(tmp_path):
    """``process(*args)`` on the offline test config with a database of the test's own."""
    db = f"sqlite:///{tmp_path / 'gallery.db'}"
    return lambda *args: run_pipeline.main(
        ["process", *args, "--config", TEST_CONFIG, "--no-progress", "--db", db]
    )


@pytest.fixture(scope="module")
def cat_ts(tmp_path_factory):
    """Two MPEG-TS clips of the friends video, each starting near 0, joined with ``cat``."""
    import shutil

    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe are not installed (scripts/system-deps.sh)")
    folder = tmp_path_factory.mktemp("cat")
    a = ts_clip(folder / "a.ts", 2.0, 3.0)
    b = ts_clip(folder / "b.ts", 10.0, 3.0)
    return joined(folder / "joined.ts", a, b), ffprobe_frames(a)


def test_joined_ts_every_frame_processed_tracks_in_order(process, capsys, caplog, tmp_path, cat_ts):
    video, first_part = cat_ts
    assert process(str(video), "--json", str(tmp_path / "r.json")) == 0
    err = capsys.readouterr().err
    frames = int(re.search(r"^(\d+) frames in", err, re.M).group(1))
    assert frames == ffprobe_frames(video)  # nothing decodable dropped
    assert "presentation time restarted 1 times" in caplog.text  # a warning on standard error
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sources"][0]["frames_processed"] == frames and report["sources"][0]["discontinuities"] == 1
    part_end = first_part / 23.976
    late = [t for t in report["tracks"] if t["end_s"] > part_end]
    assert late and all(t["start_s"] >= part_end - 0.1 for t in late)  # the second clip's tracks come after


def test_recorded_at_dates_every_track(process, capsys, tmp_path):
    video = remux(tmp_path / "clip.mp4", "2020-01-01T00:00:00Z")  # the option wins over the tag
    given = "2026-03-01T10:00:00+01:00"
    assert process(str(video), "--recorded-at", given, "--json", str(tmp_path / "r.json")) == 0
    capsys.readouterr()
    tracks = json.loads((tmp_path / "r.json").read_text())["tracks"]
    assert tracks
    base = datetime.fromisoformat(given).timestamp()
    for t in tracks:
        assert datetime.fromisoformat(t["seen_start"]).timestamp() == pytest.approx(
            base + t["start_s"], abs=2e-3
        )


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("2026-03-01T10:00:00", "--recorded-at: expected a timezone"),
        ("yesterday", "--recorded-at: expected ISO 8601"),
    ],
)
def test_bad_recorded_at_is_one_line_and_exit_2(process, capsys, tmp_path, value, fragment):
    video = remux(tmp_path / "clip.mp4")
    assert process(str(video), "--recorded-at", value) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
