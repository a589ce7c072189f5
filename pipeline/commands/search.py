"""The ``search`` command: find a face in everything ever processed (the match log's track templates).

    run_pipeline.py search IMAGE... [--db URL] [--config FILE] [--source S] [--since T] [--until T]
                           [--top N] [--min-score X] [--face N] [--format table|json|csv]

The face of each photo is found and embedded with the configured detector and embedder; several photos (of one
person) are fused as enrollment fuses them (``pre_norm_vector_add``). Every logged track of the same embedder is
scored against it (:func:`gallery.track_search.search_tracks`, through the embedder's track index, kept beside the
gallery's index files and brought in step with the match log first) and the best are listed: source, start and end
(seconds within the file or stream), when it was logged, score, the decision the match log holds, thumbnail.
A photo with no face is an error; one with several faces too, unless ``--face N`` picks one (largest first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from core.errors import InputError
from core.fusion import pre_norm_vector_add
from gallery.queries import Page
from gallery.track_search import search_tracks
from stages.quality import QualityScorer

from ..build import System, build, find_faces
from .common import add_config_options, config_of, db_of
from .gallery_admin import parse_time, render

__all__ = ["register", "run_search"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search",
        help="find a face in every logged track (forensic search)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photos of the person to find")
    add_config_options(p)
    p.add_argument("--source", help="only tracks of this source (file path or camera name)")
    p.add_argument("--since", help="only tracks logged from this time (ISO 8601 with timezone)")
    p.add_argument("--until", help="only tracks logged before this time (ISO 8601 with timezone)")
    p.add_argument("--top", type=int, default=10, help="how many tracks to list (default %(default)s)")
    p.add_argument("--min-score", type=float, help="only tracks scoring at least this (cosine)")
    p.add_argument(
        "--face", type=int, help="in photos with several faces, take the N-th largest (1 = largest)"
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(func=run_search)


def query_template(system: System, images: list[Path], face: int | None) -> np.ndarray:
    """The fused unit template ``[D]`` of the chosen face of every photo."""
    scorer = QualityScorer(system.cfg.quality)
    crops = []
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"{path}: expected a readable image file, got none or an unreadable one")
        faces = find_faces(system.detector, scorer, image)
        if not faces:
            raise InputError(f"{path}: expected a face, found none")
        faces.sort(key=lambda f: -float((f[0][2] - f[0][0]) * (f[0][3] - f[0][1])))  # largest first
        if len(faces) > 1 and face is None:
            raise InputError(
                f"{path}: expected one face, found {len(faces)}; pick one with --face N (1 = largest)"
            )
        index = (face or 1) - 1
        if not 0 <= index < len(faces):
            raise InputError(f"{path}: --face {face}: expected 1..{len(faces)}")
        crops.append(faces[index][2])
    feats, norms = system.embedder.embed(crops)
    return pre_norm_vector_add(feats, norms)


def run_search(args: argparse.Namespace) -> int:
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), create=False) as system:
        template = query_template(system, args.images, args.face)
        hits = search_tracks(
            system.gallery.db,
            template,
            system.embedder.embedder_id,
            args.top,
            args.min_score,
            args.source,
            since,
            until,
            system.track_indexes,
        )
    print(render("search", Page([h.as_row() for h in hits], 1, args.top, False), args.format))
    return 0
