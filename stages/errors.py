"""Errors of the stages that mean "bad input": a detector or embedder model that cannot be used."""

from core.errors import UserError

__all__ = ["ModelError", "StageError"]


class StageError(UserError):
    """Base of the stages' user-facing errors; the message says expected versus got."""


class ModelError(StageError):
    """A detector or embedder model that cannot be found, fetched or loaded."""
