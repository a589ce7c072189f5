"""Evaluation protocols: pair verification, TinyFace-, IJB-S- and BRIAR-style identification.

Each protocol takes an *embedder*: any object with ``embed(crops) -> (unit features [N, D], norms [N])``
for aligned 112x112 BGR uint8 crops (``facemoe.embedder.FaceMoEEmbedder`` or any ONNX embedder behind
the same interface). Preprocessing (resize path, flip test) is the embedder's business.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from . import metrics
from .data import ProtocolError, TemplateList, read_crop, read_image_list, read_pair_bin, read_templates

__all__ = [
    "Embedder",
    "ProtocolResult",
    "embed_images",
    "evaluate_briar",
    "evaluate_ijbs",
    "evaluate_tinyface",
    "evaluate_verification",
]

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    def embed(self, crops) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ProtocolResult:
    """Named metrics (a value of None means "not defined for this data", explained in ``notes``),
    counts of what was evaluated, and curves for the plot: name -> (x, y)."""

    protocol: str
    metrics: dict[str, float | None]
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "metrics": self.metrics,
            "counts": self.counts,
            "notes": self.notes,
        }


def embed_images(
    embedder: Embedder, images: Sequence[np.ndarray], chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Embed crops in chunks -> (unit features float32 ``[N, D]``, norms float32 ``[N]``)."""
    units, norms = [], []
    for start in range(0, len(images), chunk):
        u, n = embedder.embed(list(images[start : start + chunk]))
        units.append(np.asarray(u, dtype=np.float32))
        norms.append(np.asarray(n, dtype=np.float32).reshape(-1))
    return np.concatenate(units), np.concatenate(norms)


def _embed_paths(
    embedder: Embedder, paths: Sequence[Path], chunk: int = 256
) -> dict[Path, tuple[np.ndarray, float]]:
    """Embed each distinct file once, reading ``chunk`` crops at a time."""
    unique = list(dict.fromkeys(paths))
    out: dict[Path, tuple[np.ndarray, float]] = {}
    for start in range(0, len(unique), chunk):
        part = unique[start : start + chunk]
        u, n = embed_images(embedder, [read_crop(p) for p in part], chunk)
        out.update({p: (u[i], float(n[i])) for i, p in enumerate(part)})
    logger.info("embedded %d images", len(unique))
    return out


def _far_name(rate: float) -> str:
    return f"{rate:.0e}".replace("e-0", "e-")


def evaluate_verification(
    embedder: Embedder,
    bin_path: str | Path,
    folds: int = 10,
    far_targets: Sequence[float] = (1e-4, 1e-3, 1e-2),
) -> ProtocolResult:
    """Pair verification on an insightface ``.bin`` set: k-fold accuracy, TAR@FAR, genuine/impostor means."""
    images, same = read_pair_bin(bin_path)
    units, _ = embed_images(embedder, images)
    scores = (units[0::2] * units[1::2]).sum(axis=1).astype(np.float64)
    if len(same) < folds:
        raise ProtocolError(
            f"{bin_path}: expected at least {folds} pairs for {folds}-fold accuracy, got {len(same)}"
        )
    acc = metrics.verification_accuracy(scores, same, folds)
    out: dict[str, float | None] = {"accuracy": acc.mean, "accuracy_std": acc.std}
    notes = []
    genuine, impostor = int(same.sum()), int((~same).sum())
    out["genuine_mean_cosine"] = float(scores[same].mean()) if genuine else None
    out["impostor_mean_cosine"] = float(scores[~same].mean()) if impostor else None
    curves = {}
    if genuine and impostor:
        for far, r in metrics.tar_at_far(scores, same, far_targets).items():
            out[f"tar@far={_far_name(far)}"] = r["tar"]
            if not r["resolvable"]:
                notes.append(f"FAR {far:g} is below one false accept among {impostor} impostor pairs")
        far, tar, _ = metrics.roc_curve(scores, same)
        curves["ROC"] = (far, tar)
    else:
        for far in far_targets:
            out[f"tar@far={_far_name(far)}"] = None
        kind = "impostor" if genuine else "genuine"
        notes.append(
            f"no {kind} pairs: TAR@FAR and ROC are undefined; accuracy only says every pair "
            f"is on one side of the chosen thresholds"
        )
    return ProtocolResult(
        "verification", out, {"pairs": len(same), "genuine": genuine, "impostor": impostor}, notes, curves
    )


