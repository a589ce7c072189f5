from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.types import Quality
from stages.align import ARCFACE_TEMPLATE, align_face, magnification
from stages.config import QualityConfig
from stages.quality import QualityScorer, pose_proxy, sharpness
from tests.stages.conftest import FRIENDS


def test_frontal_template_has_near_zero_pose():
    assert pose_proxy(ARCFACE_TEMPLATE) < 0.03


def test_pose_grows_as_the_nose_turns_away():
    values = []
    for dx in (0, 5, 10, 20):
        lm = ARCFACE_TEMPLATE.copy()
        lm[2, 0] += dx
        values.append(pose_proxy(lm))
    assert values == sorted(values) and values[-1] == 1.0


def test_pose_is_rotation_invariant():
    t = np.deg2rad(40)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    lm = ARCFACE_TEMPLATE.copy()
    lm[2, 0] += 5
    assert pose_proxy(lm @ rot.T) == pytest.approx(pose_proxy(lm), abs=1e-9)


def test_blur_lowers_sharpness():
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 255, (112, 112, 3)).astype(np.uint8)
    assert sharpness(cv2.GaussianBlur(crop, (9, 9), 3)) < sharpness(crop) / 10


def test_score_orders_crops():
    scorer = QualityScorer(QualityConfig())
    good = Quality(face_size=80, det_score=0.9, sharpness=300, pose=0.05)
    small = Quality(face_size=16, det_score=0.9, sharpness=300, pose=0.05)
    blurry = Quality(face_size=80, det_score=0.9, sharpness=5, pose=0.05)
    profile = Quality(face_size=80, det_score=0.9, sharpness=300, pose=0.9)
    s = {
        k: scorer.score(q)
        for k, q in {"good": good, "small": small, "blurry": blurry, "profile": profile}.items()
    }
    assert s["good"] == pytest.approx(1.0 * 0.9 * 0.75 * 0.95)
    assert max(s["small"], s["blurry"], s["profile"]) < s["good"]


@pytest.mark.parametrize(
    "field,value,usable",
    [("face_size", 9, False), ("det_score", 0.4, False), ("pose", 0.8, False), ("face_size", 10, True)],
)
def test_gates(field, value, usable):
    scorer = QualityScorer(QualityConfig(min_face_size=10, min_det_score=0.5, max_pose=0.7))
    q = Quality(face_size=20, det_score=0.9, sharpness=50, pose=0.1)
    setattr(q, field, value)
    assert scorer.usable(q) is usable


def test_assess_fills_every_field():
    scorer = QualityScorer(QualityConfig())
    crop = np.full((112, 112, 3), 128, np.uint8)
    q = scorer.assess(crop, np.array([10, 20, 50, 70]), 0.8, ARCFACE_TEMPLATE)
    assert (q.face_size, q.det_score, q.sharpness) == (40.0, 0.8, 0.0) and q.feature_norm is None


def _tiny_face(scrfd, photo, face_px: float, blur_sigma: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``photo`` reduced so that its face is ``face_px`` wide (blurred at that scale), as a far camera sees it:
    the aligned crop, the face's landmarks and its box side."""
    dets = scrfd.detect([photo])[0]
    box = dets.xyxy[int(np.argmax(dets.score))]
    factor = face_px / float(box[2] - box[0])
    small = cv2.resize(photo, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    if blur_sigma:
        small = cv2.GaussianBlur(small, (0, 0), blur_sigma)
    landmarks = dets.landmarks[int(np.argmax(dets.score))] * factor
    return align_face(small, landmarks), landmarks, face_px


@pytest.mark.parametrize("face_px", [10, 14, 20])
def test_sharpness_of_tiny_faces_is_measured_at_their_own_scale(scrfd, face_px):
    photo = cv2.imread(str(FRIENDS / "Rachel.png"))
    sharp, lm, _ = _tiny_face(scrfd, photo, face_px, 0.0)
    blurred, _, _ = _tiny_face(scrfd, photo, face_px, 1.0)
    enlarged = magnification(lm)
    assert enlarged > 3
    old = sharpness(sharp) / sharpness(blurred)
    new = sharpness(sharp, enlarged) / sharpness(blurred, enlarged)
    # enlarged to 112 px every tiny crop looks blurred; at the face's own scale the blurred one stands out
    assert new > 2.0 and new > 1.5 * old
    scorer = QualityScorer(QualityConfig())
    q_sharp = scorer.assess(sharp, np.array([0, 0, face_px, face_px]), 0.8, lm)
    q_blur = scorer.assess(blurred, np.array([0, 0, face_px, face_px]), 0.8, lm)
    assert scorer.score(q_sharp) > 1.2 * scorer.score(q_blur)


def test_sharpness_of_faces_at_crop_scale_is_unchanged():
    rng = np.random.default_rng(2)
    crop = rng.integers(0, 255, (112, 112, 3)).astype(np.uint8)
    assert sharpness(crop, 1.0) == sharpness(crop) == sharpness(crop, 0.5)
