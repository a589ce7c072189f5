"""The unknown tracks of the match log grouped into recurring persons, for ``query unknowns`` and ``serve``'s
``/api/unknowns`` alike (:func:`gallery.unknowns.group_unknowns` with the config's defaults)."""

from __future__ import annotations

from datetime import datetime

from gallery.store import Gallery
from gallery.unknowns import Grouping, check_options, group_unknowns, unknown_embedders
from pipeline.config import AppConfig
from pipeline.sinks.sql_gallery import SqlGalleryIndex

__all__ = ["grouping"]


def grouping(
    gallery: Gallery,
    cfg: AppConfig,
    embedder_id: str | None = None,
    threshold: float | None = None,
    min_size: int | None = None,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Grouping:
    """The unknown tracks of ``gallery`` grouped with the options of ``query unknowns`` (None: the defaults:
    ``gallery.unknowns.min_size``; the embedder with most unknown tracks; ``gallery.unknowns.threshold``, else the
    embedder's operating threshold as the matcher decides it)."""
    check_options(threshold, min_size)
    section = cfg.gallery.unknowns
    min_size = section.min_size if min_size is None else min_size
    embedder_id = embedder_id or next(iter(unknown_embedders(gallery.db, source, since, until)), None)
    threshold = threshold if threshold is not None else section.threshold
    if embedder_id is None:  # no unknown track under the filters
        return Grouping(None, threshold, min_size, 0, 0, [])
    if threshold is None:  # the operating threshold of this embedder, as the matcher of process decides
        threshold = SqlGalleryIndex(gallery, embedder_id, cfg.match.threshold).threshold
    return group_unknowns(gallery.db, embedder_id, threshold, section, source, since, until, min_size)
