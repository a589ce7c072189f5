"""Commands of the gallery: ``query``, ``serve``, ``remove``, ``merge`` and ``purge``.

run_pipeline.py query {matches,tracks,identities} [--db URL] [--config FILE] [filters] [--format table|json|csv]
run_pipeline.py query timeline NAME [--db URL] [--config FILE] [--source S] [--since T] [--until T] [--min-score X]
run_pipeline.py query {media,rematches} [--identity NAME] [--since T] [--until T] [--format table|json|csv]
run_pipeline.py serve [--db URL] [--config FILE] [--host 127.0.0.1] [--port 8000] [--allow-host NAME ...]
run_pipeline.py remove NAME [--media ID ...] [--track RUN:TRACK ...] [--db URL] [--config FILE]
run_pipeline.py rename NAME NEW_NAME [--db URL] [--config FILE]
run_pipeline.py merge SOURCE INTO [--db URL] [--config FILE]
run_pipeline.py purge --older-than DAYS [--db URL] [--config FILE]

``query matches`` lists retroactive matches too (``retroactive``: named later by a rematch), ``query tracks`` each
track's current decision (a retroactive match when there is one; ``logged_decision``: what was decided then),
``query timeline NAME`` every live and retroactive match of one identity, oldest first (:mod:`gallery.timeline`),
``query media`` the enrolled media with their ids and kinds (``image``, ``template``, ``track`` with its reference),
``query rematches`` the rematch passes with their ids (``rematch --undo ID``), ``query recordings`` the finished
camera segments (camera, wall-clock start and end, size, path in the recording store; ``--source CAMERA``),
``query cases`` the evidence cases (opened, closed, operator, note, recording segments held; ``evidence --close``).
``remove NAME`` removes an identity;
with ``--media``/``--track`` only those media of it, its templates re-fused from the rest.
CSV cells that a spreadsheet would run as a formula are neutralised (:func:`gallery.queries.csv_cell`). ``serve``
answers only requests whose ``Host`` names the listen address (with the loopback names on loopback), an
``--allow-host`` name or one of ``gallery.serve.allowed_hosts``.

Each opens the gallery through the one builder (``pipeline.build``) with the config's ``gallery`` section; none
creates a database that does not exist.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from gallery.audit_retention import cut_older_than
from gallery.cases import find_cases
from gallery.config import GalleryConfig
from gallery.db import Database
from gallery.errors import AuthError, QueryError
from gallery.matchlog import DECISIONS, purge_older_than
from gallery.media import find_media
from gallery.queries import KINDS, Filters
from gallery.recordings import find_recordings
from gallery.refs import parse_track_ref
from gallery.rematches import find_rematches
from gallery.reviews import find_reviews
from gallery.thumbnails import ThumbnailStore
from gallery.timeline import find_timeline
from gallery.users import any_users
from pipeline.build import System, build
from pipeline.commands import audit, unknowns
from pipeline.commands.common import add_config_options, config_of, db_of, listen_socket, parse_time
from pipeline.commands.tables import render
from pipeline.live.recording_recovery import purge_recordings
from pipeline.services.audit import audited, cli_actor, system_trail
from pipeline.services.enrollment import UPDATE_ACTION, remove_identity, remove_media, rename

logger = logging.getLogger(__name__)

__all__ = [
    "register",
    "serve_token",
    "check_bind",
    "TOKEN_ENV",
    "LOOPBACK",
    "QUERIES",
]

TOKEN_ENV = "FACEMOE_API_TOKEN"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
# every kind of ``query``: a function of the database and the filters returning a page (another kind is one entry
# here and one in pipeline/commands/tables.py COLUMNS)
QUERIES = {
    **KINDS,
    "timeline": find_timeline,
    "media": find_media,
    "rematches": find_rematches,
    "reviews": find_reviews,
    "recordings": find_recordings,
    "cases": find_cases,
}


def _open(args: argparse.Namespace) -> System:
    """The gallery of ``--db`` (else ``gallery.db_url``) with the config's gallery section; never created here."""
    cfg = config_of(args)
    return build(cfg, db_url=db_of(args, cfg), detector=False, embedder=False, create=False)


