"""Zones and privacy masks of a camera: named polygons over its frame.

A zone's ``points`` are fractions of the frame: ``[x, y]`` with ``x`` of the width and ``y`` of the height, both
in 0..1 (``[0, 0]`` is the top-left corner, ``[1, 1]`` the bottom-right), so a zone stays where it is when the
camera's resolution changes. A zone with ``mask: true`` is a privacy mask: its pixels are blacked out in every
frame before anything else sees it (detection, tracking, thumbnails, snapshots), and in clips cut from the
camera's recordings (:meth:`Zones.clip_filter`). Every zone, masked or not, names where a track went: a track
entered a zone when the centre of its face box was inside the polygon on one of its frames (:class:`ZoneVisits`
while it is tracked, :meth:`Zones.entered` from its stored boxes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from pydantic import Field, field_validator

from core.config import Section
from core.types import Detections
from stages.track import TrackEnd

__all__ = [
    "MAX_POINTS",
    "MAX_ZONES",
    "NO_ZONES",
    "ZoneConfig",
    "ZoneVisits",
    "Zones",
    "black_out",
    "check_unique",
]

MAX_POINTS = 100  # vertices of one polygon
MAX_ZONES = 64  # zones of one camera


class ZoneConfig(Section):
    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the zone's name, unique per camera: stored on the tracks that enter it, used by alerts.zones",
    )
    points: tuple[tuple[float, float], ...] = Field(
        ...,
        min_length=3,
        max_length=MAX_POINTS,
        description="polygon vertices [x, y] as fractions 0..1 of the frame's width and height, top-left origin",
    )
    mask: bool = Field(
        False,
        description="privacy mask: the area is blacked out before detection and in snapshots, thumbnails and "
        "clips; nobody is detected in it",
    )

    @field_validator("points")
    @classmethod
    def _polygon(cls, points: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        arr = np.asarray(points, np.float64)
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise ValueError(
                f"points: expected fractions of the frame in 0..1, got {[list(p) for p in points]}"
            )
        x, y = arr[:, 0], arr[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        if area <= 1e-9:
            raise ValueError(f"points: expected a polygon with an area, got {[list(p) for p in points]}")
        return points


def check_unique(zones: Sequence[ZoneConfig]) -> None:
    """ValueError when two zones share a name or there are more than :data:`MAX_ZONES`."""
    if len(zones) > MAX_ZONES:
        raise ValueError(f"zones: expected at most {MAX_ZONES} per camera, got {len(zones)}")
    names = [z.name for z in zones]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"zone names must be unique per camera, got duplicates {dup}")


def black_out(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Set the pixels of ``image`` (``[H, W, C]`` uint8) where ``mask`` (bool ``[H, W]``) is true to 0, in place;
    returns ``image``. ``mask`` None: unchanged."""
    if mask is not None:
        if mask.shape != image.shape[:2]:
            raise ValueError(f"black_out: expected a mask of {image.shape[:2]}, got {mask.shape}")
        image[mask] = 0
    return image


