"""The people who use the system: a name, one of three roles, an API token and an optional password.

A token is ``<token_id>.<secret>``, both random URL-safe text: ``token_id`` finds the row, the secret is stored only
as a salted SHA-256 (``sha256$<salt>$<digest>``; the secret is 256 random bits, so a fast hash suffices). It is
shown once, when it is made (:func:`add_user`, :func:`rotate_user`); rotating makes a new one and the old one stops
working. A password is stored as a salted scrypt hash (``scrypt$<n>$<r>$<p>$<salt>$<digest>``). Every comparison is
constant-time, and a name that is no user costs the same scrypt as one that is. Names follow the identity names'
rule (:func:`gallery.names.identity_name`); roles are exactly :data:`ROLES`, each allowed what the one before it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from gallery.access_models import User
from gallery.db import Database
from gallery.errors import EnrollmentError, GalleryError
from gallery.models import utcnow
from gallery.names import identity_name, lookup_name, quoted

__all__ = [
    "ROLES",
    "Account",
    "UserExistsError",
    "UserInputError",
    "UserNotFoundError",
    "add_user",
    "any_users",
    "authenticate_password",
    "authenticate_token",
    "check_role",
    "disable_user",
    "find_user",
    "hash_password",
    "list_users",
    "rank",
    "rotate_user",
    "user_name",
]

ROLES = ("viewer", "investigator", "admin")  # each allowed what the one before it is, and more
SCRYPT = (2**14, 8, 1)  # n, r, p: about 16 MiB and tens of milliseconds per password check
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_TOKEN = 200  # characters of a token; longer is none of ours


class UserInputError(GalleryError):
    """A user name, role, password or token that is refused."""


class UserExistsError(UserInputError):
    """``users add`` of a name already taken."""


class UserNotFoundError(UserInputError):
    """A user name that is no user."""


@dataclass(frozen=True)
class Account:
    """A user as the rest of the system sees it: never a hash. ``rotated_at``/``disabled_at`` None: never."""

    id: int
    name: str
    role: str
    created_at: datetime
    rotated_at: datetime | None
    disabled_at: datetime | None
    has_password: bool

    @classmethod
    def of(cls, row: User) -> Account:
        return cls(
            row.id,
            row.name,
            row.role,
            row.created_at,
            row.rotated_at,
            row.disabled_at,
            row.password_hash is not None,
        )

    def as_dict(self) -> dict:
        iso = lambda t: t.isoformat() if t is not None else None  # noqa: E731
        return {
            "name": self.name,
            "role": self.role,
            "created_at": iso(self.created_at),
            "rotated_at": iso(self.rotated_at),
            "disabled_at": iso(self.disabled_at),
            "password": self.has_password,
        }


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rank(role: str) -> int:
    """The place of ``role`` in :data:`ROLES` (0 viewer ... 2 admin)."""
    return ROLES.index(role)


def check_role(role: object) -> str:
    """``role`` if it is one of :data:`ROLES`, else a :class:`UserInputError`."""
    if role not in ROLES:
        raise UserInputError(f"role: expected one of {', '.join(ROLES)}, got {quoted(str(role))}")
    return str(role)


def user_name(name: object) -> str:
    """A new user's name under the identity names' rule, else a :class:`UserInputError`."""
    try:
        return identity_name(name, "user name")
    except EnrollmentError as exc:
        raise UserInputError(str(exc)) from None


def _lookup(name: object) -> str:
    try:
        return lookup_name(name, "user name")
    except EnrollmentError as exc:
        raise UserInputError(str(exc)) from None


def _token_hash(secret: str, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(16) if salt is None else salt
    return f"sha256${_b64(salt)}${_b64(hmac.new(salt, secret.encode(), 'sha256').digest())}"


def _token_ok(secret: str, stored: str) -> bool:
    kind, salt, digest = (stored.split("$") + ["", "", ""])[:3]
    if kind != "sha256":
        return False
    return hmac.compare_digest(_token_hash(secret, _unb64(salt)).encode(), stored.encode())


def hash_password(password: str, salt: bytes | None = None, params: tuple[int, int, int] = SCRYPT) -> str:
    """The salted scrypt hash of ``password`` (:data:`MIN_PASSWORD` to :data:`MAX_PASSWORD` characters, else a
    :class:`UserInputError`)."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        size = len(password) if isinstance(password, str) else 0
        raise UserInputError(f"password: expected {MIN_PASSWORD}-{MAX_PASSWORD} characters, got {size:,}")
    salt = secrets.token_bytes(16) if salt is None else salt
    n, r, p = params
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _password_ok(password: str, stored: str) -> bool:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        hash_password("x" * MIN_PASSWORD)  # the same cost as a check
        return False
    n, r, p = (int(x) for x in parts[1:4])
    given = hash_password(password, _unb64(parts[4]), (n, r, p))
    return hmac.compare_digest(given.encode(), stored.encode())


