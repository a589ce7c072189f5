"""The ``process`` command: video files in, one line per face track out (who, when, how sure).

    run_pipeline.py process VIDEO... [--gallery DIR] [--db URL] [--config FILE] [--set key=value ...]
                    [--json FILE|-] [--thumbnails DIR] [--annotate DIR] [--progress | --no-progress]

Tracks are matched against the gallery of the database (``--db``, default ``gallery.db_url`` of the config:
``sqlite:///facemoe.db``); ``--gallery DIR`` first enrolls the folder's people there (images already enrolled
are skipped by content hash). Every track and its decision goes to the database's match log, one run per
video, for ``query`` and ``serve`` to show later.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..annotate import track_labels, write_annotated
from ..build import System, build
from ..errors import PipelineError
from ..runner import FileRunner, FileRunStats
from ..sinks import CollectSink, ConsoleTableSink, JsonSink, ResultSink, ThumbnailSink
from ..sources import FileSource
from ..sql_gallery import LoggedSource, MatchLogSink
from .common import add_config_options, config_of, db_of

__all__ = ["NoFacesError", "register", "run_process"]

logger = logging.getLogger(__name__)


class NoFacesError(PipelineError):
    """The whole run found no face track."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "process",
        help="find, track and identify the faces in video files",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "videos", nargs="+", type=Path, metavar="VIDEO", help="video files (anything FFmpeg reads)"
    )
    p.add_argument(
        "--gallery",
        type=Path,
        help="folder of known people to enroll first: one subfolder per "
        "person, or images named after them (already enrolled images are skipped)",
    )
    add_config_options(p)
    p.add_argument(
        "--json",
        metavar="FILE",
        help="also write the results as JSON ('-' = standard output, which then replaces the table)",
    )
    p.add_argument("--thumbnails", type=Path, metavar="DIR", help="save each track's best face crop here")
    p.add_argument("--annotate", type=Path, metavar="DIR", help="write <video>_annotated.mp4 files here")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on standard error (default: when it is a terminal)",
    )
    p.set_defaults(func=run_process)


def _progress_bar(enabled: bool | None, sources: list[FileSource]):
    from tqdm import tqdm

    total = [s.expected_frames() for s in sources]
    bar = tqdm(
        total=sum(total) if all(total) else None,
        unit="frame",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=(not sys.stderr.isatty()) if enabled is None else not enabled,
    )

    def update(stats: FileRunStats, frames: int) -> None:
        bar.update(frames)
        bar.set_postfix(tracks=stats.tracks, matches=stats.matches, refresh=False)

    return bar, update


def _report_damage(stats: FileRunStats) -> list[dict]:
    out = []
    for source_id, report in stats.decode.items():
        out.append(
            {
                "source": source_id,
                "frames_decoded": report.decoded,
                "frames_processed": report.kept,
                "damaged": report.damaged,
                "damaged_packets": report.damaged_packets,
                "errors": report.errors,
            }
        )
        if report.damaged:
            first = f": {report.errors[0]}" if report.errors else ""
            print(
                f"warning: {source_id} is damaged ({report.damaged_packets} undecodable packets"
                f"{', ended early' if report.ended_early else ''}); all {report.kept} decodable frames "
                f"were processed{first}",
                file=sys.stderr,
            )
    return out


def run_process(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    names = [str(v) for v in args.videos]
    if len(set(names)) != len(names):
        raise PipelineError("the same video is given twice")
    sources = [FileSource(v, cfg.source) for v in args.videos]  # every file is checked before any work
    with build(cfg, db_url=db_of(args, cfg), gallery_dir=args.gallery) as system:
        index = system.index()
        logged = [LoggedSource(s.source_id, "file", str(s.path.resolve())) for s in sources]
        log = system.match_log(logged)
        try:
            stats = _run(args, system, sources, index, log)
        except BaseException:
            log.close("failed")
            raise
        log.close("finished")
        if stats.tracks:
            print(
                f"match log: {system.gallery.db.shown} runs {', '.join(str(r) for r in log.run_ids.values())} "
                f"(threshold {index.threshold:.3f})",
                file=sys.stderr,
            )
    if stats.tracks == 0:
        raise NoFacesError(
            f"no face tracks found in {', '.join(names)} ({stats.frames} frames processed, "
            f"{stats.detections} detections)"
        )
    return 0


def _run(
    args: argparse.Namespace, system: System, sources: list[FileSource], index, log: MatchLogSink
) -> FileRunStats:
    cfg = system.cfg
    thumbs = ThumbnailSink(args.thumbnails, cfg.output.thumbnail_size) if args.thumbnails else None
    collected = CollectSink() if args.annotate else None
    sinks: list[ResultSink] = [log] + [s for s in (thumbs, collected) if s is not None]
    json_sink = None
    if args.json:
        json_sink = JsonSink(
            args.json,
            args.thumbnails,
            {
                "embedder": system.embedder.embedder_id,
                "gallery_size": len(index),
                "threshold": index.threshold,
                "runs": log.run_ids,
            },
        )
        sinks.append(json_sink)
    if args.json != "-":
        sinks.append(ConsoleTableSink(sys.stdout))
    bar, update = _progress_bar(args.progress, sources)
    runner = FileRunner(
        cfg,
        system.detector,
        system.embedder,
        system.matcher(index),
        sinks,
        keep_boxes=args.annotate is not None,
        progress=update,
    )
    try:
        stats = runner.run(sources)
    finally:
        bar.close()
    damage = _report_damage(stats)
    for report in damage:
        log.progress(report["source"], report["frames_processed"], None)
    if stats.tracks == 0:
        return stats
    if json_sink is not None:
        json_sink.extra["sources"] = damage
    for sink in sinks:
        if sink is not log:
            sink.close()
    if args.annotate:
        for source in sources:
            results = [r for _, r in collected.results if r.source_id == source.source_id]
            target = args.annotate / f"{source.path.stem}_annotated.mp4"
            write_annotated(source, stats.boxes.get(source.source_id, []), track_labels(results), target)
    total = stats.seconds["total"]
    print(
        f"{stats.frames} frames in {total:.1f} s ({stats.frames / max(total, 1e-9):.1f} frames/s), "
        f"{stats.tracks} tracks, {stats.matches} matched, {stats.crops_embedded} crops embedded "
        f"of {stats.detections} detections",
        file=sys.stderr,
    )
    return stats
