"""Real models and photos from the shared assets, loaded once per test session."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.config import DetectConfig, EmbedConfig
from stages.detect import FaceDetector
from stages.embed import OnnxEmbedder
from tests.conftest import ASSETS, require

SCRFD = ASSETS / "models" / "scrfd_500m_bnkps.onnx"
SCRFD_25G = ASSETS / "models" / "scrfd_2.5g_bnkps.onnx"  # outputs [N, C]: the insightface model zoo layout
YUNET = ASSETS / "models" / "face_detection_yunet_2026may.onnx"
YUNET_FIXED = ASSETS / "models" / "face_detection_yunet_2023mar.onnx"  # input fixed at 640x640
MOBILEFACENET = ASSETS / "models" / "mobilefacenet_128d.onnx"
GROUP = ASSETS / "images" / "groups" / "insightface_t1.jpg"
GROUP_NAMES = ["Rachel", "Monica", "Ross", "Chandler", "Joey", "Phoebe"]  # left to right (groups.json)
FRIENDS = ASSETS / "images" / "friends_gallery"


def mobilefacenet_config(**kw) -> EmbedConfig:
    return EmbedConfig(backend="onnx", model=str(require(MOBILEFACENET)), threads=1, **kw)


@pytest.fixture(scope="session")
def scrfd() -> FaceDetector:
    """SCRFD as insightface runs it: the frame letterboxed, nothing at native resolution."""
    return FaceDetector(DetectConfig(model=str(require(SCRFD)), threads=1, tiling="off"))


@pytest.fixture(scope="session")
def mobilefacenet() -> OnnxEmbedder:
    return OnnxEmbedder(mobilefacenet_config())


@pytest.fixture(scope="session")
def group_photo() -> np.ndarray:
    return cv2.imread(str(require(GROUP)))
