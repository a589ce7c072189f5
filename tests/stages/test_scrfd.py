"""SCRFD export layouts: the two real models and re-exports of them (tests/stages/scrfd_variants.py) read as
insightface's own SCRFD class reads them, and layouts it does not read refused with one line at load."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.config import DetectConfig
from stages.detect import FaceDetector
from stages.errors import ModelError
from tests.conftest import ASSETS, require
from tests.stages import scrfd_variants as variants
from tests.stages.conftest import GROUP, SCRFD, SCRFD_25G
from tests.stages.reference import assert_same, assert_same_faces, fitted, insightface_scrfd

PHOTOS = [GROUP, ASSETS / "images" / "groups" / "facenet_pytorch_multiface.jpg"]

# name -> (source model, how it is re-exported, its layout: batch_axis, batched, fixed, number of strides)
LAYOUTS = {
    "500m": (SCRFD, None, (True, True, None, 3)),
    "2.5g": (SCRFD_25G, None, (False, False, None, 3)),
    "500m-no-batch-axis": (SCRFD, variants.without_batch_axis, (False, False, None, 3)),
    "2.5g-batch-axis": (SCRFD_25G, variants.with_batch_axis, (True, False, None, 3)),
    "500m-fixed-640": (SCRFD, variants.fixed_input, (True, True, (640, 640), 3)),
    "2.5g-fixed-640": (
        SCRFD_25G,
        lambda s, o: variants.fixed_input(s, o, batch=1),
        (False, False, (640, 640), 3),
    ),
    "500m-5-strides": (SCRFD, variants.five_strides, (True, True, None, 5)),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``exports(name)``: the path of the model ``name`` of LAYOUTS, re-exported once per module."""
    folder, made = tmp_path_factory.mktemp("scrfd"), {}

    def get(name: str) -> Path:
        src, make, _ = LAYOUTS[name]
        if name not in made:
            made[name] = require(src) if make is None else make(require(src), folder / f"{name}.onnx")
        return made[name]

    return get


@pytest.mark.parametrize("photo", PHOTOS, ids=["insightface_t1", "facenet_multiface"])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_reads_as_insightface_reads_it(exports, name, photo):
    path = exports(name)
    detector = FaceDetector(DetectConfig(model=str(path), threads=1, tiling="off", min_face_size=0))
    layout = detector._impl.layout
    batch_axis, batched, fixed, levels = LAYOUTS[name][2]
    assert (layout.batch_axis, layout.batched, layout.fixed, len(layout.strides)) == (
        batch_axis,
        batched,
        fixed,
        levels,
    )
    image = fitted(cv2.imread(str(require(photo))))
    boxes, kps = insightface_scrfd(path).detect(image, input_size=(640, 640))
    assert_same(detector.detect([image])[0], boxes, kps, image.shape)


class _Runs:
    """A session stand-in that records the input shape of every run of the real session it wraps."""

    def __init__(self, session) -> None:
        self.session, self.shapes = session, []

    def run(self, names, feeds):
        self.shapes.append(next(iter(feeds.values())).shape)
        return self.session.run(names, feeds)


def _recorded(detector: FaceDetector) -> _Runs:
    runs = _Runs(detector._impl.session)
    detector._impl.session = runs
    return runs


@pytest.mark.parametrize(
    "name,workers,runs",
    [("500m", 1, 1), ("500m", 2, 2), ("500m-no-batch-axis", 1, 3), ("2.5g-batch-axis", 1, 3)],
)
def test_a_batch_is_one_run_only_where_the_model_takes_one(exports, group_photo, name, workers, runs):
    """Frames of one call share a run where the model takes a batch (with two workers: one run per share), with
    the detections of each frame alone."""
    cfg = DetectConfig(model=str(exports(name)), threads=1, tiling="off", workers=workers)
    detector = FaceDetector(cfg)
    frames = [group_photo, group_photo[:, ::-1].copy(), group_photo]
    alone = [detector.detect([f])[0] for f in frames]
    recorded = _recorded(detector)
    together = detector.detect(frames)
    assert len(recorded.shapes) == runs
    for a, b in zip(alone, together):
        assert len(a) == len(b) == 6
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


