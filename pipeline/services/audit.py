"""Recording what commands and the web app do in the audit trail (:mod:`gallery.audit`).

A :class:`Trail` is the chain of one database with where its head is kept (``gallery.audit.head_file``, the
storage folder, or beside a SQLite file). :func:`audited` wraps one action: the entry is appended when the action
ends, ``ok``, or ``failed``/``denied`` with the reason when it raises (the error then goes on). A command's actor
is the operating-system account (:func:`cli_actor`, kind ``os``); the web app's is ``request.state.actor``.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gallery.audit import append, head_path
from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.errors import AuthError, StorageError

logger = logging.getLogger(__name__)

__all__ = ["Action", "Trail", "audited", "cli_actor", "sha256", "system_trail", "trail_of"]

DENIED = (AuthError, PermissionError)  # an action refused to its actor rather than failed
MAX_REASON = 500  # characters of a failure's reason kept in the entry


def cli_actor() -> tuple[str, str]:
    """Who runs a command: the operating-system account (``getpass.getuser``; ``uid:N`` when it has no name),
    kind ``os``."""
    try:
        return getpass.getuser(), "os"
    except (KeyError, OSError):
        return f"uid:{os.getuid()}", "os"


def sha256(data: bytes) -> str:
    """SHA-256 (hex) of ``data``: how the trail names a photo searched with."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Trail:
    """The audit chain of ``db`` and the file its head is kept in (None: not kept)."""

    db: Database
    head: Path | None

    def append(self, actor: str, actor_kind: str, action: str, objects=(), details=None, result="ok") -> int:
        return append(self.db, actor, actor_kind, action, objects, details, result, head=self.head)


def trail_of(db: Database, config: GalleryConfig | None = None) -> Trail:
    """The trail of ``db`` with the head where ``config`` (``gallery.audit.head_file``, ``storage_dir``) puts it."""
    config = config or GalleryConfig()
    return Trail(db, head_path(db, config.audit.head_file, config.storage_dir))


@dataclass
class Action:
    """One action being recorded: what it acts on and its details, filled in while it runs; ``result`` may be
    set to ``denied``."""

    objects: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
    result: str = "ok"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:MAX_REASON]


@contextmanager
def audited(
    trail: Trail,
    action: str,
    objects=(),
    details: dict | None = None,
    actor: tuple[str, str] | None = None,
) -> Iterator[Action]:
    """Record ``action`` by ``actor`` (default: :func:`cli_actor`) once the block ends: ``ok`` (or what the block
    set), ``denied`` when it raised an :class:`AuthError`, else ``failed``, with ``details["reason"]``. A failed
    action whose entry cannot be written (the storage that failed it refuses writes too) is logged, the action's
    error goes on; an entry of a successful action that cannot be written is an error."""
    name, kind = actor or cli_actor()
    record = Action(list(objects), dict(details or {}))
    try:
        yield record
    except BaseException as exc:
        result = "denied" if isinstance(exc, DENIED) else "failed"
        record.details["reason"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else _reason(exc)
        try:
            trail.append(name, kind, action, record.objects, record.details, result)
        except StorageError as err:
            logger.info("audit entry of the failed %s not written: %s", action, err)
        except Exception:
            logger.warning("audit entry of the failed %s not written", action, exc_info=True)
        raise
    trail.append(name, kind, action, record.objects, record.details, record.result)


def system_trail(system) -> Trail:
    """The trail of a built :class:`pipeline.build.System`'s gallery, the head where its config puts it."""
    return trail_of(system.gallery.db, system.gallery.config)
