"""Track-level evaluation from raw videos: who is on screen when, the pipeline's tracks, open-set metrics.

The ground truth is a CSV with one row per person and time span (``video, identity, start_s, end_s``; empty
times mean the whole video), optionally with the region of the frame where that person's face is
(``x_min, x_max, y_min, y_max``: pixel bounds of the face-box centre; empty = unbounded). The video pipeline
runs over the videos; every confirmed track becomes one probe whose fused template is scored against every
gallery identity. Each track gets the ground-truth identity whose spans overlap it most in time, among those
whose region holds the track's median face centre (see :func:`assign_identities`). A track that two people
overlap equally cannot be told apart by the ground truth: it is reported as ambiguous and left out of the
figures, never resolved by the recogniser's own scores. Tracks overlapping nobody, or a person not enrolled in
the gallery, are non-mated probes. The report gives closed-set rank-k of the mated tracks, open-set TPIR at
FPIR over all tracks (``facemoe.evaluate.metrics``), the same weighted by track duration, and the operating
point of the configured match threshold.

The ground truth is read by :mod:`facemoe.evaluate.ground_truth` (its names are re-exported here). This module
works on plain arrays and imports nothing of the video pipeline: ``pipeline/runners/eval_video.py`` runs
the pipeline over the videos and hands its tracks here (the ``eval video`` command).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .data import ProtocolError
from .ground_truth import GT_COLUMNS, SHOWN, GroundTruthSpan, read_ground_truth, video_keys
from .protocols import ProtocolResult

__all__ = [
    "GT_COLUMNS",
    "Assignment",
    "GroundTruthSpan",
    "ScoredTrack",
    "VideoResult",
    "assign_identities",
    "evaluate_tracks",
    "format_tracks",
    "read_ground_truth",
    "video_keys",
]

logger = logging.getLogger(__name__)


@dataclass
class ScoredTrack:
    """One pipeline track as a probe: its time span, its template's cosine score against each gallery identity
    (``scores [G]``, in the gallery's order; None when no crop of it was embedded) and the median centre of its
    face boxes (pixels; None when unknown)."""

    video: str
    track_id: int
    start: float
    end: float
    scores: np.ndarray | None
    centre: tuple[float, float] | None = None

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class Assignment:
    """A track's ground-truth identity (None: nobody known overlaps it, or it is ambiguous) and the identities
    that overlapped it about equally (``tied``: more than one means the ground truth cannot tell them apart)."""

    identity: str | None
    tied: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return len(self.tied) > 1


def _overlaps(track: ScoredTrack, spans: Sequence[GroundTruthSpan]) -> dict[str, float]:
    """Seconds each identity's spans overlap the track in time, counting only spans whose region holds the track's
    face centre; a zero-length track inside a span counts as overlapping."""
    out: dict[str, float] = {}
    for span in spans:
        if not span.holds(track.centre):
            continue
        length = min(track.end, span.end) - max(track.start, span.start)
        if length > 0 or (track.duration == 0 and span.start <= track.start <= span.end):
            out[span.identity] = out.get(span.identity, 0.0) + max(length, 0.0)
    return out


def assign_identities(
    tracks: Sequence[ScoredTrack], spans: Sequence[GroundTruthSpan], tie_tolerance: float = 0.1
) -> list[Assignment]:
    """Give each track the identity whose ground-truth spans (same video, region holding the track) overlap it
    most in time.

    Identities whose overlap is within ``tie_tolerance`` x the track's duration of the best one are *tied*: the
    ground truth says two people are there through the whole track (add regions to tell them apart). A tied track
    gets no identity; it is never resolved with the recogniser's scores, which would grade the system by itself.
    """
    if not 0.0 <= tie_tolerance < 1.0:
        raise ValueError(f"tie_tolerance must be in [0, 1), got {tie_tolerance}")
    by_video: dict[str, list[GroundTruthSpan]] = {}
    for span in spans:
        by_video.setdefault(span.video, []).append(span)
    result = []
    for track in tracks:
        overlap = _overlaps(track, by_video.get(track.video, []))
        if not overlap:
            result.append(Assignment(None))
            continue
        best = max(overlap.values())
        tied = tuple(sorted(k for k, v in overlap.items() if v >= best - tie_tolerance * track.duration))
        result.append(Assignment(tied[0] if len(tied) == 1 else None, tied))
    return result


@dataclass
class VideoResult(ProtocolResult):
    """A protocol result plus one record per track and the thresholds behind the open-set figures."""

    tracks: list[dict] = field(default_factory=list)
    thresholds: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "thresholds": self.thresholds, "tracks": self.tracks}


def _rate_name(rate: float) -> str:
    return f"{rate:.0e}".replace("e-0", "e-")


def _weighted(hit: np.ndarray, weight: np.ndarray) -> float | None:
    total = float(weight.sum())
    return float((weight * hit).sum() / total) if total > 0 else None


def evaluate_tracks(
    tracks: Sequence[ScoredTrack],
    spans: Sequence[GroundTruthSpan],
    gallery_names: Sequence[str],
    ranks: Sequence[int] = (1, 5),
    fpir_targets: Sequence[float] = (0.01, 0.1),
    operating_threshold: float | None = None,
    tie_tolerance: float = 0.1,
    top_k: int = 5,
) -> VideoResult:
    """Score tracks against their ground truth: rank-k of the mated tracks, TPIR@FPIR over all tracks (each
    ``time-weighted`` too: every track counts with its duration), and the rates at ``operating_threshold``
    (a track is accepted when its best score is at least the threshold, as the pipeline's matcher decides).

    Tracks without a template (no crop embedded) are listed and counted but not scored.
    """
    names = list(gallery_names)
    if not names:
        raise ProtocolError("expected a gallery with at least one identity, got none")
    if len(set(names)) != len(names):
        raise ValueError(f"gallery names must be unique, got {names}")
    for t in tracks:
        if t.scores is not None and np.shape(t.scores) != (len(names),):
            raise ValueError(
                f"track {t.video}#{t.track_id}: expected {len(names)} scores, got {np.shape(t.scores)}"
            )
    assigned = assign_identities(tracks, spans, tie_tolerance)
    enrolled = set(names)
    gt_names = sorted({s.identity for s in spans})
    missing = [n for n in gt_names if n not in enrolled]
    notes: list[str] = []
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (", ..." if len(missing) > SHOWN else "")
        logger.warning(
            "%d ground-truth identities are not in the gallery (their tracks are non-mated): %s",
            len(missing),
            shown,
        )
        notes.append(f"not in the gallery (their tracks count as non-mated): {', '.join(missing)}")

    scored = [i for i, t in enumerate(tracks) if t.scores is not None and not assigned[i].ambiguous]
    sim = (
        np.stack([np.asarray(tracks[i].scores, np.float64) for i in scored])
        if scored
        else np.zeros((0, len(names)))
    )
    labels = np.array(
        [assigned[i].identity if assigned[i].identity in enrolled else None for i in scored], dtype=object
    )
    gallery = np.array(names, dtype=object)
    weight = np.array([tracks[i].duration for i in scored])
    found = metrics.mate_ranks(sim, labels, gallery) if scored else np.zeros(0, dtype=int)
    mated = found > 0
    n_mated, n_non = int(mated.sum()), int((~mated).sum())
    out: dict[str, float | None] = {}
    thresholds: dict[str, float | None] = {}

    if n_mated:
        for r, v in metrics.cmc(sim[mated], labels[mated], gallery, ranks).items():
            out[f"rank-{r}"] = v
    else:
        out.update({f"rank-{r}": None for r in ranks})
        notes.append("no scored track is mated (ground truth of an enrolled identity): rank-k is undefined")
    for r in ranks:
        out[f"rank-{r} time-weighted"] = _weighted(found[mated] <= r, weight[mated]) if n_mated else None
    if n_mated and n_non:
        col = {n: j for j, n in enumerate(names)}
        mate_score = np.array([sim[k, col[labels[k]]] if mated[k] else -np.inf for k in range(len(labels))])
        for fpir, r in metrics.tpir_at_fpir(sim, labels, gallery, fpir_targets).items():
            key = f"tpir@fpir={_rate_name(fpir)}"
            out[key] = r["tpir"]
            thresholds[key] = r["threshold"]
            hit = (found[mated] == 1) & (mate_score[mated] > r["threshold"])
            out[f"{key} time-weighted"] = _weighted(hit, weight[mated])
            if not r["resolvable"]:
                notes.append(
                    f"FPIR {fpir:g} is below one false alarm among {n_non} non-mated tracks: its threshold "
                    f"is the highest non-mated score"
                )
    else:
        for fpir in fpir_targets:
            key = f"tpir@fpir={_rate_name(fpir)}"
            out[key] = out[f"{key} time-weighted"] = thresholds[key] = None
        notes.append(
            f"open-set TPIR@FPIR needs mated and non-mated tracks, got {n_mated} mated and {n_non} non-mated"
        )

    thresholds["operating"] = operating_threshold
    top = sim.argmax(axis=1) if scored else np.zeros(0, dtype=int)
    top_score = sim.max(axis=1) if scored else np.zeros(0)
    if operating_threshold is not None and scored:
        accepted = top_score >= operating_threshold
        correct = accepted & mated & (gallery[top] == labels)
        out["tpir@operating threshold"] = float(correct[mated].mean()) if n_mated else None
        out["fpir@operating threshold"] = float(accepted[~mated].mean()) if n_non else None
        notes.append(f"operating threshold {operating_threshold:.3f} (match.threshold)")
    else:
        out["tpir@operating threshold"] = out["fpir@operating threshold"] = None
        if operating_threshold is None:
            notes.append(
                "match.threshold is null: no operating point reported (set it with --set match.threshold=)"
            )

    ambiguous = sum(a.ambiguous for a in assigned)
    if ambiguous:
        notes.append(
            f"{ambiguous} tracks overlapped several people equally in time and place and are left out of "
            f"the figures (give the ground truth x_min/x_max/y_min/y_max regions to tell them apart)"
        )
    unscored = sum(t.scores is None for t in tracks)
    if unscored:
        notes.append(f"{unscored} tracks had no embedded crop and are not scored")

    row = {i: k for k, i in enumerate(scored)}
    records = []
    for i, (t, a) in enumerate(zip(tracks, assigned)):
        k = row.get(i)
        rec = {
            "video": t.video,
            "track_id": t.track_id,
            "start_s": round(t.start, 3),
            "end_s": round(t.end, 3),
            "ground_truth": a.identity,
            "tied": list(a.tied) if a.ambiguous else [],
            "centre": t.centre,
            "mated": bool(k is not None and mated[k]),
            "rank": int(found[k]) if k is not None and mated[k] else None,
            "candidates": [],
        }
        if k is not None:
            order = np.argsort(-sim[k], kind="stable")[:top_k]
            rec["candidates"] = [{"name": names[j], "score": round(float(sim[k, j]), 4)} for j in order]
        records.append(rec)
    counts = {
        "videos": len({t.video for t in tracks}),
        "tracks": len(tracks),
        "scored_tracks": len(scored),
        "mated_tracks": n_mated,
        "non_mated_tracks": n_non,
        "ambiguous_tracks": ambiguous,
        "gallery_identities": len(names),
    }
    return VideoResult("video", out, counts, notes, {}, records, thresholds)


def format_tracks(result: VideoResult) -> str:
    """One line per track: where, when, its ground truth, its best candidate and the rank of its mate."""
    head = ("video", "track", "start", "end", "truth", "best", "score", "rank")
    rows = []
    for r in result.tracks:
        best = r["candidates"][0] if r["candidates"] else None
        truth = (r["ground_truth"] or "-") + (
            "" if r["mated"] or r["ground_truth"] is None else " (not enrolled)"
        )
        if r["tied"]:
            truth = "/".join(r["tied"]) + " (ambiguous)"
        rows.append(
            (
                r["video"],
                str(r["track_id"]),
                f"{r['start_s']:.2f}",
                f"{r['end_s']:.2f}",
                truth,
                best["name"] if best else "-",
                f"{best['score']:.3f}" if best else "-",
                str(r["rank"]) if r["rank"] is not None else "-",
            )
        )
    widths = [max(len(h), *(len(row[c]) for row in rows)) if rows else len(h) for c, h in enumerate(head)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [head, *rows])
