"""The ``evidence`` command: a case export of logged tracks (:func:`pipeline.services.evidence.export_evidence`).

    run_pipeline.py evidence REF... --out DIR [--redact] [--note TEXT] [--case NAME] [--zip] [--margin S]
                             [--db URL] [--config FILE] [--set KEY=VALUE]
    run_pipeline.py evidence --close CASE [--db URL] [--config FILE]

Per track its clip (the track's span and ``--margin`` seconds each side, its box drawn), context snapshot, best crop,
the enrolled face it matched and a JSON record; ``manifest.json`` lists every file with its SHA-256, the export's
time and operator (the enrolled photo is read where it was enrolled from when its content is still the one
enrolled). ``--redact`` blurs every other face in the clips and snapshots (the configured detector at
native resolution). DIR must be new or empty; nothing is written when a reference, a source file or the case name
is refused. A camera track's clip is cut from the camera's recordings (``live.recording.dir``, else beside the
database), privacy-masked; the case holds the segments used, so retention keeps them until ``--close CASE``
(``query cases`` lists the cases).
"""

from __future__ import annotations

import argparse
import sys

from gallery.cases import close_case
from gallery.recordings import RecordingStore
from gallery.thumbnails import ThumbnailStore
from pipeline.build import build
from pipeline.commands.common import add_config_options, config_of, db_of
from pipeline.services.audit import audited, system_trail
from pipeline.services.clips import DEFAULT_MARGIN_S
from pipeline.services.evidence import EvidenceError, export_evidence
from pipeline.services.redaction import redaction_detector

__all__ = ["register", "run_evidence"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evidence",
        help="export logged tracks as evidence: clips, snapshots, records and a SHA-256 manifest",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "refs", nargs="*", metavar="REF", help="track reference RUN:TRACK (the ref column of the tables)"
    )
    p.add_argument("--out", default=None, type=str, help="the export folder (new or empty)")
    p.add_argument(
        "--close", metavar="CASE", default=None, help="close case CASE: its recordings are no longer held"
    )
    p.add_argument("--redact", action="store_true", help="blur every face but the exported tracks' own")
    p.add_argument("--note", default="", help="a note stored with the case and in the manifest")
    p.add_argument("--case", default=None, help="the case's name (default: the name of the --out folder)")
    p.add_argument("--zip", action="store_true", help="also write the export as DIR.zip")
    p.add_argument(
        "--margin",
        type=_margin,
        default=DEFAULT_MARGIN_S,
        help="seconds kept before and after each track (2)",
    )
    add_config_options(p)
    p.set_defaults(func=run_evidence)


def _margin(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 600, got {text!r}")
    return value


def run_evidence(args: argparse.Namespace) -> int:
    if args.close is not None:
        if args.refs or args.out is not None:
            raise EvidenceError("evidence --close CASE: expected no track reference and no --out")
        return _close(args)
    if not args.refs or args.out is None:
        raise EvidenceError("evidence: expected track references REF... and --out DIR (or --close CASE)")
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), detector=False, embedder=False, create=False) as system:
        gallery = system.gallery
        store = ThumbnailStore.for_database(gallery.db, gallery.config)
        detector = redaction_detector(cfg.detect) if args.redact else None
        recordings = RecordingStore.for_recordings(gallery.db, cfg.live.recording.dir, cfg.gallery)
        scope = {"out": args.out, "redact": args.redact, "case": args.case, "zip": args.zip}
        with audited(system_trail(system), "export", list(args.refs), scope) as action:
            report = _export(args, gallery, store, detector, recordings)
            action.details |= {"case": report.case, "files": report.files}
    blurred = f", {report.blurred} faces blurred" if args.redact else ""
    blurred += f", {report.held} recording segments held" if report.held else ""
    print(
        f"case {report.case!r}: {len(report.tracks)} tracks, {report.files} files in {report.out}"
        + (f" and {report.zip}" if report.zip else "")
        + blurred,
        file=sys.stderr,
    )
    return 0


def _close(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), detector=False, embedder=False, create=False) as system:
        with audited(system_trail(system), "case.close", [args.close]):
            closed = close_case(system.gallery.db, args.close)
    print(f"case {args.close!r} closed at {closed.isoformat()}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace, gallery, store, detector, recordings):
    """The export of ``args.refs`` (:func:`pipeline.services.evidence.export_evidence`)."""
    return export_evidence(
        gallery.db,
        store,
        args.refs,
        args.out,
        args.redact,
        args.note,
        case=args.case,
        detector=detector,
        margin_s=args.margin,
        media_dirs=(*gallery.config.serve.media_dirs, "/"),  # this operator's own files, hash checked
        make_zip=args.zip,
        recordings=recordings,
    )
