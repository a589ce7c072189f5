"""gallery/forensic.py: which enrolled media shows as what is decided by the stored kind of the media row (and,
for a track, its ``track_pk``), never by its path: a photo whose file name reads like a track reference is served
as that photo; a face enrolled from a track shows that track's crop; a template row has no photo. SQLite and
PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from gallery.enroll import Enroller
from gallery.forensic import MediaUnavailable, enrolled_photo, track_detail
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.media import MediaVector
from gallery.models import Media
from gallery.store import Gallery
from gallery.thumbnails import ThumbnailStore
from tests.gallery.helpers import unit

EMB, DIM = "e32", 32
LOOKALIKE = "track 1:1 (x).png"  # the path an old build took for a track's template


@pytest.fixture
def log(db_url, tmp_path, monkeypatch):
    """Track 1:1 (a grey crop) matched to ann, who is enrolled from a photo named LOOKALIKE (a red and black
    image, closest to the track), a template row and, as bea, from the track 1:1 itself."""
    rng = np.random.default_rng(5)
    photos = tmp_path / "photos"
    photos.mkdir()
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, :40] = (0, 0, 200)
    cv2.imwrite(str(photos / LOOKALIKE), image)
    monkeypatch.chdir(photos)  # the photo was enrolled by a relative path, as from its own folder
    digest = hashlib.sha256((photos / LOOKALIKE).read_bytes()).hexdigest()
    face, far = unit(rng, 2, DIM)
    store = ThumbnailStore(tmp_path / "thumbs")
    with Gallery.open(db_url) as gallery:
        ann = gallery.add_identity("ann")
        with MatchLogWriter(gallery.db, source="clip.mp4", config_hash="t", thumbnails=store) as writer:
            crop = np.full((48, 40, 3), 90, np.uint8)
            writer.record(TrackRecord(1, 0.0, 2.0, 10, 3, face, EMB, [(ann, "ann", 0.9)], "match", 0.5, crop))
        photo = MediaVector(LOOKALIKE, digest, 0.9, face, 1.0)
        row = MediaVector("t.npz#0", "hash-template", 1.0, far, 1.0, "template")
        gallery.add_media("ann", EMB, [photo, row])
        enroller = Enroller(gallery, lambda image: [], SimpleNamespace(embedder_id=EMB, dim=DIM))
        enroller.enroll_tracks("bea", ["1:1"], force=True)  # matched to ann: forced
        with gallery.db.session() as s:
            media = {m.path: m.id for m in s.scalars(select(Media))}
        yield SimpleNamespace(db=gallery.db, store=store, photos=photos, media=media, crop=crop)


def test_a_photo_named_like_a_track_is_served_as_that_photo(log):
    served = enrolled_photo(log.db, log.store, [str(log.photos)], log.media[LOOKALIKE])
    assert isinstance(served, bytes)  # the photo re-encoded, not the track's crop (a file of the store)
    image = cv2.imdecode(np.frombuffer(served, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (60, 80, 3) and image[30, 10, 2] > 150 and image[30, 70].max() < 50
    detail = track_detail(log.db, "1:1", [str(log.photos)])
    enrolled = detail["enrolled"]
    assert (enrolled["identity"], enrolled["media_id"], enrolled["enrolled_from"]) == (
        "ann",
        log.media[LOOKALIKE],
        LOOKALIKE,
    )
    assert enrolled["url"] == f"/media/{log.media[LOOKALIKE]}" and enrolled["note"] is None


def test_outside_media_dirs_the_lookalike_photo_is_not_shown(log, tmp_path):
    with pytest.raises(MediaUnavailable, match="outside gallery.serve.media_dirs"):
        enrolled_photo(log.db, log.store, [str(tmp_path / "elsewhere")], log.media[LOOKALIKE])


def test_a_face_enrolled_from_a_track_is_its_crop(log):
    (path,) = [p for p in log.media if p.startswith("track 1:1 (clip.mp4)")]
    served = enrolled_photo(log.db, log.store, [], log.media[path])  # no media folder needed
    assert isinstance(served, Path)
    assert (cv2.imread(str(served)).astype(int) - 90).__abs__().max() < 8


def test_a_template_row_has_no_photo(log):
    with pytest.raises(MediaUnavailable, match="enrolled as a template, without a photo"):
        enrolled_photo(log.db, log.store, [str(log.photos)], log.media["t.npz#0"])
