"""gallery/queries.py: filters, newest-first order, paging and refusals on a seeded match log."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gallery.db import Database
from gallery.errors import IdentityNotFoundError, QueryError
from gallery.queries import Filters, find_identities, find_matches, find_tracks
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
    ],
)
def test_bad_filters(kwargs, message):
    with pytest.raises(QueryError, match=message):
        Filters(**kwargs)


def test_unknown_names_and_inapplicable_filters(seeded):
    db, _ = seeded
    with pytest.raises(IdentityNotFoundError, match="'zed'"):
        find_matches(db, Filters(identity="zed"))
    with pytest.raises(QueryError, match="source 'roof'"):
        find_tracks(db, Filters(source="roof"))
    with pytest.raises(QueryError, match="min_score do not apply"):
        find_identities(db, Filters(min_score=0.5))
