"""Aligned crops of the shared labelled photos (SCRFD + 5-point alignment) and the shared MobileFaceNet."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ASSETS, require

PHOTOS = ASSETS / "images"
SCRFD = ASSETS / "models" / "scrfd_500m_bnkps.onnx"
MOBILEFACENET = ASSETS / "models" / "mobilefacenet_128d.onnx"


@pytest.fixture(scope="session")
def aligned_photos(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """image name -> (aligned 112x112 crop file, subject), for every labelled photo with a detected face."""
    labels = json.loads(require(PHOTOS / "identities.json").read_text())
    from insightface.model_zoo import get_model
    from insightface.utils.face_align import norm_crop

    detector = get_model(str(require(SCRFD)))
    detector.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    out_dir = tmp_path_factory.mktemp("aligned")
    crops = {}
    for name, subject in sorted(labels.items()):
        img = cv2.imread(str(PHOTOS / name))
        boxes, kps = detector.detect(img, max_num=0)
        if len(boxes) == 0:
            continue
        largest = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
        path = out_dir / (name.replace("/", "_").rsplit(".", 1)[0] + ".png")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecation inside insightface
            crop = norm_crop(img, kps[largest], 112)
        cv2.imwrite(str(path), crop)
        crops[name] = (path, subject)
    return crops


@pytest.fixture(scope="session")
def mobilefacenet():
    """The shared MobileFaceNet behind the pipeline's ONNX embedder (same ``embed(crops)`` interface)."""
    model = require(MOBILEFACENET)
    try:
        from stages.config import EmbedConfig
        from stages.embed import OnnxEmbedder
    except ImportError as exc:
        pytest.skip(f"the pipeline's ONNX embedder is not available in this checkout ({exc})")
    return OnnxEmbedder(EmbedConfig(backend="onnx", model=str(model), threads=1, flip=True))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests share a small machine: one intra-op thread avoids oversubscription stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
