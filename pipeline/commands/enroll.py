"""The ``enroll`` command: detect, align, quality-score and embed gallery images with the configured stages
and store them through :class:`gallery.enroll.Enroller`.

    run_pipeline.py enroll [--db URL] [--config FILE] --dir GALLERY_DIR
    run_pipeline.py enroll --db URL --labels identities.json
    run_pipeline.py enroll --db URL --name NAME IMAGE... [--add] [--external-id ID] [--watchlist] [--notes
    TEXT]
    run_pipeline.py enroll --db URL --name NAME --template FILE.npz
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gallery.enroll import Enroller, EnrollReport
from gallery.errors import EnrollmentError

from ..build import build
from .common import add_config_options, config_of, db_of

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
    p.add_argument("--add", action="store_true", help="with --name: add to an existing identity")
    p.add_argument("--external-id", help="with --name: an id from another system")
    p.add_argument("--watchlist", action="store_true", help="with --name: put the identity on the watch list")
    p.add_argument("--notes", default="", help="with --name: free text")
    p.add_argument("--min-quality", type=float, default=0.0, help="reject faces with a lower quality score")
    add_config_options(p)
    p.set_defaults(func=run_enroll)


def _check_usage(args: argparse.Namespace) -> None:
    if args.name is None and (args.images or args.template or args.add or args.external_id or args.watchlist):
        raise EnrollmentError("IMAGE, --template, --add, --external-id and --watchlist need --name")
    if args.name is not None and bool(args.images) == bool(args.template):
        raise EnrollmentError(
            f"--name {args.name}: expected either IMAGE files or --template, got "
            f"{'both' if args.images else 'neither'}"
        )


def _enroll(enroller: Enroller, args: argparse.Namespace) -> EnrollReport:
    if args.dir is not None:
        return enroller.enroll_folder(args.dir)
    if args.labels is not None:
        return enroller.enroll_labels(args.labels)
    if args.template is not None:
        return enroller.enroll_template_file(args.name, args.template, add=args.add)
    return enroller.enroll_images(
        args.name,
        args.images,
        add=args.add,
        external_id=args.external_id,
        watchlist=args.watchlist,
        notes=args.notes,
    )


def run_enroll(args: argparse.Namespace) -> int:
    _check_usage(args)
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg)) as system:
        report = _enroll(system.enroller(args.min_quality), args)
    for outcome in report.outcomes:
        print(f"{outcome.status:<14} {outcome.identity:<24} {outcome.path} {outcome.detail}".rstrip())
    counts = {s: report.count(s) for s in ("enrolled", "duplicate")}
    print(
        f"enrolled {counts['enrolled']}, already enrolled {counts['duplicate']}, problems "
        f"{len(report.problems)}",
        file=sys.stderr,
    )
    if report.calibration is not None:
        cal = report.calibration
        how = (
            f"calibrated at FPIR {cal.target_fpir:g}"
            if cal.calibrated
            else "default: too few impostor scores"
        )
        print(f"threshold {cal.value:.4f} ({how})", file=sys.stderr)
    if not counts["enrolled"] and not counts["duplicate"]:
        raise EnrollmentError(
            f"nothing enrolled: {len(report.problems)} input(s) had problems (listed above)"
        )
    return 0
