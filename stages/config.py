"""Config sections of the stages: one pydantic section per stage class, each handed only its own section.

The application config (``pipeline.config.AppConfig``) is made of these sections and those of the other
packages; a stage never sees more than its own.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from core.config import Section

__all__ = [
    "AggregateConfig",
    "DetectConfig",
    "EmbedConfig",
    "MatchConfig",
    "QualityConfig",
    "ShotConfig",
    "TrackConfig",
]


class DetectConfig(Section):
    backend: Literal["scrfd", "yunet"] = Field(
        "scrfd",
        description="face detector backend: the name a class registered in stages.detector_backends (the config "
        "names every one, so that a typo fails when the config loads)",
    )
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
    min_face_size: float = Field(
        8.0, ge=0.0, le=10000.0, description="drop faces smaller than this (px, box side)"
    )
    max_faces: int = Field(100, ge=1, le=10000, description="keep at most this many faces per frame")
    tiling: Literal["off", "auto", "on"] = Field(
        "auto",
        description="small faces: also detect in overlapping tiles of input_size at the frame's own resolution "
        "(on), only when letterboxing would shrink a min_face_px face below what the detector resolves (auto), "
        "or never (off)",
    )
    min_face_px: float = Field(
        8.0,
        gt=0.0,
        le=10000.0,
        description="the smallest face (px, box side in the frame) to find: with tiling auto, whether the frame is "
        "seen at its own resolution; below 12 px, windows around weak small faces of the native-resolution "
        "passes and around tracked small faces are detected again enlarged (at most 2x; never the whole frame)",
    )
    native_input: Literal["auto", "tiles", "frame"] = Field(
        "auto",
        description="tiling: how a frame is seen at its own resolution: overlapping tiles of input_size, the whole "
        "frame as one input (padded to a multiple of 32), or whichever of the two is fewer pixels (auto)",
    )
    tile_overlap: int = Field(
        64,
        ge=0,
        le=4096,
        description="tiling: px shared by neighbouring tiles (faces up to it lie whole in one)",
    )
    full_every: int = Field(
        6,
        ge=1,
        le=1000,
        description="detect the whole frame every n-th frame; in between only around live tracks and where the "
        "image moved (1 = the whole frame every frame)",
    )
    complete_every: int = Field(
        4,
        ge=1,
        le=1000,
        description="full_every > 1, a frame seen at its own resolution too (tiling): every n-th full detection sees "
        "all of it; the others see it letterboxed and at its own resolution only around live tracks and where the "
        "image changed since the last full detection (half the frame or more changed: all of it; 1 = always all)",
    )
    motion_threshold: int = Field(
        12,
        ge=1,
        le=255,
        description="full_every > 1: grey-level change (0-255) between frames that counts as motion",
    )
    motion_share: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="full_every > 1: at most this share of the frame is searched where the image moved away from "
        "live tracks (the smallest moving areas first; the rest waits for the next full detection)",
    )
    region_margin: float = Field(
        0.5,
        ge=0.0,
        le=10.0,
        description="full_every > 1: a live track is searched this much of its size around it",
    )
    region_score_slack: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="full_every > 1: around live tracks and motion a face may score this much below "
        "score_threshold (the frame before already showed a face there)",
    )
    batch_size: int = Field(4, ge=1, le=256, description="frames (or tiles) per detector call")
    threads: int = Field(2, ge=1, le=64, description="onnxruntime intra-op threads, shared among the workers")
    workers: int = Field(
        2,
        ge=1,
        le=64,
        description="scrfd: detector runs at once, each on threads / workers intra-op threads (at least 1): a small "
        "detector uses cores better side by side than inside one run; 1: one run at a time on all threads",
    )
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="scrfd: onnxruntime device, cpu or cuda[:N] (needs onnxruntime-gpu)",
    )
    provider: Literal["auto", "cuda", "tensorrt"] = Field(
        "auto",
        description="scrfd: onnxruntime execution provider; auto follows device (cpu, or cuda[:N] -> CUDA), tensorrt "
        "puts TensorRT before CUDA (needs a cuda device); one this onnxruntime lacks falls back with one warning",
    )

    @field_validator("tiling", mode="before")
    @classmethod
    def _yaml_switch(cls, value):
        """YAML reads a bare on/off as a boolean."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _sizes(self) -> DetectConfig:
        if self.provider != "auto" and not self.device.startswith("cuda"):
            raise ValueError(
                f"provider {self.provider} runs on a GPU: expected device cuda[:N], got {self.device}"
            )
        w, h = self.input_size
        if not (32 <= w <= 4096 and 32 <= h <= 4096) or w % 32 or h % 32:
            raise ValueError(f"input_size must be multiples of 32 within [32, 4096], got {w}x{h}")
        if self.tiling != "off" and self.tile_overlap >= min(w, h):
            raise ValueError(
                f"tile_overlap must be smaller than the input size {w}x{h}, got {self.tile_overlap}"
            )
        return self


