"""The files a logged track owns in the thumbnail store, named by one rule for everything that deletes tracks.

A track of run ``R`` of source ``S`` keeps, in the store folder ``sourceS/runR``: its best crop (``Track.thumbnail``,
``trackT.jpg``), its context snapshot (``Track.snapshot``, ``trackT_scene.jpg``) and the clip cut from its source on
demand (``trackT_clip.mp4``, :func:`clip_path`, cached by :mod:`pipeline.services.clips`). Purge, replaced runs and
interrupted runs select :data:`FILE_COLUMNS` of the tracks they delete (or keep) and pass the rows to
:func:`track_files` / :func:`delete_track_files`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from gallery.errors import GalleryError
from gallery.models import Track
from gallery.thumbnails import ThumbnailStore

logger = logging.getLogger(__name__)

__all__ = ["FILE_COLUMNS", "clip_path", "delete_track_files", "track_files"]

# what track_files needs of a track row, in this order
FILE_COLUMNS = (Track.source_id, Track.run_id, Track.track_id, Track.thumbnail, Track.snapshot)


def clip_path(source_id: int, run_id: int, track_id: int) -> str:
    """Store-relative path of a track's cached clip, in its thumbnail's folder."""
    return f"source{source_id}/run{run_id}/track{track_id}_clip.mp4"


def track_files(rows: Iterable[Sequence]) -> list[str]:
    """Every store-relative file of the tracks ``rows`` (each the values of :data:`FILE_COLUMNS`): the stored
    thumbnail and snapshot where set, and the cached clip's path (whether or not one was cut)."""
    out: list[str] = []
    for source_id, run_id, track_id, thumbnail, snapshot in rows:
        out += [f for f in (thumbnail, snapshot) if f]
        out.append(clip_path(source_id, run_id, track_id))
    return out


def delete_track_files(store: ThumbnailStore, rows: Iterable[Sequence]) -> int:
    """Delete the files of the tracks ``rows`` (:data:`FILE_COLUMNS` values; their rows are gone already) from
    ``store``; a file that cannot be removed is logged and left. Returns the files removed."""
    removed = 0
    for rel in track_files(rows):
        try:
            path = store.resolve(rel)
            if path.is_file():
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
        except (OSError, GalleryError) as exc:
            logger.warning("track file %s not removed: %s", rel, exc)
    return removed
