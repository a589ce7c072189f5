"""A file source known by its content: the same video under another path or name is the same source.

:func:`content_key` hashes a file's size and sampled blocks (a few MB read at most, however large the file);
:func:`find_source` finds the source a file (or camera) is logged under: by content key first, else by name.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from gallery.errors import GalleryError
from gallery.models import Source

logger = logging.getLogger(__name__)

__all__ = ["BLOCK_BYTES", "MIDDLE_BLOCKS", "ContentKeyError", "content_key", "find_source", "new_source_name"]

BLOCK_BYTES = 64 * 1024  # one sampled block
MIDDLE_BLOCKS = 30  # evenly spaced blocks between the first and the last: 32 blocks, 2 MiB read at most
_VERSION = b"facemoe content key 1\0"  # a new sampling rule must give new keys


class ContentKeyError(GalleryError):
    """A file whose content cannot be read to identify it."""


def _offsets(size: int) -> list[int]:
    """Start offsets of the sampled blocks of a file of ``size`` bytes: the whole file when it is small, else the
    first block, ``MIDDLE_BLOCKS`` evenly spaced ones and the last."""
    blocks = MIDDLE_BLOCKS + 2
    if size <= blocks * BLOCK_BYTES:
        return list(range(0, size, BLOCK_BYTES))
    span = size - BLOCK_BYTES
    return [span * i // (blocks - 1) for i in range(blocks)]


def content_key(path: str | Path) -> str:
    """The content key of the file at ``path``: SHA-256 (64 hex characters) of its size and sampled blocks.

    Equal files have equal keys wherever they lie; files of different sizes never share one; files of one size
    that differ only outside the sampled blocks would (video files do not: every block holds compressed frames).
    Raises :class:`ContentKeyError` when the file cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest = hashlib.sha256(_VERSION + size.to_bytes(8, "little"))
            for offset in _offsets(size):
                f.seek(offset)
                digest.update(f.read(BLOCK_BYTES))
    except OSError as exc:
        raise ContentKeyError(
            f"{path}: expected a readable file to identify by content, got {exc.strerror or exc}"
        ) from exc
    return digest.hexdigest()


def find_source(session: Session, name: str, key: str | None, uri: str | None = None) -> Source | None:
    """The source logged under content ``key`` when there is one, else the one named ``name``; None when neither.

    A camera (``key`` None) is found by its name. A file source named ``name`` is another file when its own key
    differs, or, logged before content keys, when its ``uri`` is not ``uri`` (the same relative path in another
    folder): None."""
    if key is not None:
        found = session.scalar(select(Source).where(Source.content_key == key))
        if found is not None:
            return found
    found = session.scalar(select(Source).where(Source.name == name))
    if found is None or key is None:
        return found
    other = found.content_key not in (None, key)
    if other or (found.content_key is None and None not in (uri, found.uri) and found.uri != uri):
        logger.info("source %r: logged from another file before: a new source", name)
        return None
    return found


def new_source_name(session: Session, name: str, key: str | None) -> str:
    """The name of a new source for ``name``: ``name`` itself, or, when another file once logged under that path
    holds it, ``name`` followed by the first 12 characters of ``key`` (names are unique)."""
    if key is None or session.scalar(select(Source.id).where(Source.name == name)) is None:
        return name
    suffix = f" ({key[:12]})"
    return name[: 500 - len(suffix)] + suffix
