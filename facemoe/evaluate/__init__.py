"""Evaluation: metrics, pair verification and TinyFace- / IJB-S- / BRIAR-style protocols, reports."""

from .data import ProtocolError
from .protocols import (
    ProtocolResult,
    evaluate_briar,
    evaluate_ijbs,
    evaluate_tinyface,
    evaluate_verification,
)

__all__ = [
    "ProtocolError",
    "ProtocolResult",
    "evaluate_briar",
    "evaluate_ijbs",
    "evaluate_tinyface",
    "evaluate_verification",
]
