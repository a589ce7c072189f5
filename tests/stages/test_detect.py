from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.config import DetectConfig
from stages.detect import CHECK_SCORE, FaceDetector, check_image, finds_the_face, letterbox, nms
from stages.errors import ModelError
from stages.track import iou_matrix
from tests.conftest import ASSETS, require
from tests.stages import scrfd_variants as variants
from tests.stages.conftest import GROUP, SCRFD, SCRFD_25G, YUNET, YUNET_FIXED
from tests.stages.reference import (
    assert_same,
    assert_same_faces,
    clipped,
    fitted,
    insightface_scrfd,
    iou,
    opencv_yunet,
)

IMAGES = ASSETS / "images"
PHOTOS = {
    "insightface_t1": GROUP,
    "facenet_multiface": IMAGES / "groups" / "facenet_pytorch_multiface.jpg",
    "couple": IMAGES / "deepface" / "couple.jpg",
    "selfie": IMAGES / "deepface" / "selfie-many-people.jpg",  # faces cut by the image's edge
    "portrait": IMAGES / "friends_gallery" / "Rachel.png",
}
SHIPPED = {  # every detector file we ship or default to: backend, path
    "scrfd_500m": ("scrfd", SCRFD),
    "scrfd_2.5g": ("scrfd", SCRFD_25G),
    "yunet_2023mar": ("yunet", YUNET_FIXED),
    "yunet_2026may": ("yunet", YUNET),
}


def _detector(name: str, **kw) -> FaceDetector:
    backend, path = SHIPPED[name]
    return FaceDetector(
        DetectConfig(backend=backend, model=str(require(path)), threads=1, tiling="off", **kw)
    )


@pytest.mark.parametrize("photo", list(PHOTOS))
@pytest.mark.parametrize("model", ["scrfd_500m", "scrfd_2.5g"])
def test_scrfd_matches_insightface_on_real_photos(model, photo):
    """Shrunk to fit the input (both letterbox it at scale 1, so both see the same pixels): the same faces, boxes
    and landmarks within half a pixel, scores within 0.01. At full size we shrink with area interpolation where
    insightface resizes bilinearly: the same faces all the same."""
    detector = _detector(model, min_face_size=0)
    ref = insightface_scrfd(SHIPPED[model][1])
    full = cv2.imread(str(require(PHOTOS[photo])))
    image = fitted(full)
    assert_same(detector.detect([image])[0], *ref.detect(image, input_size=(640, 640)), image.shape)
    boxes, _ = ref.detect(full, input_size=(640, 640))
    ours = detector.detect([full])[0]
    assert_same_faces(ours, clipped(boxes, full.shape), min_iou=0.85)
    pairs = iou(clipped(boxes, full.shape), ours.xyxy).argmax(axis=1)
    np.testing.assert_allclose(ours.score[pairs], boxes[:, 4], atol=0.05)


@pytest.mark.parametrize("photo", list(PHOTOS))
@pytest.mark.parametrize("model", ["yunet_2023mar", "yunet_2026may"])
def test_yunet_matches_opencv_and_finds_insightfaces_faces(model, photo):
    """Letterboxed into 640x640 against OpenCV's YuNet run at the photo's own size: the same faces, boxes and
    landmarks within a pixel, scores within 0.01; and the faces insightface's SCRFD-500M finds."""
    detector = _detector(model, min_face_size=0)
    image = fitted(cv2.imread(str(require(PHOTOS[photo]))))
    ours = detector.detect([image])[0]
    assert_same(ours, *opencv_yunet(require(SHIPPED[model][1]), image), image.shape, atol=1.0)
    boxes, _ = insightface_scrfd(require(SCRFD)).detect(image, input_size=(640, 640))
    assert_same_faces(ours, clipped(boxes, image.shape), min_iou=0.6)


@pytest.mark.parametrize("model", list(SHIPPED))
def test_every_shipped_detector_sees_the_self_check_photo(model):
    image = check_image()
    assert image.shape == (160, 160, 3) and image.dtype == np.uint8
    detector = _detector(model)
    found = detector._impl([image], threshold=CHECK_SCORE, min_size=0.0)[0]
    assert finds_the_face(found, image.shape)
    assert not finds_the_face(found, (40, 40, 3))  # its box holds the photo's centre, not any point


@pytest.mark.parametrize("model", list(SHIPPED))
def test_a_detector_that_does_not_see_refuses_to_run(tmp_path, model):
    """The model's scores multiplied by 0 (SCRFD: its score outputs; YuNet: its class outputs)."""
    backend, path = SHIPPED[model]
    blind = variants.scaled_scores(require(path), tmp_path / f"blind-{model}.onnx", 0.0)
    with pytest.raises(ModelError) as err:
        FaceDetector(DetectConfig(backend=backend, model=str(blind), threads=1))
    message = str(err.value)
    assert "\n" not in message and str(blind) in message and "does not see" in message, message


def test_the_self_check_does_not_depend_on_the_configured_filters(group_photo):
    """A threshold and a minimum face size that leave nothing: the detector is built, and finds nothing."""
    detector = _detector("scrfd_500m", score_threshold=0.99, min_face_size=500)
    assert len(detector.detect([group_photo])[0]) == 0
    assert len(_detector("scrfd_500m").detect([group_photo])[0]) == 6


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
    det = FaceDetector(
        DetectConfig(model=str(require(SCRFD)), score_threshold=threshold, threads=1, min_face_px=12)
    )
    small = cv2.resize(group_photo, None, fx=1 / shrink, fy=1 / shrink, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((640, 640, 3), np.uint8)
    canvas[200 : 200 + small.shape[0], 100 : 100 + small.shape[1]] = small
    d = det.detect([canvas])[0]
    sides = d.xyxy[:, 2] - d.xyxy[:, 0]
    assert len(d) == 6 and sides.max() < max_side


def test_faces_of_10_px_are_looked_at_again_enlarged_by_default(scrfd, group_photo):
    """Faces from 8 px (the default): each of the six faces of the photo shrunk 10 times is found, with a better
    score than the input's own scale gives (Rachel's, at 10 px, only so)."""
    full = scrfd.detect([group_photo])[0]
    assert len(full) == 6
    det = FaceDetector(DetectConfig(model=str(require(SCRFD)), score_threshold=0.3, threads=1))
    assert det.cfg.min_face_px == 8
    small = cv2.resize(group_photo, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((640, 640, 3), np.uint8)
    canvas[200 : 200 + small.shape[0], 100 : 100 + small.shape[1]] = small
    found = det.detect([canvas])[0]
    expected = full.xyxy / 10 + np.asarray([100, 200, 100, 200], np.float32)
    overlap = iou_matrix(expected, found.xyxy)
    assert (overlap.max(axis=1) >= 0.4).all()
    assert (found.score[overlap.argmax(axis=1)] >= 0.6).all()


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
