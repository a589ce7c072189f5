"""The Python API (pipeline.api.FaceRecognition) on the shared assets, and one embedder_id whatever the door."""

from __future__ import annotations

from datetime import datetime, timezone

import cv2
import numpy as np
import pytest
from sqlalchemy import select

import run_pipeline
from core.errors import InputError
from gallery.from_tracks import DoubtfulTrackError
from gallery.models import Media, Template, Track
from gallery.queries import Filters, find_tracks
from gallery.refs import TrackRefError, parse_track_ref, track_ref
from gallery.store import Gallery
from pipeline.api import FaceRecognition
from tests.conftest import ASSETS, ROOT, require
from tests.gallery.helpers import copy_sqlite

TEST_CONFIG = ROOT / "configs" / "test.yaml"
GALLERY = ASSETS / "images" / "friends_gallery"
FRIENDS = ASSETS / "videos" / "friends_in_video.mp4"
SHORT = ["source.end=2.0", "source.stride=2"]


def _embedder_ids(url: str) -> set[str]:
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        return set(s.scalars(select(Template.embedder_id))) | set(s.scalars(select(Track.embedder_id)))


@pytest.fixture(scope="module")
def api_db(tmp_path_factory):
    """A gallery of the six friends enrolled through the API; returns its URL."""
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'g.db'}"
    with FaceRecognition(TEST_CONFIG, SHORT, db=url) as fr:
        for photo in sorted(require(GALLERY).iterdir()):
            report = fr.enroll(photo.stem, [photo])
            assert report.count("enrolled") == 1
        again = fr.enroll("Ross", [require(GALLERY) / "Ross.png"], add=True)
        assert again.count("duplicate") == 1  # content-hash idempotent
    return url


def test_recognize_names_each_gallery_photo(api_db):
    with FaceRecognition(TEST_CONFIG, db=api_db) as fr:
        for photo in sorted(require(GALLERY).iterdir()):
            faces = fr.recognize(photo)
            assert len(faces) == 1, photo
            face = faces[0]
            assert face.identity == photo.stem and face.score > 0.9
            x1, y1, x2, y2 = face.box
            assert 0 <= x1 < x2 and 0 <= y1 < y2 and 0 < face.quality <= 1


@pytest.mark.parametrize("image", [np.zeros((64, 64, 3), np.uint8), "blank.png"])
def test_recognize_without_a_face_is_empty(api_db, tmp_path, image):
    if isinstance(image, str):
        cv2.imwrite(str(tmp_path / image), np.full((80, 80, 3), 127, np.uint8))
        image = tmp_path / image
    with FaceRecognition(TEST_CONFIG, db=api_db) as fr:
        assert fr.recognize(image) == []


@pytest.mark.parametrize(
    "image,message", [(np.zeros((8, 8), np.uint8), "HxWx3"), ("missing.jpg", "readable")]
)
def test_recognize_bad_input(api_db, tmp_path, image, message):
    with FaceRecognition(TEST_CONFIG, db=api_db) as fr, pytest.raises(InputError, match=message):
        fr.recognize(tmp_path / image if isinstance(image, str) else image)


@pytest.mark.slow
def test_process_yields_tracks_and_logs_them_once(api_db, tmp_path):
    url = copy_sqlite(api_db, tmp_path, "once")
    with FaceRecognition(TEST_CONFIG, SHORT, db=url) as fr:
        tracks = list(fr.process(require(FRIENDS)))
        again = list(fr.process(require(FRIENDS), recorded_at=datetime(2026, 3, 1, 8, tzinfo=timezone.utc)))
    assert tracks and all(t.end >= t.start for t in tracks)
    assert {t.identity for t in tracks} == {"Joey", "Rachel"}  # the first shot
    assert all(t.seen_start is None for t in tracks)  # the clip does not say when it was recorded
    base = datetime(2026, 3, 1, 8, tzinfo=timezone.utc)
    assert all(abs((t.seen_start - base).total_seconds() - t.start) < 1e-3 for t in again)
    with Gallery.open(url) as gallery, gallery.db.session() as s:  # the second run replaced the first
        logged = s.execute(select(Track.run_id, Track.track_id)).all()
    assert sorted(track_ref(*r) for r in logged) == sorted(t.ref for t in again)
    assert {t.ref.split(":")[0] for t in tracks} != {t.ref.split(":")[0] for t in again}


@pytest.mark.slow
def test_one_embedder_id_for_enroll_process_and_the_api(api_db, tmp_path):
    """Templates and tracks stored by the enroll command, process --gallery and the API carry one embedder_id."""
    enrolled = f"sqlite:///{tmp_path / 'enroll.db'}"
    processed = f"sqlite:///{tmp_path / 'process.db'}"
    common = ["--config", str(TEST_CONFIG)] + [a for o in SHORT for a in ("--set", o)]
    assert run_pipeline.main(["enroll", "--db", enrolled, "--dir", str(require(GALLERY)), *common]) == 0
    assert (
        run_pipeline.main(
            [
                "process",
                str(require(FRIENDS)),
                "--gallery",
                str(require(GALLERY)),
                "--db",
                processed,
                "--no-progress",
                *common,
            ]
        )
        == 0
    )
    ids = [_embedder_ids(url) for url in (enrolled, processed, api_db)]
    assert all(len(i) == 1 for i in ids) and ids[0] == ids[1] == ids[2], ids


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    """The README's Python API example, as written (run from the repository root), on a database of its own."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    assert 'db="sqlite:///faces.db"' in code
    code = code.replace('db="sqlite:///faces.db"', f'db="sqlite:///{tmp_path / "faces.db"}"')
    require(FRIENDS)
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert any("Rachel" in line for line in out)  # recognized, and her tracks in the clip


@pytest.mark.slow
def test_enroll_tracks_by_reference(api_db, tmp_path):
    """The clip's first shot logged against the six friends; its Joey track enrolled by its reference: for Joey
    it goes through (a media of kind track that knows its track), for Rachel it is refused unless forced, and a
    bare number names no track."""
    url = copy_sqlite(api_db, tmp_path, "tracks")
    with FaceRecognition(TEST_CONFIG, SHORT, db=url) as fr:
        assert list(fr.process(require(FRIENDS)))
        rows = find_tracks(fr.system.gallery.db, Filters(identity="Joey")).rows
        ref = rows[0].get("ref") or track_ref(rows[0]["run_id"], rows[0]["track_id"])
        with pytest.raises(TrackRefError, match="got a bare number"):
            fr.enroll_tracks("Joey", [str(rows[0]["track_id"])], add=True)
        with pytest.raises(DoubtfulTrackError, match=f"track {ref} is matched to 'Joey'"):
            fr.enroll_tracks("Rachel", [ref], add=True)
        assert fr.enroll_tracks("Joey", [ref], add=True).count("enrolled") == 1
        with fr.system.gallery.db.session() as s:
            run, track = parse_track_ref(ref)
            pk = s.scalar(select(Track.id).where(Track.run_id == run, Track.track_id == track))
            kinds = [(m.kind, m.track_pk) for m in s.scalars(select(Media).where(Media.kind == "track"))]
        assert kinds == [("track", pk)]
        assert (
            fr.enroll_tracks("Rachel", [ref], add=True, force=True).count("conflict") == 1
        )  # Joey's already
