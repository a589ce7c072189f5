"""gallery/media.py: the kind each enrolled media is stored with, listing media, and removing some of an identity's
media (its template re-fused from the rest, the gallery version bumped, the search index following). SQLite and
PostgreSQL, with the small deterministic finder and embedder of tests/gallery/test_enroll.py."""

from __future__ import annotations

import numpy as np
import pytest

from gallery.enroll import Enroller, save_template_file
from gallery.errors import EnrollmentError, IdentityNotFoundError, QueryError
from gallery.media import find_media
from gallery.queries import Filters
from gallery.store import Gallery
from tests.gallery.test_enroll import COLOURS, ProjectionEmbedder, blobs, face_image

EMB = ProjectionEmbedder.embedder_id


@pytest.fixture
def gallery(db_url, tmp_path):
    """ann from three photos, bob from one, tia from a template file of two rows."""
    with Gallery.open(db_url) as g:
        enroller = Enroller(g, blobs, ProjectionEmbedder())
        photos = [face_image(tmp_path / f"a{s}.png", COLOURS["ann"], s) for s in (0, 25, -25)]
        enroller.enroll_images("ann", photos)
        enroller.enroll_images("bob", [face_image(tmp_path / "b.png", COLOURS["bob"])])
        vecs = np.random.default_rng(3).normal(size=(2, 16)).astype(np.float32)
        save_template_file(tmp_path / "t.npz", EMB, vecs)
        enroller.enroll_template_file("tia", tmp_path / "t.npz")
        g.tmp = tmp_path
        yield g


def _rows(gallery, name=None) -> list[dict]:
    return find_media(gallery.db, Filters(identity=name, page_size=1000)).rows


def test_media_are_listed_with_their_kind(gallery):
    rows = _rows(gallery)
    assert [(r["identity"], r["kind"], r["track"]) for r in rows] == [
        ("ann", "image", None),
        ("ann", "image", None),
        ("ann", "image", None),
        ("bob", "image", None),
        ("tia", "template", None),
        ("tia", "template", None),
    ]
    assert [r["path"] for r in _rows(gallery, "tia")] == [
        f"{gallery.tmp / 't.npz'}#0",
        f"{gallery.tmp / 't.npz'}#1",
    ]
    with pytest.raises(IdentityNotFoundError, match="'zed'"):
        _rows(gallery, "zed")
    with pytest.raises(QueryError, match="source do not apply"):
        find_media(gallery.db, Filters(source="cam"))


def test_removing_a_photo_refuses_the_template_from_the_rest(gallery, tmp_path):
    ann = _rows(gallery, "ann")
    with Gallery.open(f"sqlite:///{tmp_path / 'two.db'}") as two:  # ann from the two photos that stay
        Enroller(two, blobs, ProjectionEmbedder()).enroll_images(
            "ann", [tmp_path / "a0.png", tmp_path / "a25.png"]
        )
        expected = two.template("ann", EMB)
    three, version = gallery.template("ann", EMB), gallery.version()
    assert float(three @ expected) < 0.99999
    removed = gallery.media_store.remove_media("ann", [ann[2]["id"]])
    assert [r["id"] for r in removed] == [ann[2]["id"]] and removed[0]["path"].endswith("a-25.png")
    np.testing.assert_allclose(gallery.template("ann", EMB), expected, atol=1e-6)
    assert gallery.version() == version + 1 and [r["id"] for r in _rows(gallery, "ann")] == [
        ann[0]["id"],
        ann[1]["id"],
    ]
    (best,) = gallery.search(expected[None], 1, EMB)  # the index follows the new version
    assert best[0][1] == "ann" and best[0][2] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "name,which,message",
    [
        ("ann", "all of ann", "would leave it none; expected at least one to remain .*remove ann"),
        ("bob", "bob's", "would leave it none"),
        ("ann", "bob's", "expected a media of 'ann', got one of 'bob'"),
        ("ann", "unknown", "media 999999: expected an enrolled media id"),
        ("ann", "none", "expected media ids or track references to remove, got none"),
        ("zed", "bob's", "identity 'zed': not in the gallery"),
    ],
)
def test_removal_refusals_change_nothing(gallery, name, which, message):
    ann, bob = [r["id"] for r in _rows(gallery, "ann")], [r["id"] for r in _rows(gallery, "bob")]
    ids = {"all of ann": ann, "bob's": bob, "unknown": [ann[0], 999999], "none": []}[which]
    before, version = _rows(gallery), gallery.version()
    with pytest.raises((EnrollmentError, IdentityNotFoundError), match=message):
        gallery.media_store.remove_media(name, ids)
    assert _rows(gallery) == before and gallery.version() == version
