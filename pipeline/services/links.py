"""The web app's URLs of a logged track, the one place they are made: its page, its context snapshot and its best
crop. The feed (:mod:`pipeline.web.feed`) gives them relative to the app; alerts (:mod:`pipeline.sinks.alerts`)
absolute, below ``alerts.base_url``."""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["thumbnail_url", "track_links"]


def thumbnail_url(rel: str | None, base: str = "") -> str | None:
    """The URL of a file of the thumbnail store (``<base>/thumbnails/<path>``; ``rel``: its store-relative path),
    None for none."""
    return f"{base.rstrip('/')}/thumbnails/{quote(rel)}" if rel else None


def track_links(
    ref: str, crop: str | None = None, snapshot: str | None = None, base: str = ""
) -> dict[str, str | None]:
    """``track_url``, ``snapshot_url`` and ``crop_url`` of the track ``ref`` (``RUN:TRACK``) whose best crop and
    snapshot are ``crop`` and ``snapshot`` (store-relative paths, None: none); ``base``: the app's address (e.g.
    ``https://host:8000/app``), empty for URLs relative to the app's root."""
    return {
        "track_url": f"{base.rstrip('/')}/track/{quote(ref, safe=':')}",
        "snapshot_url": thumbnail_url(snapshot, base),
        "crop_url": thumbnail_url(crop, base),
    }
