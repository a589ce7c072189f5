"""``eval video``: end to end from raw videos, the pipeline's tracks scored against who is on screen when.

Registered under the ``eval`` command of :mod:`facemoe.cli` (whose other protocols score images).
"""

from __future__ import annotations

import argparse
import json
import logging

from facemoe.evaluate.report import format_table, write_report
from facemoe.evaluate.video import format_tracks
from pipeline.commands.common import add_config_options
from pipeline.runners.eval_video import evaluate_videos

__all__ = ["register", "run_eval_video"]

logger = logging.getLogger(__name__)


def register(protocols) -> None:
    """Add the ``video`` protocol to the ``eval`` command's sub-parsers."""
    vid = protocols.add_parser(
        "video",
        help="end to end from raw videos: pipeline tracks scored against who is on "
        "screen when (track-level rank-k, TPIR@FPIR)",
    )
    vid.add_argument(
        "videos", nargs="+", metavar="VIDEO", help="video files (matched to the ground truth by name)"
    )
    vid.add_argument(
        "--ground-truth",
        required=True,
        metavar="CSV",
        help="CSV with columns video, identity, start_s, end_s (empty times: the whole video)",
    )
    vid.add_argument(
        "--gallery",
        required=True,
        metavar="DIR",
        help="folder of known people: one subfolder per person, or images named after them "
        "(enrolled as by enroll --dir into a temporary database)",
    )
    add_config_options(vid, db=False)
    vid.add_argument("--out", help="folder for video.json")
    vid.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="what to print: the metrics and one line per track, or all of it as JSON",
    )
    vid.set_defaults(func=run_eval_video)


def run_eval_video(args: argparse.Namespace) -> int:
    result = evaluate_videos(args.videos, args.ground_truth, args.gallery, args.config, args.overrides)
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result))
        print()
        print(format_tracks(result))
    if args.out:
        for path in write_report(result, args.out):
            logger.info("wrote %s", path)
    return 0
