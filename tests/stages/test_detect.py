from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.config import DetectConfig
from stages.detect import FaceDetector, letterbox, nms
from stages.errors import ModelError
from tests.conftest import require
from tests.stages.conftest import SCRFD, YUNET


def _left_to_right(d):
    return d.xyxy[np.argsort(d.xyxy[:, 0])]


def test_scrfd_matches_insightface_reference(scrfd, group_photo):
    insightface = pytest.importorskip("insightface")
    ref = insightface.model_zoo.get_model(str(SCRFD))
    ref.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    boxes, kps = ref.detect(group_photo, input_size=(640, 640))
    ours = scrfd.detect([group_photo])[0]
    assert len(ours) == len(boxes) == 6
    order_ref, order_ours = np.argsort(boxes[:, 0]), np.argsort(ours.xyxy[:, 0])
    np.testing.assert_allclose(ours.xyxy[order_ours], boxes[order_ref, :4], atol=0.5)
    np.testing.assert_allclose(ours.score[order_ours], boxes[order_ref, 4], atol=1e-4)
    np.testing.assert_allclose(ours.landmarks[order_ours], kps[order_ref], atol=0.5)


def test_batch_equals_single_and_sizes_mix(scrfd, group_photo):
    small = cv2.resize(group_photo, (640, 443))
    single = [scrfd.detect([img])[0] for img in (group_photo, small)]
    batched = scrfd.detect([group_photo, small])
    for a, b in zip(single, batched):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    assert len(batched[1]) == 6


@pytest.mark.parametrize(
    "image",
    [np.zeros((360, 640, 3), np.uint8), np.full((1, 1, 3), 255, np.uint8)],
    ids=["black", "one-pixel"],
)
def test_zero_faces(scrfd, image):
    (dets,) = scrfd.detect([image])
    assert len(dets) == 0 and dets.landmarks.shape == (0, 5, 2)


def test_empty_batch(scrfd):
    assert scrfd.detect([]) == []


def test_landmarks_in_arcface_order(scrfd, group_photo):
    for d in (scrfd.detect([group_photo])[0],):
        lm = d.landmarks
        assert (lm[:, 0, 0] < lm[:, 1, 0]).all()  # left eye left of right eye
        assert (lm[:, 3, 0] < lm[:, 4, 0]).all()
        assert (lm[:, 2, 1] > lm[:, 0, 1]).all()  # nose below the eyes


def test_yunet_finds_the_same_faces(group_photo):
    det = FaceDetector(DetectConfig(backend="yunet", model=str(require(YUNET)), threads=1))
    d = det.detect([group_photo])[0]
    assert len(d) == 6
    assert (d.landmarks[:, 0, 0] < d.landmarks[:, 1, 0]).all()


@pytest.mark.parametrize("shrink,threshold,max_side", [(6, 0.5, 21), (10, 0.3, 13)], ids=["18px", "10px"])
def test_small_faces(group_photo, shrink, threshold, max_side):
    """The group photo shrunk (faces of 10-20 px) on a canvas the size of the detector input: no upscaling."""
    det = FaceDetector(DetectConfig(model=str(require(SCRFD)), score_threshold=threshold, threads=1))
    small = cv2.resize(group_photo, None, fx=1 / shrink, fy=1 / shrink, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((640, 640, 3), np.uint8)
    canvas[200 : 200 + small.shape[0], 100 : 100 + small.shape[1]] = small
    d = det.detect([canvas])[0]
    sides = d.xyxy[:, 2] - d.xyxy[:, 0]
    assert len(d) == 6 and sides.max() < max_side


def test_bad_image_rejected(scrfd):
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        scrfd.detect([np.zeros((10, 10), np.uint8)])


def test_missing_model_is_one_line(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        FaceDetector(DetectConfig(model=str(tmp_path / "nope.onnx")))


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        FaceDetector(DetectConfig(model=str(bad)))


def test_pack_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    from insightface.utils import storage

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(storage, "download_file", offline)
    with pytest.raises(ModelError, match="could not be fetched"):
        FaceDetector(DetectConfig(model="buffalo_l"))


def test_letterbox_and_nms():
    canvas, scale = letterbox(np.full((100, 200, 3), 7, np.uint8), (64, 64))
    assert scale == pytest.approx(0.32) and canvas.shape == (64, 64, 3)
    assert canvas[:32].mean() == 7 and canvas[33:].max() == 0
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    keep = nms(boxes, np.array([0.5, 0.9, 0.7], np.float32), 0.5)
    assert keep.tolist() == [1, 2]
