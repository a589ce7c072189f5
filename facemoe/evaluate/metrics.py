"""Face-recognition metrics: pair verification, ROC, TAR@FAR, CMC, open-set TPIR@FPIR, template fusion.

All functions take numpy arrays and return plain Python / numpy values. Conventions:

* a score is a similarity (higher means more alike); a pair or probe is *accepted* when its score is
  strictly greater than the threshold;
* ``labels`` of pairs are booleans (True: same identity, "genuine"; False: "impostor");
* a rank is 1-based and optimistic on ties: rank = 1 + number of gallery entries scoring strictly
  higher than the best mate.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from core import fusion

__all__ = [
    "FUSION_METHODS",
    "FoldAccuracy",
    "cmc",
    "fuse_templates",
    "mate_ranks",
    "roc_curve",
    "tar_at_far",
    "threshold_at_rate",
    "tpir_at_fpir",
    "verification_accuracy",
]

logger = logging.getLogger(__name__)

FUSION_METHODS = ("pre_norm_vector_add", "average")


def _as_1d(name: str, values, dtype=np.float64) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    return arr


def _pairs(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_1d("scores", scores)
    labels = _as_1d("labels", labels, dtype=bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels need the same length, got {scores.size} and {labels.size}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite, got NaN or inf")
    return scores, labels


@dataclass(frozen=True)
class FoldAccuracy:
    """k-fold verification accuracy: per-fold accuracy and the threshold chosen on the other folds."""

    mean: float
    std: float
    fold_accuracy: tuple[float, ...]
    fold_threshold: tuple[float, ...]


def _best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Threshold with the highest accuracy on (scores, labels); the lowest such on ties.

    Candidates are the midpoints between consecutive distinct scores plus one below and one above all.
    """
    distinct = np.unique(scores)
    candidates = np.concatenate(
        [[distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1.0]]
    )
    accepted = scores[None, :] > candidates[:, None]
    accuracy = (accepted == labels[None, :]).mean(axis=1)
    return float(candidates[int(np.argmax(accuracy))])


def verification_accuracy(scores, labels, folds: int = 10) -> FoldAccuracy:
    """LFW-style accuracy: split pairs into ``folds`` contiguous folds (no shuffling); for each fold pick
    the best threshold on the other folds and measure accuracy on this one.

    scores: ``[P]`` similarities; labels: ``[P]`` bools. Needs at least ``folds`` pairs.
    """
    scores, labels = _pairs(scores, labels)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if scores.size < folds:
        raise ValueError(f"expected at least {folds} pairs for {folds}-fold accuracy, got {scores.size}")
    parts = np.array_split(np.arange(scores.size), folds)
    accuracies, thresholds = [], []
    for part in parts:
        train = np.ones(scores.size, dtype=bool)
        train[part] = False
        threshold = _best_threshold(scores[train], labels[train])
        accuracies.append(float(((scores[part] > threshold) == labels[part]).mean()))
        thresholds.append(threshold)
    acc = np.asarray(accuracies)
    return FoldAccuracy(float(acc.mean()), float(acc.std()), tuple(accuracies), tuple(thresholds))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false accept rate, true accept rate, thresholds), one point per distinct score, thresholds descending.

    Point i accepts every pair with ``score >= thresholds[i]``; the first point is (0, 0) at +inf.
    Needs at least one genuine and one impostor pair.
    """
    scores, labels = _pairs(scores, labels)
    genuine, impostor = int(labels.sum()), int((~labels).sum())
    if genuine == 0 or impostor == 0:
        raise ValueError(
            f"a ROC needs genuine and impostor pairs, got {genuine} genuine and {impostor} impostor"
        )
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(lab)[last_of_run]
    fp = np.cumsum(~lab)[last_of_run]
    far = np.r_[0.0, fp / impostor]
    tar = np.r_[0.0, tp / genuine]
    return far, tar, np.r_[np.inf, s[last_of_run]]


def threshold_at_rate(negative_scores, rate: float) -> float:
    """Lowest threshold whose accept rate ``mean(negative > t)`` is at most ``rate``, among the negative scores.

    With ``n`` negatives, at most ``floor(rate * n)`` of them are accepted; below one allowed false
    accept (``rate * n < 1``) the threshold is the highest negative score.
    """
    neg = np.sort(_as_1d("negative scores", negative_scores))[::-1]
    if neg.size == 0:
        raise ValueError("expected at least one negative score, got none")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    allowed = math.floor(rate * neg.size + 1e-9)
    if allowed >= neg.size:
        return float(neg[-1] - 1.0)
    # Accepting more than `allowed` would happen at any threshold below neg[allowed].
    return float(neg[allowed])


def tar_at_far(scores, labels, far_targets) -> dict[float, dict]:
    """True accept rate at each false accept rate target.

    Returns ``{far: {"tar", "threshold", "far_achieved", "resolvable"}}``; ``resolvable`` is False when
    the target is below one false accept in the impostor set (``far * impostors < 1``), in which case the
    threshold is the highest impostor score.
    """
    scores, labels = _pairs(scores, labels)
    genuine, impostor = scores[labels], scores[~labels]
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError(
            f"TAR@FAR needs genuine and impostor pairs, got {genuine.size} genuine and "
            f"{impostor.size} impostor"
        )
    out = {}
    for far in far_targets:
        t = threshold_at_rate(impostor, far)
        out[float(far)] = {
            "tar": float((genuine > t).mean()),
            "threshold": t,
            "far_achieved": float((impostor > t).mean()),
            "resolvable": far * impostor.size >= 1.0,
        }
    return out


def mate_ranks(similarity, probe_labels, gallery_labels) -> np.ndarray:
    """Rank of the best-scoring mate of each probe. similarity ``[P, G]``; returns ``[P]`` ints (0 = no mate).

    A mate is a gallery entry with the probe's label. rank = 1 + number of entries scoring strictly higher.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    probe_labels = np.asarray(probe_labels)
    gallery_labels = np.asarray(gallery_labels)
    if sim.ndim != 2 or sim.shape != (probe_labels.size, gallery_labels.size):
        raise ValueError(
            f"similarity must be [probes={probe_labels.size}, gallery={gallery_labels.size}], got {sim.shape}"
        )
    mates = probe_labels[:, None] == gallery_labels[None, :]
    best_mate = np.where(mates, sim, -np.inf).max(axis=1, initial=-np.inf)
    ranks = 1 + (sim > best_mate[:, None]).sum(axis=1)
    return np.where(mates.any(axis=1), ranks, 0)


