"""When a video file was recorded: the wall clock of its stream time 0, and where that comes from.

In order: a time given by the user (``process --recorded-at``, origin ``given``), the container's
``creation_time`` tag (MP4/MOV, Matroska; format metadata, else the video stream's; origin ``container``), the
file name read with ``source.recorded_at_pattern`` (origin ``filename``), else unknown (``None``, origin
``unknown``). Every time is timezone-aware.

A file-name pattern is a ``strptime`` format searched anywhere in the file name (not its folders), e.g.
``%Y%m%d_%H%M%S`` finds ``cam1_20260301_101500.mp4``; the first match counts. Names without a zone (no ``%z`` in
the pattern) are read in ``source.recorded_at_zone`` (an IANA zone name).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["check_name_pattern", "creation_time", "recording_time", "time_from_name", "zone"]

logger = logging.getLogger(__name__)

# strptime directives a file-name pattern may use, with what each matches in a name (fixed widths where strptime
# takes 1 or 2 digits, so that runs of digits like 20260301 split the way the pattern says)
_DIRECTIVES = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{2}",
    "d": r"\d{2}",
    "H": r"\d{2}",
    "I": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "f": r"\d{1,6}",
    "j": r"\d{3}",
    "b": r"[A-Za-z]{3}",
    "B": r"[A-Za-z]{3,9}",
    "p": r"(?:AM|PM|am|pm)",
    "z": r"(?:Z|[+-]\d{2}:?\d{2})",
    "%": "%",
}
_NEEDED = (("Y", "y"), ("m", "b", "B", "j"), ("d", "j"), ("H", "I"))


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``UTC``, ``Europe/Paris``); ValueError saying so when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"expected an IANA time zone name like 'UTC' or 'Europe/Paris', got {name!r}"
        ) from None


def _name_regex(pattern: str) -> re.Pattern[str]:
    parts, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char != "%":
            parts.append(re.escape(char))
            i += 1
            continue
        code = pattern[i + 1 : i + 2]
        if code not in _DIRECTIVES:
            raise ValueError(
                f"expected strptime directives among {['%' + d for d in _DIRECTIVES]}, got '%{code}' in {pattern!r}"
            )
        parts.append(_DIRECTIVES[code])
        i += 2
    return re.compile("".join(parts))


def check_name_pattern(pattern: str, zone_name: str | None) -> None:
    """ValueError unless ``pattern`` is a usable file-name pattern (known directives, a date and an hour) and a
    zone is given exactly when the pattern has none (``%z``)."""
    _name_regex(pattern)
    codes = set(re.findall(r"%(.)", pattern.replace("%%", "")))
    missing = [" or ".join("%" + c for c in group) for group in _NEEDED if not codes & set(group)]
    if missing:
        raise ValueError(
            f"expected a date and an hour in the pattern, {pattern!r} has no {', '.join(missing)}"
        )
    if "z" in codes and zone_name is not None:
        raise ValueError(
            f"the pattern {pattern!r} reads the zone from the name (%z), so expected no zone, got {zone_name!r}"
        )
    if "z" not in codes and zone_name is None:
        raise ValueError(
            f"the pattern {pattern!r} has no zone (%z): expected recorded_at_zone (e.g. 'UTC'), got none"
        )
    if zone_name is not None:
        zone(zone_name)


def time_from_name(name: str, pattern: str, zone_name: str | None) -> datetime | None:
    """The first time ``pattern`` finds in the file name ``name`` (aware; ``zone_name`` for names without a zone),
    or None when none matches or the match is no valid time."""
    found = _name_regex(pattern).search(name)
    if found is None:
        return None
    text = found.group(0)
    try:
        value = datetime.strptime(text, pattern)
    except ValueError as exc:
        logger.warning(
            "%s: %r matches recorded_at_pattern %r but is no valid time (%s)", name, text, pattern, exc
        )
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=zone(zone_name or "UTC"))


def creation_time(*metadata: dict[str, str]) -> datetime | None:
    """The first parseable ``creation_time`` tag of ``metadata`` (PyAV container then stream metadata), aware;
    a time without zone is UTC (what MP4/MOV and Matroska store)."""
    for tags in metadata:
        text = (tags or {}).get("creation_time")
        if not text:
            continue
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            logger.warning("creation_time tag %r is no ISO 8601 time: ignored", text)
            continue
        value = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        if value.timestamp() <= 0:  # a zeroed field, not a recording time
            continue
        return value
    return None


def recording_time(
    path: Path,
    given: datetime | None,
    metadata: tuple[dict[str, str], ...],
    pattern: str | None,
    zone_name: str | None,
) -> tuple[datetime | None, str]:
    """``(recorded_at, time_origin)`` of a file: ``given``, else its ``creation_time`` tag in ``metadata``, else
    its name read with ``pattern``, else ``(None, "unknown")``."""
    if given is not None:
        return given, "given"
    tagged = creation_time(*metadata)
    if tagged is not None:
        return tagged, "container"
    if pattern is not None:
        named = time_from_name(path.name, pattern, zone_name)
        if named is not None:
            return named, "filename"
        logger.warning("%s: no time in the file name matches recorded_at_pattern %r", path.name, pattern)
    return None, "unknown"
