"""gallery.unknowns: the match log's unknown tracks grouped into persons, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from gallery.db import Database
from gallery.errors import QueryError
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.rematch import rematch
from gallery.store import Gallery
from gallery.thumbnails import ThumbnailStore
from gallery.unknowns import check_options, group_unknowns, unknown_embedders
from tests.gallery.helpers import media

START = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
EMB = "e8"
PEOPLE = {p: i for i, p in enumerate("abcdefg")}  # person -> axis of its template


@dataclass(frozen=True)
class Seen:
    """A track to log: who (a person letter, or None for a track of nobody in particular), where, when."""

    person: str
    source: str = "gate"
    run: int = 0  # tracks of one (source, run) go to one run of the match log
    minute: float = 0.0  # logged at START + minute
    start: float | None = None  # stream seconds; default minute * 60 .. + 2
    end: float | None = None
    decision: str = "unknown"
    crops: int = 3
    embedder: str = EMB


def _template(person: str, jitter: int) -> np.ndarray:
    v = np.full(8, 0.02, np.float32) * (1 + jitter % 3)
    v[PEOPLE[person]] = 1.0
    return v / np.linalg.norm(v)


def _log(db: Database, seen: list[Seen], store: ThumbnailStore | None = None, first: int = 1) -> None:
    """Log ``seen`` through the real writer, one run per (source, run) in order of first appearance; track ids
    count from ``first``."""
    writers: dict[tuple[str, int], MatchLogWriter] = {}
    for n, s in enumerate(seen, start=first):
        key = (s.source, s.run)
        if key not in writers:
            writers[key] = MatchLogWriter(
                db, source=s.source, config_hash="h", thumbnails=store, keep_thumbnails=store is not None
            )
        start = s.minute * 60 if s.start is None else s.start
        cands = [(1, "ann", 0.9)] if s.decision == "match" else []
        writers[key].record(
            TrackRecord(
                track_id=n,
                start_time=start,
                end_time=start + 2 if s.end is None else s.end,
                frames=10,
                crops_embedded=s.crops,
                template=_template(s.person, n),
                embedder_id=s.embedder,
                candidates=cands,
                decision=s.decision,
                threshold=0.5,
                thumbnail=np.full((48, 40, 3), 10 * n % 255, np.uint8),
                at=START + timedelta(minutes=s.minute),
                seen_start=START + timedelta(minutes=s.minute),
                seen_end=START + timedelta(minutes=s.minute, seconds=2 if s.end is None else s.end - start),
                time_origin="camera",
            )
        )
    for writer in writers.values():
        writer.close()


def _groups(db: Database, **kwargs) -> list[list[int]]:
    """The listed groups as lists of track ids."""
    grouping = group_unknowns(db, kwargs.pop("embedder_id", None), kwargs.pop("threshold", 0.5), **kwargs)
    return [[t.track_id for t in g.tracks] for g in grouping.groups]


@pytest.mark.parametrize("logged", ["nothing", "only-matches", "no-crops"])
def test_no_unknown_tracks(db_url, logged):
    with Database(db_url) as db:
        if logged == "only-matches":
            _log(db, [Seen("a", decision="match"), Seen("a", minute=1, decision="match")])
        elif logged == "no-crops":  # tracks whose faces were never embedded have no template to group
            _log(db, [Seen("a", crops=0), Seen("a", minute=1, crops=0)])
        grouping = group_unknowns(db, None, 0.5, min_size=1)
        assert grouping.embedder_id is None and grouping.tracks == 0 and grouping.groups == []
        assert grouping.as_dict()["groups"] == [] and unknown_embedders(db) == {}


def test_one_track(db_url):
    with Database(db_url) as db:
        _log(db, [Seen("a")])
        grouping = group_unknowns(db, None, 0.5)
        assert (grouping.tracks, grouping.singletons, grouping.groups) == (1, 1, [])  # listed from 2 tracks
        (group,) = group_unknowns(db, None, 0.5, min_size=1).groups
        assert group.size == 1 and group.mean_similarity is None and group.best.track_id == 1


def test_people_across_sources_and_runs(db_url, tmp_path):
    seen = [
        Seen("a", "gate", 0, minute=0),
        Seen("d", "lobby", 0, minute=1),
        Seen("b", "lobby", 0, minute=2),
        Seen("a", "lobby", 0, minute=5, crops=6),  # a's best view
        Seen("d", "gate", 0, minute=6),
        Seen("b", "gate", 0, minute=7),
        Seen("a", "gate", 1, minute=9),  # another run of the gate camera
        Seen("c", "gate", 1, minute=10),  # seen once
        Seen("e", "gate", 1, minute=11, decision="match"),  # named: not an unknown
        Seen("e", "gate", 1, minute=12, decision="match"),
    ]
    with Database(db_url) as db:
        _log(db, seen, ThumbnailStore(tmp_path / "thumbs"))
        grouping = group_unknowns(db, None, 0.5)
        assert (grouping.embedder_id, grouping.tracks, grouping.singletons) == (EMB, 8, 1)
        # largest first, then first seen: d (minute 1) before b (minute 2)
        assert [[t.track_id for t in g.tracks] for g in grouping.groups] == [[1, 4, 7], [2, 5], [3, 6]]
        a = grouping.groups[0]
        assert a.group == 1 and a.size == 3 and a.sources == ["gate", "lobby"]
        assert (a.first_seen, a.last_seen) == (START, START + timedelta(minutes=9, seconds=2))
        assert a.best.track_id == 4 and a.best.thumbnail and a.mean_similarity > 0.99
        row = a.as_row()
        assert row["thumbnail"] == a.best.thumbnail and len(row["tracks"]) == 3
        assert {"source", "run_id", "track_id", "start_time", "end_time", "logged_at"} <= set(
            row["tracks"][0]
        )
        assert len(group_unknowns(db, None, 0.5, min_size=3).groups) == 1
        assert len(group_unknowns(db, None, 0.5, min_size=1).groups) == 4


def test_two_faces_on_screen_together_are_two_people(db_url):
    with Database(db_url) as db:  # the same look (a twin, or a poster) twice in one frame, then alone later
        _log(db, [Seen("a", start=0, end=5), Seen("a", start=3, end=8), Seen("a", start=20, end=25)])
        assert _groups(db, min_size=1) == [[1, 3], [2]]


def test_a_track_named_later_is_no_longer_unknown(db_url):
    with Database(db_url) as db:
        _log(db, [Seen("a"), Seen("a", minute=1), Seen("b", minute=2), Seen("b", minute=3)])
        assert _groups(db) == [[1, 2], [3, 4]]
        with Gallery(db) as gallery:
            gallery.add_media("ann", EMB, media("ann", _template("a", 0)[None]), create=True)
            assert len(rematch(gallery, EMB, 0.9).matches) == 2  # a's tracks are ann's now
        assert _groups(db) == [[3, 4]]


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({}, [[1, 3, 5], [2, 4]]),
        ({"source": "gate"}, [[1, 5]]),
        ({"since": START + timedelta(minutes=2)}, [[3, 5]]),
        ({"until": START + timedelta(minutes=4)}, [[1, 3], [2, 4]]),
        ({"since": START + timedelta(minutes=1), "until": START + timedelta(minutes=2)}, []),
    ],
    ids=["all", "source", "since", "until", "window-of-one"],
)
def test_filters(db_url, filters, expected):
    with Database(db_url) as db:
        _log(db, [Seen("a", "gate", minute=0), Seen("b", "lobby", minute=1), Seen("a", "lobby", minute=2)])
        _log(db, [Seen("b", "lobby", run=1, minute=3), Seen("a", "gate", run=1, minute=4)], first=4)
        assert _groups(db, **filters) == expected


def test_one_embedder_at_a_time(db_url):
    with Database(db_url) as db:
        _log(db, [Seen("a"), Seen("a", minute=1), Seen("b", minute=2), Seen("b", minute=3)])
        _log(db, [Seen("a", "lobby", minute=4, embedder="e4"), Seen("a", "lobby", minute=5, embedder="e4")])
        assert unknown_embedders(db) == {EMB: 4, "e4": 2}
        assert group_unknowns(db, None, 0.5).embedder_id == EMB  # the one with most unknown tracks
        other = group_unknowns(db, "e4", 0.5)
        assert other.tracks == 2 and [g.sources for g in other.groups] == [["lobby"]]
        assert group_unknowns(db, "nobody", 0.5).tracks == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"source": "nowhere"}, "no such source"),
        ({"since": datetime(2026, 3, 1)}, "timezone"),
        ({"since": START, "until": START}, "since < until"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"min_size": 0}, "min size"),
    ],
)
def test_bad_requests_are_one_line(db_url, kwargs, message):
    kwargs = dict(kwargs)  # the parameters are shared by both back ends
    with Database(db_url) as db:
        _log(db, [Seen("a")])
        with pytest.raises(QueryError, match=message):
            group_unknowns(db, kwargs.pop("embedder_id", None), kwargs.pop("threshold", 0.5), **kwargs)


@pytest.mark.parametrize("threshold, min_size", [(None, None), (-1.0, 1), (1.0, 10**6)])
def test_good_options_pass(threshold, min_size):
    check_options(threshold, min_size)
