"""The ``search`` command: find a face in everything ever processed (the match log's track templates).

    run_pipeline.py search IMAGE... [--db URL] [--config FILE] [--source S] [--since T] [--until T]
                           [--top N] [--min-score X] [--face N] [--format table|json|csv]

The face of each photo is found and embedded with the configured detector and embedder; several photos (of one
person) are fused as enrollment fuses them (``pre_norm_vector_add``). Every logged track of the same embedder is
scored against it (:func:`gallery.track_search.search_tracks`, through the embedder's track index, kept beside the
gallery's index files and brought in step with the match log first) and the best are listed: source, start and end
(seconds within the file or stream), when it was logged, score, the decision the match log holds, thumbnail.
A photo with no face is an error; one with several faces too, unless ``--face N`` picks one (largest first).
:func:`find_person` is the search itself, which ``serve``'s ``POST /api/search`` calls too (``pipeline.forensic_api``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.fusion import pre_norm_vector_add
from core.images import decode_image
from gallery.db import Database
from gallery.queries import Page
from gallery.track_index import TrackIndexes
from gallery.track_search import TrackHit, search_tracks
from stages.quality import QualityScorer

from ..build import System, build, find_faces
from .common import add_config_options, config_of, db_of, parse_time
from .tables import render

__all__ = [
    "find_person",
    "query_template",
    "read_photo",
    "register",
    "run_search",
]


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


def read_photo(path: Path) -> bytes:
    """The bytes of a photo file; a missing or unreadable file is an :class:`InputError`."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(
            f"{path}: expected a readable image file, got none or an unreadable one ({exc.strerror or exc})"
        ) from None


def query_template(
    system: System, photos: Sequence[tuple[str, bytes]], face: int | None, option: str = "--face"
) -> np.ndarray:
    """The fused unit template ``[D]`` of the chosen face of every photo (``(name, bytes)``); ``option`` names the
    face choice in messages."""
    scorer = QualityScorer(system.cfg.quality)
    crops = []
    for name, data in photos:
        faces = find_faces(system.detector, scorer, decode_image(data, name))
        if not faces:
            raise InputError(f"{name}: expected a face, found none")
        faces.sort(key=lambda f: -float((f[0][2] - f[0][0]) * (f[0][3] - f[0][1])))  # largest first
        if len(faces) > 1 and face is None:
            raise InputError(
                f"{name}: expected one face, found {len(faces)}; pick one with {option} N (1 = largest)"
            )
        index = (face or 1) - 1
        if not 0 <= index < len(faces):
            raise InputError(f"{name}: {option} {face}: expected 1..{len(faces)}")
        crops.append(faces[index][2])
    feats, norms = system.embedder.embed(crops)
    return pre_norm_vector_add(feats, norms)


def find_person(
    models: System,
    db: Database,
    indexes: TrackIndexes | None,
    photos: Sequence[tuple[str, bytes]],
    *,
    face: int | None = None,
    top: int = 10,
    min_score: float | None = None,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    option: str = "--face",
) -> list[TrackHit]:
    """Forensic search, for the command and the HTTP API alike: the person of ``photos`` (their chosen faces,
    found and embedded by ``models``' detector and embedder, fused) against the logged tracks of ``db`` of the same
    embedder (through ``indexes`` when given), best first."""
    template = query_template(models, photos, face, option)
    embedder_id = models.embedder.embedder_id
    return search_tracks(db, template, embedder_id, top, min_score, source, since, until, indexes)


def run_search(args: argparse.Namespace) -> int:
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    photos = [(str(path), read_photo(path)) for path in args.images]
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), create=False) as system:
        hits = find_person(
            system,
            system.gallery.db,
            system.track_indexes,
            photos,
            face=args.face,
            top=args.top,
            min_score=args.min_score,
            source=args.source,
            since=since,
            until=until,
        )
    print(render("search", Page([h.as_row() for h in hits], 1, args.top, False), args.format))
    return 0
