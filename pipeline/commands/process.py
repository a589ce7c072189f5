"""The ``process`` command: video files in, one line per face track out (who, when, how sure).

    run_pipeline.py process VIDEO... [--gallery DIR] [--db URL] [--config FILE] [--set key=value ...]
                    [--json FILE|-] [--thumbnails DIR] [--annotate DIR] [--progress | --no-progress]
                    [--restart] [--reprocess]

Tracks are matched against the gallery of the database (``--db``, default ``gallery.db_url`` of the config:
``sqlite:///facemoe.db``); ``--gallery DIR`` first enrolls the folder's people there (images already enrolled
are skipped by content hash). Every track and its decision goes to the database's match log, one run per
video, for ``query`` and ``serve`` to show later. Runs left ``running`` by a process that is gone are marked
``interrupted`` first; a video whose newest run (same file, same configuration) was interrupted resumes from that
run's last committed position unless ``--restart`` (docs/pipeline.md, "Interrupted runs").

A video is processed once: it is known by its content (the same file under another path or name is the same
source). One whose newest run finished is not processed again (its logged tracks are shown) unless
``--reprocess``; once a run of a video finishes, its tracks replace those of the video's earlier runs
(docs/pipeline.md, "A file is processed once").
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gallery.errors import StorageError
from gallery.runs import LoggedTrack, resume_point
from pipeline.build import System, build
from pipeline.commands.common import add_config_options, config_of, db_of, parse_time
from pipeline.commands.process_once import (
    content_keys,
    feed_logged,
    finished_videos,
    replace_earlier,
    show_logged,
)
from pipeline.errors import PipelineError
from pipeline.runners.runner import FileRunner, FileRunStats, Resume
from pipeline.runners.sources import FileSource
from pipeline.sinks.annotate import track_labels, write_annotated
from pipeline.sinks.outputs import ConsoleTableSink, JsonSink, ResultSink, ThumbnailSink
from pipeline.sinks.sql_gallery import LoggedSource, MatchLogSink

__all__ = ["register", "run_process"]

logger = logging.getLogger(__name__)


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
    p.add_argument(
        "--restart",
        action="store_true",
        help="process every video from its start even when its last run was interrupted (default: resume)",
    )
    p.add_argument(
        "--reprocess",
        action="store_true",
        help="process videos again whose last run finished (default: show their logged tracks); once the new "
        "run finishes, its tracks replace the earlier runs' (an interrupted run still resumes unless --restart)",
    )
    p.add_argument(
        "--recorded-at",
        metavar="TIME",
        help="when the videos' first frame was recorded, ISO 8601 with a zone (2026-03-01T10:00:00+01:00) "
        "(default: the file's creation_time tag, else source.recorded_at_pattern on its name, else unknown)",
    )
    p.set_defaults(func=run_process)


class _LabelSink:
    """Keeps only each track's decision (for ``--annotate``), not its template or crop."""

    def __init__(self) -> None:
        self.results: list[tuple[str, object]] = []

    def on_track(self, template, result) -> None:
        self.results.append((template.source_id, result))

    def close(self) -> None:
        pass


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
                "discontinuities": report.discontinuities,
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
    recorded_at = parse_time(args.recorded_at, "--recorded-at") if args.recorded_at else None
    # every file is checked before any work
    sources = [FileSource(v, cfg.source, recorded_at=recorded_at) for v in args.videos]
    keys = content_keys(sources)
    with build(cfg, db_url=db_of(args, cfg), gallery_dir=args.gallery) as system:
        index = system.index()
        print(f"threshold in force: {index.in_force}", file=sys.stderr)
        logged = [
            LoggedSource(
                s.source_id,
                "file",
                str(s.path.resolve()),
                s.recorded_at,
                s.time_origin,
                content_key=keys[s.source_id],
            )
            for s in sources
        ]
        done, shown = finished_videos(args, system, logged)
        sources = [s for s in sources if s.source_id not in done]
        logged = [entry for entry in logged if entry.name not in done]
        if not sources:  # each one done before, or being processed now: nothing is logged
            show_logged(args, shown)
            return 0
        sources, resume = _resume(args, system, sources, logged)
        continued = {source_id: run_id for source_id, (run_id, _) in resume.items()}
        log = system.match_log(logged, resumed_from=continued, threshold=index.in_force)
        try:
            resumed = {k: r for k, (_, r) in resume.items()}
            stats = _run(args, system, sources, index, log, resumed, shown)
        except BaseException as exc:  # storage that refuses writes: a re-run resumes once it is writable
            log.close("interrupted" if isinstance(exc, StorageError) else "failed")
            raise
        log.close("finished")
        replace_earlier(system, log.run_ids.values())
        print(
            f"match log: {system.gallery.db.shown} runs {', '.join(str(r) for r in log.run_ids.values())} "
            f"(threshold in force: {index.in_force})",
            file=sys.stderr,
        )
    if stats.tracks == 0 and not resume:  # an ordinary outcome for surveillance footage, not an error
        print(
            f"no face tracks found in {', '.join(s.source_id for s in sources)} ({stats.frames} frames processed, "
            f"{stats.detections} detections); the runs are logged with 0 tracks",
            file=sys.stderr,
        )
    return 0


