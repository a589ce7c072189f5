"""``query unknowns``: the unknown tracks of the match log grouped into recurring persons.

    run_pipeline.py query unknowns [--db URL] [--config FILE] [--embedder ID] [--threshold X] [--min-size N]
                                   [--source S] [--since T] [--until T] [--format table|json|csv]

Every track whose current decision is unknown, of one embedder (default: the one with most unknown tracks), is
grouped with :func:`gallery.unknowns.group_unknowns`: average linkage on the cosine of the track templates at a
threshold that defaults to ``gallery.unknowns.threshold``, else the embedder's operating threshold (the matcher's
``match.threshold``, else the gallery's calibrated one); tracks of one run that overlap in time never join.
Groups of at least ``--min-size`` tracks (default ``gallery.unknowns.min_size``, 2) are listed, largest first:
size, first and last seen (sighting time; ``unknown`` when no track of the group has one), sources, mean cosine
within the group, best thumbnail, tracks (their references ``RUN:TRACK``). ``--source``, ``--since`` and
``--until`` (sighting time) choose the tracks before grouping. docs/unknowns.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json

from gallery.errors import QueryError
from gallery.names import shown
from gallery.queries import csv_cell
from gallery.unknowns import Grouping, check_options
from pipeline.build import build
from pipeline.commands.common import add_config_options, config_of, db_of, parse_time
from pipeline.services.unknowns import grouping

__all__ = ["COLUMNS", "add_arguments", "render", "run"]

COLUMNS = ["group", "size", "first_seen", "last_seen", "sources", "similarity", "thumbnail", "tracks"]
TABLE_TRACKS = 6  # tracks shown per row of the table (all of them in JSON and CSV)
OTHER_QUERY_OPTIONS = {  # what the query parser has for the other kinds: (how it is written, its default)
    "name": ("NAME", None),
    "identity": ("--identity", None),
    "decision": ("--decision", None),
    "min_score": ("--min-score", None),
    "watchlist": ("--watchlist", False),
    "page": ("--page", 1),
    "page_size": ("--page-size", 50),
}


def add_arguments(parser: argparse.ArgumentParser, common: bool = True) -> None:
    """The options of ``query unknowns``. ``common=False`` adds only ``--embedder``, ``--threshold`` and
    ``--min-size``: for the ``query`` parser, which has the others (``--config``, ``--set``, ``--db``,
    ``--source``, ``--since``, ``--until``, ``--format``) already."""
    parser.add_argument(
        "--embedder", help="unknowns: embedder id of the tracks (default: the one with most unknown tracks)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="unknowns: cosine at or above which groups join (default: gallery.unknowns.threshold, else the "
        "operating threshold)",
    )
    parser.add_argument(
        "--min-size", type=int, help="unknowns: smallest group listed (default: gallery.unknowns.min_size, 2)"
    )
    if common:
        add_config_options(parser)
        parser.add_argument("--source", help="only tracks of this source (file path or camera name)")
        parser.add_argument("--since", help="only tracks seen from this time (ISO 8601 with timezone)")
        parser.add_argument("--until", help="only tracks seen before this time (ISO 8601 with timezone)")
        parser.add_argument("--format", choices=("table", "json", "csv"), default="table")


def _row(group: dict, limit: int | None) -> dict:
    tracks = [t["ref"] for t in group["tracks"]]
    shown = " ".join(tracks[:limit])
    if limit is not None and len(tracks) > limit:
        shown += f" (+{len(tracks) - limit})"
    return {
        "group": group["group"],
        "size": group["size"],
        "first_seen": group["first_seen"] or "unknown",
        "last_seen": group["last_seen"] or "unknown",
        "sources": ",".join(group["sources"]),
        "similarity": "" if group["mean_similarity"] is None else f"{group['mean_similarity']:.4f}",
        "thumbnail": group["thumbnail"] or "",
        "tracks": shown,
    }


def render(grouping: Grouping, fmt: str) -> str:
    """The groups as an aligned text table (with a summary line), a JSON document or CSV (header included, text
    cells neutralised against spreadsheet formulas)."""
    doc = grouping.as_dict()
    if fmt == "json":
        return json.dumps(doc, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for group in doc["groups"]:
            row = _row(group, None)
            writer.writerow([row[c] if isinstance(row[c], int) else csv_cell(row[c]) for c in COLUMNS])
        return out.getvalue().rstrip("\n")
    rows = [[shown(str(_row(g, TABLE_TRACKS)[c])) for c in COLUMNS] for g in doc["groups"]]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    listed = sum(g["size"] for g in doc["groups"])
    threshold = "-" if grouping.threshold is None else f"{grouping.threshold:.3f}"
    lines.append(
        f"{len(rows)} groups of {grouping.min_size}+ tracks hold {listed} of {grouping.tracks} unknown tracks "
        f"({grouping.singletons} seen once); embedder {grouping.embedder_id or '-'}, threshold {threshold}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Group and print; 0. ``args`` come from a parser given :func:`add_arguments` (alone, or the ``query`` parser
    with ``common=False``, whose filters for the other kinds must then be left unset: they do not apply here)."""
    unset = [flag for k, (flag, d) in OTHER_QUERY_OPTIONS.items() if getattr(args, k, d) != d]
    if unset:
        raise QueryError(
            f"query unknowns: {', '.join(unset)} does not apply; the filters are --source, --since, --until"
        )
    check_options(args.threshold, args.min_size)
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    cfg = config_of(args)
    with build(cfg, db_url=db_of(args, cfg), detector=False, embedder=False, create=False) as system:
        result = grouping(
            system.gallery, cfg, args.embedder, args.threshold, args.min_size, args.source, since, until
        )
    print(render(result, args.format))
    return 0
