"""The tamper-evident audit trail: append an entry, keep the chain's head outside the table, verify the chain.

Each row of ``audit`` (:class:`gallery.access_models.AuditEntry`) holds ``hash`` = SHA-256 of its canonical JSON
(:func:`entry_hash`: ``at`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, actor, actor_kind, action, objects, details, result
and ``prev_hash``, keys sorted, no spaces), ``prev_hash`` being the previous row's ``hash`` (:data:`GENESIS` for the
first). Appends are serialized so the chain never forks: ``BEGIN IMMEDIATE`` on SQLite, a transaction advisory
lock (``pg_advisory_xact_lock``) on PostgreSQL; chain order is id order.

The head (id and hash of the newest entry) is also written, after each commit, to a small file outside the table
(:func:`head_path`: ``<db file>.audit-head`` beside a SQLite database; for PostgreSQL ``gallery.audit.head_file``
or ``STORAGE_DIR/<db stem>.audit-head``), 0600, only ever moved forward (under ``flock``). With
``FACEMOE_AUDIT_KEY`` set the file also holds an HMAC-SHA256 of the head under that key, so the file cannot be
rewritten to match a shortened table without the key.

:func:`verify` walks the chain and names the first bad entry: an edited row (its content does not give its hash),
a deleted row (the next one's ``prev_hash`` is not its predecessor's hash), a cut-off end (the head kept outside
is missing or differs). Entries after the kept head (a process ended between commit and head write) are
reported, not failed. Retention (:func:`gallery.audit_retention.cut_older_than`) deletes the oldest entries and
first appends a ``audit.retention`` entry naming the first entry kept and its ``prev_hash``, which verify takes
as the start of the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import insert, select, text

from gallery.access_models import AuditEntry
from gallery.db import Database
from gallery.errors import GalleryError

try:
    import fcntl
except ImportError:  # not POSIX: head writes are not serialized between processes
    fcntl = None

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIONS",
    "GENESIS",
    "KEY_ENV",
    "RESULTS",
    "RETENTION_ACTION",
    "AuditError",
    "Verdict",
    "append",
    "canonical",
    "entry_hash",
    "head_path",
    "read_head",
    "verify",
]

GENESIS = "0" * 64  # prev_hash of the first entry
KEY_ENV = "FACEMOE_AUDIT_KEY"
PG_AUDIT_LOCK = 0x46_4D_6F_45_5F_61_75_64  # pg_advisory_xact_lock key of the audit chain ("FMoE_aud")
RETENTION_ACTION = "audit.retention"
ACTIONS = (  # every action the system records (docs/audit.md); others are accepted when they match ACTION_RE
    "search",
    "enroll",
    "remove",
    "merge",
    "identity.update",
    "rematch",
    "undo",
    "review",
    "export",
    "case.close",
    "purge",
    "watchlist.add",
    "watchlist.remove",
    "watchlist.join",
    "watchlist.leave",
    "user.add",
    "user.disable",
    "user.rotate",
    "login",
    "login.failed",
    "logout",
    "request",
    RETENTION_ACTION,
)
RESULTS = ("ok", "failed", "denied")
ACTION_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class AuditError(GalleryError):
    """An audit entry that cannot be recorded as given (bad action, result or actor)."""


def _json_value(value):
    """``value`` as JSON gives it back (tuples as lists, paths and times as text), so what is hashed is what is
    read back."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def canonical(
    at: datetime, actor: str, actor_kind: str, action: str, objects, details, result: str, prev_hash: str
) -> bytes:
    """The bytes an entry's hash is taken over: sorted-key compact JSON, ``at`` in UTC to the microsecond."""
    when = at.astimezone(timezone.utc).strftime(TIME_FORMAT)
    doc = {
        "at": when,
        "actor": actor,
        "actor_kind": actor_kind,
        "action": action,
        "objects": objects,
        "details": details,
        "result": result,
        "prev_hash": prev_hash,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(at, actor, actor_kind, action, objects, details, result, prev_hash) -> str:
    """SHA-256 (hex) of :func:`canonical`."""
    return hashlib.sha256(
        canonical(at, actor, actor_kind, action, objects, details, result, prev_hash)
    ).hexdigest()


def head_path(db: Database, head_file: str | None = None, storage_dir: str | None = None) -> Path | None:
    """Where the chain's head is kept: ``<db file>.audit-head`` beside a SQLite database; for a server database
    ``head_file`` (``gallery.audit.head_file``), else ``storage_dir/<db stem>.audit-head``, else None (not kept:
    a cut-off end is then not detected)."""
    if db.sqlite_path is not None:
        return db.sqlite_path.with_name(db.sqlite_path.name + ".audit-head")
    if head_file:
        return Path(head_file).expanduser()
    if storage_dir:
        return Path(storage_dir) / f"{db.stem}.audit-head"
    return None


def _mac(key: str, entry_id: int, digest: str) -> str:
    return hmac.new(key.encode(), f"{entry_id}:{digest}".encode(), hashlib.sha256).hexdigest()


def read_head(path: Path) -> dict | None:
    """The head kept in ``path`` (``{"id", "hash"[, "mac"]}``), None when there is no file; a file that is not one
    raises :class:`AuditError`."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuditError(f"audit head {path}: expected a JSON head, got {exc}") from None
    if not (isinstance(data, dict) and isinstance(data.get("id"), int) and isinstance(data.get("hash"), str)):
        raise AuditError(f"audit head {path}: expected {{id, hash}}, got {str(data)[:80]!r}")
    return data


def _write_head(path: Path, entry_id: int, digest: str) -> None:
    """Move the head kept in ``path`` forward to ``(entry_id, digest)`` (never back), atomically, 0600."""
    lock = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = read_head(path)
        except AuditError:
            current = None
        if current is not None and current["id"] >= entry_id:
            return
        doc = {"id": entry_id, "hash": digest}
        key = os.environ.get(KEY_ENV)
        if key:
            doc["mac"] = _mac(key, entry_id, digest)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(doc) + "\n")
        os.replace(tmp, path)
    finally:
        os.close(lock)


def append(
    db: Database,
    actor: str,
    actor_kind: str,
    action: str,
    objects=(),
    details: dict | None = None,
    result: str = "ok",
    *,
    head: Path | None | bool = True,
) -> int:
    """Append one entry to the chain and return its id. ``objects``: what it acted on (names, references, hashes),
    ``details``: its parameters and, when it failed, ``reason``; ``result``: one of :data:`RESULTS`. ``head``: the
    head file (True: :func:`head_path` of ``db``; None/False: not written)."""
    if not ACTION_RE.match(action):
        raise AuditError(f"audit action: expected lower-case letters, digits, '._-', got {action!r}")
    if result not in RESULTS:
        raise AuditError(f"audit result: expected one of {', '.join(RESULTS)}, got {result!r}")
    if not actor or len(actor) > 200 or not actor_kind or len(actor_kind) > 16:
        raise AuditError(f"audit actor: expected a name and a kind, got {actor!r} ({actor_kind!r})")
    objects = _json_value(list(objects))
    details = _json_value(dict(details or {}))
    at = datetime.now(timezone.utc)
    with db.engine.connect() as conn:
        if db.backend == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_AUDIT_LOCK})
        last = conn.execute(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).scalar()
        prev = last or GENESIS
        digest = entry_hash(at, actor, actor_kind, action, objects, details, result, prev)
        row = dict(
            at=at,
            actor=actor,
            actor_kind=actor_kind,
            action=action,
            objects=objects,
            details=details,
            result=result,
            prev_hash=prev,
            hash=digest,
        )
        entry_id = conn.execute(insert(AuditEntry).values(**row)).inserted_primary_key[0]
        conn.commit()
    path = head_path(db) if head is True else (head or None)
    if path is not None:
        _write_head(path, entry_id, digest)
    logger.debug("audit %d: %s %s %s", entry_id, actor, action, result)
    return entry_id


@dataclass
class Verdict:
    """What :func:`verify` found: ``ok``; ``entries`` checked; ``bad_id`` and ``reason`` of the first bad entry;
    ``notes``: what is not an error but worth saying (entries after the kept head, no head kept)."""

    ok: bool
    entries: int
    bad_id: int | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def _rows(db: Database, batch: int = 1000):
    """Every entry in id order, fetched ``batch`` at a time."""
    after = 0
    with db.session() as session:
        while True:
            rows = session.scalars(
                select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id).limit(batch)
            ).all()
            if not rows:
                return
            yield from rows
            after = rows[-1].id


def _start(rows_first: AuditEntry, checkpoint: dict | None) -> str | None:
    """Why the first remaining entry cannot start the chain, or None when it can."""
    if rows_first.prev_hash == GENESIS:
        return None
    if checkpoint is None:
        return "its prev_hash is not the chain's start and no audit.retention entry accounts for what came before"
    if (
        checkpoint.get("first_id") != rows_first.id
        or checkpoint.get("first_prev_hash") != rows_first.prev_hash
    ):
        return (
            f"the newest audit.retention entry kept from entry {checkpoint.get('first_id')} on; the chain starts "
            "elsewhere (entries were deleted at its start)"
        )
    return None


def verify(db: Database, head: Path | None | bool = True) -> Verdict:
    """Walk the chain in id order and name the first bad entry (see the module's description). ``head``: the head
    file (True: :func:`head_path` of ``db``; None/False: not checked)."""
    path = head_path(db) if head is True else (head or None)
    kept = read_head(path) if path is not None else None
    key = os.environ.get(KEY_ENV)
    notes: list[str] = []
    if kept is not None and key:
        if "mac" not in kept or not hmac.compare_digest(
            str(kept["mac"]), _mac(key, kept["id"], kept["hash"])
        ):
            return Verdict(
                False, 0, kept["id"], f"the head kept in {path} does not carry a valid {KEY_ENV} HMAC"
            )
    elif kept is not None and "mac" in kept:
        notes.append(f"the head's HMAC was not checked ({KEY_ENV} is not set)")
    count, prev, first, last_id, checkpoint = 0, None, None, None, None
    for row in _rows(db):
        count += 1
        if first is None:
            first = row
        elif row.prev_hash != prev.hash:
            return Verdict(
                False,
                count,
                row.id,
                f"its prev_hash does not match entry {prev.id}'s hash: entry {prev.id} was edited or entries "
                "between them were deleted",
            )
        if (
            entry_hash(
                row.at,
                row.actor,
                row.actor_kind,
                row.action,
                row.objects,
                row.details,
                row.result,
                row.prev_hash,
            )
            != row.hash
        ):
            return Verdict(False, count, row.id, "its content does not match its hash: the row was edited")
        if row.action == RETENTION_ACTION:
            checkpoint = row.details
        prev, last_id = row, row.id
    if first is not None:
        why = _start(first, checkpoint)
        if why is not None:
            return Verdict(False, count, first.id, why)
    if kept is not None:
        bad = _head_mismatch(db, kept, last_id)
        if bad is not None:
            return Verdict(False, count, kept["id"], bad)
        after = _after_head(db, kept["id"])
        if after:
            notes.append(f"{after} entries after the head kept in {path} (written while a process ended)")
    elif path is None:
        notes.append(
            "no head kept outside the table (set gallery.audit.head_file): a cut-off end is not detected"
        )
    elif count:
        return Verdict(False, count, last_id, f"no head file at {path} although the table holds entries")
    return Verdict(True, count, notes=notes)


def _head_mismatch(db: Database, kept: dict, last_id: int | None) -> str | None:
    with db.session() as session:
        stored = session.scalar(select(AuditEntry.hash).where(AuditEntry.id == kept["id"]))
    if stored is None:
        end = f"the table ends at entry {last_id}" if last_id is not None else "the table is empty"
        return f"the head kept outside the table names entry {kept['id']}, which is missing: {end} (cut off)"
    if stored != kept["hash"]:
        return "its hash differs from the head kept outside the table (the row was replaced)"
    return None


def _after_head(db: Database, head_id: int) -> int:
    with db.session() as session:
        return len(session.scalars(select(AuditEntry.id).where(AuditEntry.id > head_id)).all())
