"""gallery/thumbnails.py: safe paths only, atomic JPEG writes, default location beside the database."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.errors import MatchLogError, ThumbnailPathError
from gallery.thumbnails import ThumbnailStore


@pytest.mark.parametrize(
    "rel",
    [
        "../x.jpg",
        "a/../../x.jpg",
        "/etc/passwd",
        "a/./b.jpg",
        "",
        "a\\..\\b.jpg",
        "a//b.jpg",
        ".hidden.jpg",
        "a/b\x00.jpg",
        "..",
        "a/..",
        "a.jpg\n",
    ],
)
def test_unsafe_paths_are_refused(tmp_path, rel):
    store = ThumbnailStore(tmp_path / "thumbs")
    with pytest.raises(ThumbnailPathError):
        store.resolve(rel)


def test_symlink_leaving_the_store_is_refused(tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    (tmp_path / "thumbs").mkdir()
    (tmp_path / "thumbs" / "link").symlink_to(tmp_path)
    with pytest.raises(ThumbnailPathError, match="outside the thumbnail store"):
        store.resolve("link/secret.jpg")


def test_write_read_delete(tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    image = np.zeros((40, 30, 3), np.uint8)
    image[:, :, 2] = 200
    path = store.write("source1/run2/track3.jpg", image)
    decoded = cv2.imread(str(path))
    assert decoded.shape == (40, 30, 3) and abs(int(decoded[..., 2].mean()) - 200) <= 2
    assert [p.name for p in path.parent.iterdir()] == ["track3.jpg"]
    store.delete("source1/run2/track3.jpg")
    store.delete("source1/run2/track3.jpg")
    assert not path.exists()


@pytest.mark.parametrize(
    "image", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)]
)
def test_bad_images_are_refused(tmp_path, image):
    with pytest.raises(MatchLogError, match="expected a BGR uint8 HxWx3 image"):
        ThumbnailStore(tmp_path).write("a.jpg", image)


def test_default_location_is_beside_the_database(tmp_path):
    with Database(f"sqlite:///{tmp_path / 'site.db'}") as db:
        assert ThumbnailStore.for_database(db, GalleryConfig()).root == tmp_path / "site_thumbnails"
        chosen = GalleryConfig(thumbnails_dir=str(tmp_path / "elsewhere"))
        assert ThumbnailStore.for_database(db, chosen).root == tmp_path / "elsewhere"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_face_images_are_owner_only(tmp_path, umask):
    import os
    import stat

    store = ThumbnailStore(tmp_path / "new" / "thumbs")
    old = os.umask(umask)
    try:
        path = store.write("source1/run2/track3.jpg", np.zeros((8, 8, 3), np.uint8))
    finally:
        os.umask(old)
    folders = [tmp_path / "new", store.root, store.root / "source1", store.root / "source1" / "run2"]
    assert {str(f): stat.S_IMODE(f.stat().st_mode) for f in folders} == {str(f): 0o700 for f in folders}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
