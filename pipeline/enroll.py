"""The ``enroll`` command: detect, align, quality-score and embed gallery images with the configured stages
and store them through :class:`gallery.enroll.Enroller`.

    run_pipeline.py enroll --db URL --dir GALLERY_DIR
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

import numpy as np

from gallery.config import GalleryConfig
from gallery.enroll import Enroller, EnrollReport, FaceExtractor
from gallery.errors import EnrollmentError
from gallery.store import Gallery
from pipeline.config import AppConfig, load_config
from stages.align import align_face
from stages.detect import FaceDetector
from stages.embed import build_embedder
from stages.quality import QualityScorer

logger = logging.getLogger(__name__)

__all__ = ["build_enroller", "face_extractor", "register", "run_enroll"]

DEFAULT_CONFIG = "configs/default.yaml"


def face_extractor(detector: FaceDetector, scorer: QualityScorer) -> FaceExtractor:
    """``image -> [(aligned 112x112 BGR crop, quality score)]`` for every face the detector finds."""

    def extract(image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        dets = detector.detect([image])[0]
        faces = []
        for box, score, landmarks in zip(dets.xyxy, dets.score, dets.landmarks):
            crop = align_face(image, landmarks)
            faces.append((crop, scorer.score(scorer.assess(crop, box, float(score), landmarks))))
        return faces

    return extract


def build_enroller(cfg: AppConfig, gallery: Gallery, min_quality: float = 0.0) -> Enroller:
    """An :class:`Enroller` on ``gallery`` using the detect, quality and embed sections of ``cfg``."""
    extract = face_extractor(FaceDetector(cfg.detect), QualityScorer(cfg.quality))
    return Enroller(gallery, extract, build_embedder(cfg.embed), min_quality=min_quality)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "enroll", help="enroll people into the gallery", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--db", default=GalleryConfig().db_url, help="gallery database URL (default %(default)s)")
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
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help="pipeline config (detect, quality, embed sections)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
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
    cfg = load_config(args.config, args.set)
    with Gallery.open(args.db) as gallery:
        report = _enroll(build_enroller(cfg, gallery, args.min_quality), args)
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
