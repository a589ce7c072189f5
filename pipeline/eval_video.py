"""``eval video``: the video pipeline over raw videos, its tracks scored by :mod:`facemoe.evaluate.video`.

The scoring (ground truth, track assignment, metrics) lives in ``facemoe.evaluate.video`` and knows nothing of
the pipeline; this module runs the pipeline of ``process`` (same config and overrides) and turns its tracks into
:class:`~facemoe.evaluate.video.ScoredTrack` probes scored against every gallery identity.
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
from stages.detect import FaceDetector
from stages.embed import build_embedder
from stages.match import InMemoryGallery, Matcher, gallery_images

from .config import load_config
from .runner import Runner
from .sources import FileSource

__all__ = ["evaluate_videos", "run_tracks"]

logger = logging.getLogger(__name__)


def evaluate_videos(videos: Sequence[str | Path], ground_truth: str | Path, gallery_dir: str | Path,
                    config_path: str | Path, overrides: Sequence[str] = (), ranks: Sequence[int] = (1, 5),
                    fpir_targets: Sequence[float] = (0.01, 0.1), tie_tolerance: float = 0.1) -> VideoResult:
    """Run the video pipeline (config and ``--set`` overrides as for ``process``) over ``videos``, enroll
    ``gallery_dir`` (one subfolder or image per person) through the same detector and embedder, and score the
    tracks against ``ground_truth`` with :func:`evaluate_tracks`. Inputs are checked before any model loads."""
    spans = read_ground_truth(ground_truth)
    tracks, names, threshold = run_tracks(videos, spans, gallery_dir, config_path, overrides)
    return evaluate_tracks(tracks, spans, names, ranks, fpir_targets, threshold, tie_tolerance)


def run_tracks(videos: Sequence[str | Path], spans: Sequence[GroundTruthSpan], gallery_dir: str | Path,
               config_path: str | Path, overrides: Sequence[str] = ()
               ) -> tuple[list[ScoredTrack], list[str], float | None]:
    """The pipeline part of :func:`evaluate_videos`: (tracks scored against every gallery identity, gallery
    names in score order, the configured match threshold)."""
    if not videos:
        raise ProtocolError("expected at least one video, got none")
    if len({str(v) for v in videos}) != len(videos):
        raise ProtocolError("the same video is given twice")
    keys = video_keys(videos, spans)
    cfg = load_config(config_path, list(overrides))
    sources = [FileSource(v, cfg.source) for v in videos]  # every file is opened before any model loads
    gallery_dir = Path(gallery_dir)
    folder_names = gallery_images(gallery_dir)
    if not folder_names:
        raise ProtocolError(f"gallery folder {gallery_dir} holds no images (expected one subfolder per person or "
                            f"images named after people)")
    detector = FaceDetector(cfg.detect)
    embedder = build_embedder(cfg.embed)
    threshold = cfg.match.threshold
    gallery = InMemoryGallery.from_folder(gallery_dir, detector, embedder, 0.0 if threshold is None else threshold)
    if not len(gallery):
        raise ProtocolError(f"no face found in any image of the gallery folder {gallery_dir}")
    runner = Runner(cfg, detector, embedder, Matcher(cfg.match, gallery), [], keep_boxes=True)
    stats = runner.run(sources)
    logger.info("%d frames, %d tracks in %.1f s", stats.frames, stats.tracks, stats.seconds["total"])
    tracks = []
    for template, _ in stats.results:
        scores = None
        if template.num_crops > 0:
            scores = (gallery.templates @ np.asarray(template.embedding, np.float32)).astype(np.float64)
        tracks.append(ScoredTrack(keys[template.source_id], template.track_id, template.first_timestamp,
                                  template.last_timestamp, scores,
                                  _median_centre(stats.boxes.get(template.source_id, []), template.track_id)))
    tracks.sort(key=lambda t: (t.video, t.start, t.track_id))
    return tracks, list(gallery.names), threshold


def _median_centre(frames, track_id: int) -> tuple[float, float] | None:
    """Median centre (x, y) in pixels of a track's face boxes over the frames that show it."""
    centres = [((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) for fb in frames
               for box, tid in zip(fb.xyxy, fb.track_id) if int(tid) == track_id]
    if not centres:
        return None
    x, y = np.median(np.asarray(centres, np.float64), axis=0)
    return float(x), float(y)
