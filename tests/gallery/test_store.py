"""gallery/store.py (and the parts it is composed of: identities, media, records, search, thresholds): identities,
media, fused templates, search, index persistence, threshold calibration."""

from __future__ import annotations

import numpy as np
import pytest

from core.fusion import pre_norm_vector_add
from gallery.config import GalleryConfig, IndexConfig, ThresholdConfig
from gallery.errors import (
    EmbeddingError,
    EnrollmentError,
    IdentityExistsError,
    IdentityNotFoundError,
    IndexFileError,
)
from gallery.records import fuse_media
from gallery.store import Gallery
from tests.gallery.helpers import media, people, unit

EMB = "test-embedder-16d"


@pytest.fixture
def gallery(db_url, tmp_path):
    config = GalleryConfig(storage_dir=str(tmp_path))
    with Gallery.open(db_url, config) as g:
        yield g


def _enroll(g: Gallery, crowd: dict[str, np.ndarray]) -> None:
    for name, views in crowd.items():
        g.add_media(name, EMB, media(name, views), create=True)


def test_fuse_is_norm_weighted_sum_golden():
    vecs = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    np.testing.assert_allclose(fuse_media(vecs, np.array([3.0, 4.0])), [0.6, 0.8, 0.0], atol=1e-7)
    with pytest.raises(
        EmbeddingError, match="template fusion: expected vectors with a non-zero weighted sum"
    ):
        fuse_media(np.array([[1, 0], [-1, 0]], np.float32), np.array([1.0, 1.0]))


def test_templates_are_fused_by_core_fusion_and_a_zero_sum_writes_nothing(gallery):
    vecs = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    gallery.add_media("ann", "e3", media("ann", vecs, norms=[3.0, 4.0]), create=True)
    np.testing.assert_allclose(gallery.template("ann", "e3"), [0.6, 0.8, 0.0], atol=1e-7)
    np.testing.assert_array_equal(
        gallery.template("ann", "e3"), pre_norm_vector_add(vecs, np.array([3.0, 4.0]))
    )
    version = gallery.version()
    opposite = np.array([[1, 0, 0], [-1, 0, 0]], np.float32)
    with pytest.raises(EmbeddingError, match="non-zero weighted sum"):
        gallery.add_media("bob", "e3", media("bob", opposite), create=True)
    assert not gallery.has_identity("bob") and gallery.version() == version


def test_public_names_stay_importable_from_gallery_store():
    from gallery import identities, media, store, thresholds

    assert store.MediaVector is media.MediaVector and store.IdentityInfo is identities.IdentityInfo
    assert store.Calibration is thresholds.Calibration and not hasattr(store, "fuse")


@pytest.mark.parametrize("queries", [0, 1, 3])
def test_empty_gallery_returns_empty_lists(gallery, queries):
    assert gallery.search(np.ones((queries, 16), np.float32), 5, EMB) == [[] for _ in range(queries)]
    assert gallery.threshold(EMB) == GalleryConfig().threshold.default


def test_search_finds_each_person_and_keeps_per_image_vectors(gallery):
    crowd = people(np.random.default_rng(1), 12, 3, 16)
    _enroll(gallery, crowd)
    names = list(crowd)
    probes = np.stack([crowd[n].mean(axis=0) for n in names])
    results = gallery.search(probes, 3, EMB)
    assert [r[0][1] for r in results] == names
    assert all(len(r) == 3 and r[0][2] >= r[1][2] >= r[2][2] for r in results)
    kept = gallery.media_vectors(names[0], EMB)
    np.testing.assert_allclose(kept, crowd[names[0]], atol=1e-6)
    np.testing.assert_allclose(
        gallery.template(names[0], EMB), pre_norm_vector_add(kept, np.ones(3)), atol=1e-6
    )
    assert len(gallery.search(probes[:1], 50, EMB)[0]) == 12  # k larger than the gallery


