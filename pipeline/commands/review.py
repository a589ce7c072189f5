"""Reviews on the command line: a person's verdict on what the system decided about a track.

    run_pipeline.py review REF (--confirm | --reject | --ack | --name NAME) [--identity NAME] [--note TEXT]
    run_pipeline.py query reviews [--identity NAME] [--source NAME] [--since T] [--until T] [--format ...]

``--confirm``/``--reject`` judge the track's current match (``--identity`` picks another of its matches), ``--ack``
acknowledges the alert of its match, ``--name NAME`` names an unknown track (:mod:`gallery.reviews`). The reviewer is
the operating-system account; the review is appended to the audit trail (``review``). A confirmed or named track's
from-track enrollment command is printed; nothing is enrolled.
"""

from __future__ import annotations

import argparse
import sys

from gallery.reviews import ReviewError, add_review
from pipeline.build import build
from pipeline.commands.common import add_config_options, config_of, db_of
from pipeline.services.audit import audited, cli_actor, system_trail

__all__ = ["register", "run_review"]


def _verdict(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.name is not None:
        return "named", args.name
    verdict = "confirmed" if args.confirm else "rejected" if args.reject else "acknowledged"
    return verdict, args.identity


def run_review(args: argparse.Namespace) -> int:
    verdict, identity = _verdict(args)
    if args.name is not None and args.identity is not None:
        raise ReviewError("review --name: expected no --identity (the name is the identity), got both")
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), detector=False, embedder=False, create=False) as system:
        details = {"verdict": verdict, "identity": identity, "note": args.note or ""}
        with audited(system_trail(system), "review", [args.ref], details) as action:
            done = add_review(
                system.gallery.db, args.ref, verdict, cli_actor()[0], identity=identity, note=args.note or ""
            )
            action.details.update(review_id=done["id"], kind=done["kind"], identity=done["identity"])
    print(
        f"review {done['id']} of track {done['ref']}: {done['verdict']} {done['identity']} ({done['kind']}) by "
        f"{done['reviewer']}",
        file=sys.stderr,
    )
    if done["offer"]:
        print(f"to add the track's crops to {done['identity']}'s template: {done['offer']}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "review", help="confirm or reject a track's match, acknowledge its alert, or name an unknown track"
    )
    p.add_argument("ref", help="the track's reference RUN:TRACK (the ref column of every table)")
    add_config_options(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--confirm", action="store_true", help="the match is that person")
    what.add_argument("--reject", action="store_true", help="the match is not that person")
    what.add_argument("--ack", action="store_true", help="acknowledge the alert of the match")
    what.add_argument("--name", metavar="NAME", help="name an unknown track as enrolled identity NAME")
    p.add_argument(
        "--identity", metavar="NAME", help="judge the track's match to NAME (default: its current one)"
    )
    p.add_argument("--note", metavar="TEXT", default="", help="why (kept with the review)")
    p.set_defaults(func=run_review)
