"""The ``search`` command: find a face in everything ever processed (the match log's track templates).

    run_pipeline.py search IMAGE... [--db URL] [--config FILE] [--source S] [--since T] [--until T]
                           [--top N] [--min-score X] [--face N] [--format table|json|csv]

The face of each photo is found and embedded with the configured detector and embedder; several photos (of one
person) are fused as enrollment fuses them (``pre_norm_vector_add``). Every logged track of the same embedder is
scored against it (:func:`gallery.track_search.search_tracks`, through the embedder's track index, kept beside the
gallery's index files and brought in step with the match log first) and the best are listed: source, start and end
(seconds within the file or stream), when it was logged, score, the decision the match log holds, thumbnail.
A photo with no face is an error; one with several faces too, unless ``--face N`` picks one (largest first).
The search itself is :func:`pipeline.services.search.find_person`, which ``serve``'s ``POST /api/search`` calls too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import InputError
from gallery.queries import Page
from pipeline.build import build
from pipeline.commands.common import add_config_options, config_of, db_of, parse_time
from pipeline.commands.tables import render
from pipeline.services.audit import audited, sha256, system_trail
from pipeline.services.search import find_person

__all__ = ["read_photo", "register", "run_search"]


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


def run_search(args: argparse.Namespace) -> int:
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    photos = [(str(path), read_photo(path)) for path in args.images]
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), create=False) as system:
        filters = {"source": args.source, "since": args.since, "until": args.until, "top": args.top}
        filters |= {"min_score": args.min_score, "face": args.face}
        objects = [{"photo": name, "sha256": sha256(data)} for name, data in photos]
        with audited(system_trail(system), "search", objects, {"filters": filters}) as action:
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
            action.details["hits"] = [h.as_row()["ref"] for h in hits]
    print(render("search", Page([h.as_row() for h in hits], 1, args.top, False), args.format))
    return 0
