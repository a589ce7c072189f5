"""The audit trail on the command line: ``audit verify`` and ``query audit``.

    run_pipeline.py audit verify [--db URL] [--config FILE]
    run_pipeline.py query audit [--user NAME] [--action ACTION] [--since T] [--until T] [--format table|json|csv]

``audit verify`` walks the chain (:func:`gallery.audit.verify`): exit 0 and the number of entries when it holds,
exit 1 naming the first bad entry when a row was edited, deleted or cut off, exit 2 for bad input (no database,
an unreadable head file). ``query audit`` lists entries newest first; ``--action user.`` matches every action
starting so.
"""

from __future__ import annotations

import argparse
import sys

from gallery.audit import verify
from gallery.audit_retention import AuditFilters, find_audit
from pipeline.build import build
from pipeline.commands.common import add_config_options, config_of, db_of, parse_time
from pipeline.commands.tables import render
from pipeline.services.audit import system_trail

__all__ = ["add_query_arguments", "register", "run_query", "run_verify"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "audit", help="check the audit trail's hash chain", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="walk the chain; exit 1 naming the first bad entry")
    add_config_options(v)
    v.set_defaults(func=run_verify)


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """``query audit``'s own filters: ``--user`` and ``--action``."""
    parser.add_argument("--user", help="audit: only entries by this actor")
    parser.add_argument("--action", help="audit: only this action (a prefix ending in '.': all starting so)")


def _open(args: argparse.Namespace):
    cfg = config_of(args)
    return build(cfg, db_url=db_of(args, cfg), detector=False, embedder=False, create=False)


def run_verify(args: argparse.Namespace) -> int:
    with _open(args) as system:
        trail = system_trail(system)
        verdict = verify(trail.db, head=trail.head)
        shown = trail.db.shown
    for note in verdict.notes:
        print(f"note: {note}", file=sys.stderr)
    if not verdict.ok:
        print(f"audit trail of {shown} broken at entry {verdict.bad_id}: {verdict.reason}", file=sys.stderr)
        return 1
    print(f"audit trail of {shown}: {verdict.entries} entries, chain intact", file=sys.stderr)
    return 0


def run_query(args: argparse.Namespace) -> int:
    """``query audit``: a page of entries as a table, JSON or CSV."""
    filters = AuditFilters(
        user=args.user,
        action=args.action,
        since=parse_time(args.since, "--since") if args.since else None,
        until=parse_time(args.until, "--until") if args.until else None,
        page=args.page,
        page_size=args.page_size,
    )
    with _open(args) as system:
        page = find_audit(system.gallery.db, filters)
    print(render("audit", page, args.format))
    return 0