def _resume(
    args: argparse.Namespace, system: System, sources: list[FileSource], logged: list[LoggedSource]
) -> tuple[list[FileSource], dict[str, tuple[int, Resume]]]:
    """Sources starting at their resume point where the newest run of the same file and configuration was
    interrupted (unless ``--restart``), and per resumed source: (that run's id, what it logged)."""
    out, resume = [], {}
    for source, entry in zip(sources, logged):
        point = (
            None
            if args.restart
            else resume_point(system.gallery.db, entry.name, entry.uri, system.config_hash, entry.content_key)
        )
        if point is None or point.resume_at <= source.cfg.start:
            out.append(source)
            if point is not None:
                resume[source.source_id] = (point.run_id, Resume(point.committed_at, list(point.logged)))
            continue
        print(
            f"resuming {source.source_id} at {point.resume_at:.2f} s (run {point.run_id} was interrupted; "
            "--restart processes it from the start)",
            file=sys.stderr,
        )
        window = source.cfg.model_copy(update={"start": point.resume_at})
        out.append(source.windowed(window))
        resume[source.source_id] = (point.run_id, Resume(point.committed_at, list(point.logged)))
    return out, resume


def _run(
    args: argparse.Namespace,
    system: System,
    sources: list[FileSource],
    index,
    log: MatchLogSink,
    resume: dict[str, Resume],
    shown: list[tuple[str, LoggedTrack]] = (),
) -> FileRunStats:
    cfg = system.cfg
    thumbs = ThumbnailSink(args.thumbnails, cfg.output.thumbnail_size) if args.thumbnails else None
    collected = _LabelSink() if args.annotate else None
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
                "threshold_origin": index.in_force.origin,
                "runs": log.run_ids,
            },
            run_ids=log.run_ids,
        )
        sinks.append(json_sink)
    if args.json != "-":
        sinks.append(ConsoleTableSink(sys.stdout, log.run_ids))
    feed_logged([s for s in sinks if isinstance(s, (JsonSink, ConsoleTableSink))], shown)
    bar, update = _progress_bar(args.progress, sources)
    runner = FileRunner(
        cfg,
        system.detector,
        system.embedder,
        system.matcher(index),
        sinks,
        keep_boxes=args.annotate is not None,
        progress=update,
        checkpoint=log.progress,
        resume=resume,
    )
    try:
        stats = runner.run(sources)
    finally:
        bar.close()
    damage = _report_damage(stats)
    if json_sink is not None:
        json_sink.extra["sources"] = damage
    for sink in sinks:
        if sink is not log:
            sink.close()
    if args.annotate:
        for source in sources:
            results = [r for sid, r in collected.results if sid == source.source_id]
            target = args.annotate / f"{source.path.stem}_annotated.mp4"
            write_annotated(source, stats.boxes.get(source.source_id, []), track_labels(results), target)
    total = stats.seconds["total"]
    print(
        f"{stats.frames} frames in {total:.1f} s ({stats.frames / max(total, 1e-9):.1f} frames/s), "
        f"{stats.tracks} tracks, {stats.matches} matched, {stats.crops_embedded} crops embedded "
        f"of {stats.detections} detections",
        file=sys.stderr,
    )
    stages = ("decode_wait", "detect", "track", "crop", "embed", "match")
    print("seconds per stage: " + ", ".join(f"{k} {stats.seconds[k]:.1f}" for k in stages), file=sys.stderr)
    return stats