_DUMMY = hash_password("not a password of anyone", b"\0" * 16)  # checked for a name that is no user


def _new_token() -> tuple[str, str, str]:
    """A new token as (token, token_id, secret hash)."""
    token_id, secret = secrets.token_urlsafe(12), secrets.token_urlsafe(32)
    return f"{token_id}.{secret}", token_id, _token_hash(secret)


def any_users(db: Database) -> bool:
    """Whether the database has any user (disabled ones too)."""
    with db.session() as session:
        return session.scalar(select(User.id).limit(1)) is not None


def add_user(db: Database, name: str, role: str, password: str | None = None) -> tuple[Account, str]:
    """A new user and their token (shown once: only its hash is kept); a taken name is a
    :class:`UserExistsError`."""
    name, role = user_name(name), check_role(role)
    password_hash = hash_password(password) if password is not None else None
    token, token_id, token_hash = _new_token()
    with db.session() as session:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise UserExistsError(f"user {quoted(name)}: expected a new name, got one already taken")
        row = User(
            name=name, role=role, token_id=token_id, token_hash=token_hash, password_hash=password_hash
        )
        session.add(row)
        session.flush()
        account = Account.of(row)
    return account, token


def list_users(db: Database) -> list[Account]:
    """Every user, by name."""
    with db.session() as session:
        return [Account.of(row) for row in session.scalars(select(User).order_by(User.name))]


def find_user(db: Database, user_id: int) -> Account | None:
    """The user of ``user_id``, None when there is none."""
    with db.session() as session:
        row = session.get(User, user_id)
        return Account.of(row) if row is not None else None


def _change(db: Database, name: str, change) -> tuple[Account, str | None]:
    with db.session() as session:
        row = session.scalar(select(User).where(User.name == _lookup(name)))
        if row is None:
            raise UserNotFoundError(f"user {quoted(name)}: expected an existing user, got none of that name")
        result = change(row)
        session.flush()
        return Account.of(row), result


def disable_user(db: Database, name: str) -> Account:
    """Disable ``name``: their token, password and sessions stop working (disabling twice keeps the first time)."""

    def disable(row: User) -> None:
        if row.disabled_at is None:
            row.disabled_at = utcnow()

    return _change(db, name, disable)[0]


def rotate_user(db: Database, name: str) -> tuple[Account, str]:
    """A new token for ``name`` (shown once); the old one and every session of ``name`` stop working."""

    def rotate(row: User) -> str:
        token, row.token_id, row.token_hash = _new_token()
        row.rotated_at = utcnow()
        return token

    account, token = _change(db, name, rotate)
    assert token is not None
    return account, token


def authenticate_token(db: Database, token: str) -> Account | None:
    """The enabled user whose token is ``token``, else None."""
    token_id, dot, secret = token.partition(".") if len(token) <= MAX_TOKEN else ("", "", "")
    if not dot or not token_id or not secret:
        return None
    with db.session() as session:
        row = session.scalar(select(User).where(User.token_id == token_id))
        if row is None or not _token_ok(secret, row.token_hash) or row.disabled_at is not None:
            return None
        return Account.of(row)


def authenticate_password(db: Database, name: str, password: str) -> Account | None:
    """The enabled user ``name`` if ``password`` is theirs, else None (the same scrypt cost either way)."""
    text = name.strip() if isinstance(name, str) else ""
    with db.session() as session:
        row = None
        if 1 <= len(text) <= 200 and "\x00" not in text:
            row = session.scalar(select(User).where(User.name == text))
        stored = row.password_hash if row is not None and row.password_hash is not None else _DUMMY
        ok = _password_ok(password if isinstance(password, str) else "", stored)
        if row is None or row.password_hash is None or not ok or row.disabled_at is not None:
            return None
        return Account.of(row)
