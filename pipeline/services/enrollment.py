"""Managing who is enrolled, for the ``enroll``, ``remove`` and ``rename`` commands and the web app's identity routes
alike, so that both doors apply the same rules and refuse with the same one-line texts:

- enroll a person from photos (files or uploads, :meth:`gallery.enroll.Enroller.enroll_images`), or add photos to
  one (``add``); :func:`nothing_enrolled` is the refusal when no photo could be used;
- enroll from, or add, logged tracks (:meth:`gallery.enroll.Enroller.enroll_tracks`: the doubts of
  :mod:`gallery.from_tracks` refuse unless ``force``);
- remove some media of a person (:meth:`gallery.media.MediaStore.remove_media`) or the person
  (:meth:`gallery.store.Gallery.remove_identity`), the thresholds recalibrated after either;
- rename a person, and put them on the default watch list or take them off (:mod:`gallery.watchlists`).

Each change is one transaction that bumps the gallery version when templates or names change, so every FAISS
index of the gallery is rebuilt from SQL at its next use (:mod:`gallery.search`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from gallery.enroll import Enroller, EnrollReport, Photo
from gallery.errors import EnrollmentError
from gallery.refs import parse_track_ref
from gallery.store import Gallery
from gallery.watchlists import rename_identity, set_watchlist_flag

logger = logging.getLogger(__name__)

UPDATE_ACTION = "identity.update"  # the audit action of a rename or a watch-list change, from either door

__all__ = [
    "UPDATE_ACTION",
    "enroll_photos",
    "enroll_tracks",
    "nothing_enrolled",
    "recalibrate",
    "remove_identity",
    "remove_media",
    "rename",
    "set_watchlist",
]


def nothing_enrolled(report: EnrollReport) -> EnrollmentError | None:
    """The refusal of an enrollment that enrolled nothing (not even a photo already enrolled), naming the one
    input's problem or how many had problems; None when something was enrolled."""
    if report.count("enrolled") or report.count("duplicate"):
        return None
    inputs = [p for p in report.problems if p.path]  # not the 'identity not created' that follows them
    only = inputs[0] if len(inputs) == 1 else None
    return EnrollmentError(
        f"nothing enrolled: {only.path}: {only.detail or only.status}"
        if only is not None
        else f"nothing enrolled: {len(inputs)} input(s) had problems (listed above)"
    )


def enroll_photos(
    enroller: Enroller,
    name: str,
    photos: Sequence[Path | Photo],
    *,
    add: bool = False,
    external_id: str | None = None,
    watchlist: bool = False,
    notes: str = "",
) -> EnrollReport:
    """Enroll ``photos`` (image files or ``(name, bytes)`` uploads) as ``name``: a new identity, or with ``add``
    more photos of an existing one. Refused before anything is written for a bad name, a taken one (without
    ``add``), an unknown one (with it), or a photo that does not decode; photos without exactly one usable face
    are reported in the result (see :func:`nothing_enrolled`)."""
    return enroller.enroll_images(
        name, photos, add=add, external_id=external_id, watchlist=watchlist, notes=notes
    )


def enroll_tracks(
    enroller: Enroller,
    name: str,
    refs: Sequence[str],
    *,
    threshold: float | None,
    force: bool = False,
    add: bool = False,
    external_id: str | None = None,
    watchlist: bool = False,
    notes: str = "",
) -> EnrollReport:
    """Enroll ``name`` from (or with ``add``, add) the logged tracks ``refs`` (``RUN:TRACK``); a doubtful track
    refuses the request unless ``force`` (``threshold``: the configured operating threshold, None: the
    gallery's)."""
    return enroller.enroll_tracks(
        name,
        refs,
        add=add,
        external_id=external_id,
        watchlist=watchlist,
        notes=notes,
        threshold=threshold,
        force=force,
    )


def recalibrate(gallery: Gallery) -> None:
    """Calibrate the threshold of every embedder of the gallery again (after media left it)."""
    for embedder_id in gallery.embedders():
        gallery.calibrate(embedder_id)


def remove_media(
    gallery: Gallery, name: str, media_ids: Sequence[int] = (), tracks: Sequence[str] = ()
) -> list[dict]:
    """Remove the media ``media_ids`` of ``name`` and those it was enrolled from the tracks ``tracks``
    (``RUN:TRACK``), its templates re-fused from the rest; the removed rows (``query media``'s fields). Removing
    every media of a person is refused (remove the person instead)."""
    pairs = [parse_track_ref(ref) for ref in tracks]  # every reference checked before anything is opened
    removed = gallery.media_store.remove_media(name, media_ids, pairs)
    recalibrate(gallery)
    return removed


def remove_identity(gallery: Gallery, name: str) -> None:
    """Remove ``name`` with its media and templates (match events keep their candidates, lose the link)."""
    gallery.remove_identity(name)
    recalibrate(gallery)


def rename(gallery: Gallery, name: str, new_name: str) -> str:
    """Rename ``name`` to ``new_name`` (the identity names' rule, not taken); returns the new name."""
    return rename_identity(gallery.db, name, new_name)


def set_watchlist(gallery: Gallery, name: str, on: bool) -> bool:
    """Put ``name`` on the default watch list or take it off; whether that changed anything."""
    return set_watchlist_flag(gallery.db, name, on)