def test_reenrolling_same_content_is_a_no_op_and_conflicts_are_reported(gallery):
    rng = np.random.default_rng(2)
    views = unit(rng, 2, 16)
    assert gallery.add_media("ann", EMB, media("ann", views), create=True) == ["enrolled", "enrolled"]
    version = gallery.version()
    assert gallery.add_media("ann", EMB, media("ann", views)) == ["duplicate", "duplicate"]
    assert gallery.version() == version
    gallery.add_identity("bob")
    assert gallery.add_media("bob", EMB, media("ann", views[:1])) == ["conflict: already enrolled as 'ann'"]
    with pytest.raises(IdentityExistsError, match="'ann' already exists"):
        gallery.add_media("ann", EMB, media("x", unit(rng, 1, 16)), create=True)
    with pytest.raises(IdentityNotFoundError, match="'carl'"):
        gallery.add_media("carl", EMB, media("carl", unit(rng, 1, 16)))
    with pytest.raises(EmbeddingError, match="expected a 16-d vector"):
        gallery.add_media("bob", EMB, media("bob", unit(rng, 1, 8)))
    assert [i.name for i in gallery.identities()] == ["ann", "bob"]
    assert [i.media for i in gallery.identities()] == [2, 0]


def test_remove_and_merge(gallery):
    crowd = people(np.random.default_rng(3), 3, 2, 16)
    _enroll(gallery, crowd)
    a, b, c = crowd
    gallery.merge_identities(a, b)
    assert gallery.media_vectors(b, EMB).shape == (4, 16)
    np.testing.assert_allclose(
        gallery.template(b, EMB),
        pre_norm_vector_add(np.concatenate([crowd[b], crowd[a]]), np.ones(4)),
        atol=1e-6,
    )
    assert {r[0][1] for r in gallery.search(crowd[a], 1, EMB)} == {b}
    gallery.remove_identity(c)
    assert [i.name for i in gallery.identities()] == [b]
    with pytest.raises(IdentityNotFoundError):
        gallery.remove_identity(c)
    with pytest.raises(EnrollmentError, match="two different identities"):
        gallery.merge_identities(b, b)


def test_search_refuses_wrong_dimension(gallery):
    _enroll(gallery, people(np.random.default_rng(4), 2, 1, 16))
    with pytest.raises(EmbeddingError, match=r"expected shape \[M, 16\], got \[1, 8\]"):
        gallery.search(np.ones((1, 8), np.float32), 1, EMB)
    with pytest.raises(EmbeddingError, match="expected shape"):
        gallery.search(np.ones(16, np.float32), 1, EMB)


def test_index_is_persisted_tagged_and_rebuilt_when_stale(gallery, tmp_path):
    crowd = people(np.random.default_rng(5), 4, 1, 16)
    _enroll(gallery, crowd)
    gallery.search(crowd["person000"], 1, EMB)
    path = gallery.index_path(EMB)
    assert path.parent == tmp_path and path.is_file()
    gallery.add_media("late", EMB, media("late", unit(np.random.default_rng(6), 1, 16)), create=True)
    with Gallery(gallery.db, gallery.config) as fresh:  # new process view: finds a stale file, rebuilds it
        index, names = fresh.index(EMB)
        assert (
            index.tag.count == 5 and index.tag.gallery_version == fresh.version() and "late" in names.values()
        )


@pytest.mark.parametrize("damage", [b"", b"garbage", "truncated"])
def test_damaged_index_file_is_rebuilt_from_sql_with_a_warning(gallery, damage, caplog):
    crowd = people(np.random.default_rng(8), 4, 1, 16)
    _enroll(gallery, crowd)
    expected = gallery.search(crowd["person002"], 2, EMB)
    path = gallery.index_path(EMB)
    path.write_bytes(path.read_bytes()[:-50] if damage == "truncated" else damage)
    with Gallery(gallery.db, gallery.config) as fresh, caplog.at_level("WARNING", logger="gallery.search"):
        assert fresh.search(crowd["person002"], 2, EMB) == expected
    assert "rebuilding it from the database" in caplog.text and str(path) in caplog.text
    with Gallery(gallery.db, gallery.config) as again, caplog.at_level("WARNING"):  # the file was rewritten
        caplog.clear()
        assert again.index(EMB)[0].tag.count == 4 and "rebuilding" not in caplog.text


