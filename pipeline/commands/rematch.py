"""The ``rematch`` command: name past tracks with the gallery as it is now (retroactive matching).

    run_pipeline.py rematch [--db URL] [--config FILE] [--identity NAME ...] [--source S] [--since T]
                            [--format table|json|csv]
    run_pipeline.py rematch --undo ID | --undo --identity NAME ... [--db URL] [--config FILE] [--format ...]

Every logged track of each embedder that has templates is scored against the gallery
(:func:`gallery.rematch.rematch`) at the operating threshold of a live decision (``match.threshold`` when set,
else the gallery's own). A track whose best identity reaches it, and is not what the match log decided then nor
named so by an earlier rematch, gets a retroactive match; the match events stay as they were. ``--identity``
limits the names it may give. The new retroactive matches are listed (source, track, start and end, who, score,
what was decided then); with ``live.alerts.retroactive`` on, those of watchlisted identities raise alerts marked
``retroactive``, under the watch lists' camera and threshold rules as live alerts. ``enroll ... --rematch`` runs
the same pass for the people it just enrolled (:func:`rematch_enrolled`). Each pass prints its id (``query
rematches`` lists them all).

``--undo ID`` takes a pass back: exactly the retroactive matches it wrote are deleted and it is marked undone, so
every track's current decision is again what it was before (:func:`gallery.rematch.undo_rematch`); a pass undone
before is a no-op, said so on stderr. ``--undo --identity NAME`` deletes every retroactive match naming NAME,
whichever pass wrote it (:func:`gallery.rematch.undo_identity`); the passes' other names stay.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from core.types import Candidate, MatchResult, TrackTemplate
from gallery.enroll import EnrollReport
from gallery.errors import QueryError
from gallery.queries import Page
from gallery.refs import track_ref
from gallery.rematch import RematchReport, RetroHit, media_ids, rematch
from gallery.rematches import Undone, undo_identity, undo_rematch
from gallery.review_state import rejected_tracks
from pipeline.build import System, build
from pipeline.commands.common import add_config_options, config_of, db_of, parse_time
from pipeline.commands.tables import render
from pipeline.services.audit import audited, system_trail
from pipeline.sinks.alerts import alert_record, watchlist_alerts
from pipeline.sinks.outputs import wall_epochs
from pipeline.sinks.sql_gallery import SqlGalleryIndex

logger = logging.getLogger(__name__)

__all__ = [
    "add_scope_options",
    "print_reports",
    "register",
    "rematch_enrolled",
    "rematch_system",
    "run_rematch",
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rematch",
        help="name past tracks with the gallery as it is now (retroactive matches)",
        description=__doc__.split("\n\n")[0],
    )
    add_config_options(p)
    p.add_argument(
        "--identity", action="append", metavar="NAME", help="only give this name (repeatable; default: any)"
    )
    add_scope_options(p)
    p.add_argument(
        "--undo",
        nargs="?",
        const=0,
        type=_rematch_id,
        metavar="ID",
        help="undo the rematch ID (its retroactive matches deleted), or with --identity every retroactive match "
        "naming those people",
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(func=run_rematch)


def _rematch_id(text: str) -> int:
    """``--undo ID``: a rematch id (``query rematches``), 1 or more."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a rematch id (1 or more, see 'query rematches'), got {text!r}"
        )
    return int(text)


def add_scope_options(p: argparse.ArgumentParser) -> None:
    """``--since`` and ``--source``: which past tracks a rematch looks at (also on ``enroll --rematch``)."""
    p.add_argument("--since", help="only tracks seen from this time (sighting time, ISO 8601 with timezone)")
    p.add_argument("--source", help="only tracks of this source (file path or camera name)")


def rematch_system(
    system: System,
    embedder_id: str,
    *,
    identities: Sequence[str] | None = None,
    since: datetime | None = None,
    source: str | None = None,
    cause: str = "rematch",
    media: Sequence[int] | None = None,
) -> RematchReport:
    """One rematch pass of ``embedder_id`` at the system's operating threshold, with its retroactive alerts."""
    threshold = SqlGalleryIndex(system.gallery, embedder_id, system.cfg.match.threshold).threshold
    report = rematch(
        system.gallery,
        embedder_id,
        threshold,
        identities=identities,
        since=since,
        source=source,
        cause=cause,
        media_ids=media,
    )
    alert_retroactive(system, report)
    return report


def alert_retroactive(system: System, report: RematchReport) -> int:
    """Alerts for the retroactive matches of watchlisted identities when ``live.alerts.retroactive`` is on, under
    the watch lists' rules of a live alert (:meth:`pipeline.sinks.alerts.WatchlistAlerts.lists_for`: a list of the
    identity that applies to the track's camera and whose threshold the score reaches): the body of a live alert
    (``watchlists`` naming those lists) plus ``retroactive``, ``rematch_id``, ``run_id``, ``kind`` and
    ``logged_at``; returns how many; none for a track with a rejected match (:mod:`gallery.review_state`).
    Delivery ends by ``live.alerts.shutdown_timeout_s``."""
    cfg = system.cfg.live.alerts
    if not cfg.retroactive or not report.matches:
        return 0
    with system.gallery.db.session() as session:  # a reviewer rejected a match of theirs: no further alert
        rejected = rejected_tracks(session, [hit.track_pk for hit in report.matches])
    alerts = watchlist_alerts(cfg, system.gallery)
    raised = 0
    try:
        for hit in report.matches:
            if hit.identity not in alerts.watchlist or hit.track_pk in rejected:
                continue
            template, result = _as_decision(hit, report.threshold)
            lists = alerts.lists_for(template, result)
            if not lists:
                continue  # not on a list for the track's camera, or below the thresholds of the lists it is on
            ref = track_ref(hit.run_id, hit.track_id)
            alert = (
                alert_record(template, result, ref=ref)
                | alerts.links(template, ref)
                | {
                    "watchlists": lists,
                    "retroactive": True,
                    "rematch_id": report.rematch_id,
                    "run_id": hit.run_id,
                    "kind": hit.kind,
                    "logged_at": hit.logged_at.isoformat(),
                }
            )
            raised += 1
            if cfg.log:
                logger.warning(
                    "ALERT retroactive watchlist match: %s on %s track %d (score %.3f, %.1f-%.1fs, logged %s)",
                    hit.identity,
                    hit.source,
                    hit.track_id,
                    hit.score,
                    hit.start_time,
                    hit.end_time,
                    alert["logged_at"],
                )
            alerts.deliver(alert)
    finally:
        alerts.close()
    return raised


