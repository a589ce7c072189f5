"""Errors of the application that mean "bad input": the CLI prints them as one line with exit code 2."""

from core.errors import UserError

__all__ = ["PipelineError", "SourceError"]


class PipelineError(UserError):
    """Base of the application's user-facing errors; the message is one line saying expected versus got."""


class SourceError(PipelineError):
    """A video source that cannot be opened or holds no decodable video."""
