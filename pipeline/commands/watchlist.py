"""The ``watchlist`` command: watch lists, each with its own alert threshold and the cameras it applies to
(:mod:`gallery.watchlists`), and who is on them.

    run_pipeline.py watchlist add NAME [--threshold 0.45] [--camera CAMERA ...]
    run_pipeline.py watchlist remove NAME
    run_pipeline.py watchlist list [--format table|json]
    run_pipeline.py watchlist members NAME
    run_pipeline.py watchlist join NAME IDENTITY...
    run_pipeline.py watchlist leave NAME IDENTITY...

A match on a member alerts (``live.alerts``) only when one of the member's lists applies to the track's camera and
the score reaches that list's threshold (none: the operating threshold in force). The list ``default`` is the
identities' watch-list flag (``enroll --watchlist``, the web app's ``PATCH /api/identities/NAME``) plus
``live.alerts.watchlist``: ``join``/``leave default`` set or clear the flag, and ``add default --threshold X``
gives it a threshold or cameras. Each change is appended to the audit trail (``watchlist.add``, ...). An unknown
list or identity, a taken name, a threshold outside [-1, 1]: one line, exit 2, nothing changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from gallery.db import Database
from gallery.names import shown
from gallery.watchlists import (
    add_watchlist,
    join_watchlist,
    leave_watchlist,
    list_members,
    list_watchlists,
    remove_watchlist,
)
from pipeline.commands.common import add_config_options, config_of, db_of
from pipeline.services.audit import audited, trail_of

logger = logging.getLogger(__name__)

__all__ = ["register", "run_watchlist"]

COLUMNS = ("name", "threshold", "cameras", "members")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "watchlist",
        help="watch lists with their own alert threshold and cameras: add, remove, list, members, join, leave",
        description=__doc__.split("\n\n")[0],
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a watch list (or give 'default' a threshold or cameras)")
    add.add_argument("name")
    add.add_argument(
        "--threshold", type=float, help="alert at this score or above (default: the operating threshold)"
    )
    add.add_argument(
        "--camera",
        action="append",
        default=None,
        help="only tracks of this camera (repeatable; default: any)",
    )
    remove = actions.add_parser("remove", help="remove a watch list (its members stay enrolled)")
    remove.add_argument("name")
    listing = actions.add_parser("list", help="the watch lists, their thresholds, cameras and member counts")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    members = actions.add_parser("members", help="the identities on a watch list")
    members.add_argument("name")
    subs = [add, remove, listing, members]
    for action, what in (("join", "put identities on a watch list"), ("leave", "take identities off it")):
        one = actions.add_parser(action, help=what)
        one.add_argument("name")
        one.add_argument("identities", nargs="+", metavar="IDENTITY")
        subs.append(one)
    for sub in subs:
        add_config_options(sub)
        sub.set_defaults(func=run_watchlist)


def _table(rows: list[dict]) -> str:
    def cell(value) -> str:
        if value is None:
            return "any"
        return ",".join(value) if isinstance(value, list) else str(value)

    cells = [list(COLUMNS)] + [[shown(cell(r[c])) for c in COLUMNS] for r in rows]
    for row, r in zip(cells[1:], rows):
        row[1] = "in force" if r["threshold"] is None else f"{r['threshold']:g}"
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


def run_watchlist(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    with Database(db_of(args, cfg), create=False) as db:
        if args.action in ("list", "members"):
            if args.action == "members":
                print("\n".join(shown(n) for n in list_members(db, args.name)))
                return 0
            rows = [w.as_row() for w in list_watchlists(db)]
            print(json.dumps({"rows": rows}, indent=2) if args.format == "json" else _table(rows))
            return 0
        trail = trail_of(db, cfg.gallery)
        if args.action == "add":
            details = {"threshold": args.threshold, "cameras": args.camera}
            with audited(trail, "watchlist.add", [args.name], details):
                add_watchlist(db, args.name, args.threshold, args.camera)
            print(f"watch list {shown(args.name)!r} added", file=sys.stderr)
        elif args.action == "remove":
            with audited(trail, "watchlist.remove", [args.name]):
                remove_watchlist(db, args.name)
            print(f"watch list {shown(args.name)!r} removed", file=sys.stderr)
        else:
            change = join_watchlist if args.action == "join" else leave_watchlist
            with audited(trail, f"watchlist.{args.action}", [args.name, *args.identities]) as action:
                changed = change(db, args.name, args.identities)
                action.details["changed"] = changed
            verb = "joined" if args.action == "join" else "left"
            print(f"{len(changed)} identities {verb} {shown(args.name)!r}", file=sys.stderr)
    return 0
