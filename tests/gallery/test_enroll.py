"""gallery/enroll.py with a small deterministic face finder and embedder on synthetic images.

A "face" here is a bright blob on black: the extractor finds blobs (connected components), crops each to
112x112 and scores it by brightness; the embedder is a fixed seeded projection of the 8x8 downsampled crop.
The real detector and embedder are exercised in tests/pipeline/test_enroll.py.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from gallery.enroll import Enroller, read_labels, save_template_file
from gallery.errors import EnrollmentError, IdentityExistsError
from gallery.store import Gallery

COLOURS = {"ann": (40, 60, 220), "bob": (220, 80, 40), "cyd": (60, 220, 90)}


def blobs(image: np.ndarray) -> list[tuple[np.ndarray, float]]:
    mask = (image.max(axis=2) > 20).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    faces = []
    for x, y, w, h, _ in stats[1:count]:
        crop = cv2.resize(image[y : y + h, x : x + w], (112, 112), interpolation=cv2.INTER_AREA)
        faces.append((crop, float(crop.mean() / 255)))
    return faces


class ProjectionEmbedder:
    embedder_id = "projection-16"
    dim = 16

    def __init__(self) -> None:
        self.weights = np.random.default_rng(42).normal(size=(8 * 8 * 3, self.dim)).astype(np.float32)

    def embed(self, crops):
        small = np.stack([cv2.resize(c, (8, 8), interpolation=cv2.INTER_AREA) for c in crops]).reshape(
            len(crops), -1
        )
        raw = (small.astype(np.float32) / 255 - 0.3) @ self.weights
        norms = np.linalg.norm(raw, axis=1).astype(np.float32)
        return (raw / norms[:, None]).astype(np.float32), norms


def face_image(path, colour, shade: int = 0, count: int = 1):
    image = np.zeros((96, 160, 3), np.uint8)
    for i in range(count):
        image[20:76, 10 + 75 * i : 66 + 75 * i] = np.clip(np.array(colour) + shade, 0, 255)
    image[30:36, 20:30] = 0  # an "eye" keeps blobs of one person alike but not identical
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def gallery(db_url, tmp_path):
    with Gallery.open(db_url) as g:
        yield g


@pytest.fixture
def enroller(gallery):
    return Enroller(gallery, blobs, ProjectionEmbedder())


def _folder(root):
    for name, colour in COLOURS.items():
        for shade in (0, 12, -12):
            face_image(root / name / f"{name}{shade}.png", colour, shade)
    face_image(root / "ann" / "pair.png", COLOURS["ann"], count=2)
    cv2.imwrite(str(root / "bob" / "empty.png"), np.zeros((50, 50, 3), np.uint8))
    return root


def test_folder_enrollment_reports_problems_and_is_idempotent(enroller, gallery, tmp_path):
    root = _folder(tmp_path / "people")
    report = enroller.enroll_folder(root)
    assert report.count("enrolled") == 9
    assert sorted((p.identity, p.status) for p in report.problems) == [
        ("ann", "several_faces"),
        ("bob", "no_face"),
    ]
    assert [(i.name, i.media) for i in gallery.identities()] == [("ann", 3), ("bob", 3), ("cyd", 3)]
    probe, _ = ProjectionEmbedder().embed(
        [blobs(cv2.imread(str(face_image(tmp_path / "p.png", COLOURS["bob"], 5))))[0][0]]
    )
    assert gallery.search(probe, 1, "projection-16")[0][0][1] == "bob"
    version = gallery.version()
    again = enroller.enroll_folder(root)
    assert again.count("duplicate") == 9 and again.count("enrolled") == 0 and gallery.version() == version


def test_flat_folder_names_identities_by_file_and_mixes_with_subfolders(enroller, gallery, tmp_path):
    root = tmp_path / "people"
    face_image(root / "ann.png", COLOURS["ann"])
    face_image(root / "bob.jpg", COLOURS["bob"])
    face_image(root / "bob" / "second.png", COLOURS["bob"], 12)
    (root / "notes.txt").write_text("not an image")
    report = enroller.enroll_folder(root)
    assert report.count("enrolled") == 3 and not report.problems
    assert [(i.name, i.media) for i in gallery.identities()] == [("ann", 1), ("bob", 2)]


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda root: (root / "ann").mkdir(parents=True),
            "expected identity subfolders or images named after",
        ),
        (lambda root: None, "got no folder"),
        (
            lambda root: (root / "ann").mkdir(parents=True) or (root / "ann" / "x.txt").write_text("hi"),
            "expected identity subfolders or images named after",
        ),
    ],
)
def test_folder_without_images_is_refused(enroller, gallery, tmp_path, make, message):
    make(tmp_path / "people")
    with pytest.raises(EnrollmentError, match=message):
        enroller.enroll_folder(tmp_path / "people")
    assert gallery.identities() == []


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n truncated"])
def test_unreadable_image_refuses_everything(enroller, gallery, tmp_path, content):
    root = _folder(tmp_path / "people")
    (root / "cyd" / "broken.jpg").write_bytes(content)
    with pytest.raises(EnrollmentError, match=r"broken.jpg: expected a decodable image file"):
        enroller.enroll_folder(root)
    assert gallery.identities() == [] and gallery.version() == 0


def test_named_enrollment_duplicate_names_and_add(enroller, gallery, tmp_path):
    first = face_image(tmp_path / "a1.png", COLOURS["ann"])
    second = face_image(tmp_path / "a2.png", COLOURS["ann"], 20)
    report = enroller.enroll_images("ann", [first], external_id="HR-7", watchlist=True, notes="lobby")
    assert report.count("enrolled") == 1
    with pytest.raises(IdentityExistsError, match="'ann' already exists"):
        enroller.enroll_images("ann", [second])
    assert enroller.enroll_images("ann", [second, first], add=True).count("enrolled") == 1
    with pytest.raises(EnrollmentError, match="add=True expects an existing identity"):
        enroller.enroll_images("zed", [second], add=True)
    info = gallery.identities()[0]
    assert (info.name, info.external_id, info.watchlist, info.notes, info.media) == (
        "ann",
        "HR-7",
        True,
        "lobby",
        2,
    )
    with pytest.raises(EnrollmentError, match="at least one image"):
        enroller.enroll_images("bob", [])


def test_no_usable_face_creates_no_identity(enroller, gallery, tmp_path):
    path = tmp_path / "blank.png"
    cv2.imwrite(str(path), np.zeros((40, 40, 3), np.uint8))
    report = enroller.enroll_images("ghost", [path])
    assert [o.status for o in report.outcomes] == ["no_face", "not_created"] and gallery.identities() == []


def test_same_image_under_two_names_is_a_conflict(enroller, gallery, tmp_path):
    path = face_image(tmp_path / "x.png", COLOURS["cyd"])
    enroller.enroll_images("cyd", [path])
    report = enroller.enroll_images("dee", [path])
    assert [o.status for o in report.outcomes] == ["conflict", "not_created"]
    assert "already enrolled as 'cyd'" in report.outcomes[0].detail


def test_low_quality_is_rejected(gallery, tmp_path):
    strict = Enroller(gallery, blobs, ProjectionEmbedder(), min_quality=0.9)
    report = strict.enroll_images("ann", [face_image(tmp_path / "a.png", COLOURS["ann"])])
    assert report.outcomes[0].status == "low_quality"


def test_labels_file(enroller, gallery, tmp_path):
    root = _folder(tmp_path / "people")
    labels = {"ann/ann0.png": "ann", "ann/ann12.png": "ann", "cyd/cyd0.png": "cyd"}
    (root / "labels.json").write_text(json.dumps(labels))
    assert enroller.enroll_labels(root / "labels.json").count("enrolled") == 3
    assert [(i.name, i.media) for i in gallery.identities()] == [("ann", 2), ("cyd", 1)]
    (root / "bad.json").write_text(json.dumps(["ann/ann0.png"]))
    with pytest.raises(EnrollmentError, match="expected a non-empty JSON object"):
        read_labels(root / "bad.json")


def test_template_file(enroller, gallery, tmp_path):
    vecs = np.random.default_rng(3).normal(size=(2, 16)).astype(np.float32)
    save_template_file(tmp_path / "t.npz", "projection-16", vecs, norms=[2.0, 1.0])
    report = enroller.enroll_template_file("tia", tmp_path / "t.npz")
    assert report.count("enrolled") == 2
    units = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    fused = 2 * units[0] + units[1]
    np.testing.assert_allclose(
        gallery.template("tia", "projection-16"), fused / np.linalg.norm(fused), atol=1e-6
    )
    assert enroller.enroll_template_file("tia", tmp_path / "t.npz", add=True).count("duplicate") == 2
    save_template_file(tmp_path / "other.npz", "another-embedder", vecs)
    with pytest.raises(EnrollmentError, match="expected embedder 'projection-16', got 'another-embedder'"):
        enroller.enroll_template_file("uma", tmp_path / "other.npz")
    save_template_file(tmp_path / "small.npz", "projection-16", vecs[:, :8])
    with pytest.raises(EnrollmentError, match=r"expected finite non-zero embedding \[N, 16\]"):
        enroller.enroll_template_file("uma", tmp_path / "small.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(EnrollmentError, match="expected an .npz"):
        enroller.enroll_template_file("uma", tmp_path / "junk.npz")
    assert not gallery.has_identity("uma")


def test_add_finds_a_name_stored_before_the_name_rule(enroller, gallery, tmp_path):
    """A name a gallery got before names were checked (here a tab) can still be added to, never created again."""
    from gallery.models import Identity

    with gallery.db.session() as s:
        s.add(Identity(name="old\tname"))
    vecs = np.random.default_rng(4).normal(size=(1, 16)).astype(np.float32)
    save_template_file(tmp_path / "t.npz", "projection-16", vecs)
    assert enroller.enroll_template_file("old\tname", tmp_path / "t.npz", add=True).count("enrolled") == 1
    with pytest.raises(EnrollmentError, match="control"):
        enroller.enroll_template_file("new\tname", tmp_path / "t.npz")


@pytest.mark.parametrize("images", ["same images", "other images"])
def test_two_commands_enrolling_the_same_new_people_at_once_both_succeed(db_url, tmp_path, images):
    """Both see no identity, both embed, both write: the unique constraints settle it, and the loser's retry
    finds the identity (adding its own images, or seeing duplicates)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    first = _folder(tmp_path / "one")
    second = first if images == "same images" else tmp_path / "two"
    if images == "other images":
        for name, colour in COLOURS.items():
            face_image(second / name / f"{name}-late.png", colour, 25)
    both_embedding = threading.Barrier(2, timeout=60)

    def enroll(folder):
        with Gallery.open(db_url) as g:  # a command of its own: its own connections
            waited = []

            def extract(image):
                if not waited:  # wait until the other command has read the gallery too
                    waited.append(both_embedding.wait())
                return blobs(image)

            return Enroller(g, extract, ProjectionEmbedder()).enroll_folder(folder)

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(enroll, [first, second], timeout=120))
    with Gallery.open(db_url) as g:
        got = {i.name: i.media for i in g.identities()}
    if images == "same images":
        assert got == {"ann": 3, "bob": 3, "cyd": 3}
        assert sum(r.count("enrolled") for r in reports) == 9  # each image once, the other saw duplicates
    else:
        assert got == {"ann": 4, "bob": 4, "cyd": 4}
    assert not [o for r in reports for o in r.outcomes if o.status == "not_created"]
