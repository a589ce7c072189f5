"""Errors of the model package: each message says what was expected and what was found."""


class FaceMoEError(Exception):
    """Base of the model package's user-facing errors (bad checkpoint, bad input image, ...)."""


class CheckpointError(FaceMoEError):
    """A checkpoint that cannot be found, read or fitted to the model."""


class InputError(FaceMoEError):
    """An input image or batch that is not what the model takes."""
