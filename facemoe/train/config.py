"""Training settings (configs/train*.yaml), validated with pydantic; every field has bounds and a description."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.config import Section

__all__ = [
    "ArchSection",
    "AugmentSection",
    "DataSection",
    "HeadSection",
    "ModelSection",
    "OptimSection",
    "RunSection",
    "TrainConfig",
]


class DataSection(Section):
    path: str = Field(
        ...,
        min_length=1,
        max_length=1000,
        description="a folder with one subfolder of aligned 112x112 crops per identity, or a .rec file "
        "(its .idx beside it)",
    )
    format: Literal["auto", "folder", "recordio"] = Field(
        "auto", description="dataset kind; auto: .rec -> recordio"
    )
    num_workers: int = Field(2, ge=0, le=64, description="data-loading worker processes per training process")
    check_sizes: bool = Field(
        True, description="folder datasets: check every image's size before training starts"
    )


class AugmentSection(Section):
    crop_prob: float = Field(
        0.2, ge=0.0, le=1.0, description="probability of a random crop with zero padding"
    )
    crop_scale: tuple[float, float] = Field((0.2, 1.0), description="area fraction range of the kept crop")
    low_res_prob: float = Field(
        0.2, ge=0.0, le=1.0, description="probability of down- then up-sampling with random interpolations"
    )
    low_res_scale: tuple[float, float] = Field(
        (0.2, 1.0), description="side ratio range of the down-sampled image"
    )
    photometric_prob: float = Field(
        0.2, ge=0.0, le=1.0, description="probability of brightness/contrast/saturation jitter"
    )
    jitter: float = Field(0.5, ge=0.0, le=1.0, description="jitter strength: factors drawn from [1-j, 1+j]")
    flip_prob: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip")

    @model_validator(mode="after")
    def _ranges(self) -> AugmentSection:
        for name in ("crop_scale", "low_res_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name}: expected 0 < low <= high <= 1, got ({lo}, {hi})")
        return self


class ArchSection(Section):
    embed_dim: int = Field(384, ge=8, le=2048, description="stage-0 width (paper: 384)")
    depths: tuple[int, ...] = Field((2, 18, 2), min_length=1, max_length=6, description="blocks per stage")
    num_heads: tuple[int, ...] = Field(
        (8, 16, 16), min_length=1, max_length=6, description="attention heads per stage"
    )
    use_moe: bool = Field(True, description="Mixture-of-Experts MLPs (False: dense MLPs)")
    num_experts: int = Field(3, ge=1, le=64, description="experts per MoE block")


class ModelSection(Section):
    checkpoint: str | None = Field(
        None,
        max_length=1000,
        description="official model.pt path, release name (briar, tinyface) or hf://...; "
        "null: train from scratch with `arch`",
    )
    from_run: str | None = Field(
        None,
        max_length=1000,
        description="a previous run's last.pt: start from its backbone and head weights "
        "(the full phase after the head-only phase)",
    )
    k: int = Field(2, ge=1, le=64, description="experts each token is routed to")
    drop_path_rate: float = Field(
        0.05, ge=0.0, le=0.9, description="stochastic depth of the last block (paper: 0.05)"
    )
    arch: ArchSection = Field(
        default_factory=ArchSection, description="architecture when training from scratch"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if self.checkpoint and self.from_run:
            raise ValueError("give checkpoint or from_run, not both")
        return self


class HeadSection(Section):
    scale: float = Field(64.0, gt=0.0, le=1024.0, description="CosFace scale s")
    margin: float = Field(0.4, ge=0.0, le=1.0, description="CosFace additive cosine margin m")
    sample_rate: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="partial FC: fraction of class centres per step (batch classes always kept)",
    )


class OptimSection(Section):
    lr: float = Field(1e-4, gt=0.0, le=10.0, description="peak learning rate of AdamW")
    weight_decay: float = Field(0.1, ge=0.0, le=10.0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_steps: int = Field(
        0, ge=0, le=10_000_000, description="linear warm-up from 0 to lr, in optimizer steps"
    )
    power: float = Field(
        2.0, gt=0.0, le=10.0, description="polynomial decay power after warm-up (to 0 at the end)"
    )
    clip_grad_norm: float | None = Field(
        5.0, gt=0.0, le=1e6, description="max gradient norm of the backbone; null: off"
    )
    aux_weight: float = Field(10.0, ge=0.0, le=1e4, description="weight of the router z-loss + balance loss")


class RunSection(Section):
    out_dir: str = Field(
        ..., min_length=1, max_length=1000, description="checkpoints, TensorBoard logs, statistics"
    )
    phase: Literal["head", "full"] = Field(
        "full", description="head: train the CosFace head only; full: everything"
    )
    epochs: int = Field(1, ge=1, le=100_000, description="passes over the dataset")
    max_steps: int | None = Field(
        None, ge=1, le=100_000_000, description="stop after this many optimizer steps"
    )
    batch_size: int = Field(
        64, ge=2, le=65536, description="images per micro-batch per process (>= 2 for BatchNorm)"
    )
    grad_accum: int = Field(1, ge=1, le=1024, description="micro-batches per optimizer step")
    amp: Literal["auto", "off", "fp16", "bf16"] = Field(
        "auto", description="mixed precision; auto: bf16/fp16 on CUDA, off on CPU"
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda)$", description="auto: CUDA when available")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of sampling, augmentation and initialisation")
    save_every: int = Field(1000, ge=1, le=100_000_000, description="write last.pt every this many steps")
    log_every: int = Field(
        50, ge=1, le=100_000_000, description="TensorBoard / progress statistics every this many steps"
    )
    face_size_bins: tuple[int, ...] = Field(
        (24, 48, 80), max_length=8, description="effective face-size edges (px) for per-size expert load"
    )
    resume: bool = Field(True, description="continue from out_dir/last.pt when it exists")
    progress: bool = Field(True, description="show a progress bar")


class TrainConfig(Section):
    data: DataSection = Field(..., description="training images")
    augment: AugmentSection = Field(default_factory=AugmentSection, description="the authors' augmentations")
    model: ModelSection = Field(default_factory=ModelSection, description="backbone source")
    head: HeadSection = Field(default_factory=HeadSection, description="CosFace (partial) FC head")
    optim: OptimSection = Field(default_factory=OptimSection, description="optimizer, schedule, loss weights")
    run: RunSection = Field(..., description="phase, length, batch, precision, output")
