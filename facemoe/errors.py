"""Errors of the model package: each message says what was expected and what was found.

:class:`FaceMoEError` is the package's root, a :class:`core.errors.UserError` (one line, exit code 2 on the
command line). A bad image or crop is :class:`core.errors.InputError`, re-exported here.
"""

from core.errors import InputError, UserError

__all__ = ["CheckpointError", "FaceMoEError", "InputError"]


class FaceMoEError(UserError):
    """Base of the model package's user-facing errors (bad checkpoint, bad settings, bad protocol file, ...)."""


class CheckpointError(FaceMoEError):
    """A checkpoint that cannot be found, read or fitted to the model."""
