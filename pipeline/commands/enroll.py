"""The ``enroll`` command: detect, align, quality-score and embed gallery images with the configured stages
and store them through :class:`gallery.enroll.Enroller`.

    run_pipeline.py enroll [--db URL] [--config FILE] --dir GALLERY_DIR
    run_pipeline.py enroll --db URL --labels identities.json
    run_pipeline.py enroll --db URL --name NAME IMAGE... [--add] [--external-id ID] [--watchlist] [--notes
    TEXT]
    run_pipeline.py enroll --db URL --name NAME --template FILE.npz
    run_pipeline.py enroll --db URL --name NAME --from-track RUN:TRACK... [--yes]
    ... --rematch [--since T] [--source S]

``--from-track`` enrolls NAME from logged tracks, each named by its reference ``RUN:TRACK`` (the ``ref`` column of
``query tracks``; a bare number is refused): their fused templates are its media (nothing is detected). An unknown
track is one line and exit code 2, nothing written; so is a track matched to someone else, or one that scores below
the operating threshold against NAME's templates (:mod:`gallery.from_tracks`), unless ``--yes``.
``--rematch`` then scores past tracks against the people just enrolled and writes the new retroactive matches
(``pipeline.commands.rematch``; its id is printed, ``rematch --undo ID`` takes it back); ``--since`` and
``--source`` narrow the tracks it looks at.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gallery.enroll import Enroller, EnrollReport
from gallery.errors import EnrollmentError
from gallery.names import quoted, shown
from gallery.rematch import check_scope
from pipeline.build import build
from pipeline.commands.common import add_config_options, config_of, db_of, parse_time
from pipeline.commands.rematch import add_scope_options, print_reports, rematch_enrolled
from pipeline.services.audit import audited, system_trail
from pipeline.services.enrollment import enroll_photos, enroll_tracks, nothing_enrolled

logger = logging.getLogger(__name__)

__all__ = ["register", "run_enroll"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "enroll", help="enroll people into the gallery", description=__doc__.split("\n\n")[0]
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dir", type=Path, help="folder with one subfolder of images per identity")
    what.add_argument(
        "--labels", type=Path, help="JSON object: image path (relative to the file) -> identity"
    )
    what.add_argument("--name", help="identity to enroll the given IMAGEs or --template as")
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="images of --name")
    p.add_argument("--template", type=Path, help="with --name: an .npz template file instead of images")
    p.add_argument(
        "--from-track",
        nargs="+",
        metavar="RUN:TRACK",
        help="with --name: logged tracks instead of images (the ref column of 'query tracks')",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="with --from-track: enroll tracks matched to someone else or unlike NAME anyway",
    )
    p.add_argument("--add", action="store_true", help="with --name: add to an existing identity")
    p.add_argument("--external-id", help="with --name: an id from another system")
    p.add_argument("--watchlist", action="store_true", help="with --name: put the identity on the watch list")
    p.add_argument("--notes", default="", help="with --name: free text")
    p.add_argument("--min-quality", type=float, default=0.0, help="reject faces with a lower quality score")
    p.add_argument(
        "--rematch",
        action="store_true",
        help="then name past tracks of the people enrolled (retroactive matches)",
    )
    add_scope_options(p)
    add_config_options(p)
    p.set_defaults(func=run_enroll)


def _tracks(args: argparse.Namespace) -> list[str] | None:
    """The logged tracks to enroll ``--name`` from (``--from-track``), or None when it is enrolled otherwise."""
    return args.from_track


def _check_usage(args: argparse.Namespace) -> None:
    named = (args.images, args.template, _tracks(args), args.add, args.external_id, args.watchlist)
    if args.name is None and any(named):
        raise EnrollmentError(
            "IMAGE, --template, --from-track, --add, --external-id and --watchlist need --name"
        )
    given = [what for what, v in (("IMAGE files", args.images), ("--template", args.template)) if v]
    given += ["--from-track"] if _tracks(args) else []
    if args.name is not None and len(given) != 1:
        raise EnrollmentError(
            f"--name {quoted(args.name)}: expected either IMAGE files or --template or --from-track, got "
            f"{' and '.join(given) or 'none'}"
        )
    if not args.rematch and (args.since or args.source):
        raise EnrollmentError("--since and --source need --rematch")
    if args.yes and not _tracks(args):
        raise EnrollmentError("--yes: expected it with --from-track, got it without")


def _enroll(enroller: Enroller, args: argparse.Namespace, threshold: float) -> EnrollReport:
    if args.dir is not None:
        return enroller.enroll_folder(args.dir)
    if args.labels is not None:
        return enroller.enroll_labels(args.labels)
    if args.template is not None:
        return enroller.enroll_template_file(args.name, args.template, add=args.add)
    if _tracks(args):
        return enroll_tracks(
            enroller,
            args.name,
            _tracks(args),
            add=args.add,
            external_id=args.external_id,
            watchlist=args.watchlist,
            notes=args.notes,
            threshold=threshold,
            force=args.yes,
        )
    return enroll_photos(
        enroller,
        args.name,
        args.images,
        add=args.add,
        external_id=args.external_id,
        watchlist=args.watchlist,
        notes=args.notes,
    )


def _audit_of(args: argparse.Namespace, cause: str) -> tuple[list, dict]:
    """What an enrollment's audit entry names before it runs: the identity (or the folder, labels file) and how."""
    variant = "dir" if args.dir else "labels" if args.labels else "template" if args.template else cause
    variant = "images" if variant == "enroll" else variant
    given = args.dir or args.labels or args.template
    details = {"variant": variant, "add": args.add, "watchlist": args.watchlist, "rematch": args.rematch}
    details |= {"input": str(given)} if given else {"inputs": [str(p) for p in args.images] or _tracks(args)}
    return ([args.name] if args.name else []), details


