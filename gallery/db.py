"""Opening a gallery database: URL checks, SQLite pragmas, connection test, Alembic schema upgrade,
sessions.

Schema creation and upgrades are serialized and atomic, so that commands started together on a new database
all succeed and a command killed while creating the schema leaves nothing half made:

- SQLite: a lock file beside the database (``<db>.lock``, ``flock``) serializes them; a new database is made
  in a temporary file beside it and renamed into place once its schema is complete; an upgrade of an existing
  file runs in one ``BEGIN IMMEDIATE`` transaction (SQLite's DDL is transactional).
- PostgreSQL: a session advisory lock (``pg_advisory_lock``) serializes them; the upgrade runs in one
  transaction.

New database files (and their ``-wal`` and ``-shm`` files, which SQLite creates with the database's mode) and
the lock file are readable by their owner only (0600). A PostgreSQL URL without a password takes the one in
``FACEMOE_DB_PASSWORD`` when it is set; :attr:`Database.shown` never shows it. A SQLite URI
(``sqlite:///file:PATH?mode=ro&uri=true``) names its file as a path does.

A write that the storage refuses, on any connection of the engine (:func:`storage_error`: a read-only SQLite
file or ``mode=ro`` URI, a PostgreSQL read-only transaction or standby, a full disk or database), is raised as
:class:`gallery.errors.StorageError` naming the database, so every command ends with one line; the transaction
it was part of is rolled back.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

try:
    import fcntl
except ImportError:  # not POSIX: schema creation is not serialized between processes
    fcntl = None

from gallery.errors import DatabaseError, StorageError

logger = logging.getLogger(__name__)

__all__ = ["Database", "storage_error"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BACKENDS = ("sqlite", "postgresql")
PASSWORD_ENV = "FACEMOE_DB_PASSWORD"
SCHEMA_LOCK_TIMEOUT_S = 120.0  # longest wait for another command's schema creation or upgrade
PG_SCHEMA_LOCK = 0x46_4D_6F_45_5F_73_63_68  # pg_advisory_lock key of the gallery schema ("FMoE_sch")
SQLITE_READONLY, SQLITE_FULL = 8, 13  # SQLite primary result codes (extended codes keep them in the low byte)
SQLITE_IOERR_WRITE = 778  # a write(2) that failed for another reason than ENOSPC: a quota, a file-size limit
PG_READ_ONLY = ("25006",)  # read_only_sql_transaction (also a hot standby)
PG_FULL = ("53100", "53200")  # disk_full, out_of_memory
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # no room: disk, quota, file size limit


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _sqlite_transactional(dbapi_conn, _record) -> None:
    """For migrations: let SQLAlchemy's ``begin`` event emit BEGIN (pysqlite would run DDL outside any
    transaction), and foreign keys off, so that a table rebuilt by a batch migration does not cascade-delete
    the rows that point at it."""
    dbapi_conn.isolation_level = None
    _sqlite_pragmas(dbapi_conn, _record)
    dbapi_conn.execute("PRAGMA foreign_keys=OFF")


def _reason(exc: SQLAlchemyError) -> str:
    """The first line of a driver error, without SQLAlchemy's wrapping."""
    return str(exc.orig if getattr(exc, "orig", None) is not None else exc).strip().splitlines()[0]


def storage_error(exc: BaseException, where: str) -> StorageError | None:
    """A :class:`StorageError` naming ``where`` (a database, a file) when ``exc`` says the storage refuses writes
    (read-only) or has no room (full), else None. ``exc``: a driver error (SQLAlchemy's or the DBAPI's) or an
    :class:`OSError`."""
    if isinstance(exc, OSError):
        if exc.errno in FULL_ERRNOS:
            return StorageError(
                f"{where}: expected room to write, got {exc.strerror} (free space, then rerun)"
            )
        if exc.errno == errno.EROFS:
            return StorageError(f"{where}: expected writable storage, got {exc.strerror}")
        return None
    orig = getattr(exc, "orig", None) or exc
    code = (getattr(orig, "sqlite_errorcode", None) or 0) & 0xFF
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    lowered = text.lower()
    if code == SQLITE_READONLY or state in PG_READ_ONLY or "readonly database" in lowered:
        return StorageError(
            f"{where}: expected a writable database, got a read-only one ({text}); open it with write access"
        )
    full = code == SQLITE_FULL or getattr(orig, "sqlite_errorcode", None) == SQLITE_IOERR_WRITE
    if full or state in PG_FULL or "database or disk is full" in lowered:
        return StorageError(
            f"{where}: expected room to write, got a full disk or database ({text}); free space, then rerun "
            "(an interrupted run resumes)"
        )
    return None