def cmc(similarity, probe_labels, gallery_labels, ranks=(1, 5, 10, 20)) -> dict[int, float]:
    """Closed-set identification: fraction of probes whose mate is within the top ``r``, for each r.

    Every probe must have at least one mate in the gallery.
    """
    found = mate_ranks(similarity, probe_labels, gallery_labels)
    if found.size == 0:
        raise ValueError("expected at least one probe, got none")
    missing = int((found == 0).sum())
    if missing:
        raise ValueError(
            f"closed-set identification needs a mate for every probe, got {missing} of "
            f"{found.size} probes without one"
        )
    return {int(r): float((found <= r).mean()) for r in ranks}


def tpir_at_fpir(similarity, probe_labels, gallery_labels, fpir_targets, rank: int = 1) -> dict[float, dict]:
    """Open-set identification: true positive identification rate at false positive identification rates.

    Mated probes have a mate in the gallery, non-mated probes have none. The threshold is set on the
    non-mated probes' top scores so that at most ``fpir * non_mated`` of them are accepted; a mated probe
    counts as identified when its mate is within ``rank`` and its mate's score is above the threshold.
    Returns ``{fpir: {"tpir", "threshold", "fpir_achieved", "resolvable"}}``.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    ranks = mate_ranks(sim, probe_labels, gallery_labels)
    mated = ranks > 0
    if mated.sum() == 0 or (~mated).sum() == 0:
        raise ValueError(
            f"open-set identification needs mated and non-mated probes, got {int(mated.sum())} "
            f"mated and {int((~mated).sum())} non-mated"
        )
    top = sim.max(axis=1)
    gallery_labels = np.asarray(gallery_labels)
    mate_score = np.where(np.asarray(probe_labels)[:, None] == gallery_labels[None, :], sim, -np.inf).max(
        axis=1
    )
    out = {}
    for fpir in fpir_targets:
        t = threshold_at_rate(top[~mated], fpir)
        hit = (ranks[mated] <= rank) & (mate_score[mated] > t)
        out[float(fpir)] = {
            "tpir": float(hit.mean()),
            "threshold": t,
            "fpir_achieved": float((top[~mated] > t).mean()),
            "resolvable": fpir * (~mated).sum() >= 1.0,
        }
    return out


def fuse_templates(features, norms, template_ids, method: str = "pre_norm_vector_add"):
    """Fuse media features into one unit vector per template, through :mod:`core.fusion` (the one fusion).

    features: ``[N, D]`` unit vectors; norms: ``[N]`` their feature norms; template_ids: ``[N]`` hashable.
    ``pre_norm_vector_add``: ``l2norm(sum_i unit_i * norm_i)`` (the authors' fusion; the same as averaging the
    raw embeddings); ``average``: ``l2norm(mean_i unit_i)`` (every medium counts the same).
    Returns (template ids in first-seen order ``[T]``, fused unit features ``[T, D]``).
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"fusion method must be one of {FUSION_METHODS}, got {method!r}")
    feats = np.asarray(features, dtype=np.float64)
    norms = _as_1d("norms", norms)
    ids = np.asarray(template_ids)
    if feats.ndim != 2 or feats.shape[0] != norms.size or ids.shape != (norms.size,):
        raise ValueError(
            f"expected features [N, D], norms [N] and template ids [N], got {feats.shape}, "
            f"{norms.shape} and {ids.shape}"
        )
    unique, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    weights = norms if method == "pre_norm_vector_add" else np.ones_like(norms)
    members = np.argsort(inverse, kind="stable")  # media grouped by template, in input order within a group
    groups = np.split(members, np.cumsum(np.bincount(inverse, minlength=unique.size))[:-1])
    sums = (
        np.stack([fusion.weighted_sum(feats[groups[t]], weights[groups[t]]) for t in order])
        if order.size
        else np.zeros((0, feats.shape[1]))
    )
    try:
        return unique[order], fusion.normalize(sums)
    except fusion.ZeroTemplateError:
        raise ValueError("a template fused to a zero vector (all its media have zero norm)") from None
