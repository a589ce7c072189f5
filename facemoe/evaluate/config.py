"""Evaluation settings (configs/eval.yaml): the FaceMoE embedder and one section per protocol."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from core.config import Section

__all__ = [
    "BriarSection",
    "EmbedderSection",
    "EvalConfig",
    "IJBSSection",
    "TinyFaceSection",
    "VerificationSection",
]


def _check_rates(values: list[float]) -> list[float]:
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise ValueError(f"expected rates in (0, 1], got {values}")
    return sorted(values)


def _check_ranks(values: list[int]) -> list[int]:
    if not values or any(not 1 <= v <= 1000 for v in values):
        raise ValueError(f"expected ranks between 1 and 1000, got {values}")
    return sorted(set(values))


Rates = Annotated[list[float], AfterValidator(_check_rates)]
Ranks = Annotated[list[int], AfterValidator(_check_ranks)]


class _Preprocess(Section):
    flip: bool = Field(True, description="flip test: add the horizontally flipped crop's features")
    resize: Literal["pil", "tensor"] = Field(
        "pil", description="112 -> 120 bicubic path: pil (TinyFace eval, uint8) or tensor (IJB-S eval, float)"
    )


class EmbedderSection(Section):
    checkpoint: str = Field(
        "briar",
        min_length=1,
        max_length=1000,
        description="official model.pt path, a release name (briar, tinyface) or hf://...",
    )
    k: int = Field(2, ge=1, le=64, description="experts each token is routed to")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$", description="torch device")
    precision: Literal["fp32", "int8", "bf16", "fp16"] = Field("fp32", description="inference precision")
    batch_size: int = Field(32, ge=1, le=4096, description="crops per forward pass")


class VerificationSection(_Preprocess):
    folds: int = Field(10, ge=2, le=100, description="folds of the threshold-selection accuracy")
    far_targets: Rates = Field([1e-4, 1e-3, 1e-2], description="false accept rates for TAR@FAR")


class TinyFaceSection(_Preprocess):
    ranks: Ranks = Field([1, 5, 20], description="CMC ranks reported")


class IJBSSection(_Preprocess):
    flip: bool = Field(False, description="flip test (the authors' IJB-S evaluation does not flip)")
    resize: Literal["pil", "tensor"] = Field("tensor", description="112 -> 120 bicubic path (IJB-S: tensor)")
    fusion: Literal["pre_norm_vector_add", "average"] = Field(
        "pre_norm_vector_add", description="template fusion of media features"
    )
    ranks: Ranks = Field([1, 5, 10], description="closed-set CMC ranks")
    fpir_targets: Rates = Field([0.01, 0.1], description="false positive identification rates for TPIR@FPIR")


class BriarSection(_Preprocess):
    fusion: Literal["pre_norm_vector_add", "average"] = Field(
        "pre_norm_vector_add", description="template fusion of media features"
    )
    far_targets: Rates = Field([1e-4, 1e-3, 1e-2], description="false accept rates for TAR@FAR")
    ranks: Ranks = Field([1, 5, 20], description="identification ranks")


class EvalConfig(Section):
    embedder: EmbedderSection = Field(
        default_factory=EmbedderSection, description="the FaceMoE model under test"
    )
    verification: VerificationSection = Field(
        default_factory=VerificationSection, description="pair verification"
    )
    tinyface: TinyFaceSection = Field(
        default_factory=TinyFaceSection, description="TinyFace-style identification"
    )
    ijbs: IJBSSection = Field(
        default_factory=IJBSSection, description="IJB-S-style set-to-set identification"
    )
    briar: BriarSection = Field(
        default_factory=BriarSection, description="BRIAR-style verification and identification"
    )
