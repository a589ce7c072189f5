"""Open-set matching of track templates against a gallery index.

``GalleryIndex`` is what the matcher needs from any gallery (the in-memory one here, the SQL + FAISS one of the
``gallery`` package): cosine top-k search over unit templates and an operating threshold.
``InMemoryGallery.from_folder`` builds one from a folder through detect + align + embed.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from gallery.enroll import folder_images
from gallery.errors import EnrollmentError
from pipeline.config import MatchConfig
from pipeline.errors import GalleryBuildError
from pipeline.types import Candidate, MatchResult, TrackTemplate

from .align import align_face
from .detect import FaceDetector
from .embed import Embedder

__all__ = ["GalleryIndex", "InMemoryGallery", "Matcher", "gallery_images"]

logger = logging.getLogger(__name__)


@runtime_checkable
class GalleryIndex(Protocol):
    threshold: float

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Candidate]]:
        """Best ``k`` candidates (highest cosine first) for each row of ``embeddings [M, D]``."""
        ...


def gallery_images(folder: Path) -> dict[str, list[Path]]:
    """Identity name -> image files: one subfolder per identity, or a flat folder whose file stems are names
    (the enrollment rule of :func:`gallery.enroll.folder_images`); an empty dict when it holds no images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GalleryBuildError(f"gallery folder not found: {folder}")
    try:
        return folder_images(folder)
    except EnrollmentError:
        return {}


class InMemoryGallery:
    """Unit templates ``[K, D]`` with their names, searched by brute-force cosine similarity."""

    def __init__(self, names: Sequence[str], templates: np.ndarray, threshold: float, embedder_id: str) -> None:
        templates = np.asarray(templates, np.float32)
        if templates.ndim != 2 or len(templates) != len(names):
            raise ValueError(f"templates: expected [{len(names)}, D], got {list(templates.shape)}")
        self.names = list(names)
        self.templates = templates
        self.threshold = float(threshold)
        self.embedder_id = embedder_id

    def __len__(self) -> int:
        return len(self.names)

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Candidate]]:
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings: expected [M, D], got {list(embeddings.shape)}")
        if not len(self.names):
            return [[] for _ in range(len(embeddings))]
        if embeddings.shape[1] != self.templates.shape[1]:
            raise ValueError(f"embeddings: expected dimension {self.templates.shape[1]}, got {embeddings.shape[1]}")
        scores = embeddings @ self.templates.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[Candidate(int(j), self.names[j], float(scores[i, j])) for j in row] for i, row in enumerate(top)]

    @classmethod
    def from_folder(cls, folder: Path, detector: FaceDetector, embedder: Embedder, threshold: float) -> InMemoryGallery:
        """Enroll every identity of ``folder``: the largest face of each image, feature-norm weighted fusion."""
        names, templates = [], []
        for name, paths in gallery_images(Path(folder)).items():
            crops = []
            for path in paths:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    logger.warning("gallery image %s cannot be read; skipped", path)
                    continue
                dets = detector.detect([image])[0]
                if not len(dets):
                    logger.warning("gallery image %s: no face found; skipped", path)
                    continue
                area = (dets.xyxy[:, 2] - dets.xyxy[:, 0]) * (dets.xyxy[:, 3] - dets.xyxy[:, 1])
                crops.append(align_face(image, dets.landmarks[int(np.argmax(area))]))
            if not crops:
                logger.warning("gallery identity %s has no usable face; not enrolled", name)
                continue
            feats, norms = embedder.embed(crops)
            fused = (feats * norms[:, None]).sum(0)
            templates.append(fused / max(float(np.linalg.norm(fused)), 1e-12))
            names.append(name)
        logger.info("in-memory gallery: %d identities from %s", len(names), folder)
        dim = embedder.dim
        return cls(names, np.asarray(templates, np.float32).reshape(len(names), dim), threshold, embedder.embedder_id)


class Matcher:
    """Open-set decision for a track template: ``match`` when the best score reaches the threshold."""

    def __init__(self, cfg: MatchConfig, index: GalleryIndex) -> None:
        self.cfg = cfg
        self.index = index

    @property
    def threshold(self) -> float:
        return self.cfg.threshold if self.cfg.threshold is not None else float(self.index.threshold)

    def match(self, template: TrackTemplate) -> MatchResult:
        if template.num_crops == 0:
            return MatchResult(template.source_id, template.track_id, (), "unknown", self.threshold)
        cands = tuple(self.index.search(template.embedding[None, :], self.cfg.top_k)[0])
        decision = "match" if cands and cands[0].score >= self.threshold else "unknown"
        return MatchResult(template.source_id, template.track_id, cands, decision, self.threshold)

    def reset(self) -> None:
        """Matching keeps no per-stream state."""
