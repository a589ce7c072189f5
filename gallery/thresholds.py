"""The open-set threshold of each embedder, by one rule: the matcher's configured value (``match.threshold``), else
the gallery's override (``gallery.threshold.override``), else a calibration stored with the gallery, else the
default. :meth:`Thresholds.in_force` says which value applies and where it comes from; every command that decides
or reports a threshold goes through it.

A calibration places the threshold at the ``1 - target_fpir`` quantile of impostor scores: each enrolled
image's best score against the *other* identities' templates, and the known impostors: each (track, identity) pair
a reviewer rejected, scored as the track's template against that identity's (:mod:`gallery.review_state`); media
enrolled from a rejected pair's track into that identity are no probes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.models import Media, Threshold, from_blob, utcnow
from gallery.records import version_of
from gallery.review_state import known_impostor_scores, rejected_pairs
from gallery.search import GallerySearch

logger = logging.getLogger(__name__)

__all__ = ["Calibration", "InForce", "Thresholds"]


@dataclass(frozen=True)
class Calibration:
    """An open-set threshold: ``calibrated`` is False when the gallery had too few impostor scores."""

    embedder_id: str
    value: float
    target_fpir: float
    impostor_scores: int
    calibrated: bool


@dataclass(frozen=True)
class InForce:
    """The operating threshold of one embedder and its ``origin``, in words (``config match.threshold``,
    ``config gallery.threshold.override``, ``calibration at FPIR 0.01 on 812 impostor scores``, ``default``)."""

    value: float
    origin: str

    def __str__(self) -> str:
        return f"{self.value:.4f} ({self.origin})"


class Thresholds:
    """Operating thresholds of one database, calibrated against its templates through ``search``."""

    def __init__(self, db: Database, config: GalleryConfig, search: GallerySearch) -> None:
        self.db = db
        self.config = config
        self.search = search

    def threshold(self, embedder_id: str) -> float:
        """The gallery's own threshold of ``embedder_id`` (:meth:`in_force` without a matcher value)."""
        return self.in_force(embedder_id).value

    def in_force(self, embedder_id: str, configured: float | None = None) -> InForce:
        """The threshold decisions on ``embedder_id`` use: ``configured`` (the matcher's ``match.threshold``) when
        given, else ``config.threshold.override``, else the stored calibration, else ``config.threshold.default``;
        with its origin."""
        cfg = self.config.threshold
        if configured is not None:
            return InForce(float(configured), "config match.threshold")
        if cfg.override is not None:
            return InForce(float(cfg.override), "config gallery.threshold.override")
        with self.db.session() as session:
            stored = session.get(Threshold, embedder_id)
        if stored is not None:
            when = stored.calibrated_at.strftime("%Y-%m-%d %H:%M UTC")
            return InForce(
                stored.value,
                f"calibration at FPIR {stored.target_fpir:g} on {stored.impostor_scores} impostor scores, {when}",
            )
        return InForce(
            float(cfg.default), "default gallery.threshold.default: no calibration for this embedder"
        )

    def calibrate(self, embedder_id: str, *, seed: int = 0) -> Calibration:
        """Set the threshold of ``embedder_id`` at the ``1 - target_fpir`` quantile of impostor scores (each
        enrolled image's best score against the *other* identities' templates, and the rejected pairs' scores; see
        the module) and store it with the gallery."""
        cfg = self.config.threshold
        found = self.search.index(embedder_id)
        with self.db.session() as session:
            rows = session.execute(
                select(Media.identity_id, Media.vector, Media.dim, Media.track_pk)
                .where(Media.embedder_id == embedder_id)
                .order_by(Media.id)
            ).all()
            rejected = rejected_pairs(session)
            rows = [r for r in rows if (r.track_pk, r.identity_id) not in rejected]
            if len(rows) > cfg.max_probes:
                pick = np.random.default_rng(seed).choice(len(rows), cfg.max_probes, replace=False)
                rows = [rows[i] for i in sorted(pick)]
            impostor = np.zeros(0)
            if found is not None and len(found[0]) > 1 and rows:
                probes = np.stack([from_blob(r.vector, r.dim) for r in rows])
                scores, ids = found[0].search(probes, 2)
                own = np.array([r.identity_id for r in rows])[:, None]
                impostor = np.where(ids[:, 0] != own[:, 0], scores[:, 0], scores[:, 1])
            impostor = np.concatenate([impostor, known_impostor_scores(session, embedder_id)])
            calibrated = len(impostor) >= cfg.min_impostor_scores
            stored = session.get(Threshold, embedder_id)
            if not calibrated:
                if stored is not None:
                    session.delete(stored)
                logger.warning(
                    "threshold of %s: %d impostor scores, need %d: not calibrated",
                    embedder_id,
                    len(impostor),
                    cfg.min_impostor_scores,
                )
                return Calibration(embedder_id, cfg.default, cfg.target_fpir, len(impostor), False)
            value = float(np.quantile(impostor, 1.0 - cfg.target_fpir, method="higher"))
            version = version_of(session)  # before the new row exists: a query autoflushes
            if stored is None:
                stored = Threshold(embedder_id=embedder_id)
                session.add(stored)
            stored.value, stored.target_fpir, stored.impostor_scores = value, cfg.target_fpir, len(impostor)
            stored.gallery_version, stored.calibrated_at = version, utcnow()
        logger.info(
            "threshold of %s: %.4f at FPIR %.4g from %d impostor scores",
            embedder_id,
            value,
            cfg.target_fpir,
            len(impostor),
        )
        return Calibration(embedder_id, value, cfg.target_fpir, len(impostor), True)