def run_query(args: argparse.Namespace) -> int:
    if args.kind == "unknowns":
        return unknowns.run(args)
    if args.kind == "audit":
        return audit.run_query(args)
    if args.user is not None or args.action is not None:
        raise QueryError(f"query {args.kind}: --user and --action apply to 'query audit' only")
    grouping = [
        f
        for f, v in (
            ("--embedder", args.embedder),
            ("--threshold", args.threshold),
            ("--min-size", args.min_size),
        )
        if v is not None
    ]
    if grouping:
        raise QueryError(f"query {args.kind}: {', '.join(grouping)} applies to 'query unknowns' only")
    if args.name is not None and args.kind != "timeline":
        raise QueryError(
            f"query {args.kind}: expected no NAME (only 'query timeline NAME' takes one), got {args.name!r}"
        )
    if args.kind == "timeline" and args.name is not None and args.identity not in (None, args.name):
        raise QueryError(
            f"query timeline: expected one name, got {args.name!r} and --identity {args.identity!r}"
        )
    filters = Filters(
        identity=args.name or args.identity,
        source=args.source,
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        decision=args.decision,
        min_score=args.min_score,
        watchlist=True if args.watchlist else None,
        page=args.page,
        page_size=args.page_size,
    )
    with _open(args) as system:
        page = QUERIES[args.kind](system.gallery.db, filters)
    print(render(args.kind, page, args.format))
    return 0


def serve_token(config: GalleryConfig) -> str | None:
    """The API token: the environment's ``FACEMOE_API_TOKEN`` first, then ``serve.token`` from the config."""
    token = os.environ.get(TOKEN_ENV) or config.serve.token
    if token is not None and len(token) < 8:
        raise AuthError(f"API token: expected at least 8 characters, got {len(token)}")
    return token


def check_bind(host: str, token: str | None, users: bool = False) -> None:
    """Refuse to listen beyond loopback without a token and without users (``users``: the database has some)."""
    if token is None and not users and host not in LOOPBACK:
        raise AuthError(
            f"serve --host {host}: expected a loopback address without a token; set {TOKEN_ENV} or "
            f"gallery.serve.token, or add users (run_pipeline.py users add), to listen on other interfaces"
        )


def _has_users(args: argparse.Namespace) -> bool:
    """Whether the database of ``--db`` (else ``gallery.db_url``) has users (:mod:`gallery.users`)."""
    cfg = config_of(args)
    with Database(db_of(args, cfg), create=False) as db:
        return any_users(db)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn  # the serve extra (fastapi, uvicorn): only this command needs it

    from pipeline.web.access_log import open_access_log
    from pipeline.web.guard import MAX_HEADER_BYTES  # the serve extra too
    from pipeline.web.hosts import trusted_hosts
    from pipeline.web.serve import LazyModels, serve_app

    config = config_of(args).gallery
    host = args.host or config.serve.host
    port = config.serve.port if args.port is None else args.port
    token = serve_token(config)
    users = token is None and _has_users(args)
    check_bind(host, token, users)
    hosts = trusted_hosts(host, [*config.serve.allowed_hosts, *args.allow_host])
    logger.info("serve: answering Host %s", ", ".join(sorted(hosts)))
    log = open_access_log(args.access_log) if args.access_log else contextlib.nullcontext()
    with log, _open(args) as system, LazyModels(system.cfg) as models, listen_socket(host, port) as sock:
        db = system.gallery.db
        app = serve_app(
            system, models, token=token, allowed_hosts=hosts, access_log=log if args.access_log else None
        )
        port = sock.getsockname()[1]  # the one the system picked for port 0
        access = "token required" if token else "users required" if users else "no token: loopback only"
        print(f"serving {db.shown} on http://{host}:{port}/ ({access})", file=sys.stderr)  # bound: it is true
        # h11 buffers at most the header bytes the app's guard allows of an unfinished request head
        limits = dict(http="h11", h11_max_incomplete_event_size=MAX_HEADER_BYTES)
        server = uvicorn.Config(app, host=host, port=port, log_level="warning", **limits)
        uvicorn.Server(server).run(sockets=[sock])
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """``remove NAME``: the identity; with ``--media``/``--track``: only those of its media (see
    :meth:`gallery.media.MediaStore.remove_media`). The thresholds are recalibrated after either."""
    tracks = [parse_track_ref(ref) for ref in args.track]  # every reference checked before anything is opened
    with _open(args) as system:
        gallery = system.gallery
        scope = {"media": args.media, "tracks": args.track}
        with audited(system_trail(system), "remove", [args.name], scope) as action:
            if args.media or tracks:
                removed = remove_media(gallery, args.name, args.media, args.track)
                action.details["removed"] = [row["id"] for row in removed]
            else:
                remove_identity(gallery, args.name)
    if not (args.media or tracks):
        print(f"removed {args.name}", file=sys.stderr)
        return 0
    for row in removed:
        what = f"track {row['track']}" if row["track"] else row["kind"]
        print(f"removed media {row['id']} ({what}: {row['path']}) from {args.name}", file=sys.stderr)
    print(
        f"{args.name}: template re-fused from the media left (query media --identity NAME)", file=sys.stderr
    )
    return 0