def test_fixed_input_sees_everything_at_exactly_its_size(exports, group_photo):
    """Letterboxed frames, native-resolution windows larger than the input (the frame enlarged 1.5x for
    min_face_px 8) and windows around regions all run at 640x640, and find the faces the dynamic model finds."""
    common = dict(threads=1, tiling="on", min_face_px=8.0, native_input="tiles")
    fixed = FaceDetector(DetectConfig(model=str(exports("500m-fixed-640")), **common))
    dynamic = FaceDetector(DetectConfig(model=str(require(SCRFD)), **common))
    regions = np.array([[100, 100, 700, 500, 0.0], [900, 300, 1270, 880, 120.0]], np.float32)
    recorded = _recorded(fixed)
    for kwargs in ({}, {"regions": [regions]}, {"regions": [regions[:1, :4]]}):
        ours, theirs = fixed.detect([group_photo], **kwargs)[0], dynamic.detect([group_photo], **kwargs)[0]
        assert len(ours) == len(theirs) > 0
        a, b = np.argsort(ours.xyxy[:, 0]), np.argsort(theirs.xyxy[:, 0])
        np.testing.assert_allclose(ours.xyxy[a], theirs.xyxy[b], atol=2.0)
        np.testing.assert_allclose(ours.score[a], theirs.score[b], atol=0.03)
    assert recorded.shapes and {s[2:] for s in recorded.shapes} == {(640, 640)}


def test_native_images_larger_than_a_fixed_input_are_tiled(exports, group_photo):
    fixed = FaceDetector(DetectConfig(model=str(exports("500m-fixed-640")), threads=1, tiling="off"))
    dynamic = FaceDetector(DetectConfig(model=str(require(SCRFD)), threads=1, tiling="off"))
    recorded = _recorded(fixed)
    (ours,) = fixed._impl.native([group_photo], 0.5, [1.0])  # 1280x886: six 640x640 tiles
    (theirs,) = dynamic._impl.native([group_photo], 0.5, [1.0])  # one 1280x896 input
    assert len(recorded.shapes) == 1 and recorded.shapes[0] == (6, 3, 640, 640)
    assert len(ours) == len(theirs) == 6
    a, b = np.argsort(ours.xyxy[:, 0]), np.argsort(theirs.xyxy[:, 0])
    # the same faces, seen in other context (a tile): boxes within a few px of 100-130 px faces
    assert_same_faces(ours, theirs.xyxy, min_iou=0.9)
    np.testing.assert_allclose(ours.score[a], theirs.score[b], atol=0.05)


def test_a_fixed_input_wins_over_the_configured_size(tmp_path, group_photo, caplog):
    path = variants.fixed_input(require(SCRFD), tmp_path / "fixed320.onnx", size=(320, 320))
    detector = FaceDetector(
        DetectConfig(model=str(path), threads=1, tiling="off", input_size=(640, 640), min_face_px=12)
    )  # min_face_px 12: one letterboxed run, no second look at weak small faces
    assert detector.input_size == (320, 320)
    assert "fixed input of 320x320" in caplog.text
    recorded = _recorded(detector)
    assert len(detector.detect([group_photo])[0]) == 6
    assert recorded.shapes == [(1, 3, 320, 320)]


# name -> (source, how it is broken, what the one line says)
BROKEN = {
    "no-landmarks": (SCRFD, lambda s, o: variants.kept_outputs(s, o, list(range(6))), "without landmarks"),
    "no-landmarks-5-strides": (
        SCRFD,
        lambda s, o: variants.kept_outputs(variants.five_strides(s, o), o, list(range(10))),
        "without landmarks",
    ),
    "8-outputs": (SCRFD, lambda s, o: variants.kept_outputs(s, o, list(range(8))), "9 or 15 outputs"),
    "interleaved": (
        SCRFD_25G,
        lambda s, o: variants.kept_outputs(s, o, [0, 3, 6, 1, 4, 7, 2, 5, 8]),
        "expected SCRFD outputs ordered 3 scores",
    ),
    "mixed-batch-axes": (
        SCRFD_25G,
        lambda s, o: variants.with_batch_axis(s, o, outputs=[0]),
        "expected every SCRFD output [N, C] or every one [B, N, C]",
    ),
    "fixed-600": (
        SCRFD,
        lambda s, o: variants.fixed_input(s, o, size=(600, 600)),
        "both fixed multiples of 32",
    ),
    "halved-scores": (SCRFD, variants.halved_first_scores, "expected 12800 anchors at stride 8"),
    "halved-scores-no-batch-axis": (
        SCRFD_25G,
        variants.halved_first_scores,
        "expected 12800 anchors at stride 8",
    ),
}


def _broken(name: str, folder: Path) -> Path:
    src, make, _ = BROKEN[name]
    return make(require(src), folder / f"{name}.onnx")


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_layout_insightface_does_not_read_is_one_line_at_load(tmp_path, name):
    path = _broken(name, tmp_path)
    with pytest.raises(ModelError) as err:
        FaceDetector(DetectConfig(model=str(path), threads=1))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and BROKEN[name][2] in message, message
