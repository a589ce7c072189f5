"""The root of every user-facing error of the system.

Each package derives its own root from :class:`UserError` (``facemoe.errors.FaceMoEError``,
``stages.errors.StageError``, ``gallery.errors.GalleryError``, ``pipeline.errors.PipelineError``); the command
line reports any of them as one line with exit code 2. Messages say what was expected and what was found.
"""

__all__ = ["ConfigError", "InputError", "RunFailure", "UserError"]


class UserError(Exception):
    """Bad input from the user (a file, a value, a model, a database): one line, exit code 2."""


class ConfigError(UserError):
    """A configuration file, section, key or ``--set`` override that is missing, not YAML or does not validate."""


class InputError(UserError, ValueError):
    """An image, crop or array that is not what the code takes."""


class RunFailure(Exception):
    """A run that could not go on for a reason other than the user's input (a part of the engine that keeps
    failing after its restarts): one line, exit code 1."""
