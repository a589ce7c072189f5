from __future__ import annotations

import numpy as np
import pytest

from stages.config import MatchConfig
from pipeline.errors import GalleryBuildError
from core.types import TrackTemplate
from stages.align import align_face
from stages.match import GalleryIndex, InMemoryGallery, Matcher, gallery_images
from tests.conftest import require
from tests.stages.conftest import FRIENDS, GROUP_NAMES


def _unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _template(vec, crops=1):
    return TrackTemplate("clip.mp4", 7, np.asarray(vec, np.float32), 1.0, crops, None, 0.0, 1.0)


def test_search_orders_by_cosine():
    g = InMemoryGallery(["a", "b", "c"], _unit([[1, 0, 0], [0, 1, 0], [1, 1, 0]]), 0.5, "test")
    assert isinstance(g, GalleryIndex)
    res = g.search(_unit([[1, 0.1, 0], [0, 0, 1]]), k=2)
    assert [c.name for c in res[0]] == ["a", "c"]
    assert res[0][0].score == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)
    assert len(res[1]) == 2 and res[1][0].score == pytest.approx(0.0, abs=1e-6)


def test_empty_gallery_gives_unknown():
    g = InMemoryGallery([], np.zeros((0, 3), np.float32), 0.5, "test")
    assert g.search(_unit([[1, 0, 0]]), 3) == [[]]
    res = Matcher(MatchConfig(), g).match(_template(_unit([[1, 0, 0]])[0]))
    assert res.decision == "unknown" and res.candidates == ()


def test_dimension_mismatch():
    g = InMemoryGallery(["a"], _unit([[1, 0, 0]]), 0.5, "test")
    with pytest.raises(ValueError, match="dimension 3, got 2"):
        g.search(np.ones((1, 2), np.float32), 1)


@pytest.mark.parametrize("threshold,decision", [(0.9, "match"), (0.999, "unknown"), (None, "match")])
def test_open_set_threshold(threshold, decision):
    g = InMemoryGallery(["a", "b"], _unit([[1, 0], [0, 1]]), 0.95, "test")
    res = Matcher(MatchConfig(threshold=threshold, top_k=1), g).match(_template(_unit([[1, 0.2]])[0]))
    assert res.decision == decision and len(res.candidates) == 1
    assert (res.identity.name if res.identity else None) == ("a" if decision == "match" else None)


def test_template_without_crops_is_unknown():
    g = InMemoryGallery(["a"], _unit([[1, 0]]), 0.1, "test")
    assert Matcher(MatchConfig(), g).match(_template(np.zeros(2), crops=0)).decision == "unknown"


def test_gallery_images_flat_and_nested(tmp_path):
    flat = gallery_images(require(FRIENDS))
    assert sorted(flat) == sorted(GROUP_NAMES)
    (tmp_path / "Ann").mkdir()
    (tmp_path / "Ann" / "1.jpg").write_bytes(b"x")
    (tmp_path / "Ann" / "notes.txt").write_text("x")
    (tmp_path / "Empty").mkdir()
    (tmp_path / "Bob.png").write_bytes(b"x")
    found = gallery_images(tmp_path)
    assert sorted(found) == ["Ann", "Bob"] and len(found["Ann"]) == 1


def test_missing_gallery_folder(tmp_path):
    with pytest.raises(GalleryBuildError, match="not found"):
        gallery_images(tmp_path / "nope")


def test_from_folder_identifies_the_group(scrfd, mobilefacenet, group_photo, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "Nobody").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "Nobody" / "black.png"), np.zeros((64, 64, 3), np.uint8))
    for name in GROUP_NAMES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "still.png").symlink_to(require(FRIENDS / f"{name}.png"))
    g = InMemoryGallery.from_folder(tmp_path, scrfd, mobilefacenet, threshold=0.3)
    assert sorted(g.names) == sorted(GROUP_NAMES) and g.embedder_id == mobilefacenet.embedder_id
    d = scrfd.detect([group_photo])[0]
    feats, _ = mobilefacenet.embed([align_face(group_photo, d.landmarks[i]) for i in np.argsort(d.xyxy[:, 0])])
    assert [r[0].name for r in g.search(feats, 3)] == GROUP_NAMES