def run_rename(args: argparse.Namespace) -> int:
    """``rename NAME NEW_NAME``: the identity keeps its media, templates and matches under the new name."""
    with _open(args) as system:
        with audited(system_trail(system), UPDATE_ACTION, [args.name], {"name": args.new_name}) as action:
            new_name = rename(system.gallery, args.name, args.new_name)
            action.objects.append(new_name)
    print(f"renamed {args.name} to {new_name}", file=sys.stderr)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    with _open(args) as system:
        gallery = system.gallery
        with audited(system_trail(system), "merge", [args.source, args.into], {"into": args.into}):
            gallery.merge_identities(args.source, args.into)
        for embedder_id in gallery.embedders():
            gallery.calibrate(embedder_id)
    print(f"merged {args.source} into {args.into}", file=sys.stderr)
    return 0


def run_purge(args: argparse.Namespace) -> int:
    config = config_of(args).gallery
    days = args.older_than if args.older_than is not None else config.match_log.retention_days
    if days is None:
        raise QueryError("purge: expected --older-than DAYS or gallery.match_log.retention_days, got neither")
    if not days >= 0:  # NaN too; 0 means everything older than now
        raise QueryError(f"purge --older-than: expected 0 or more days, got {days:g}")
    with _open(args) as system:
        db = system.gallery.db
        trail = system_trail(system)
        with audited(trail, "purge", [], {"older_than_days": days}) as action:
            count = purge_older_than(db, days, ThumbnailStore.for_database(db, config))
            segments = purge_recordings(db, config_of(args))
            action.details |= {"tracks": count, "segments": segments}
        cut = None
        if config.audit.retention_days is not None:
            cut = cut_older_than(db, config.audit.retention_days, *cli_actor(), head=trail.head)
    print(f"deleted {count} tracks older than {days:g} days", file=sys.stderr)
    if segments is not None:
        print(f"deleted {segments} recording segments (live.recording retention)", file=sys.stderr)
    if cut:
        print(f"deleted {cut} audit entries (gallery.audit.retention_days)", file=sys.stderr)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    add_config_options(p)


def register(subparsers) -> None:
    q = subparsers.add_parser(
        "query",
        help="list matches, tracks or identities (newest first), an identity's timeline, recurring unknown "
        "people (groups of unknown tracks), enrolled media, rematches, reviews, recordings, cases or the audit trail",
    )
    q.add_argument("kind", choices=sorted([*QUERIES, "unknowns", "audit"]))
    q.add_argument("name", nargs="?", help="timeline: the identity")
    _common(q)
    q.add_argument("--identity", help="identity name")
    q.add_argument("--source", help="source (file or camera) name")
    q.add_argument("--since", help="from this time (ISO 8601 with timezone)")
    q.add_argument("--until", help="before this time (ISO 8601 with timezone)")
    q.add_argument("--decision", choices=DECISIONS)
    q.add_argument("--min-score", type=float)
    q.add_argument("--watchlist", action="store_true", help="identities: only those on the watch list")
    q.add_argument("--page", type=int, default=1)
    q.add_argument("--page-size", type=int, default=50)
    q.add_argument("--format", choices=("table", "json", "csv"), default="table")
    unknowns.add_arguments(q, common=False)
    audit.add_query_arguments(q)
    q.set_defaults(func=run_query)

    s = subparsers.add_parser("serve", help="HTTP API and page of recent matches")
    _common(s)
    s.add_argument("--host", help="listen address (default: gallery.serve.host, 127.0.0.1)")
    s.add_argument("--port", type=int, help="TCP port (default: gallery.serve.port, 8000; 0: any free port)")
    s.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this host name (repeatable; '*': any, which DNS rebinding can abuse)",
    )
    s.add_argument(
        "--access-log",
        metavar="FILE",
        help="append an access log in the combined format to FILE (0600; no credential is written)",
    )
    s.set_defaults(func=run_serve)

    r = subparsers.add_parser(
        "remove", help="remove an identity, or some of its enrolled media, from the gallery"
    )
    r.add_argument("name")
    r.add_argument(
        "--media",
        action="append",
        type=int,
        default=[],
        metavar="ID",
        help="remove only this enrolled media of NAME (the id column of 'query media'; repeatable)",
    )
    r.add_argument(
        "--track",
        action="append",
        default=[],
        metavar="RUN:TRACK",
        help="remove only the media NAME was enrolled from this track (repeatable)",
    )
    _common(r)
    r.set_defaults(func=run_remove)

    rn = subparsers.add_parser("rename", help="rename identity NAME to NEW_NAME")
    rn.add_argument("name")
    rn.add_argument("new_name")
    _common(rn)
    rn.set_defaults(func=run_rename)

    m = subparsers.add_parser("merge", help="merge identity SOURCE into identity INTO")
    m.add_argument("source")
    m.add_argument("into")
    _common(m)
    m.set_defaults(func=run_merge)

    pg = subparsers.add_parser(
        "purge",
        help="delete match events and thumbnails older than N days, and recordings by live.recording retention",
    )
    pg.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="age in days, 0 or more (0: everything older than now)",
    )
    _common(pg)
    pg.set_defaults(func=run_purge)
