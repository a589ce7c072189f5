"""The one reference of a logged track: ``RUN:TRACK`` (the run's id and the track's number within that run).

Every table, JSON/CSV row, page, alert and command argument shows and takes this form and only this form, so a
number read off one table can never name another track.
"""

from __future__ import annotations

import re

from gallery.errors import QueryError

__all__ = ["REF_PATTERN", "REF_TEXT", "TrackRefError", "parse_track_ref", "track_ref"]

REF_PATTERN = r"^\d{1,18}:\d{1,18}$"  # a reference as a URL path or query parameter takes it
REF_TEXT = "the track's reference RUN:TRACK (the ref column of every table)"
_REF = re.compile(r"^\s*(\d{1,18}):(\d{1,18})\s*$")


class TrackRefError(QueryError):
    """A track reference that is not ``RUN:TRACK``."""


def track_ref(run_id: int, track_id: int) -> str:
    """The reference of track ``track_id`` of run ``run_id``: ``"RUN:TRACK"``."""
    return f"{int(run_id)}:{int(track_id)}"


def parse_track_ref(ref: str) -> tuple[int, int]:
    """``"RUN:TRACK"`` -> ``(RUN, TRACK)``; anything else (a bare number included) raises :class:`TrackRefError`."""
    found = _REF.match(str(ref))
    if found is None:
        shown = str(ref)[:80]
        raise TrackRefError(
            f"track {shown!r}: expected a track reference RUN:TRACK (the ref column of 'query tracks'), got "
            f"{'a bare number' if shown.strip().isdigit() else 'something else'}"
        )
    return int(found.group(1)), int(found.group(2))
