"""Enrollment from logged tracks: the tracks named by their one reference ``RUN:TRACK`` (:mod:`gallery.refs`; a
bare number is refused) as enrollment media, and the doubts that stop such an enrollment unless it is forced.

Each track's fused template becomes one media row of kind ``track`` whose ``track_pk`` is the track's row in the
match log (a stored fact: nothing ever reads it back from the row's path). A track is doubtful, for identity NAME,
when

- its current decision (the newest retroactive match, else the logged one; :mod:`gallery.decisions`) is a match
  to another identity;
- the gallery as it is now names another identity (its best candidate, at or above the operating threshold);
- NAME already has a template of the embedder and the track scores below the threshold against it.

:func:`track_doubts` lists them, one line each; :meth:`gallery.enroll.Enroller.enroll_tracks` refuses with
:class:`DoubtfulTrackError` unless forced.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np
from sqlalchemy import func, select, tuple_

from gallery.decisions import with_decisions
from gallery.errors import EnrollmentError, IdentityNotFoundError
from gallery.media import MediaVector
from gallery.models import Media, Source, Track, from_blob
from gallery.refs import parse_track_ref, track_ref
from gallery.store import Gallery

logger = logging.getLogger(__name__)

__all__ = ["DoubtfulTrackError", "refuse_doubts", "track_doubts", "track_media"]

TOP_K = 3  # identities searched per track for a doubt


class DoubtfulTrackError(EnrollmentError):
    """An enrollment from tracks that look like someone else (or not like the person): refused unless forced."""


def track_media(gallery: Gallery, refs: Sequence[str], embedder_id: str) -> list[MediaVector]:
    """The logged templates of the tracks ``refs`` (``RUN:TRACK`` each) as enrollment media of kind ``track``, in
    the order given (a track named twice once); each weighs as one typical enrolled image of the embedder (the mean
    norm of its media, 1 when it has none). A reference that is not ``RUN:TRACK`` raises
    :class:`gallery.refs.TrackRefError`; an unknown track, or one of another embedder, :class:`EnrollmentError`."""
    if not refs:
        raise EnrollmentError("--from-track: expected at least one track reference RUN:TRACK, got none")
    pairs = [parse_track_ref(r) for r in refs]
    cols = (Track.id, Track.run_id, Track.track_id, Track.embedder_id, Track.dim, Track.template, Source.name)
    stmt = select(*cols).join(Source, Source.id == Track.source_id)
    with gallery.db.session() as session:
        rows = session.execute(stmt.where(tuple_(Track.run_id, Track.track_id).in_(pairs))).all()
        weight = session.scalar(select(func.avg(Media.norm)).where(Media.embedder_id == embedder_id))
    found = {(r.run_id, r.track_id): r for r in rows}
    items, seen = [], set()
    for pair in pairs:
        ref, row = track_ref(*pair), found.get(pair)
        if row is None:
            raise EnrollmentError(
                f"track {ref}: expected a track of the match log (the ref of 'query tracks'), got none"
            )
        if row.embedder_id != embedder_id:
            raise EnrollmentError(
                f"track {ref}: expected a template of embedder {embedder_id!r}, got {row.embedder_id!r}; "
                f"templates of different embedders never mix"
            )
        if row.id not in seen:
            seen.add(row.id)
            digest = hashlib.sha256(b"track-template:" + embedder_id.encode() + row.template).hexdigest()
            vector = from_blob(row.template, row.dim)
            path = f"track {ref} ({row.name})"
            items.append(MediaVector(path, digest, 1.0, vector, float(weight or 1.0), "track", row.id))
    return items


def track_doubts(
    gallery: Gallery, name: str, items: Sequence[MediaVector], embedder_id: str, threshold: float
) -> list[str]:
    """Why enrolling the track media ``items`` (from :func:`track_media`) as ``name`` looks wrong, one line per
    doubtful track (see the module); empty when none is. ``threshold``: the operating threshold."""
    if not items:
        return []
    pks = [item.track_pk for item in items]
    stmt, _ = with_decisions(select(Track.id.label("pk"), Track.run_id, Track.track_id))
    with gallery.db.session() as session:
        current = {r.pk: r for r in session.execute(stmt.where(Track.id.in_(pks)))}
    try:
        own = gallery.template(name, embedder_id) if gallery.has_identity(name) else None
    except IdentityNotFoundError:  # the person has no template of this embedder yet
        own = None
    units = np.stack([np.asarray(i.vector, np.float32) / np.linalg.norm(i.vector) for i in items])
    found = gallery.search(units, TOP_K, embedder_id)
    doubts = []
    for item, unit, cands in zip(items, units, found):
        now = current.get(item.track_pk)
        if now is None:  # purged meanwhile: the enrollment refuses it
            continue
        ref = track_ref(now.run_id, now.track_id)
        other = (cands[0][1], cands[0][2]) if cands and cands[0][1] != name else None  # whom it names now
        if now.decision == "match" and now.identity not in (None, name):
            how = "retroactively" if now.retroactive else "when logged"
            doubts.append(f"track {ref} is matched to {now.identity!r} (score {now.score:.2f}, {how})")
        elif other is not None and other[1] >= threshold:
            doubts.append(
                f"track {ref} scores {other[1]:.2f} against {other[0]!r} (threshold {threshold:.2f})"
            )
        elif own is not None and float(unit @ own) < threshold:
            doubts.append(
                f"track {ref} scores {float(unit @ own):.2f} against {name!r}, below the threshold {threshold:.2f}"
            )
    for doubt in doubts:
        logger.info("enroll %r from tracks: %s", name, doubt)
    return doubts


def refuse_doubts(name: str, doubts: Sequence[str]) -> None:
    """Raise :class:`DoubtfulTrackError` (one line: the first doubt, how many more) when there are doubts."""
    if doubts:
        more = f" (and {len(doubts) - 1} more doubtful tracks)" if len(doubts) > 1 else ""
        raise DoubtfulTrackError(
            f"enroll {name!r}: {doubts[0]}{more}; expected tracks of {name}: nothing enrolled (--yes enrolls "
            f"them anyway)"
        )