def _cmc_curve(ranks_found: np.ndarray, max_rank: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(1, max_rank + 1)
    return r, np.array([(ranks_found <= k).mean() for k in r])


def evaluate_tinyface(
    embedder: Embedder,
    list_csv: str | Path,
    root: str | Path | None = None,
    ranks: Sequence[int] = (1, 5, 20),
) -> ProtocolResult:
    """Closed-set identification of single images: probes against gallery matches plus distractors (CMC)."""
    lst = read_image_list(list_csv, root)
    emb = _embed_paths(embedder, lst.paths)
    roles = np.asarray(lst.roles)
    # distractors get labels no probe can carry
    labels = np.array([s if r != "distractor" else None for s, r in zip(lst.subjects, roles)], dtype=object)
    probe = roles == "probe"
    gallery = ~probe
    if not probe.any() or not (roles == "gallery").any():
        raise ProtocolError(
            f"{list_csv}: expected probe and gallery images, got {int(probe.sum())} probes and "
            f"{int((roles == 'gallery').sum())} gallery images"
        )
    feats = np.stack([emb[p][0] for p in lst.paths])
    sim = feats[probe] @ feats[gallery].T
    g_labels = labels[gallery]
    found = metrics.mate_ranks(sim, labels[probe], g_labels)
    if (found == 0).any():
        missing = sorted({lst.subjects[i] for i in np.flatnonzero(probe)[found == 0]})
        raise ProtocolError(
            f"{list_csv}: every probe subject needs a gallery image, got none for "
            f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}"
        )
    res = metrics.cmc(sim, labels[probe], g_labels, ranks)
    counts = {
        "probes": int(probe.sum()),
        "gallery": int((roles == "gallery").sum()),
        "distractors": int((roles == "distractor").sum()),
        "subjects": len({s for s, r in zip(lst.subjects, roles) if r != "distractor"}),
    }
    return ProtocolResult(
        "tinyface",
        {f"rank-{r}": v for r, v in res.items()},
        counts,
        [],
        {"CMC": _cmc_curve(found, min(int(gallery.sum()), max(max(ranks), 20)))},
    )


