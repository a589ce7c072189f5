"""Forensic search by photo, for the ``search`` command and ``serve``'s ``POST /api/search`` alike: the face of
each photo found and embedded with the configured detector and embedder, several photos (of one person) fused as
enrollment fuses them (``pre_norm_vector_add``), every logged track of the same embedder scored against it
(:func:`gallery.track_search.search_tracks`, through the embedder's track index when given)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from core.errors import InputError
from core.fusion import pre_norm_vector_add
from core.images import decode_image
from gallery.db import Database
from gallery.track_index import TrackIndexes
from gallery.track_search import TrackHit, search_tracks
from pipeline.build import System, find_faces
from stages.quality import QualityScorer

__all__ = ["find_person", "query_template"]


def query_template(
    system: System, photos: Sequence[tuple[str, bytes]], face: int | None, option: str = "--face"
) -> np.ndarray:
    """The fused unit template ``[D]`` of the chosen face of every photo (``(name, bytes)``); ``option`` names the
    face choice in messages."""
    scorer = QualityScorer(system.cfg.quality)
    crops = []
    for name, data in photos:
        faces = find_faces(system.detector, scorer, decode_image(data, name))
        if not faces:
            raise InputError(f"{name}: expected a face, found none")
        faces.sort(key=lambda f: -float((f[0][2] - f[0][0]) * (f[0][3] - f[0][1])))  # largest first
        if len(faces) > 1 and face is None:
            raise InputError(
                f"{name}: expected one face, found {len(faces)}; pick one with {option} N (1 = largest)"
            )
        index = (face or 1) - 1
        if not 0 <= index < len(faces):
            raise InputError(f"{name}: {option} {face}: expected 1..{len(faces)}")
        crops.append(faces[index][2])
    feats, norms = system.embedder.embed(crops)
    return pre_norm_vector_add(feats, norms)


def find_person(
    models: System,
    db: Database,
    indexes: TrackIndexes | None,
    photos: Sequence[tuple[str, bytes]],
    *,
    face: int | None = None,
    top: int = 10,
    min_score: float | None = None,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    option: str = "--face",
) -> list[TrackHit]:
    """The person of ``photos`` (their chosen faces, found and embedded by ``models``' detector and embedder,
    fused) against the logged tracks of ``db`` of the same embedder (through ``indexes`` when given), best
    first."""
    template = query_template(models, photos, face, option)
    embedder_id = models.embedder.embedder_id
    return search_tracks(db, template, embedder_id, top, min_score, source, since, until, indexes)
