"""The application config: every package's sections in one YAML file, loaded once for every command.

``load_config(path, overrides)`` reads a YAML file (``None``: the packaged ``configs/default.yaml``), applies
``--set a.b=c`` overrides and validates everything with :mod:`core.config`; any problem is a
:class:`core.errors.ConfigError` in one line naming the offending key. A relative path in a config file
(model files, storage folders) is taken relative to that file's folder; a relative path given with ``--set`` is
taken relative to the working directory.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from core.config import Section, apply_overrides, read_yaml, validate
from gallery.config import GalleryConfig
from pipeline.live.config import LiveConfig
from pipeline.runners.recording_time import check_name_pattern
from stages.config import (
    AggregateConfig,
    DetectConfig,
    EmbedConfig,
    MatchConfig,
    QualityConfig,
    ShotConfig,
    TrackConfig,
)

__all__ = [
    "AppConfig",
    "OutputConfig",
    "RunnerConfig",
    "SourceConfig",
    "default_config_path",
    "load_config",
]

logger = logging.getLogger(__name__)


class SourceConfig(Section):
    stride: int = Field(1, ge=1, le=1000, description="keep every n-th decoded frame")
    target_fps: float | None = Field(
        None, gt=0, le=1000, description="keep frames at about this rate (by timestamp); null = no rate limit"
    )
    start: float = Field(0.0, ge=0, le=1e7, description="first second of the video to process")
    end: float | None = Field(None, gt=0, le=1e7, description="last second to process; null = to the end")
    decode_threads: int = Field(2, ge=0, le=64, description="FFmpeg decoder threads; 0 = FFmpeg's choice")
    queue_size: int = Field(16, ge=1, le=1024, description="decoded frames buffered ahead of detection")
    max_pts_jump_s: float = Field(
        10.0,
        gt=0,
        le=86400,
        description="formats whose timestamps may restart (MPEG-TS and other streams): presentation time jumping "
        "ahead by more than this (s) from one frame to the next is a discontinuity, unwrapped like a step back",
    )
    recorded_at_pattern: str | None = Field(
        None,
        min_length=2,
        max_length=200,
        description="when neither --recorded-at nor the container's creation_time says when a file was "
        "recorded: a strptime format searched in the file name, e.g. '%Y%m%d_%H%M%S' for cam1_20260301_101500.mp4 "
        "(the first match is the wall clock of the first frame); null = not from the name",
    )
    recorded_at_zone: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="IANA time zone ('UTC', 'Europe/Paris') of the times recorded_at_pattern reads; needed exactly "
        "when the pattern has no %z",
    )

    @model_validator(mode="after")
    def _window(self) -> SourceConfig:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end must be after start, got start={self.start} end={self.end}")
        return self

    @model_validator(mode="after")
    def _recorded_at(self) -> SourceConfig:
        if self.recorded_at_pattern is not None:
            check_name_pattern(self.recorded_at_pattern, self.recorded_at_zone)
        elif self.recorded_at_zone is not None:
            raise ValueError(
                f"recorded_at_zone is for recorded_at_pattern, got a zone {self.recorded_at_zone!r} and no pattern"
            )
        return self


class RunnerConfig(Section):
    best_k: int = Field(5, ge=1, le=1000, description="embed at most this many best crops per track")
    improve_margin: float = Field(
        0.1,
        ge=0.0,
        le=10.0,
        description="runs that watch open tracks (watch-list alerts): a crop beating the track's best embedded "
        "quality by this fraction is embedded at once",
    )
    embed_early: bool = Field(
        False,
        description="embed crops while tracks are open (as they improve) instead of each track's best_k at its "
        "end; on by itself when open tracks are watched (watch-list alerts) and for Ray camera actors",
    )
    embed_all: bool = Field(
        False, description="embed every detection (no quality gating; for comparison only)"
    )
    crops_per_second: float = Field(
        2.0,
        ge=0.0,
        le=1000.0,
        description="with decisive_margin > 0: an ending track asks for this many crops per second it lasted (at "
        "least one, at most best_k) and gets more, up to best_k, only while its match is not decisive; 0 = it asks "
        "for best_k",
    )
    first_crops: int = Field(
        2,
        ge=1,
        le=1000,
        description="with decisive_margin > 0: at most this many of an ending track's best crops are embedded in "
        "its first round; more only when its match is not decisive after it",
    )
    decisive_margin: float = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description="cosine margin that makes an ending track's match decisive (top-1 score this far from every "
        "threshold in force, and, above one, this far ahead of the top-2): such a track gets no more crops; 0 (the "
        "default) = every track embeds all its best_k crops, so its template does not depend on who is enrolled",
    )
    queue_size: int = Field(8, ge=1, le=1024, description="batches buffered between detection and embedding")
    share_cores: bool = Field(
        False,
        description="a FaceMoE embedder on the CPU shares the cores with the detector of its process: its torch "
        "threads are every core while detection idles, all but detection's (detect.threads, all but one at most) "
        "while it runs (false: torch's own thread count throughout)",
    )
    cores: int = Field(
        0,
        ge=0,
        le=1024,
        description="cores detection and embedding share; 0 = those this process may run on (its CPU affinity, "
        "at most OMP_NUM_THREADS where set)",
    )


class OutputConfig(Section):
    thumbnail_size: int = Field(
        112, ge=16, le=1024, description="side of the saved best-crop thumbnails (px)"
    )


class AppConfig(Section):
    source: SourceConfig = Field(default_factory=SourceConfig, description="video decoding")
    detect: DetectConfig = Field(..., description="face detector")
    track: TrackConfig = Field(default_factory=TrackConfig, description="multi-face tracker")
    shot: ShotConfig = Field(default_factory=ShotConfig, description="shot-cut detection")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="per-crop quality")
    embed: EmbedConfig = Field(..., description="face embedder")
    aggregate: AggregateConfig = Field(default_factory=AggregateConfig, description="per-track fusion")
    match: MatchConfig = Field(default_factory=MatchConfig, description="open-set gallery matching")
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="crop selection and queues")
    output: OutputConfig = Field(default_factory=OutputConfig, description="results written per track")
    gallery: GalleryConfig = Field(
        default_factory=GalleryConfig,
        description="gallery database, FAISS index, open-set threshold, match log",
    )
    live: LiveConfig = Field(
        default_factory=LiveConfig,
        description="live cameras: timeouts, reconnects, health endpoint, watchlist alerts",
    )


# Keys whose values are file or folder paths: relative ones in a config file are taken from the file's folder.
# A value without a path separator or a file suffix is a name (an insightface pack, a FaceMoE release).
_PATH_KEYS = (
    ("detect", "model"),
    ("embed", "model"),
    ("embed", "checkpoint"),
    ("gallery", "storage_dir"),
    ("gallery", "thumbnails_dir"),
)
_FILE_SUFFIXES = (".onnx", ".pt", ".pth", ".bin", ".safetensors")


def default_config_path() -> Path:
    """The ``default.yaml`` shipped with the package (``configs`` package data)."""
    return Path(str(resources.files("configs").joinpath("default.yaml")))


def _is_path(key: tuple[str, str], value: str) -> bool:
    if "://" in value:
        return False
    return key[1].endswith("_dir") or "/" in value or "\\" in value or value.endswith(_FILE_SUFFIXES)


def _resolve_paths(data: dict[str, Any], folder: Path) -> None:
    for section, key in _PATH_KEYS:
        node = data.get(section)
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, str) and value and _is_path((section, key), value):
            path = Path(value).expanduser()
            if not path.is_absolute():
                node[key] = str((folder / path).resolve())


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> AppConfig:
    """Read ``path`` (None: the packaged default), apply ``--set`` overrides, validate; one-line
    :class:`core.errors.ConfigError` on any problem."""
    path = Path(path) if path is not None else default_config_path()
    data = read_yaml(path)
    _resolve_paths(data, path.resolve().parent)
    apply_overrides(data, list(overrides))
    _resolve_paths(data, Path.cwd())  # what --set gave; every model path is absolute from here on
    return validate(AppConfig, data, str(path))