def _head() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


class Database:
    """A connected gallery database (``sqlite:///FILE`` or ``postgresql+psycopg://...``) at the newest schema.

    ``create=False`` refuses a missing SQLite file or a database without the gallery schema instead of
    creating it (for read-only commands such as ``query`` and ``serve``). Raises :class:`DatabaseError` with
    the reason.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = self._parse(url)
        shown = self.url.render_as_string(hide_password=True)
        # no password; a URI's "file:" as given
        self.shown = unquote(shown) if self.backend == "sqlite" else shown
        if self.backend == "sqlite":
            self._check_sqlite_path(create)
            if create and not self.sqlite_path.exists():
                self._create_sqlite_file()
        self.engine = self._connect()
        try:
            self._ensure_schema(create)
        except BaseException:
            self.engine.dispose()
            raise
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def _parse(url: str) -> URL:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise DatabaseError(
                f"database URL: expected sqlite:///FILE or postgresql+psycopg://..., got {url!r}"
            ) from exc
        if parsed.get_backend_name() not in BACKENDS:
            raise DatabaseError(
                f"database URL: expected a sqlite or postgresql URL, got "
                f"{parsed.get_backend_name()!r} in {parsed.render_as_string(hide_password=True)}"
            )
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() not in (
            "psycopg",
            "psycopg2",
        ):
            parsed = parsed.set(drivername="postgresql+psycopg")
        if (
            parsed.get_backend_name() == "postgresql"
            and parsed.password is None
            and os.environ.get(PASSWORD_ENV)
        ):
            parsed = parsed.set(password=os.environ[PASSWORD_ENV])
        return parsed

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a file-backed SQLite URL (a path, or a ``file:`` URI with ``uri=true``), else
        None."""
        if self.backend != "sqlite" or self.url.database in (None, "", ":memory:"):
            return None
        if self._sqlite_uri:
            parts = urlsplit(self.url.database)
            if self.url.query.get("mode") == "memory" or not parts.path:
                return None
            return Path(unquote(parts.path)).resolve()
        return Path(self.url.database).resolve()

    @property
    def _sqlite_uri(self) -> bool:
        return str(self.url.query.get("uri", "")).lower() in ("true", "1") and self.url.database.startswith(
            "file:"
        )

    @property
    def read_only(self) -> bool:
        """A SQLite URI opened read-only (``mode=ro``)."""
        return self._sqlite_uri and self.url.query.get("mode") == "ro"

    def _sqlite_database(self, path: Path) -> str:
        """The URL's database part for the SQLite file ``path`` (a URI again when the URL is one)."""
        return f"file:{path}" if self._sqlite_uri else str(path)

    def _storage_refused(self, context) -> None:
        """``handle_error`` hook: a write the storage refuses becomes a :class:`StorageError` naming this
        database."""
        mapped = storage_error(context.original_exception, f"database {self.shown}")
        if mapped is not None:
            raise mapped from context.original_exception

    def storage_dir(self, configured: str | None = None) -> Path | None:
        """Where index files and thumbnails go: ``configured``, else the SQLite file's folder, else None."""
        if configured:
            return Path(configured)
        path = self.sqlite_path
        return path.parent if path is not None else None

    @property
    def stem(self) -> str:
        """A file-name stem for this database: the SQLite file's stem, else a safe name from the URL."""
        if self.sqlite_path is not None:
            return self.sqlite_path.stem
        digest = hashlib.sha256(self.shown.encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', self.url.database or 'db')[:40]}-{digest}"

    def _check_sqlite_path(self, create: bool) -> None:
        path = self.sqlite_path
        if path is None:
            raise DatabaseError(f"database URL: expected a SQLite file (sqlite:///FILE), got {self.shown}")
        if not path.parent.is_dir():
            raise DatabaseError(f"cannot open {self.shown}: folder {path.parent} does not exist")
        if (not create or self.read_only) and not path.is_file():
            raise DatabaseError(f"cannot open {self.shown}: no database file at {path}")

    def _connect(self) -> Engine:
        kwargs = {"connect_args": {"connect_timeout": 5}} if self.backend == "postgresql" else {}
        engine = create_engine(self.url, **kwargs)
        event.listen(engine, "handle_error", self._storage_refused)
        if self.backend == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        try:
            with engine.connect():
                pass
        except SQLAlchemyError as exc:
            engine.dispose()
            raise DatabaseError(f"cannot connect to {self.shown}: {_reason(exc)}") from exc
        return engine

    def _ensure_schema(self, create: bool) -> None:
        head = _head()
        current = self._revision(self.engine)
        if current == head:
            return
        if not create:
            raise DatabaseError(
                f"database {self.shown}: expected the gallery schema at revision {head}, "
                f"got {current or 'no gallery schema'} (enroll first, or open it for writing)"
            )
        if self.backend == "sqlite":
            with self._file_lock():
                self._upgrade_sqlite(self.sqlite_path, head)
        else:
            self._upgrade_postgresql(head)

    @staticmethod
    def _revision(engine: Engine) -> str | None:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Hold ``<db>.lock`` (an exclusive ``flock``) for a schema change; waits at most
        :data:`SCHEMA_LOCK_TIMEOUT_S`."""
        path = self.sqlite_path.with_name(self.sqlite_path.name + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DatabaseError(f"cannot open {self.shown}: lock file {path}: {exc.strerror}") from exc
        try:
            deadline = time.monotonic() + SCHEMA_LOCK_TIMEOUT_S
            while fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DatabaseError(
                            f"database {self.shown}: expected the schema lock {path} within "
                            f"{SCHEMA_LOCK_TIMEOUT_S:g} s, got it still held by another command"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _create_sqlite_file(self) -> None:
        """Make a new SQLite database at the newest schema in a temporary file beside it, then rename it into
        place: a reader sees no file or a complete one, never half a schema. Serialized by the lock file."""
        path = self.sqlite_path
        with self._file_lock():
            if path.exists():  # another command made it while this one waited
                return
            for stale in path.parent.glob(f".{path.name}.*.creating*"):  # left by a killed command
                stale.unlink(missing_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            try:
                self._upgrade_sqlite(tmp, _head())
                os.replace(tmp, path)
            finally:
                for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-wal", "-shm", "-journal"))):
                    leftover.unlink(missing_ok=True)
        logger.info("created %s", self.shown)

    def _upgrade_sqlite(self, path: Path, head: str) -> None:
        """Upgrade the SQLite file ``path`` to ``head`` in one ``BEGIN IMMEDIATE`` transaction (the caller
        holds the lock file); closing its last connection checkpoints the WAL into the file."""
        engine = create_engine(self.url.set(database=self._sqlite_database(path)), poolclass=NullPool)
        event.listen(engine, "handle_error", self._storage_refused)
        event.listen(engine, "connect", _sqlite_transactional)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        try:
            current = self._revision(engine)
            if current == head:
                return
            logger.info("upgrading %s from %s to %s", self.shown, current, head)
            cfg = _alembic_config()
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database {self.shown}: schema upgrade failed: {_reason(exc)}") from exc
        finally:
            engine.dispose()

    def _upgrade_postgresql(self, head: str) -> None:
        """Upgrade to ``head`` in one transaction while holding the gallery's advisory lock."""
        with self.engine.connect() as conn:
            conn.execute(text(f"SET lock_timeout = '{int(SCHEMA_LOCK_TIMEOUT_S)}s'"))
            try:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_SCHEMA_LOCK})
            except SQLAlchemyError as exc:
                conn.rollback()
                conn.execute(text("RESET lock_timeout"))
                conn.commit()
                raise DatabaseError(
                    f"database {self.shown}: expected the schema lock within {SCHEMA_LOCK_TIMEOUT_S:g} s, "
                    f"got {_reason(exc)}"
                ) from exc
            conn.commit()
            try:
                current = MigrationContext.configure(conn).get_current_revision()
                conn.commit()
                if current != head:
                    logger.info("upgrading %s from %s to %s", self.shown, current, head)
                    cfg = _alembic_config()
                    with conn.begin():
                        cfg.attributes["connection"] = conn
                        command.upgrade(cfg, "head")
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_SCHEMA_LOCK})
                conn.execute(text("RESET lock_timeout"))
                conn.commit()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: commits on success, rolls back on any exception."""
        with self.sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
