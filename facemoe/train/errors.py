"""Errors of the training recipe: each message says what was expected and what was found."""

from ..errors import FaceMoEError

__all__ = ["DatasetError", "TrainError"]


class TrainError(FaceMoEError):
    """A training run that cannot start or continue: bad settings for this machine, a mismatched resume."""


class DatasetError(TrainError):
    """A training set that cannot be used: missing, too few identities, images of the wrong size."""
