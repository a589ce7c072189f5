"""Retention through the real command line: ``process`` writes face images where the one storage-folder rule
(:meth:`gallery.thumbnails.ThumbnailStore.for_database`) says, and ``purge`` deletes them there: afterwards no
face image of a purged track exists anywhere under the storage folder or the thumbnails folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from gallery.db import Database
from gallery.models import MatchEvent, Track
from run_pipeline import main
from tests.conftest import ASSETS, require

ROOT = Path(__file__).resolve().parents[2]
QUICK = ("--set", "source.end=2.0", "--set", "source.stride=4", "--set", "detect.input_size=[320, 320]")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def _config(tmp_path: Path, gallery: dict) -> Path:
    """configs/test.yaml with absolute model paths and the given ``gallery`` section."""
    cfg = yaml.safe_load((ROOT / "configs" / "test.yaml").read_text())
    for section in ("detect", "embed"):
        cfg[section]["model"] = str((ROOT / "configs" / cfg[section]["model"]).resolve())
    cfg["gallery"] = gallery
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _face_images(*folders: Path) -> list[Path]:
    return sorted(
        p for f in folders if f.exists() for p in f.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
    )


@pytest.mark.parametrize("rule", ["thumbnails_dir", "storage_dir", "beside the database"])
def test_purge_removes_every_face_image_of_the_purged_tracks(tmp_path, rule):
    clip = require(ASSETS / "videos" / "friends_in_video.mp4")
    people = require(ASSETS / "images" / "friends_gallery")
    data, thumbs, storage = tmp_path / "data", tmp_path / "faces", tmp_path / "store"
    data.mkdir()
    section = {
        "thumbnails_dir": {"thumbnails_dir": str(thumbs)},
        "storage_dir": {"storage_dir": str(storage)},
    }
    config = _config(tmp_path, section.get(rule, {}))
    url = f"sqlite:///{data / 'site.db'}"
    common = ("--db", url, "--config", str(config))
    assert main(["process", str(clip), "--gallery", str(people), *common, *QUICK]) == 0
    with Database(url, create=False) as db, db.session() as session:
        stored = [f for row in session.execute(select(Track.thumbnail, Track.snapshot)) for f in row if f]
    written = _face_images(data, thumbs, storage)
    assert stored and len(written) == len(stored)  # every face image is referenced from SQL
    expected_root = {"thumbnails_dir": thumbs, "storage_dir": storage}.get(rule, data)
    assert all(p.is_relative_to(expected_root) for p in written)

    assert main(["purge", "--older-than", "0", *common]) == 0
    assert _face_images(data, thumbs, storage) == []
    with Database(url, create=False) as db, db.session() as session:
        assert session.scalar(select(func.count()).select_from(Track)) == 0
        assert session.scalar(select(func.count()).select_from(MatchEvent)) == 0
