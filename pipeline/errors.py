"""Errors of the video pipeline that mean "bad input": the CLI prints them as one line with exit code 2."""


class PipelineError(Exception):
    """Base of the pipeline's user-facing errors; the message is one line saying expected versus got."""


class ConfigError(PipelineError):
    """A configuration file, key or value that does not validate."""


class ModelError(PipelineError):
    """A detector or embedder model that cannot be found, fetched or loaded."""


class SourceError(PipelineError):
    """A video source that cannot be opened or holds no decodable video."""


class GalleryBuildError(PipelineError):
    """A gallery folder that cannot be turned into an index."""