class Zones:
    """The zones of one camera. Rasterised masks are cached per frame size (a camera's size rarely changes)."""

    def __init__(self, zones: Sequence[ZoneConfig] = ()) -> None:
        check_unique(zones)
        self.zones = tuple(zones)
        self.names = tuple(z.name for z in self.zones)
        self._polygons = [np.asarray(z.points, np.float64) for z in self.zones]
        self._masked = [p for p, z in zip(self._polygons, self.zones) if z.mask]
        self._cache: dict[tuple[int, int], np.ndarray | None] = {}
        self._keep: dict[tuple[int, int], np.ndarray] = {}  # uint8 [H, W, 1]: 0 in the mask, 1 elsewhere

    def __bool__(self) -> bool:
        return bool(self.zones)

    @property
    def masking(self) -> bool:
        """True when some zone is a privacy mask."""
        return bool(self._masked)

    def mask(self, height: int, width: int) -> np.ndarray | None:
        """The privacy mask of a ``height`` x ``width`` frame: bool ``[H, W]``, true inside any masked zone (a
        pixel is inside when its centre is); None when no zone masks. Cached per size; do not modify it."""
        key = (int(height), int(width))
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
                self._keep.clear()
            mask = rasterise(self._masked, *key) if self._masked else None
            if mask is not None:
                self._keep[key] = (~mask)[:, :, None].astype(np.uint8)
            self._cache[key] = mask
        return self._cache[key]

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Black out the masked zones of a BGR ``[H, W, 3]`` frame, in place (in a copy when it is read-only);
        returns the frame."""
        if not self._masked:
            return image
        if not image.flags.writeable:
            image = image.copy()
        key = image.shape[:2]
        self.mask(*key)
        keep = self._keep[key]
        if image.ndim != 3 or keep.shape[:2] != image.shape[:2]:
            raise ValueError(f"Zones.apply: expected an image [H, W, C], got {image.shape}")
        return np.multiply(image, keep, out=image)  # a multiply is faster than a boolean-indexed store

    def clip_filter(self) -> Callable[[np.ndarray, float], np.ndarray]:
        """A per-frame filter ``(image, t) -> image`` for clips cut from this camera's recordings: the masked
        zones blacked out (a recording is stored as the camera sent it)."""

        zones = Zones(self.zones)  # its own cache: the filter may run in another thread

        def masked(image: np.ndarray, t: float) -> np.ndarray:
            return zones.apply(image)

        return masked

    def inside(self, points: np.ndarray, height: int, width: int) -> np.ndarray:
        """Which zones hold which points: bool ``[N, Z]`` for pixel points ``[N, 2]`` (x, y) of a ``height`` x
        ``width`` frame, in the order of :attr:`names`. A point on an edge counts as inside."""
        pts = np.asarray(points, np.float64).reshape(-1, 2) / np.array([width, height], np.float64)
        out = np.zeros((len(pts), len(self._polygons)), bool)
        for j, poly in enumerate(self._polygons):
            out[:, j] = points_in_polygon(pts, poly)
        return out

    def entered(self, boxes: np.ndarray, height: int, width: int) -> list[str]:
        """Names of the zones a track entered, in config order: those holding the centre of any of its boxes,
        ``[K, 4]`` (x1, y1, x2, y2) or ``[K, 5]`` (t, x1, y1, x2, y2) in pixels of a ``height`` x ``width``
        frame."""
        arr = np.asarray(boxes, np.float64)
        if not self.zones or arr.size == 0:
            return []
        xyxy = arr.reshape(len(arr), -1)[:, -4:]
        centres = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], axis=1)
        hit = self.inside(centres, height, width).any(axis=0)
        return [n for n, h in zip(self.names, hit) if h]


NO_ZONES = Zones()


def rasterise(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Bool ``[H, W]``: true for the pixels whose centre lies inside one of ``polygons`` (each ``[P, 2]``
    fractions of the frame; even-odd rule), scanline by scanline: ``O(H * P)`` plus the fill."""
    out = np.zeros((height, width), bool)
    y = (np.arange(height, dtype=np.float64) + 0.5)[:, None]  # [H, 1] row centres, pixels
    for poly in polygons:
        px = np.asarray(poly, np.float64) * [width, height]
        x1, y1 = px[:, 0], px[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        crosses = (y1 > y) != (y2 > y)  # [H, P]
        with np.errstate(divide="ignore", invalid="ignore"):
            at = np.where(crosses, x1 + (y - y1) * (x2 - x1) / (y2 - y1), np.inf)
        at = np.sort(at, axis=1)  # each row's crossings (an even count), left to right; inf past them
        if at.shape[1] % 2:
            at = np.concatenate([at, np.full((height, 1), np.inf)], axis=1)
        starts, ends = at[:, 0::2], at[:, 1::2]
        rows, cols = np.nonzero(np.isfinite(starts))
        # pixel j is in [start, end) when its centre j + 0.5 is
        first = np.clip(np.ceil(starts[rows, cols] - 0.5), 0, width).astype(np.int64)
        stop = np.clip(np.ceil(ends[rows, cols] - 0.5), 0, width).astype(np.int64)
        edges = np.zeros((height, width + 1), np.int32)
        np.add.at(edges, (rows, first), 1)
        np.add.at(edges, (rows, stop), -1)
        out |= np.cumsum(edges, axis=1)[:, :width] > 0
    return out


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Bool ``[N]``: whether each point ``[N, 2]`` lies inside ``polygon`` ``[P, 2]`` (even-odd rule; points on an
    edge or a vertex count as inside). Same units for both."""
    x, y = points[:, 0:1], points[:, 1:2]  # [N, 1]
    x1, y1 = polygon[:, 0], polygon[:, 1]  # [P]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    crosses = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    inside = (crosses & (x < at)).sum(axis=1) % 2 == 1
    # on an edge: collinear with it and within its bounding box
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    span = max(float(np.abs(polygon).max()), 1.0) * 1e-9
    within = (
        (np.minimum(x1, x2) - span <= x)
        & (x <= np.maximum(x1, x2) + span)
        & (np.minimum(y1, y2) - span <= y)
        & (y <= np.maximum(y1, y2) + span)
    )
    on_edge = ((np.abs(cross) <= span) & within).any(axis=1)
    return inside | on_edge


class _Ended(Protocol):
    end: TrackEnd
    zones: tuple[str, ...] | None


class ZoneVisits:
    """The zones each open track of one source has entered: those holding the centre of its face box on one of its
    frames. ``note`` each frame's tracked detections, ``label`` the tracks that end."""

    def __init__(self, zones: Zones = NO_ZONES) -> None:
        self.zones = zones
        self._entered: dict[int, set[str]] = {}  # open track id -> names of the zones it entered

    def note(self, tracked: Detections, shape: tuple[int, ...]) -> None:
        """Add the zones of one frame (``shape``: its ``[H, W, ...]``) to those of its tracked faces."""
        if not self.zones or tracked.track_id is None:
            return
        on = tracked.track_id >= 0
        if not on.any():
            return
        xyxy = np.asarray(tracked.xyxy[on], np.float64)
        centres = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], axis=1)
        hits = self.zones.inside(centres, shape[0], shape[1])  # [N, Z]
        for track_id, row in zip(tracked.track_id[on], hits):
            self._entered.setdefault(int(track_id), set()).update(
                n for n, h in zip(self.zones.names, row) if h
            )

    def label(self, ended: Sequence[TrackEnd], out: list[_Ended]) -> list[_Ended]:
        """Forget the tracks ``ended`` (confirmed or not) and set the ``zones`` of each of ``out`` (those reported:
        the names in config order, None when the source has no zones); returns ``out``."""
        for item in out:
            entered = self._entered.get(item.end.track_id, set())
            item.zones = tuple(n for n in self.zones.names if n in entered) if self.zones else None
        for end in ended:
            self._entered.pop(end.track_id, None)
        return out
