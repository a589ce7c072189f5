"""How ``query``, ``search`` and ``rematch`` print rows: an aligned text table (control characters escaped, so a name
never forges a row; an unknown sighting time shown as ``unknown``), JSON or CSV (text cells neutralised against
spreadsheet formulas). Each kind of row has its columns here, a track's reference first."""

from __future__ import annotations

import csv
import io
import json

from gallery.names import shown
from gallery.queries import Page, csv_cell

__all__ = ["COLUMNS", "render"]

COLUMNS = {  # a track's reference first, its sighting time next ("unknown" when the source has none)
    "matches": [
        "ref",
        "seen_start",
        "source",
        "start_time",
        "end_time",
        "identity",
        "score",
        "decision",
        "retroactive",
        "reviewed",
        "threshold",
        "at",
        "zones",
        "thumbnail",
    ],
    "tracks": [
        "ref",
        "seen_start",
        "seen_end",
        "source",
        "start_time",
        "end_time",
        "frames",
        "crops_embedded",
        "decision",
        "identity",
        "score",
        "retroactive",
        "reviewed",
        "zones",
        "logged_at",
    ],
    "identities": ["name", "external_id", "watchlist", "media", "embedders", "created_at"],
    "search": [
        "ref",
        "score",
        "seen_start",
        "source",
        "start_time",
        "end_time",
        "decision",
        "identity",
        "retroactive",
        "logged_at",
        "thumbnail",
    ],
    "timeline": [
        "ref",
        "seen_start",
        "seen_end",
        "source",
        "kind",
        "start_time",
        "end_time",
        "score",
        "retroactive",
        "reviewed",
        "logged_at",
    ],
    "rematch": [
        "ref",
        "identity",
        "score",
        "was",
        "seen_start",
        "source",
        "kind",
        "start_time",
        "end_time",
        "logged_at",
    ],
}
SIGHTING = ("seen_start", "seen_end")  # None there is a time nobody knows, shown as such
COLUMNS |= {  # the gallery's own rows: enrolled media (their ids: remove --media), rematch passes (rematch --undo)
    "media": ["id", "identity", "kind", "track", "path", "embedder_id", "quality", "created_at"],
    "rematches": [
        "id",
        "cause",
        "identities",
        "embedder_id",
        "threshold",
        "tracks_scored",
        "matches",
        "current",
        "started_at",
        "undone_at",
    ],
    "undo": ["rematch_id", "cause", "identities", "removed", "undone_at", "already"],
    "recordings": ["camera", "started_at", "ended_at", "size", "path"],
    "cases": ["name", "opened_at", "closed_at", "operator", "note", "held_segments"],
    "audit": ["id", "at", "actor", "actor_kind", "action", "result", "objects", "details"],
    "reviews": ["ref", "seen_start", "source", "kind", "verdict", "identity", "reviewer", "at", "note"],
}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, dict)):
        return (
            json.dumps(value)
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value))
            else ",".join(value)
        )
    return str(value)


def _csv_cell(value) -> str:
    """A CSV cell: numbers as numbers (a negative score stays a number), text neutralised."""
    text = _cell(value)
    return text if isinstance(value, (int, float)) else csv_cell(text)


def render(kind: str, page: Page, fmt: str) -> str:
    """A page as an aligned text table, a JSON document or CSV (header included, text cells neutralised)."""
    if fmt == "json":
        return json.dumps(page.as_dict(), indent=2)
    cols = COLUMNS[kind]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows([_csv_cell(row.get(c)) for c in cols] for row in page.rows)
        return out.getvalue().rstrip("\n")
    rows = [
        [_cell(row.get(c)) if row.get(c) is not None or c not in SIGHTING else "unknown" for c in cols]
        for row in page.rows
    ]
    rows = [[shown(v) for v in r] for r in rows]  # a name with a newline or escape never forges a row
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    if page.has_more:
        lines.append(f"(more: --page {page.page + 1})")
    return "\n".join(lines)
