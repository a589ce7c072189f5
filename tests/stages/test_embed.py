from __future__ import annotations

import numpy as np
import pytest

from stages.align import align_face
from stages.config import EmbedConfig
from stages.embed import Embedder, OnnxEmbedder, build_embedder
from stages.errors import ModelError
from tests.conftest import FIXTURES, ROOT, require
from tests.stages.conftest import FRIENDS, GROUP_NAMES, mobilefacenet_config


def _group_crops(scrfd, group_photo):
    d = scrfd.detect([group_photo])[0]
    return [align_face(group_photo, d.landmarks[i]) for i in np.argsort(d.xyxy[:, 0])]


def test_shapes_and_unit_norm(mobilefacenet, scrfd, group_photo):
    assert isinstance(mobilefacenet, Embedder)
    feats, norms = mobilefacenet.embed(_group_crops(scrfd, group_photo))
    assert feats.shape == (6, 128) and feats.dtype == np.float32 and norms.shape == (6,)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert (norms > 1).all()


@pytest.mark.parametrize("flip", [True, False])
def test_empty_input(flip):
    emb = OnnxEmbedder(mobilefacenet_config(flip=flip))
    feats, norms = emb.embed([])
    assert feats.shape == (0, 128) and norms.shape == (0,)


def test_batching_does_not_change_features(scrfd, group_photo):
    crops = _group_crops(scrfd, group_photo)
    a = OnnxEmbedder(mobilefacenet_config(batch_size=32)).embed(crops)
    b = OnnxEmbedder(mobilefacenet_config(batch_size=4)).embed(crops)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5)


def test_group_photo_identified_against_the_stills(mobilefacenet, scrfd, group_photo):
    import cv2

    gallery = []
    for name in GROUP_NAMES:
        img = cv2.imread(str(require(FRIENDS / f"{name}.png")))
        d = scrfd.detect([img])[0]
        gallery.append(mobilefacenet.embed([align_face(img, d.landmarks[int(np.argmax(d.score))])])[0][0])
    feats, _ = mobilefacenet.embed(_group_crops(scrfd, group_photo))
    scores = feats @ np.stack(gallery).T
    assert scores.argmax(1).tolist() == list(range(6))
    assert np.diag(scores).min() > 0.3


def test_embedder_id_is_stable(mobilefacenet):
    again = OnnxEmbedder(mobilefacenet_config(batch_size=7))
    assert again.embedder_id == mobilefacenet.embedder_id
    assert mobilefacenet.embedder_id.startswith("onnx:mobilefacenet_128d:")


def test_bad_crop_rejected(mobilefacenet):
    with pytest.raises(ValueError, match="112x112x3"):
        mobilefacenet.embed([np.zeros((100, 112, 3), np.uint8)])


def test_missing_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        OnnxEmbedder(EmbedConfig(backend="onnx", model=str(tmp_path / "x.onnx")))


def test_detector_is_not_an_embedder():
    with pytest.raises(ModelError, match=r"expected input \[N, 3, 112, 112\]"):
        OnnxEmbedder(
            EmbedConfig(
                backend="onnx",
                model=str(require(FIXTURES.parent.parent / "assets" / "models" / "scrfd_500m_bnkps.onnx")),
            )
        )


def test_facemoe_wiring_on_fixture_weights(scrfd, group_photo):
    if not (ROOT / "facemoe" / "embedder.py").exists():
        pytest.skip("facemoe/embedder.py is not in this checkout yet")
    state = require(FIXTURES / "fixtureA_state.pt")
    emb = build_embedder(EmbedConfig(backend="facemoe", checkpoint=str(state), batch_size=4))
    crops = _group_crops(scrfd, group_photo)[:3]
    feats, norms = emb.embed(crops)
    assert feats.shape == (3, emb.dim) and norms.shape == (3,)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-4)
    assert emb.embed([])[0].shape == (0, emb.dim)
    assert (
        emb.embedder_id == build_embedder(EmbedConfig(backend="facemoe", checkpoint=str(state))).embedder_id
    )


def test_facemoe_precision_defaults_to_auto_and_the_id_names_the_choice():
    if not (ROOT / "facemoe" / "embedder.py").exists():
        pytest.skip("facemoe/embedder.py is not in this checkout yet")
    from facemoe.embedder import auto_precision

    state = require(FIXTURES / "fixtureA_state.pt")
    cfg = EmbedConfig(backend="facemoe", checkpoint=str(state))
    assert cfg.precision == "auto"
    chosen, _ = auto_precision("cpu")
    assert build_embedder(cfg).embedder_id.endswith(f"-k2-{chosen}-flip")