class TrackConfig(Section):
    high_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="detections at or above: first association"
    )
    low_threshold: float = Field(
        0.3, ge=0.0, le=1.0, description="detections between low and high: second pass"
    )
    new_track_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="unmatched detection score to start a track"
    )
    match_iou: float = Field(0.2, ge=0.0, le=1.0, description="minimum IoU for the first association")
    low_match_iou: float = Field(0.3, ge=0.0, le=1.0, description="minimum IoU for the second association")
    max_lost_s: float = Field(1.0, ge=0.0, le=3600.0, description="a track unseen this long (seconds) ends")
    min_hits: int = Field(3, ge=1, le=1000, description="detections before a track is confirmed and reported")
    small_face_px: float = Field(
        24.0,
        ge=0.0,
        le=1000.0,
        description="association compares boxes smaller than this (px a side) as if grown to it around their "
        "centres, so that a few px of motion keep a tiny face's track (0: boxes as they are)",
    )
    small_face_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="detections of boxes smaller than small_face_px are confident (first association, new tracks) "
        "from this score when it is below high_threshold and new_track_threshold (the detector scores tiny faces "
        "lower)",
    )

    @model_validator(mode="after")
    def _order(self) -> TrackConfig:
        if self.low_threshold > self.high_threshold:
            raise ValueError(
                f"low_threshold must be <= high_threshold, got {self.low_threshold} > {self.high_threshold}"
            )
        return self


class ShotConfig(Section):
    enabled: bool = Field(True, description="end every track at a hard cut (edited footage)")
    cut_distance: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="colour-histogram distance between consecutive frames that counts as a cut",
    )


class QualityConfig(Section):
    ref_face_size: float = Field(64.0, gt=0, le=4096, description="face size (px) counted as fully resolved")
    ref_sharpness: float = Field(100.0, gt=0, le=1e6, description="Laplacian variance counted as half sharp")
    min_face_size: float = Field(0.0, ge=0, le=4096, description="crops smaller than this are never embedded")
    min_det_score: float = Field(0.0, ge=0, le=1, description="crops scored lower are never embedded")
    max_pose: float = Field(
        1.0, ge=0, le=1, description="crops with a pose proxy above this are never embedded"
    )


class EmbedConfig(Section):
    backend: Literal["onnx", "facemoe"] = Field("facemoe", description="embedding model family")
    model: str | None = Field(None, max_length=1000, description="onnx: the embedder .onnx file")
    checkpoint: str | None = Field(
        None, max_length=1000, description="facemoe: a model.pt path or a release name (briar, tinyface)"
    )
    k: int = Field(2, ge=1, le=64, description="facemoe: experts each token is routed to")
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?|mps)$",
        description="facemoe: torch device; onnx: onnxruntime device, cpu or cuda[:N]",
    )
    provider: Literal["auto", "cuda", "tensorrt"] = Field(
        "auto",
        description="onnx: onnxruntime execution provider; auto follows device (cpu, or cuda[:N] -> CUDA), tensorrt "
        "puts TensorRT before CUDA (needs a cuda device); one this onnxruntime lacks falls back with one warning",
    )
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto",
        description="facemoe: inference precision; auto: bf16 on a CPU with AVX512-BF16 or AMX where the model's "
        "bf16 template of probe crops stays within cosine 0.999 of fp32, else fp32, and on CUDA bf16 where "
        "supported, else fp16 (logged once; the embedder id names the one chosen); int8 on the "
        "CPU, fp16 on CUDA, bf16 on CUDA or on a CPU with AVX512-BF16 or AMX",
    )
    int8_fp32_layers: tuple[Annotated[str, StringConstraints(min_length=1, max_length=200)], ...] = Field(
        (),
        max_length=256,
        description="facemoe int8: module names whose layers stay fp32, e.g. layers.1.blocks.0.mlp (bench/embed.py "
        "--checkpoint suggests a set for a checkpoint)",
    )
    channel_order: Literal["rgb", "bgr"] = Field("rgb", description="onnx: channel order the model expects")
    pixel_scale: float = Field(255.0, gt=0, le=1e4, description="onnx: pixels are divided by this first")
    mean: tuple[float, float, float] = Field(
        (0.485, 0.456, 0.406), description="onnx: per-channel mean, subtracted"
    )
    std: tuple[float, float, float] = Field(
        (0.229, 0.224, 0.225), description="onnx: per-channel std, divided by"
    )
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
        if self.int8_fp32_layers and self.precision != "int8":
            raise ValueError(f"int8_fp32_layers applies to precision int8, got precision {self.precision}")
        if self.provider != "auto" and (self.backend != "onnx" or not self.device.startswith("cuda")):
            raise ValueError(
                f"provider {self.provider} is for backend onnx on device cuda[:N], got {self.backend} on {self.device}"
            )
        return self


class AggregateConfig(Section):
    quality_power: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="weight of a crop = quality score ** power (0 = plain norm weighting)",
    )


class MatchConfig(Section):
    threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="cosine score for a match; null = the gallery's own operating threshold",
    )
    top_k: int = Field(5, ge=1, le=100, description="candidates reported per track")