def run_enroll(args: argparse.Namespace) -> int:
    _check_usage(args)
    since = parse_time(args.since) if args.since else None
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), detector=not _tracks(args)) as system:
        if args.rematch:
            check_scope(system.gallery, args.source, since)  # refused before anything is written
        enroller = system.enroller(args.min_quality)
        enroller.add_option = "--add"
        cause = "from-track" if _tracks(args) else "enroll"
        with audited(system_trail(system), "enroll", *_audit_of(args, cause)) as action:
            report = _enroll(enroller, args, system.index().threshold)
            action.objects = sorted(report.enrolled) or action.objects
            action.details |= {s: report.count(s) for s in ("enrolled", "duplicate")}
            action.details["problems"] = len(report.problems)
            if not report.count("enrolled") and not report.count("duplicate"):
                action.result = "failed"
        rematched = None
        if args.rematch and (report.count("enrolled") or report.count("duplicate")):
            scope = {"cause": cause, "since": args.since, "source": args.source}
            with audited(system_trail(system), "rematch", sorted(report.enrolled), scope) as action:
                rematched = rematch_enrolled(system, report, cause, since=since, source=args.source)
                action.details |= {"rematch_id": rematched.rematch_id, "matches": len(rematched.matches)}
        in_force = system.index().in_force
    for outcome in report.outcomes:
        print(
            f"{outcome.status:<14} {shown(outcome.identity):<24} {shown(outcome.path)} {outcome.detail}".rstrip()
        )
    refused = nothing_enrolled(report)
    if refused is not None:
        raise refused
    counts = {s: report.count(s) for s in ("enrolled", "duplicate")}
    print(
        f"enrolled {counts['enrolled']}, already enrolled {counts['duplicate']}, problems "
        f"{len(report.problems)}",
        file=sys.stderr,
    )
    cal = report.calibration
    if cal is not None and cal.calibrated:
        print(
            f"calibration: {cal.value:.4f} at FPIR {cal.target_fpir:g} on {cal.impostor_scores} impostor scores",
            file=sys.stderr,
        )
    elif cal is not None:
        print(f"calibration: too few impostor scores ({cal.impostor_scores})", file=sys.stderr)
    print(f"threshold the next run uses: {in_force}", file=sys.stderr)
    if cal is not None and cal.calibrated and in_force.origin.startswith("config"):
        print(
            f"warning: the configuration ({in_force.origin.removeprefix('config ')}) overrides the calibrated "
            f"{cal.value:.4f}; set it to null to use the calibration",
            file=sys.stderr,
        )
    if rematched is not None:
        print_reports([rematched])
    return 0
