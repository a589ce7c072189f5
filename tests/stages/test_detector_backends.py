"""stages/detector_backends.py: the detector contract and the registry that picks a backend by name."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from core.types import Detections
from stages.config import DetectConfig
from stages.detect import FaceDetector
from stages.detector_backends import BACKENDS, DetectorBackend, create_backend, register
from stages.errors import ModelError


def test_the_config_names_exactly_the_registered_backends():
    named = typing.get_args(DetectConfig.model_fields["backend"].annotation)
    assert set(named) == set(BACKENDS) == {"scrfd", "yunet"}
    assert all(issubclass(cls, object) and hasattr(cls, "native") for cls in BACKENDS.values())


class _Centre:
    """A backend that keeps the contract with the least code: one face in the middle of every image."""

    def __init__(self, cfg: DetectConfig, path) -> None:
        self.input_size = tuple(cfg.input_size)

    def _one(self, image: np.ndarray, scale: float = 1.0) -> Detections:
        h, w = (s / scale for s in image.shape[:2])
        box = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], np.float32)
        marks = np.array(
            [[[w * f, h * g] for f, g in ((0.4, 0.4), (0.6, 0.4), (0.5, 0.5), (0.4, 0.6), (0.6, 0.6))]]
        )
        return Detections(box, np.array([0.9], np.float32), marks.astype(np.float32))

    def __call__(self, images, threshold=None, min_size=None):
        return [self._one(img) for img in images]

    def native(self, images, threshold, scales):
        return [self._one(img, s) for img, s in zip(images, scales)]


@pytest.fixture
def centre_backend():
    register("centre-test")(_Centre)
    yield
    del BACKENDS["centre-test"]


def test_a_new_backend_is_one_registered_class(centre_backend, tmp_path):
    model = tmp_path / "centre.onnx"
    model.write_bytes(b"not read by this backend")
    cfg = DetectConfig(model=str(model), tiling="off").model_copy(update={"backend": "centre-test"})
    assert isinstance(create_backend(cfg, model), DetectorBackend)
    detector = FaceDetector(cfg)  # passes the self-check like any other backend
    [found] = detector.detect([np.zeros((480, 640, 3), np.uint8)])
    assert found.xyxy.tolist() == [[160.0, 120.0, 480.0, 360.0]]


def test_an_unknown_backend_or_a_second_registration_is_refused(tmp_path):
    cfg = DetectConfig(model=str(tmp_path / "x.onnx")).model_copy(update={"backend": "mtcnn"})
    with pytest.raises(
        ModelError, match=r"detect.backend: expected one of \['scrfd', 'yunet'\], got 'mtcnn'"
    ):
        create_backend(cfg, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="expected one class, got a second"):
        register("scrfd")(_Centre)
