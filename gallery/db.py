"""Opening a gallery database: URL checks, SQLite pragmas, connection test, Alembic schema upgrade,
sessions."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gallery.errors import DatabaseError

logger = logging.getLogger(__name__)

__all__ = ["Database"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BACKENDS = ("sqlite", "postgresql")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


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
        self.shown = self.url.render_as_string(hide_password=True)
        if self.backend == "sqlite":
            self._check_sqlite_path(create)
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
        return parsed

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a file-backed SQLite URL, else None."""
        if self.backend != "sqlite" or self.url.database in (None, "", ":memory:"):
            return None
        return Path(self.url.database).resolve()

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
        if not create and not path.is_file():
            raise DatabaseError(f"cannot open {self.shown}: no database file at {path}")

    def _connect(self) -> Engine:
        kwargs = {"connect_args": {"connect_timeout": 5}} if self.backend == "postgresql" else {}
        engine = create_engine(self.url, **kwargs)
        if self.backend == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        try:
            with engine.connect():
                pass
        except SQLAlchemyError as exc:
            engine.dispose()
            reason = str(exc.orig if getattr(exc, "orig", None) is not None else exc).strip().splitlines()[0]
            raise DatabaseError(f"cannot connect to {self.shown}: {reason}") from exc
        return engine

    def _ensure_schema(self, create: bool) -> None:
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return
        if not create:
            raise DatabaseError(
                f"database {self.shown}: expected the gallery schema at revision {head}, "
                f"got {current or 'no gallery schema'} (enroll first, or open it for writing)"
            )
        logger.info("upgrading %s from %s to %s", self.shown, current, head)
        cfg = _alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

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