def test_index_file_of_another_embedder_is_refused(gallery):
    _enroll(gallery, people(np.random.default_rng(7), 3, 1, 16))
    gallery.search(np.ones((1, 16), np.float32), 1, EMB)
    other = "other-embedder"
    gallery.index_path(EMB).rename(gallery.index_path(other))
    with pytest.raises(
        IndexFileError, match="expected embedder 'other-embedder', got an index made by 'test-embedder-16d'"
    ):
        gallery.search(np.ones((1, 16), np.float32), 1, other)


def test_embedders_never_mix(gallery):
    rng = np.random.default_rng(8)
    gallery.add_media("ann", EMB, media("ann", unit(rng, 1, 16)), create=True)
    gallery.add_media("ann", "small-8d", media("ann8", unit(rng, 1, 8)))
    gallery.add_media("bob", "small-8d", media("bob8", unit(rng, 1, 8)), create=True)
    assert [r[1] for r in gallery.search(np.ones((1, 16), np.float32), 5, EMB)[0]] == ["ann"]
    assert sorted(r[1] for r in gallery.search(np.ones((1, 8), np.float32), 5, "small-8d")[0]) == [
        "ann",
        "bob",
    ]
    assert gallery.embedders() == sorted([EMB, "small-8d"])


def test_hnsw_above_threshold_matches_exact(db_url, tmp_path):
    crowd = people(np.random.default_rng(9), 60, 1, 16)
    config = GalleryConfig(storage_dir=str(tmp_path), index=IndexConfig(hnsw_above=10))
    with Gallery.open(db_url, config) as g:
        _enroll(g, crowd)
        index, _ = g.index(EMB)
        assert index.tag.kind == "hnsw"
        probes = np.concatenate(list(crowd.values()))
        assert [r[0][1] for r in g.search(probes, 1, EMB)] == list(crowd)


def test_calibrated_threshold_hits_target_fpir(db_url, tmp_path):
    crowd = people(np.random.default_rng(10), 40, 3, 16, spread=0.6)
    config = GalleryConfig(storage_dir=str(tmp_path), threshold=ThresholdConfig(target_fpir=0.05))
    with Gallery.open(db_url, config) as g:
        _enroll(g, crowd)
        cal = g.calibrate(EMB)
        assert cal.calibrated and cal.impostor_scores == 120
        assert g.threshold(EMB) == pytest.approx(cal.value)
        # held-out non-mated probes: fresh people never enrolled
        strangers = np.concatenate(list(people(np.random.default_rng(11), 200, 1, 16).values()))
        best = np.array([r[0][2] for r in g.search(strangers, 1, EMB)])
        assert (best >= cal.value).mean() <= 0.10
    override = GalleryConfig(storage_dir=str(tmp_path), threshold=ThresholdConfig(override=0.42))
    with Gallery.open(db_url, override) as g:
        assert g.threshold(EMB) == 0.42


def test_calibration_needs_enough_impostors(gallery):
    _enroll(gallery, people(np.random.default_rng(12), 1, 3, 16))
    cal = gallery.calibrate(EMB)
    assert not cal.calibrated and cal.impostor_scores == 0
    assert gallery.threshold(EMB) == gallery.config.threshold.default


def test_bulk_enroll(gallery):
    vecs = unit(np.random.default_rng(13), 50, 16) * 3.0
    gallery.bulk_enroll([f"b{i}" for i in range(50)], EMB, vecs, chunk=20)
    assert [r[0][1] for r in gallery.search(vecs[[0, 49]], 1, EMB)] == ["b0", "b49"]
    with pytest.raises(IdentityExistsError):
        gallery.bulk_enroll(["new", "b3"], EMB, vecs[:2])
    assert not gallery.has_identity("new")