def _templates(emb: dict, lst: TemplateList, fusion: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(template ids [T], subject per template [T], fused unit features [T, D])."""
    feats = np.stack([emb[p][0] for p in lst.paths])
    norms = np.array([emb[p][1] for p in lst.paths])
    ids, fused = metrics.fuse_templates(feats, norms, np.asarray(lst.templates), fusion)
    owner = dict(zip(lst.templates, lst.subjects))
    return ids, np.array([owner[t] for t in ids]), fused


def evaluate_ijbs(
    embedder: Embedder,
    probe_csv: str | Path,
    gallery_csvs: Sequence[str | Path],
    root: str | Path | None = None,
    fusion: str = "pre_norm_vector_add",
    ranks: Sequence[int] = (1, 5, 10),
    fpir_targets: Sequence[float] = (0.01, 0.1),
) -> ProtocolResult:
    """Set-to-set identification per gallery split, as IJB-S does: templates fused from their media;
    closed-set CMC over the probes whose subject is in the split, open-set TPIR@FPIR over all probes
    (the others are the non-mated probes). Also reports the mean over splits."""
    if not gallery_csvs:
        raise ProtocolError("expected at least one gallery protocol file, got none")
    probes = read_templates(probe_csv, root)
    galleries = [read_templates(g, root) for g in gallery_csvs]
    emb = _embed_paths(embedder, list(probes.paths) + [p for g in galleries for p in g.paths])
    _, p_subj, p_feat = _templates(emb, probes, fusion)
    out: dict[str, float | None] = {}
    notes: list[str] = []
    curves = {}
    counts = {"probe_templates": len(p_subj)}
    per_split: list[dict[str, float | None]] = []
    for i, (csv_path, gal) in enumerate(zip(gallery_csvs, galleries), start=1):
        split = f"G{i}"
        _, g_subj, g_feat = _templates(emb, gal, fusion)
        sim = p_feat @ g_feat.T
        found = metrics.mate_ranks(sim, p_subj, g_subj)
        mated = found > 0
        counts[f"{split}_gallery_templates"] = len(g_subj)
        counts[f"{split}_mated_probes"] = int(mated.sum())
        vals: dict[str, float | None] = {}
        if mated.any():
            vals.update(
                {f"rank-{r}": v for r, v in metrics.cmc(sim[mated], p_subj[mated], g_subj, ranks).items()}
            )
            curves[f"CMC {split}"] = _cmc_curve(found[mated], min(len(g_subj), max(max(ranks), 20)))
        else:
            vals.update({f"rank-{r}": None for r in ranks})
            notes.append(f"{split} ({csv_path}): no probe subject is in this gallery")
        if mated.any() and not mated.all():
            for fpir, r in metrics.tpir_at_fpir(sim, p_subj, g_subj, fpir_targets).items():
                vals[f"tpir@fpir={_far_name(fpir)}"] = r["tpir"]
                if not r["resolvable"]:
                    notes.append(
                        f"{split}: FPIR {fpir:g} is below one false alarm among "
                        f"{int((~mated).sum())} non-mated probes"
                    )
        else:
            vals.update({f"tpir@fpir={_far_name(f)}": None for f in fpir_targets})
            notes.append(
                f"{split}: open-set needs mated and non-mated probes, got {int(mated.sum())} mated "
                f"and {int((~mated).sum())} non-mated"
            )
        per_split.append(vals)
        out.update({f"{split} {k}": v for k, v in vals.items()})
    for key in per_split[0]:
        defined = [v[key] for v in per_split if v[key] is not None]
        out[f"mean {key}"] = float(np.mean(defined)) if len(defined) == len(per_split) else None
    return ProtocolResult("ijbs", out, counts, notes, curves)


def evaluate_briar(
    embedder: Embedder,
    probe_csv: str | Path,
    gallery_csv: str | Path,
    root: str | Path | None = None,
    fusion: str = "pre_norm_vector_add",
    far_targets: Sequence[float] = (1e-4, 1e-3, 1e-2),
    ranks: Sequence[int] = (1, 5, 20),
) -> ProtocolResult:
    """BRIAR-style: template verification (every probe against every gallery template, TAR@FAR) and
    closed-set identification of the mated probes (rank-k)."""
    probes = read_templates(probe_csv, root)
    gallery = read_templates(gallery_csv, root)
    emb = _embed_paths(embedder, list(probes.paths) + list(gallery.paths))
    _, p_subj, p_feat = _templates(emb, probes, fusion)
    _, g_subj, g_feat = _templates(emb, gallery, fusion)
    sim = p_feat @ g_feat.T
    same = p_subj[:, None] == g_subj[None, :]
    scores, labels = sim.ravel().astype(np.float64), same.ravel()
    out: dict[str, float | None] = {}
    notes: list[str] = []
    curves = {}
    if labels.any() and not labels.all():
        for far, r in metrics.tar_at_far(scores, labels, far_targets).items():
            out[f"tar@far={_far_name(far)}"] = r["tar"]
            if not r["resolvable"]:
                notes.append(
                    f"FAR {far:g} is below one false accept among {int((~labels).sum())} impostor comparisons"
                )
        curves["ROC"] = metrics.roc_curve(scores, labels)[:2]
    else:
        out.update({f"tar@far={_far_name(f)}": None for f in far_targets})
        notes.append("verification needs genuine and impostor comparisons")
    found = metrics.mate_ranks(sim, p_subj, g_subj)
    mated = found > 0
    if not mated.any():
        raise ProtocolError(f"{probe_csv}: expected probes whose subject is in {gallery_csv}, got none")
    out.update({f"rank-{r}": v for r, v in metrics.cmc(sim[mated], p_subj[mated], g_subj, ranks).items()})
    curves["CMC"] = _cmc_curve(found[mated], min(len(g_subj), max(max(ranks), 20)))
    counts = {
        "probe_templates": len(p_subj),
        "gallery_templates": len(g_subj),
        "mated_probes": int(mated.sum()),
        "genuine_comparisons": int(labels.sum()),
        "impostor_comparisons": int((~labels).sum()),
    }
    return ProtocolResult("briar", out, counts, notes, curves)
