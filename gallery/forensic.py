"""What the forensic views show (no web here): one track with its current decision and the enrolled face it
matched, and the enrolled photo itself.

The enrolled face a match is shown beside is the identity's media row (of the track's embedder) closest to the
track's template: the photo that agrees best with what was seen. It can be shown when it is

- a face enrolled from a track (``enroll --from-track``: a media row of kind ``track`` whose ``track_pk`` is that
  track, a stored fact; its path is never read for this): that track's thumbnail, from the thumbnail store;
- an enrolled photo inside one of the folders ``gallery.serve.media_dirs`` (symlinks resolved) whose content still
  has the enrolled content hash; it is re-encoded as a JPEG of at most ``SHOWN_SIDE`` pixels a side. No other
  path is ever read: the media rows' paths are data, not a place to serve from.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select

from core.errors import InputError
from core.images import decode_image
from gallery.db import Database
from gallery.decisions import with_decisions
from gallery.errors import ThumbnailPathError
from gallery.models import Identity, Media, Source, Track, from_blob
from gallery.queries import TRACK_COLUMNS, _iso, track_fields
from gallery.refs import parse_track_ref
from gallery.review_state import review_fields, with_review
from gallery.thumbnails import ThumbnailStore

logger = logging.getLogger(__name__)

__all__ = ["MediaUnavailable", "enrolled_photo", "track_detail"]

SHOWN_SIDE = 512  # longest side of an enrolled photo as shown
MAX_MEDIA_BYTES = 64 * 2**20  # an enrolled photo larger than this is not read
MAX_MEDIA_ROWS = 10_000  # media rows of one identity compared with a track


class MediaUnavailable(LookupError):
    """An enrolled photo that this server cannot show; the message says why."""


def _inside(path: Path, folders: Sequence[str]) -> bool:
    return any(path.is_relative_to(Path(folder).resolve()) for folder in folders)


def _media_url(media: Media, media_dirs: Sequence[str]) -> tuple[str | None, str | None]:
    """(URL of the enrolled face, None) when it may be shown, else (None, why not)."""
    if media.kind == "track":
        return f"/media/{media.id}", None
    if media.kind != "image":
        return None, "enrolled as a template, without a photo"
    if not media_dirs:
        return None, "enrolled photos are not shown (gallery.serve.media_dirs is empty)"
    if not _inside(Path(media.path).resolve(), media_dirs):
        return None, "the enrolled photo is outside gallery.serve.media_dirs"
    return f"/media/{media.id}", None


def _enrolled(session, identity_id: int, embedder_id: str, template: np.ndarray, media_dirs) -> dict | None:
    """The media row of the identity closest to ``template`` (unit ``[D]``) and how it may be shown."""
    rows = session.execute(
        select(Media, Identity.name)
        .join(Identity, Identity.id == Media.identity_id)
        .where(Media.identity_id == identity_id, Media.embedder_id == embedder_id, Media.dim == len(template))
        .order_by(Media.id)
        .limit(MAX_MEDIA_ROWS)
    ).all()
    if not rows:
        return None
    scores = np.stack([from_blob(m.vector, m.dim) for m, _ in rows]) @ template
    best = int(np.argmax(scores))
    media, name = rows[best]
    url, note = _media_url(media, media_dirs)
    shown = media.path if media.kind == "track" else Path(media.path).name
    return {
        "media_id": media.id,
        "identity": name,
        "enrolled_from": shown,
        "enrolled_at": _iso(media.created_at),
        "score": round(float(scores[best]), 4),
        "url": url,
        "note": note,
    }


def track_detail(db: Database, ref: str, media_dirs: Sequence[str] = ()) -> dict | None:
    """The track ``ref`` (``RUN:TRACK``; another form raises :class:`gallery.refs.TrackRefError`) of the match log,
    None when there is none: where and when (:func:`gallery.queries.track_fields`: sighting times and their origin,
    offsets within the source, when logged), its counts, thumbnail and context snapshot (store-relative paths in
    the thumbnail store, None when there is none), the camera zones it entered (None where the source has none),
    its current decision (the newest retroactive match, else the logged one, which is kept beside it) with its
    review (``review``/``reviewed``, :mod:`gallery.review_state`), and for a match the enrolled face closest to it
    (see the module's text)."""
    run_id, track_id = parse_track_ref(ref)
    stmt, current = with_decisions(
        select(Track, *TRACK_COLUMNS, Source.name.label("source"), Source.kind).join(
            Source, Source.id == Track.source_id
        )
    )
    stmt = with_review(stmt, Track.id, current.identity_id, current.decision)
    stmt = stmt.where(Track.run_id == run_id, Track.track_id == track_id)
    with db.session() as session:
        r = session.execute(stmt).first()
        if r is None:
            return None
        t = r.Track
        template = from_blob(t.template, t.dim)
        norm = float(np.linalg.norm(template))
        enrolled = None
        if r.decision == "match" and r.identity_id is not None and norm > 0 and np.isfinite(norm):
            enrolled = _enrolled(session, r.identity_id, t.embedder_id, template / norm, media_dirs)
    return (
        track_fields(r)
        | {
            "source": r.source,
            "kind": r.kind,
            "frames": t.frames,
            "crops_embedded": t.crops_embedded,
            "embedder_id": t.embedder_id,
            "thumbnail": t.thumbnail,
            "snapshot": t.snapshot,
            "zones": t.zones,
            "decision": r.decision,
            "score": r.score,
            "identity": r.identity if r.decision == "match" else None,
            "retroactive": bool(r.retroactive),
            "rematch_id": r.rematch_id if r.retroactive else None,
            "logged_decision": r.logged_decision,
            "logged_identity": r.logged_identity if r.logged_decision == "match" else None,
            "logged_score": r.logged_score,
            "enrolled": enrolled,
        }
        | review_fields(r)
    )


def _photo_jpeg(path: Path, content_hash: str) -> bytes:
    try:
        if path.stat().st_size > MAX_MEDIA_BYTES:
            raise MediaUnavailable(f"the enrolled photo is larger than {MAX_MEDIA_BYTES:,} bytes")
        data = path.read_bytes()
    except OSError:
        raise MediaUnavailable("the enrolled photo is no longer where it was enrolled from") from None
    if hashlib.sha256(data).hexdigest() != content_hash:
        raise MediaUnavailable("the file at the enrolled path no longer holds the enrolled photo")
    try:
        image = decode_image(data, "the enrolled photo")  # the one pixel cap, before decoding
    except InputError as exc:
        raise MediaUnavailable(str(exc)) from None
    scale = SHOWN_SIDE / max(image.shape[:2])
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise MediaUnavailable("the enrolled photo could not be encoded as JPEG")
    return jpeg.tobytes()


def enrolled_photo(
    db: Database, thumbnails: ThumbnailStore | None, media_dirs: Sequence[str], media_id: int
) -> Path | bytes:
    """Enrolled media ``media_id`` as an image: the thumbnail file of the track it was enrolled from, or the JPEG
    bytes of the enrolled photo; :class:`MediaUnavailable` (saying why) for anything else."""
    with db.session() as session:
        media = session.get(Media, media_id)
        if media is None:
            raise MediaUnavailable(f"enrolled media {media_id}: not in the gallery")
        path, content_hash, from_track = media.path, media.content_hash, media.kind == "track"
        rel = (
            session.scalar(select(Track.thumbnail).where(Track.id == media.track_pk))
            if from_track and media.track_pk is not None
            else None
        )
        url, note = _media_url(media, media_dirs)
    if url is None:
        raise MediaUnavailable(f"enrolled media {media_id}: {note}")
    if not from_track:
        return _photo_jpeg(Path(path).resolve(), content_hash)
    if rel is None or thumbnails is None:
        raise MediaUnavailable(f"enrolled media {media_id}: the track it was enrolled from has no thumbnail")
    try:
        file = thumbnails.resolve(rel)
    except ThumbnailPathError:
        raise MediaUnavailable(f"enrolled media {media_id}: its track's thumbnail path is unsafe") from None
    if not file.is_file():
        raise MediaUnavailable(f"enrolled media {media_id}: its track's thumbnail is not in the store")
    return file
