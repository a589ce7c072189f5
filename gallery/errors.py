"""Errors of the gallery package: each message says what was expected and what was found.

All derive from :class:`GalleryError`, a :class:`core.errors.UserError`, which the command line reports as one
line with exit code 2. A bad configuration is :class:`core.errors.ConfigError`, shared by every package.
"""

from core.errors import UserError

__all__ = [
    "AuthError",
    "DatabaseError",
    "EmbeddingError",
    "EnrollmentError",
    "GalleryError",
    "IdentityExistsError",
    "IdentityNotFoundError",
    "IndexFileDamagedError",
    "IndexFileError",
    "MatchLogError",
    "QueryError",
    "StorageError",
    "ThumbnailPathError",
]


class GalleryError(UserError):
    """Base of the gallery's user-facing errors (bad input, bad database, bad index file, ...)."""


class DatabaseError(GalleryError):
    """A database URL that cannot be parsed or connected to, or a database without the gallery schema."""


class StorageError(DatabaseError):
    """Storage that refuses a write: a read-only database (file mode, ``mode=ro`` URI, PostgreSQL read-only
    transaction or standby), a full disk or database. What was committed before stays consistent."""


class IdentityExistsError(GalleryError):
    """An identity name that is already taken."""


class IdentityNotFoundError(GalleryError):
    """An identity name or id that is not in the gallery."""


class EnrollmentError(GalleryError):
    """Enrollment input that cannot be used: unreadable image, empty folder, bad template file, ..."""


class EmbeddingError(GalleryError):
    """Vectors of the wrong shape, dimension or values for the gallery or the index."""


class IndexFileError(GalleryError):
    """A persisted index file that is unreadable or belongs to another embedder."""


class IndexFileDamagedError(IndexFileError):
    """A persisted index file that is truncated or garbled: rebuilt from SQL, the source of truth."""


class ThumbnailPathError(GalleryError):
    """A thumbnail path that is absolute, contains ``..`` or leaves the thumbnail store."""


class MatchLogError(GalleryError):
    """A match-log record that is invalid (bad decision, duplicate track, bad thumbnail, ...)."""


class QueryError(GalleryError):
    """A match-log query with an invalid filter (bad time range, unknown decision, page out of bounds,
    ...)."""


class AuthError(GalleryError):
    """A server configuration that would expose the API without a token."""
