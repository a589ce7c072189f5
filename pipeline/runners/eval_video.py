"""``eval video``: the video pipeline over raw videos, its tracks scored by :mod:`facemoe.evaluate.video`.

The scoring (ground truth, track assignment, metrics) lives in ``facemoe.evaluate.video`` and knows nothing of
the pipeline; this module builds the system of ``process`` (same config and overrides, the same builder), enrolls
the gallery folder with the rule of ``enroll --dir`` into a temporary database, runs the file runner and turns
its tracks into :class:`~facemoe.evaluate.video.ScoredTrack` probes scored against every gallery identity.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facemoe.evaluate.data import ProtocolError
from facemoe.evaluate.video import (
    GroundTruthSpan,
    ScoredTrack,
    VideoResult,
    evaluate_tracks,
    read_ground_truth,
    video_keys,
)
from gallery.enroll import folder_images
from pipeline.build import System, build
from pipeline.config import load_config
from pipeline.runners.runner import FileRunner
from pipeline.runners.sources import FileSource
from pipeline.sinks.outputs import CollectSink

__all__ = ["evaluate_videos", "median_centre", "run_tracks"]

logger = logging.getLogger(__name__)


def evaluate_videos(
    videos: Sequence[str | Path],
    ground_truth: str | Path,
    gallery_dir: str | Path,
    config_path: str | Path,
    overrides: Sequence[str] = (),
    ranks: Sequence[int] = (1, 5),
    fpir_targets: Sequence[float] = (0.01, 0.1),
    tie_tolerance: float = 0.1,
) -> VideoResult:
    """Run the video pipeline (config and ``--set`` overrides as for ``process``) over ``videos``, enroll
    ``gallery_dir`` (one subfolder or image per person) through the same detector and embedder, and score the
    tracks against ``ground_truth`` with :func:`evaluate_tracks`. Inputs are checked before any model loads."""
    spans = read_ground_truth(ground_truth)
    tracks, names, threshold = run_tracks(videos, spans, gallery_dir, config_path, overrides)
    return evaluate_tracks(tracks, spans, names, ranks, fpir_targets, threshold, tie_tolerance)


def run_tracks(
    videos: Sequence[str | Path],
    spans: Sequence[GroundTruthSpan],
    gallery_dir: str | Path,
    config_path: str | Path,
    overrides: Sequence[str] = (),
) -> tuple[list[ScoredTrack], list[str], float | None]:
    """The pipeline part of :func:`evaluate_videos`: (tracks scored against every gallery identity, gallery
    names in score order, the operating threshold)."""
    if not videos:
        raise ProtocolError("expected at least one video, got none")
    if len({str(v) for v in videos}) != len(videos):
        raise ProtocolError("the same video is given twice")
    keys = video_keys(videos, spans)
    cfg = load_config(config_path, list(overrides))
    sources = [FileSource(v, cfg.source) for v in videos]  # every file is opened before any model loads
    gallery_dir = Path(gallery_dir)
    if not gallery_dir.is_dir():
        raise ProtocolError(f"gallery folder not found: {gallery_dir}")
    folder_images(gallery_dir)  # a folder without images is refused before any model loads
    with build(cfg, db_url=None, gallery_dir=gallery_dir) as system:
        index = system.index()
        names = sorted(
            i.name for i in system.gallery.identities() if system.embedder.embedder_id in i.embedders
        )
        collect = CollectSink()
        runner = FileRunner(
            cfg, system.detector, system.embedder, system.matcher(index), [collect], keep_boxes=True
        )
        stats = runner.run(sources)
        logger.info("%d frames, %d tracks in %.1f s", stats.frames, stats.tracks, stats.seconds["total"])
        tracks = []
        for template, _ in collect.results:
            scores = _scores(system, template.embedding, names) if template.num_crops > 0 else None
            tracks.append(
                ScoredTrack(
                    keys[template.source_id],
                    template.track_id,
                    template.first_timestamp,
                    template.last_timestamp,
                    scores,
                    median_centre(stats.boxes.get(template.source_id, []), template.track_id),
                )
            )
    tracks.sort(key=lambda t: (t.video, t.start, t.track_id))
    return tracks, names, index.threshold


def _scores(system: System, embedding: np.ndarray, names: list[str]) -> np.ndarray:
    """Cosine score of a track template against every gallery identity, in ``names`` order."""
    row = system.gallery.search(
        np.asarray(embedding, np.float32)[None], len(names), system.embedder.embedder_id
    )[0]
    by_name = {name: score for _, name, score in row}
    return np.asarray([by_name[n] for n in names], np.float64)


def median_centre(frames, track_id: int) -> tuple[float, float] | None:
    """Median centre (x, y) in pixels of a track's face boxes over the frames that show it."""
    centres = [
        ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        for fb in frames
        for box, tid in zip(fb.xyxy, fb.track_id)
        if int(tid) == track_id
    ]
    if not centres:
        return None
    x, y = np.median(np.asarray(centres, np.float64), axis=0)
    return float(x), float(y)
