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

from core.types import Candidate, MatchResult, TrackTemplate
from gallery.content import content_key
from gallery.errors import StorageError
from gallery.runs import LoggedTrack, logged_tracks, newest_run, replace_runs, resume_point
from gallery.thumbnails import ThumbnailStore

from ..annotate import track_labels, write_annotated
from ..build import System, build
from ..errors import PipelineError
from ..runner import FileRunner, FileRunStats, Resume
from ..sinks import ConsoleTableSink, JsonSink, ResultSink, ThumbnailSink
from ..sources import FileSource
from ..sql_gallery import LoggedSource, MatchLogSink
from .common import add_config_options, config_of, db_of, parse_time

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
    keys = _content_keys(sources)
    with build(cfg, db_url=db_of(args, cfg), gallery_dir=args.gallery) as system:
        index = system.index()
        print(f"threshold in force: {index.in_force}", file=sys.stderr)
        logged = [
            LoggedSource(s.source_id, "file", str(s.path.resolve()), content_key=keys[s.source_id])
            for s in sources
        ]
        done, shown = _done(args, system, logged)
        sources = [s for s in sources if s.source_id not in done]
        logged = [entry for entry in logged if entry.name not in done]
        if not sources:  # each one done before, or being processed now: nothing is logged
            _show(args, shown)
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
        _replace(system, log.run_ids.values())
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
    _feed([s for s in sinks if isinstance(s, (JsonSink, ConsoleTableSink))], shown)
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


def _content_keys(sources: list[FileSource]) -> dict[str, str]:
    """Each video's content key (:func:`gallery.content.content_key`); two of them with one content are refused."""
    keys: dict[str, str] = {}
    for source in sources:
        key = content_key(source.path)
        same = next((name for name, k in keys.items() if k == key), None)
        if same is not None:
            raise PipelineError(
                f"{source.source_id}: expected another video than {same}, got the same content (a copy)"
            )
        keys[source.source_id] = key
    return keys


def _done(
    args: argparse.Namespace, system: System, logged: list[LoggedSource]
) -> tuple[set[str], list[tuple[str, LoggedTrack]]]:
    """The videos not to process, each said in one line: those a live run is processing now, and those whose
    newest run finished (unless ``--reprocess``); with the logged tracks of the finished ones (name, track)."""
    done, shown, db = set(), [], system.gallery.db
    for entry in logged:
        run = newest_run(db, entry.name, entry.uri, entry.content_key)
        if run is None or run.status not in ("running", "finished"):
            continue
        if run.status == "finished" and args.reprocess:
            continue
        done.add(entry.name)
        if run.status == "running":
            print(
                f"{entry.name}: not processed: run {run.run_id} is processing it now "
                f"(host {run.host}, pid {run.pid})",
                file=sys.stderr,
            )
            continue
        _replace(system, [run.run_id])  # the earlier runs, if the command that finished it stopped before
        tracks = logged_tracks(db, run.chain)
        when = run.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC") if run.finished_at else "at an unknown time"
        logged_as = "" if run.source == entry.name else f", logged as {run.source}"
        print(
            f"{entry.name}: processed already by run {run.run_id} (finished {when}, {len(tracks)} tracks"
            f"{logged_as}); nothing logged (--reprocess processes it again)",
            file=sys.stderr,
        )
        shown += [(entry.name, track) for track in tracks]
    return done, shown


def _replace(system: System, run_ids) -> None:
    """Once runs ``run_ids`` finished: the tracks of their files' other runs are replaced by theirs."""
    store = ThumbnailStore.for_database(system.gallery.db, system.gallery.config)
    for run_id in run_ids:
        old = replace_runs(system.gallery.db, run_id, store, system.track_indexes)
        if old:
            print(
                f"run {run_id} replaces run{'s' if len(old) > 1 else ''} {', '.join(map(str, old))} of the same "
                "video (their tracks are deleted)",
                file=sys.stderr,
            )


def _as_result(name: str, track: LoggedTrack) -> tuple[TrackTemplate, MatchResult]:
    """A logged track as the pipeline handed it to the sinks (no crop)."""
    wall = [None if t is None else t.timestamp() for t in (track.seen_start, track.seen_end)]
    template = TrackTemplate(
        name,
        track.track_id,
        track.template,
        0.0,
        track.crops_embedded,
        None,
        track.start_time,
        track.end_time,
        track.frames,
        wall_start=wall[0],
        wall_end=wall[1],
    )
    cands = tuple(
        Candidate(int(c["identity_id"]), str(c["name"]), float(c["score"])) for c in track.candidates
    )
    return template, MatchResult(name, track.track_id, cands, track.decision, track.threshold)


def _feed(sinks: list, shown: list[tuple[str, LoggedTrack]]) -> None:
    """The logged tracks of videos processed before, into the table and JSON sinks, each under its own run's
    reference ``RUN:TRACK``."""
    for sink in sinks:
        runs = sink.run_ids
        for name, track in shown:
            sink.run_ids = {name: track.run_id}
            sink.on_track(*_as_result(name, track))
        sink.run_ids = runs


def _show(args: argparse.Namespace, shown: list[tuple[str, LoggedTrack]]) -> None:
    """The logged tracks of videos processed before, when no video is processed now: the table on standard
    output, and with ``--json`` the same records."""
    sinks: list = [JsonSink(args.json, None, {"runs": {}}, run_ids={})] if args.json else []
    if args.json != "-":
        sinks.append(ConsoleTableSink(sys.stdout, {}))
    _feed(sinks, shown)
    for sink in sinks:
        sink.close()
