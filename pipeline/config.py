"""Configuration schema of the video pipeline: one pydantic section per component, loaded from YAML.

``load_config(path, overrides)`` reads a YAML file, applies ``--set a.b=c`` overrides (values parsed as YAML)
and validates everything; any problem raises :class:`pipeline.errors.ConfigError` with a one-line message
naming the offending key. Relative file paths are taken relative to the working directory.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gallery.config import GalleryConfig

from .errors import ConfigError

__all__ = [
    "AggregateConfig",
    "AppConfig",
    "DetectConfig",
    "EmbedConfig",
    "MatchConfig",
    "OutputConfig",
    "QualityConfig",
    "RunnerConfig",
    "ShotConfig",
    "SourceConfig",
    "TrackConfig",
    "load_config",
    "parse_overrides",
]

logger = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    stride: int = Field(1, ge=1, le=1000, description="keep every n-th decoded frame")
    target_fps: float | None = Field(
        None, gt=0, le=1000, description="keep frames at about this rate (by timestamp); null = no rate limit"
    )
    start: float = Field(0.0, ge=0, le=1e7, description="first second of the video to process")
    end: float | None = Field(None, gt=0, le=1e7, description="last second to process; null = to the end")
    decode_threads: int = Field(2, ge=0, le=64, description="FFmpeg decoder threads; 0 = FFmpeg's choice")
    queue_size: int = Field(16, ge=1, le=1024, description="decoded frames buffered ahead of detection")

    @model_validator(mode="after")
    def _window(self) -> SourceConfig:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end must be after start, got start={self.start} end={self.end}")
        return self


class DetectConfig(_Section):
    backend: Literal["scrfd", "yunet"] = Field("scrfd", description="face detector family")
    model: str = Field(
        ...,
        min_length=1,
        max_length=1000,
        description="an .onnx file, or (scrfd) an insightface model pack name such as buffalo_l",
    )
    input_size: tuple[int, int] = Field(
        (640, 640), description="detector input width and height (frames are letterboxed into it)"
    )
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="minimum detection score")
    nms_threshold: float = Field(0.4, ge=0.0, le=1.0, description="IoU above which overlapping boxes merge")
    min_face_size: float = Field(8.0, ge=0.0, le=10000.0, description="drop faces smaller than this (px, box side)")
    max_faces: int = Field(100, ge=1, le=10000, description="keep at most this many faces per frame")
    batch_size: int = Field(4, ge=1, le=256, description="frames per detector call")
    threads: int = Field(2, ge=1, le=64, description="onnxruntime intra-op threads")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
                        description="scrfd: onnxruntime device, cpu or cuda[:N] (needs onnxruntime-gpu)")

    @model_validator(mode="after")
    def _sizes(self) -> DetectConfig:
        w, h = self.input_size
        if not (32 <= w <= 4096 and 32 <= h <= 4096) or w % 32 or h % 32:
            raise ValueError(f"input_size must be multiples of 32 within [32, 4096], got {w}x{h}")
        return self


class TrackConfig(_Section):
    high_threshold: float = Field(0.6, ge=0.0, le=1.0, description="detections at or above: first association")
    low_threshold: float = Field(0.3, ge=0.0, le=1.0, description="detections between low and high: second pass")
    new_track_threshold: float = Field(0.6, ge=0.0, le=1.0, description="unmatched detection score to start a track")
    match_iou: float = Field(0.2, ge=0.0, le=1.0, description="minimum IoU for the first association")
    low_match_iou: float = Field(0.3, ge=0.0, le=1.0, description="minimum IoU for the second association")
    max_lost_s: float = Field(1.0, ge=0.0, le=3600.0, description="a track unseen this long (seconds) ends")
    min_hits: int = Field(3, ge=1, le=1000, description="detections before a track is confirmed and reported")

    @model_validator(mode="after")
    def _order(self) -> TrackConfig:
        if self.low_threshold > self.high_threshold:
            raise ValueError(f"low_threshold must be <= high_threshold, got {self.low_threshold} > {self.high_threshold}")
        return self


class ShotConfig(_Section):
    enabled: bool = Field(True, description="end every track at a hard cut (edited footage)")
    cut_distance: float = Field(
        0.2, gt=0.0, le=1.0, description="colour-histogram distance between consecutive frames that counts as a cut"
    )


class QualityConfig(_Section):
    ref_face_size: float = Field(64.0, gt=0, le=4096, description="face size (px) counted as fully resolved")
    ref_sharpness: float = Field(100.0, gt=0, le=1e6, description="Laplacian variance counted as half sharp")
    min_face_size: float = Field(0.0, ge=0, le=4096, description="crops smaller than this are never embedded")
    min_det_score: float = Field(0.0, ge=0, le=1, description="crops scored lower are never embedded")
    max_pose: float = Field(1.0, ge=0, le=1, description="crops with a pose proxy above this are never embedded")


class EmbedConfig(_Section):
    backend: Literal["onnx", "facemoe"] = Field("facemoe", description="embedding model family")
    model: str | None = Field(None, max_length=1000, description="onnx: the embedder .onnx file")
    checkpoint: str | None = Field(
        None, max_length=1000, description="facemoe: a model.pt path or a release name (briar, tinyface)"
    )
    k: int = Field(2, ge=1, le=64, description="facemoe: experts each token is routed to")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$",
                        description="facemoe: torch device; onnx: onnxruntime device, cpu or cuda[:N]")
    precision: Literal["fp32", "fp16", "bf16", "int8"] = Field(
        "fp32", description="facemoe: inference precision; int8 on the CPU, fp16 on CUDA, bf16 on CUDA or on a CPU "
        "with AVX512-BF16 or AMX")
    channel_order: Literal["rgb", "bgr"] = Field("rgb", description="onnx: channel order the model expects")
    pixel_scale: float = Field(255.0, gt=0, le=1e4, description="onnx: pixels are divided by this first")
    mean: tuple[float, float, float] = Field((0.485, 0.456, 0.406), description="onnx: per-channel mean, subtracted")
    std: tuple[float, float, float] = Field((0.229, 0.224, 0.225), description="onnx: per-channel std, divided by")
    flip: bool = Field(True, description="add the features of the horizontally flipped crop")
    batch_size: int = Field(32, ge=1, le=4096, description="crops per embedder call")
    threads: int = Field(2, ge=1, le=64, description="onnxruntime intra-op threads")

    @model_validator(mode="after")
    def _source(self) -> EmbedConfig:
        if self.backend == "onnx" and not self.model:
            raise ValueError("backend onnx needs model (an .onnx file), got none")
        if self.backend == "facemoe" and not self.checkpoint:
            raise ValueError("backend facemoe needs checkpoint (a model.pt path or a release name), got none")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        return self


class AggregateConfig(_Section):
    quality_power: float = Field(
        1.0, ge=0.0, le=10.0, description="weight of a crop = quality score ** power (0 = plain norm weighting)"
    )


class MatchConfig(_Section):
    threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="cosine score for a match; null = the gallery's own operating threshold"
    )
    top_k: int = Field(5, ge=1, le=100, description="candidates reported per track")


class RunnerConfig(_Section):
    best_k: int = Field(5, ge=1, le=1000, description="embed at most this many best crops per track")
    improve_margin: float = Field(
        0.1, ge=0.0, le=10.0, description="a crop beating the track's best quality by this fraction is embedded at once"
    )
    embed_all: bool = Field(False, description="embed every detection (no quality gating; for comparison only)")
    queue_size: int = Field(8, ge=1, le=1024, description="batches buffered between detection and embedding")


class OutputConfig(_Section):
    thumbnail_size: int = Field(112, ge=16, le=1024, description="side of the saved best-crop thumbnails (px)")


class AppConfig(_Section):
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
    gallery: GalleryConfig = Field(default_factory=GalleryConfig,
                                   description="gallery database, FAISS index, open-set threshold, match log")


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """``["a.b=1", ...]`` -> ``[(["a", "b"], 1), ...]``; values are parsed as YAML (numbers, lists, null)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: value is not valid YAML: {raw!r}") from None
        parsed.append((parts, value))
    return parsed


def _apply(data: dict, parts: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(parts)}: {'.'.join(parts[:i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown config key {key}"
    if err["type"] == "missing":
        return f"missing config key {key}"
    got = err.get("input")
    got_text = "" if isinstance(got, dict) else f", got {got!r}"
    return f"config key {key}: {err['msg']}{got_text}"


def load_config(path: str | Path, overrides: list[str] | None = None) -> AppConfig:
    """Read, override and validate a YAML configuration; raises :class:`ConfigError` in one line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top, got {type(data).__name__}")
    for parts, value in parse_overrides(list(overrides or [])):
        _apply(data, parts, value)
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from None
