"""gallery/queries.py: filters, newest-first order, paging and refusals on a seeded match log."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gallery.db import Database
from gallery.errors import IdentityNotFoundError, QueryError
from gallery.queries import (
    MAX_OFFSET,
    MAX_PAGE,
    MAX_PAGE_SIZE,
    Filters,
    csv_cell,
    find_identities,
    find_matches,
    find_tracks,
)
from tests.gallery.helpers import seed_log


@pytest.fixture
def seeded(db_url):
    with Database(db_url) as db:
        start = seed_log(db)
        yield db, start


def _tracks(page) -> list[int]:
    return [row["track_id"] for row in page.rows]


@pytest.mark.parametrize(
    "filters,expected",
    [
        ({}, [7, 6, 5, 4, 3, 2, 1, 0]),
        ({"identity": "ann"}, [6, 4, 2, 0]),
        ({"identity": "bob"}, [3]),
        ({"source": "lobby"}, [7, 5, 3, 1]),
        ({"decision": "unknown"}, [7, 5, 1]),
        ({"decision": "match", "source": "lobby"}, [3]),
        ({"min_score": 0.83}, [6, 4]),
        ({"since": 2, "until": 5}, [4, 3, 2]),
        ({"identity": "ann", "since": 3}, [6, 4]),
    ],
)
def test_match_filters(seeded, filters, expected):
    db, start = seeded
    filters = dict(filters)
    for key in ("since", "until"):
        if key in filters:
            filters[key] = start + timedelta(minutes=filters[key])
    assert _tracks(find_matches(db, Filters(**filters))) == expected


def test_match_rows_and_paging(seeded):
    db, start = seeded
    first = find_matches(db, Filters(page_size=3))
    second = find_matches(db, Filters(page_size=3, page=3))
    assert _tracks(first) == [7, 6, 5] and first.has_more
    assert _tracks(second) == [1, 0] and not second.has_more
    row = find_matches(db, Filters(identity="ann", page_size=1)).rows[0]
    assert row["at"] == (start + timedelta(minutes=6)).isoformat()
    assert (row["source"], row["identity"], row["decision"], row["score"], row["thumbnail"]) == (
        "gate",
        "ann",
        "match",
        pytest.approx(0.86),
        None,
    )
    assert row["candidates"] == [
        {"identity_id": row["identity_id"], "name": "ann", "score": pytest.approx(0.86)}
    ]


def test_tracks_and_identities(seeded):
    db, _ = seeded
    tracks = find_tracks(db, Filters(source="gate", page_size=2))
    assert (
        _tracks(tracks) == [6, 4] and tracks.rows[0]["frames"] == 12 and tracks.rows[0]["identity"] == "ann"
    )
    idents = find_identities(db, Filters())
    assert [(r["name"], r["media"], r["embedders"]) for r in idents.rows] == [
        ("bob", 0, []),
        ("ann", 1, ["e4"]),
    ]
    assert [r["name"] for r in find_identities(db, Filters(watchlist=True)).rows] == ["bob"]


def test_empty_log(db_url):
    with Database(db_url) as db:
        assert find_matches(db, Filters()).rows == [] and find_tracks(db, Filters()).rows == []
        assert find_identities(db, Filters()).rows == []


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"page": 0}, "page: expected 1 or more"),
        ({"page_size": 5000}, "page size: expected 1..1000"),
        ({"decision": "maybe"}, "decision: expected one of match, unknown"),
        ({"since": datetime(2026, 1, 1)}, "expected a time with a timezone"),
        (
            {
                "since": datetime(2026, 2, 1, tzinfo=timezone.utc),
                "until": datetime(2026, 1, 1, tzinfo=timezone.utc),
            },
            "expected since < until",
        ),
        ({"page": 10**19, "page_size": 1}, r"page: expected at most 1000000001 with page size 1\b"),
        ({"page": 20_000_002, "page_size": 50}, "page: expected at most 20000001 with page size 50"),
        ({"identity": "a\x00b"}, "identity: expected a name without NUL"),
        ({"source": "\x00"}, "source: expected a name without NUL"),
        ({"min_score": float("nan")}, "min_score: expected a finite number"),
        ({"min_score": float("-inf")}, "min_score: expected a finite number"),
        (
            {"since": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
            "since: expected a time between years 1 and 9999",
        ),
        (
            {"until": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))},
            "until: expected a time between years 1 and 9999",
        ),
    ],
)
def test_bad_filters(kwargs, message):
    with pytest.raises(QueryError, match=message):
        Filters(**kwargs)


def test_last_page_within_the_bound_is_empty_not_an_error(seeded):
    db, _ = seeded
    for page_size in (1, 50, MAX_PAGE_SIZE):
        last = MAX_OFFSET // page_size + 1
        page = find_matches(db, Filters(page=last, page_size=page_size))
        assert page.rows == [] and not page.has_more and page.page == last
    assert find_tracks(db, Filters(page=MAX_PAGE, page_size=1)).rows == []


@pytest.mark.parametrize(
    "value,expected",
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("ann", "ann"),
        ("a=b", "a=b"),
        ("", ""),
        (-0.25, -0.25),
        (-3, -3),
        (None, None),
    ],
)
def test_csv_cell(value, expected):
    assert csv_cell(value) == expected


def test_unknown_names_and_inapplicable_filters(seeded):
    db, _ = seeded
    with pytest.raises(IdentityNotFoundError, match="'zed'"):
        find_matches(db, Filters(identity="zed"))
    with pytest.raises(QueryError, match="source 'roof'"):
        find_tracks(db, Filters(source="roof"))
    with pytest.raises(QueryError, match="min_score do not apply"):
        find_identities(db, Filters(min_score=0.5))


@pytest.fixture
def statements(seeded):
    """The SQL statements the database sees, with their parameters, and whether each ran in autocommit."""
    from sqlalchemy import event

    db, _ = seeded
    seen: list[tuple[str, object]] = []
    autocommit: list[bool] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))
        dbapi = conn.connection.dbapi_connection  # autocommit: the driver sends no BEGIN / COMMIT
        autocommit.append(dbapi.autocommit if db.backend == "postgresql" else dbapi.isolation_level is None)

    event.listen(db.engine, "before_cursor_execute", record)
    yield seen, autocommit
    event.remove(db.engine, "before_cursor_execute", record)


def _selects(seen) -> list[str]:
    return [s for s, _ in seen if s.lstrip().upper().startswith("SELECT")]


@pytest.mark.parametrize(
    "filters,rows,selects",
    [
        ({"identity": "ann"}, 4, 1),  # the name is resolved inside the one statement
        ({"identity": "ann", "source": "gate", "since": 2}, 3, 1),
        ({"identity": "bob", "since": 5}, 0, 2),  # an empty page: one look-up says the name exists
        ({"identity": "ann", "page": 9}, 0, 2),
        ({"source": "lobby", "decision": "match"}, 1, 1),
    ],
)
def test_matches_are_one_statement_unless_empty(seeded, statements, filters, rows, selects):
    db, start = seeded
    if "since" in filters:
        filters = filters | {"since": start + timedelta(minutes=filters["since"])}
    seen, autocommit = statements
    seen.clear()
    autocommit.clear()
    assert len(find_matches(db, Filters(**filters)).rows) == rows
    assert len(_selects(seen)) == selects
    assert autocommit == [True] * len(seen)


def test_unknown_name_order(seeded):
    """Both names unknown: the identity is reported first, as before any row is read."""
    db, _ = seeded
    with pytest.raises(IdentityNotFoundError, match="'zed'"):
        find_matches(db, Filters(identity="zed", source="roof"))
    with pytest.raises(QueryError, match="source 'roof'"):
        find_matches(db, Filters(identity="ann", source="roof"))


def _plan(db, statement: str, parameters) -> str:
    """The plan of ``statement`` with only index access allowed on PostgreSQL (the seeded tables are tiny, so
    the planner would otherwise scan them whole): a sort in the plan means no index gives the order."""
    with db.engine.connect() as conn:
        if db.backend == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return "\n".join(str(r[-1]) for r in rows)
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_incremental_sort"):
            conn.exec_driver_sql(f"SET {setting} = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize(
    "find,filters,index",
    [
        (find_matches, {"identity": "ann"}, "ix_match_events_identity_id_at_id"),
        (find_matches, {"identity": "ann", "since": 1, "until": 6}, "ix_match_events_identity_id_at_id"),
        (find_matches, {"source": "gate"}, "ix_match_events_source_id_at_id"),
        (find_matches, {"decision": "unknown"}, "ix_match_events_decision_at_id"),
        (find_matches, {}, "ix_match_events_at_id"),
        (find_tracks, {}, "ix_tracks_created_at_id"),
        (find_tracks, {"source": "lobby"}, "ix_tracks_source_id_created_at_id"),
    ],
)
def test_newest_first_is_read_off_an_index(seeded, statements, find, filters, index):
    """The page order (time desc, id desc) comes from the index itself: no sort step in the plan."""
    db, start = seeded
    filters = {k: start + timedelta(minutes=v) if k in ("since", "until") else v for k, v in filters.items()}
    seen, _ = statements
    seen.clear()
    find(db, Filters(**filters))
    (statement, parameters), *_ = [(s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT")]
    plan = _plan(db, statement, parameters)
    assert index in plan, plan
    # a sort node reads "Sort  (cost=..."; a Merge Append of index scans only names its "Sort Key"
    assert "TEMP B-TREE" not in plan and "Sort  (" not in plan, plan
