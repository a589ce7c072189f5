"""Every command builds through pipeline.build and honours the config's gallery section (thumbnail folder,
threshold and index settings), whatever the door."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

import run_pipeline
from gallery.models import MatchEvent, Track
from gallery.store import Gallery
from pipeline.build import build
from pipeline.config import load_config
from tests.conftest import ASSETS, ROOT, require

FRIENDS = ASSETS / "videos" / "friends_in_video.mp4"
GALLERY = ASSETS / "images" / "friends_gallery"
GROUND_TRUTH = ROOT / "tests" / "facemoe" / "evaluate" / "data" / "friends_in_video_gt.csv"
SHORT = ["--set", "source.end=1.0", "--set", "source.stride=3"]
OVERRIDE = 0.42  # gallery.threshold.override; match.threshold is null so the gallery's threshold is used
HNSW_ABOVE = 3


@pytest.fixture
def setup(tmp_path):
    """A config file: configs/test.yaml with a gallery section of its own; returns (config, db URL, thumbs)."""
    cfg = load_config(ROOT / "configs" / "test.yaml")
    data = yaml.safe_load((ROOT / "configs" / "test.yaml").read_text())
    data["detect"]["model"], data["embed"]["model"] = cfg.detect.model, cfg.embed.model  # absolute
    data["match"]["threshold"] = None
    thumbs = tmp_path / "thumbs"
    data["gallery"] = {
        "thumbnails_dir": str(thumbs),
        "threshold": {"override": OVERRIDE},
        "index": {"hnsw_above": HNSW_ABOVE, "hnsw_m": 8},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    url = f"sqlite:///{tmp_path / 'g.db'}"
    Gallery.open(url).close()  # the commands that never create a database find one
    return path, url, thumbs


@pytest.fixture
def opened(monkeypatch):
    """The gallery sections every Gallery.open of the command was given."""
    seen = []
    original = Gallery.open.__func__

    def spy(cls, url=None, config=None, *, create=True):
        seen.append(config)
        return original(cls, url, config, create=create)

    monkeypatch.setattr(Gallery, "open", classmethod(spy))
    monkeypatch.setattr("uvicorn.Server.run", lambda *a, **k: None)  # serve: open, bind, then return at once
    return seen


COMMANDS = {
    "process": (["process", str(FRIENDS), "--gallery", str(GALLERY), "--no-progress", *SHORT], True, 0),
    "enroll": (["enroll", "--dir", str(GALLERY)], True, 0),
    "stream": (
        [
            "stream",
            "rtsp://127.0.0.1:9/nothing",
            "--gallery",
            str(GALLERY),
            "--duration",
            "3",
            "--set",
            "live.reconnect.max_attempts=1",
            "--set",
            "live.open_timeout_s=1",
        ],
        True,
        1,
    ),
    "eval video": (
        [
            "eval",
            "video",
            str(FRIENDS),
            "--ground-truth",
            str(GROUND_TRUTH),
            "--gallery",
            str(GALLERY),
            *SHORT,
        ],
        False,
        0,
    ),
    "query": (["query", "tracks"], True, 0),
    "serve": (["serve", "--port", "0"], True, 0),  # any free port: 8000 may be taken
    "purge": (["purge", "--older-than", "0"], True, 0),
    "remove": (["remove", "nobody"], True, 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_honours_the_gallery_section(command, setup, opened, capsys):
    argv, takes_db, code = COMMANDS[command]
    config, url, thumbs = setup
    argv = [*argv, "--config", str(config)] + (["--db", url] if takes_db else [])
    assert run_pipeline.main(argv) == code, capsys.readouterr().err
    assert opened, f"{command} did not open the gallery through the builder"
    for section in opened:
        assert section.threshold.override == OVERRIDE
        assert (section.index.hnsw_above, section.index.hnsw_m) == (HNSW_ABOVE, 8)
        # a temporary database keeps its files to itself; a real one writes thumbnails where configured
        assert section.thumbnails_dir == (str(thumbs) if takes_db else None)


@pytest.mark.slow
def test_process_writes_thumbnails_and_threshold_of_the_section(setup, capsys):
    config, url, thumbs = setup
    argv = [
        "process",
        str(require(FRIENDS)),
        "--gallery",
        str(require(GALLERY)),
        "--no-progress",
        *SHORT,
        "--config",
        str(config),
        "--db",
        url,
    ]
    assert run_pipeline.main(argv) == 0, capsys.readouterr().err
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        tracks = s.scalars(select(Track)).all()
        thresholds = set(s.scalars(select(MatchEvent.threshold)))
    assert tracks and thresholds == {OVERRIDE}
    files = sorted(p for p in Path(thumbs).rglob("*") if p.is_file())
    assert len(files) == 2 * len(tracks)  # a thumbnail and a context snapshot each


def test_temporary_database_is_deleted_on_close():
    cfg = load_config(ROOT / "configs" / "test.yaml")
    with build(cfg, detector=False, embedder=False) as system:
        folder = system.gallery.storage_dir
        assert folder is not None and folder.is_dir()
    assert not folder.exists()