def _as_decision(hit: RetroHit, threshold: float) -> tuple[TrackTemplate, MatchResult]:
    """A retroactive match as the track and decision an alert is made of."""
    wall = wall_epochs(hit.seen_start, hit.seen_end)
    track = TrackTemplate(
        hit.source,
        hit.track_id,
        np.zeros(0, np.float32),
        0.0,
        0,
        None,
        hit.start_time,
        hit.end_time,
        0,
        *wall,
    )
    best = (Candidate(hit.identity_id, hit.identity, hit.score),)
    return track, MatchResult(hit.source, hit.track_id, best, "match", threshold)


def rematch_enrolled(
    system: System, report: EnrollReport, cause: str, *, since: datetime | None, source: str | None
) -> RematchReport:
    """``enroll ... --rematch``: the pass for the identities of the request (their new media as its cause)."""
    embedder_id = system.embedder.embedder_id
    names = sorted({o.identity for o in report.outcomes if o.status in ("enrolled", "duplicate")})
    hashes = [h for found in report.enrolled.values() for h in found]
    media = media_ids(system.gallery, embedder_id, hashes)
    return rematch_system(
        system, embedder_id, identities=names, since=since, source=source, cause=cause, media=media
    )


def print_reports(reports: Sequence[RematchReport], fmt: str = "table") -> None:
    """The new retroactive matches on stdout (table, JSON or CSV), a summary line per pass on stderr."""
    rows = [
        h.as_row() | {"embedder_id": r.embedder_id, "rematch_id": r.rematch_id}
        for r in reports
        for h in r.matches
    ]
    print(render("rematch", Page(rows, 1, max(len(rows), 1), False), fmt))
    for r in reports:
        wrote = (
            f" (rematch {r.rematch_id}: rematch --undo {r.rematch_id} takes them back)"
            if r.rematch_id
            else ""
        )
        print(
            f"rematch of {r.embedder_id}: {r.tracks_scored} tracks scored at threshold {r.threshold:.4f}, "
            f"{len(r.matches)} new retroactive matches{wrote}",
            file=sys.stderr,
        )


def run_undo(args: argparse.Namespace) -> int:
    """``rematch --undo ID`` or ``rematch --undo --identity NAME...``: the passes touched on stdout, a line each
    on stderr."""
    if args.since or args.source:
        raise QueryError(
            "rematch --undo: expected no --since or --source (it undoes what a pass wrote), got them"
        )
    if bool(args.undo) == bool(args.identity):
        raise QueryError(
            "rematch --undo: expected a rematch id (--undo ID) or --identity NAME, got "
            f"{'both' if args.undo else 'neither'}"
        )
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), detector=False, embedder=False, create=False) as system:
        objects = [f"rematch:{args.undo}"] if args.undo else list(args.identity)
        with audited(system_trail(system), "undo", objects) as action:
            if args.undo:
                done = [undo_rematch(system.gallery, args.undo)]
            else:
                done = [d for name in args.identity for d in undo_identity(system.gallery, name)]
            action.details["undone"] = [d.as_row() for d in done]
    print(render("undo", Page([d.as_row() for d in done], 1, max(len(done), 1), False), args.format))
    for d in done:
        print(_undone_line(d), file=sys.stderr)
    if not done:
        print(f"nothing to undo: no retroactive match names {', '.join(args.identity)}", file=sys.stderr)
    return 0


def _undone_line(d: Undone) -> str:
    if d.already:
        return f"rematch {d.rematch_id}: already undone at {d.undone_at.isoformat()}; nothing changed"
    whole = "undone" if d.undone_at is not None else "partly undone (its other names stay)"
    return (
        f"rematch {d.rematch_id} {whole}: {d.removed} retroactive matches deleted ({', '.join(d.identities)})"
    )


def run_rematch(args: argparse.Namespace) -> int:
    if args.undo is not None:
        return run_undo(args)
    since = parse_time(args.since) if args.since else None
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), detector=False, embedder=False, create=False) as system:
        scope = {"cause": "rematch", "since": args.since, "source": args.source}
        with audited(system_trail(system), "rematch", list(args.identity or []), scope) as action:
            reports = [
                rematch_system(system, embedder_id, identities=args.identity, since=since, source=args.source)
                for embedder_id in system.gallery.embedders()
            ]
            action.details["passes"] = [
                {"rematch_id": r.rematch_id, "embedder_id": r.embedder_id, "matches": len(r.matches)}
                for r in reports
            ]
    if not reports:
        print("rematch: the gallery has no templates; nothing to match", file=sys.stderr)
    print_reports(reports, args.format)
    return 0
