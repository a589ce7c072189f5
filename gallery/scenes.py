"""A track's context snapshot as the match log stores it: the downscaled full frame of its best crop with the face
boxed and labelled (the decision, identity and score or ``unknown``, and the track's reference ``RUN:TRACK``), a
JPEG beside the track's thumbnail in the thumbnail store (``<folder>/track<T>_scene.jpg``)."""

from __future__ import annotations

import cv2
import numpy as np

from core.types import SceneSnapshot
from gallery.refs import track_ref
from gallery.track_record import TrackRecord, candidate_row

__all__ = ["MATCH_COLOR", "UNKNOWN_COLOR", "draw_scene", "labelled_scene", "scene_label", "snapshot_path"]

MATCH_COLOR = (0, 200, 0)  # BGR of the box and label of a match
UNKNOWN_COLOR = (0, 140, 255)  # BGR of an unknown's
LABEL_CHARS = 80  # a longer label is cut


def snapshot_path(thumbnail_path: str) -> str:
    """The store-relative path of a track's snapshot given its thumbnail's: ``a/b/track7.jpg`` ->
    ``a/b/track7_scene.jpg``."""
    stem = thumbnail_path[:-4] if thumbnail_path.endswith(".jpg") else thumbnail_path
    return f"{stem}_scene.jpg"


def scene_label(decision: str, candidates: list[dict], run_id: int, track_id: int) -> str:
    """``NAME SCORE  RUN:TRACK`` for a match (``candidates``: rows with ``name``/``score``, best first),
    ``unknown  RUN:TRACK`` otherwise."""
    ref = track_ref(run_id, track_id)
    if decision == "match" and candidates:
        best = candidates[0]
        return f"{best['name']} {best['score']:.2f}  {ref}"
    return f"unknown  {ref}"


def draw_scene(scene: SceneSnapshot, label: str, match: bool) -> np.ndarray:
    """A copy of ``scene.image`` with ``scene.box`` drawn (line ``max(2, W // 400)`` px, centred on the box edge)
    and ``label`` on a filled band above it (below its top edge when there is no room), in :data:`MATCH_COLOR` or
    :data:`UNKNOWN_COLOR`. Characters outside printable ASCII are shown as ``?``."""
    image = scene.image.copy()
    h, w = image.shape[:2]
    color = MATCH_COLOR if match else UNKNOWN_COLOR
    thick = max(2, w // 400)
    x1, y1, x2, y2 = (int(round(float(v))) for v in scene.box)
    x1, x2 = sorted((min(max(x1, 0), w - 1), min(max(x2, 0), w - 1)))
    y1, y2 = sorted((min(max(y1, 0), h - 1), min(max(y2, 0), h - 1)))
    cv2.rectangle(image, (x1, y1), (x2, y2), color, thick, cv2.LINE_8)
    text = "".join(c if " " <= c <= "~" else "?" for c in label[:LABEL_CHARS])
    font, size = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, w / 1600)
    (tw, th), base = cv2.getTextSize(text, font, size, 1)
    pad = max(2, thick)
    band = th + base + 2 * pad
    top = y1 - thick - band if y1 - thick - band >= 0 else min(y1 + thick, max(h - band, 0))
    left = min(max(x1 - thick // 2, 0), max(w - tw - 2 * pad, 0))
    cv2.rectangle(image, (left, top), (left + tw + 2 * pad, top + band), color, cv2.FILLED)
    cv2.putText(image, text, (left + pad, top + pad + th), font, size, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def labelled_scene(rec: TrackRecord, run_id: int) -> np.ndarray:
    """The snapshot image of ``rec`` (which has a ``scene``) logged in run ``run_id``: boxed and labelled."""
    label = scene_label(rec.decision, [candidate_row(c) for c in rec.candidates], run_id, rec.track_id)
    return draw_scene(rec.scene, label, rec.decision == "match")
