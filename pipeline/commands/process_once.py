"""``process`` and videos it processed before: each video is known by its content (:func:`content_keys`); one whose
newest run finished is shown from the match log instead of processed again (:func:`finished_videos`,
:func:`show_logged`), and a finished run's tracks replace those of the video's earlier runs
(:func:`replace_earlier`). docs/pipeline.md, "A file is processed once"."""

from __future__ import annotations

import argparse
import sys

from core.types import Candidate, MatchResult, TrackTemplate
from gallery.content import content_key
from gallery.runs import LoggedTrack, logged_tracks, newest_run, replace_runs
from gallery.thumbnails import ThumbnailStore
from pipeline.build import System
from pipeline.errors import PipelineError
from pipeline.runners.sources import FileSource
from pipeline.sinks.outputs import ConsoleTableSink, JsonSink, wall_epochs
from pipeline.sinks.sql_gallery import LoggedSource

__all__ = ["content_keys", "feed_logged", "finished_videos", "replace_earlier", "show_logged"]


def content_keys(sources: list[FileSource]) -> dict[str, str]:
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


def finished_videos(
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
        replace_earlier(
            system, [run.run_id]
        )  # the earlier runs, if the command that finished it stopped before
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


def replace_earlier(system: System, run_ids) -> None:
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
    wall = wall_epochs(track.seen_start, track.seen_end)
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


def feed_logged(sinks: list, shown: list[tuple[str, LoggedTrack]]) -> None:
    """The logged tracks of videos processed before, into the table and JSON sinks, each under its own run's
    reference ``RUN:TRACK``."""
    for sink in sinks:
        runs = sink.run_ids
        for name, track in shown:
            sink.run_ids = {name: track.run_id}
            sink.on_track(*_as_result(name, track))
        sink.run_ids = runs


def show_logged(args: argparse.Namespace, shown: list[tuple[str, LoggedTrack]]) -> None:
    """The logged tracks of videos processed before, when no video is processed now: the table on standard
    output, and with ``--json`` the same records."""
    sinks: list = [JsonSink(args.json, None, {"runs": {}}, run_ids={})] if args.json else []
    if args.json != "-":
        sinks.append(ConsoleTableSink(sys.stdout, {}))
    feed_logged(sinks, shown)
    for sink in sinks:
        sink.close()
