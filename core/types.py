"""The typed containers every stage takes and returns. Arrays are numpy; shapes are checked on construction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

__all__ = [
    "CROP_SIZE",
    "Candidate",
    "Detections",
    "FaceCrop",
    "Frame",
    "MatchResult",
    "Quality",
    "SCENE_MAX_WIDTH",
    "SceneSnapshot",
    "TrackTemplate",
    "check_crop",
    "check_crops",
]

CROP_SIZE = 112  # side of an aligned face crop (the ArcFace 112x112 template)
SCENE_MAX_WIDTH = 1280  # a context snapshot is the full frame downscaled to at most this many pixels wide


def check_crop(image: object, what: str) -> None:
    """An aligned crop is a ``[112, 112, 3]`` uint8 BGR array; anything else is an :class:`InputError`."""
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.shape != (CROP_SIZE, CROP_SIZE, 3)
    ):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"{what}: expected an aligned 112x112x3 uint8 BGR image, got {got}")


def check_crops(crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Check aligned crops and stack them: ``[N, 112, 112, 3]`` uint8 BGR (a single ``[112, 112, 3]`` is N=1)."""
    if isinstance(crops, np.ndarray) and crops.ndim == 3:
        crops = crops[None]
    arrays = list(crops)
    for i, crop in enumerate(arrays):
        check_crop(crop, f"crop {i}")
    if not arrays:
        return np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    return np.stack(arrays)


def _check(cond: bool, what: str, expected: str, got: object) -> None:
    if not cond:
        raise ValueError(f"{what}: expected {expected}, got {got}")


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``image``: BGR uint8 ``[H, W, 3]``; ``timestamp``: seconds within the source (monotonic);
    ``wall_time``: the wall clock of the frame in seconds since the epoch (UTC), None when unknown."""

    source_id: str
    index: int
    timestamp: float
    image: np.ndarray
    wall_time: float | None = None

    def __post_init__(self) -> None:
        img = self.image
        _check(
            img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3,
            "Frame.image",
            "uint8 HxWx3",
            f"{img.dtype} {img.shape}",
        )


@dataclass(frozen=True)
class Detections:
    """Faces of one frame. ``xyxy [N, 4]``, ``score [N]``, ``landmarks [N, 5, 2]`` float32; ``track_id [N]`` int64
    once tracked (``-1`` = untracked). ``N = 0`` is valid and common."""

    xyxy: np.ndarray
    score: np.ndarray
    landmarks: np.ndarray
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        _check(self.xyxy.shape == (n, 4), "Detections.xyxy", "[N, 4]", self.xyxy.shape)
        _check(self.score.shape == (n,), "Detections.score", f"[{n}]", self.score.shape)
        _check(
            self.landmarks.shape == (n, 5, 2), "Detections.landmarks", f"[{n}, 5, 2]", self.landmarks.shape
        )
        if self.track_id is not None:
            _check(self.track_id.shape == (n,), "Detections.track_id", f"[{n}]", self.track_id.shape)

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


@dataclass
class Quality:
    """Cheap per-crop quality signals; ``feature_norm`` is filled in after embedding."""

    face_size: float
    det_score: float
    sharpness: float
    pose: float  # 0 = frontal, 1 = extreme profile (landmark proxy)
    feature_norm: float | None = None


@dataclass
class FaceCrop:
    """An aligned 112x112 BGR uint8 crop of one tracked face in one frame."""

    source_id: str
    track_id: int
    frame_index: int
    timestamp: float
    image: np.ndarray
    quality: Quality

    def __post_init__(self) -> None:
        check_crop(self.image, "FaceCrop.image")


@dataclass(frozen=True)
class SceneSnapshot:
    """The full frame of a track's best crop, downscaled to at most ``SCENE_MAX_WIDTH`` px wide. ``image``: BGR
    uint8 ``[H, W, 3]`` (may be shared by the tracks whose best crop is in the same frame: never drawn on);
    ``box``: the face's ``[4]`` float32 (x1, y1, x2, y2) in ``image`` pixels; ``timestamp``: seconds within the
    source; ``scale``: ``image`` pixels per source pixel."""

    image: np.ndarray
    box: np.ndarray
    timestamp: float
    scale: float = 1.0

    def __post_init__(self) -> None:
        img = self.image
        _check(
            img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[1] <= SCENE_MAX_WIDTH,
            "SceneSnapshot.image",
            f"uint8 HxWx3 with W <= {SCENE_MAX_WIDTH}",
            f"{img.dtype} {img.shape}",
        )
        _check(np.shape(self.box) == (4,), "SceneSnapshot.box", "[4]", np.shape(self.box))


@dataclass
class TrackTemplate:
    """The fused identity evidence of one track. ``embedding``: unit float32 ``[D]``."""

    source_id: str
    track_id: int
    embedding: np.ndarray
    total_weight: float
    num_crops: int
    best_crop: FaceCrop | None
    first_timestamp: float
    last_timestamp: float
    num_frames: int = 0  # frames in which the track was detected (embedded or not)
    wall_start: float | None = None  # wall clock (epoch seconds) of the first and last frame; None: unknown
    wall_end: float | None = None
    boxes: np.ndarray | None = None  # [K, 5] float32 rows (t, x1, y1, x2, y2), source pixels, one per frame
    scene: SceneSnapshot | None = None  # the full frame of best_crop, downscaled
    zones: tuple[str, ...] | None = None  # names of the source's zones the track entered; None: it has none


@dataclass(frozen=True)
class Candidate:
    identity_id: int
    name: str
    score: float


@dataclass(frozen=True)
class MatchResult:
    """Open-set decision for one track: ``decision`` is ``"match"`` or ``"unknown"``."""

    source_id: str
    track_id: int
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)
    decision: str = "unknown"
    threshold: float = 0.0

    @property
    def identity(self) -> Candidate | None:
        return self.candidates[0] if self.decision == "match" and self.candidates else None
