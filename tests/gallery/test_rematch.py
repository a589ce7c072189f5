"""gallery/rematch.py (passes and their undoing), gallery/from_tracks.py, gallery/decisions.py and
gallery/timeline.py on a seeded match log, SQLite and PostgreSQL.

Three people as 64-d unit centres (ann, bob, cyd), noisy views of them as track templates. Bob is enrolled before
the tracks are logged, ann after; cyd never. Tracks (one minute apart, cameras ``cam`` and file ``clip.mp4``):

    0 ann unknown cam | 1 ann unknown clip | 2 bob match bob cam | 3 nobody unknown cam
    4 ann unknown clip | 5 cyd unknown clip | 6 ann logged (wrongly) as bob, cam
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import func, select

from gallery.enroll import Enroller
from gallery.errors import EnrollmentError, IdentityExistsError, IdentityNotFoundError, QueryError
from gallery.from_tracks import DoubtfulTrackError
from gallery.matchlog import MatchLogWriter, TrackRecord, purge_older_than
from gallery.models import Identity, MatchEvent, Media, Rematch, RetroMatch, Track
from gallery.queries import Filters, find_matches, find_tracks
from gallery.refs import TrackRefError, track_ref
from gallery.rematch import rematch
from gallery.rematches import find_rematches, undo_identity, undo_rematch
from gallery.store import Gallery
from gallery.timeline import find_timeline
from tests.gallery.helpers import media, people, unit

EMB, DIM, THRESHOLD = "e64", 64, 0.5
START = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
PLAN = [  # (who the track shows, source, logged decision)
    ("ann", "cam", None),
    ("ann", "clip.mp4", None),
    ("bob", "cam", "bob"),
    (None, "cam", None),
    ("ann", "clip.mp4", None),
    ("cyd", "clip.mp4", None),
    ("ann", "cam", "bob"),
]
ANN = [0, 1, 4, 6]


@pytest.fixture
def log(db_url):
    rng = np.random.default_rng(7)
    views = dict(zip(("ann", "bob", "cyd"), people(rng, 3, 12, DIM).values()))
    with Gallery.open(db_url) as gallery:
        gallery.add_media("bob", EMB, media("bob", views["bob"][:4]), create=True)
        bob = gallery.identities()[0].id
        writers = {
            name: MatchLogWriter(gallery.db, source=name, kind=kind, config_hash="t", keep_thumbnails=False)
            for name, kind in (("cam", "camera"), ("clip.mp4", "file"))
        }
        for t, (who, source, decided) in enumerate(PLAN):
            template = views[who][4 + t] if who else unit(rng, 1, DIM)[0]
            score = float(template @ gallery.template("bob", EMB))
            decision = "match" if decided else "unknown"
            at = START + timedelta(minutes=t)
            cands = [(bob, "bob", score)]
            record = TrackRecord(t, 10.0 * t, 10.0 * t + 4, 20, 5, template, EMB, cands, decision, 0.5, at=at)
            origin = (
                "camera" if source == "cam" else "given"
            )  # the clip was processed with its recording time
            seen = {"seen_start": at, "seen_end": at + timedelta(seconds=4), "time_origin": origin}
            record = dataclasses.replace(record, **seen)
            writers[source].record(record)
        for writer in writers.values():
            writer.close()
        gallery.add_media("ann", EMB, media("ann", views["ann"][:4]), create=True)
        yield gallery


def _count(gallery, model) -> int:
    with gallery.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def _events(gallery) -> list[tuple]:
    with gallery.db.session() as s:
        rows = s.execute(select(MatchEvent).order_by(MatchEvent.id)).scalars()
        return [(e.track_pk, e.identity_id, e.decision, e.score, e.at) for e in rows]


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_rematch_names_past_tracks_once(log, batch_size):
    before = _events(log)
    report = rematch(
        log, EMB, THRESHOLD, identities=["ann"], cause="enroll", media_ids=[5], batch_size=batch_size
    )
    assert sorted(h.track_id for h in report.matches) == ANN
    assert report.tracks_scored == len(PLAN) and report.rematch_id is not None
    assert {h.identity for h in report.matches} == {"ann"} and all(
        h.score >= THRESHOLD for h in report.matches
    )
    assert {h.track_id: h.was for h in report.matches}[6] == "bob"  # the wrong live match it corrects
    assert _events(log) == before  # what was decided then is left as it was
    with log.db.session() as s:
        row = s.get(Rematch, report.rematch_id)
        assert (row.cause, row.identities, row.media_ids) == ("enroll", ["ann"], [5])
        assert (row.tracks_scored, row.matches, row.finished_at is not None) == (len(PLAN), 4, True)
    again = rematch(log, EMB, THRESHOLD, batch_size=batch_size)
    assert again.matches == [] and again.rematch_id is None and again.tracks_scored == len(PLAN)
    assert _count(log, RetroMatch) == 4 and _count(log, Rematch) == 1


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({}, ANN),
        ({"identities": ["bob"]}, []),  # bob's track was matched live; ann is nearer on 6
        ({"identities": ["ann", "bob"]}, ANN),
        ({"source": "clip.mp4"}, [1, 4]),
        ({"since": START + timedelta(minutes=4)}, [4, 6]),
        ({"source": "cam", "since": START + timedelta(minutes=1)}, [6]),
    ],
)
def test_rematch_scope(log, kwargs, expected):
    assert sorted(h.track_id for h in rematch(log, EMB, THRESHOLD, **kwargs).matches) == expected


@pytest.mark.parametrize("tracks", [0, 1])
def test_rematch_of_an_empty_or_tiny_log(db_url, tracks):
    rng = np.random.default_rng(1)
    with Gallery.open(db_url) as gallery:
        views = people(rng, 1, 3, DIM)["person000"]
        gallery.add_media("ann", EMB, media("ann", views[:2]), create=True)
        with MatchLogWriter(gallery.db, source="c", config_hash="t", keep_thumbnails=False) as w:
            for t in range(tracks):
                w.record(TrackRecord(t, 0.0, 1.0, 3, 1, views[2], EMB, [], "unknown", 0.5))
        report = rematch(gallery, EMB, THRESHOLD)
        assert (report.tracks_scored, len(report.matches)) == (tracks, tracks)
        assert rematch(gallery, "other-embedder", THRESHOLD).tracks_scored == 0  # never mixed


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"identities": ["zed"]}, IdentityNotFoundError, "'zed'"),
        ({"source": "roof"}, QueryError, "source 'roof'"),
        ({"cause": "guess"}, QueryError, "cause"),
        ({"threshold": float("nan")}, QueryError, "threshold"),
        ({"batch_size": 0}, QueryError, "batch size"),
        ({"since": datetime(2026, 1, 1)}, QueryError, "timezone"),
    ],
)
def test_rematch_refuses_bad_input_writing_nothing(log, kwargs, error, message):
    args = {"threshold": THRESHOLD} | kwargs
    with pytest.raises(error, match=message):
        rematch(log, EMB, args.pop("threshold"), **args)
    assert _count(log, RetroMatch) == 0 and _count(log, Rematch) == 0


def test_queries_show_retroactive_matches(log):
    rid = rematch(log, EMB, THRESHOLD, identities=["ann"], cause="enroll").rematch_id
    rows = find_matches(log.db, Filters(identity="ann")).rows
    assert sorted(r["track_id"] for r in rows) == ANN
    assert all(r["retroactive"] and r["rematch_id"] == rid and r["decision"] == "match" for r in rows)
    bob = find_matches(log.db, Filters(identity="bob")).rows
    assert sorted(r["track_id"] for r in bob) == [2, 6] and not any(r["retroactive"] for r in bob)
    unknown = find_matches(log.db, Filters(decision="unknown")).rows  # the log as decided then
    assert sorted(r["track_id"] for r in unknown) == [0, 1, 3, 4, 5]
    assert len(find_matches(log.db, Filters()).rows) == len(PLAN) + len(ANN)
    tracks = {r["track_id"]: r for r in find_tracks(log.db, Filters()).rows}
    assert (tracks[6]["identity"], tracks[6]["retroactive"], tracks[6]["logged_identity"]) == (
        "ann",
        True,
        "bob",
    )
    assert (tracks[0]["decision"], tracks[0]["logged_decision"]) == ("match", "unknown")
    assert (tracks[2]["identity"], tracks[2]["retroactive"]) == ("bob", False)
    assert (tracks[3]["decision"], tracks[3]["identity"]) == ("unknown", None)
    current = find_tracks(log.db, Filters(identity="ann")).rows
    assert sorted(r["track_id"] for r in current) == ANN
    assert [r["track_id"] for r in find_tracks(log.db, Filters(identity="bob")).rows] == [2]
    assert sorted(r["track_id"] for r in find_tracks(log.db, Filters(decision="unknown")).rows) == [3, 5]


@pytest.mark.parametrize(
    "filters,expected",
    [
        ({}, [(0, True), (1, True), (4, True), (6, True)]),
        ({"source": "cam"}, [(0, True), (6, True)]),
        ({"since": 2, "until": 5}, [(4, True)]),
        ({"page_size": 1, "page": 2}, [(1, True)]),
    ],
)
def test_timeline(log, filters, expected):
    rematch(log, EMB, THRESHOLD)
    f = {k: START + timedelta(minutes=v) if k in ("since", "until") else v for k, v in filters.items()}
    rows = find_timeline(log.db, Filters(identity="ann", **f)).rows
    assert [(r["track_id"], r["retroactive"]) for r in rows] == expected
    for r in rows:
        assert r["time_origin"] == ("camera" if r["kind"] == "camera" else "given") and r["seen_start"]
        assert r["start_time"] < r["end_time"] and r["ref"] == f"{r['run_id']}:{r['track_id']}"
    bob = find_timeline(log.db, Filters(identity="bob")).rows  # live matches, oldest first
    assert [(r["track_id"], r["retroactive"], r["kind"]) for r in bob] == [
        (2, False, "camera"),
        (6, False, "camera"),
    ]


def test_timeline_refusals(log):
    with pytest.raises(IdentityNotFoundError, match="'zed'"):
        find_timeline(log.db, Filters(identity="zed"))
    with pytest.raises(QueryError, match="expected an identity"):
        find_timeline(log.db, Filters())
    with pytest.raises(QueryError, match="decision"):
        find_timeline(log.db, Filters(identity="ann", decision="match"))
    assert find_timeline(log.db, Filters(identity="ann")).rows == []  # enrolled after: no sighting yet


def test_retroactive_matches_follow_identities_and_tracks(log):
    rematch(log, EMB, THRESHOLD)
    log.merge_identities("ann", "bob")  # ann's retroactive matches become bob's
    assert _count(log, RetroMatch) == 4
    assert sorted(r["track_id"] for r in find_tracks(log.db, Filters(identity="bob")).rows) == [0, 1, 2, 4, 6]
    log.remove_identity("bob")
    assert _count(log, RetroMatch) == 0 and len(_events(log)) == len(PLAN)
    log.add_media("ann", EMB, media("ann2", np.stack([log_template(log, 0)])), create=True)
    assert len(rematch(log, EMB, THRESHOLD).matches) >= 1
    purge_older_than(log.db, 0, now=datetime(2100, 1, 1, tzinfo=timezone.utc))
    assert _count(log, RetroMatch) == 0 and _count(log, Track) == 0


def log_template(gallery, track_id: int) -> np.ndarray:
    with gallery.db.session() as s:
        track = s.scalar(select(Track).where(Track.track_id == track_id))
        return np.frombuffer(track.template, "<f4").copy()


def _enroller(gallery, embedder_id: str = EMB) -> Enroller:
    return Enroller(gallery, lambda image: [], SimpleNamespace(embedder_id=embedder_id, dim=DIM))


def _pk(gallery, track_id: int) -> int:
    with gallery.db.session() as s:
        return s.scalar(select(Track.id).where(Track.track_id == track_id))


def _ref(gallery, track_id: int) -> str:
    with gallery.db.session() as s:
        return track_ref(s.scalar(select(Track.run_id).where(Track.track_id == track_id)), track_id)


def _media(gallery, name: str) -> list[tuple[str, int | None]]:
    with gallery.db.session() as s:
        stmt = (
            select(Media.kind, Media.track_pk).join(Identity).where(Identity.name == name).order_by(Media.id)
        )
        return [tuple(r) for r in s.execute(stmt)]


@pytest.mark.parametrize("how", ["once", "twice, spaced"])
def test_enroll_from_tracks(log, how):
    ref = _ref(log, 5)
    refs = {"once": [ref], "twice, spaced": [ref, f" {ref} "]}[how]
    report = _enroller(log).enroll_tracks("cyd", refs)
    assert [o.status for o in report.outcomes] == ["enrolled"] and report.enrolled["cyd"]
    assert report.outcomes[0].path == f"track {ref} (clip.mp4)"
    assert _media(log, "cyd") == [("track", _pk(log, 5))]  # a stored fact, not read from the path
    found = rematch(log, EMB, THRESHOLD, identities=["cyd"], cause="from-track")
    assert [(h.track_id, h.identity, h.was) for h in found.matches] == [
        (5, "cyd", "unknown")
    ]  # the track itself
    again = _enroller(log).enroll_tracks("cyd", refs[:1], add=True)
    assert [o.status for o in again.outcomes] == ["duplicate"]
    other = _enroller(log).enroll_tracks("dan", refs[:1], force=True)  # matched to cyd now: forced
    assert [o.status for o in other.outcomes] == ["conflict"] and not log.has_identity("dan")
    purge_older_than(log.db, 0, now=datetime(2100, 1, 1, tzinfo=timezone.utc))
    assert _media(log, "cyd") == [("track", None)]  # the track purged: the media stays, its link goes


@pytest.mark.parametrize(
    "refs,embedder,error,message",
    [
        (["5"], EMB, TrackRefError, "expected a track reference RUN:TRACK .* got a bare number"),
        (["{t1}", "99999"], EMB, TrackRefError, "'99999'"),
        (["424242:0"], EMB, EnrollmentError, "track 424242:0: expected a track of the match log"),
        (["seven"], EMB, TrackRefError, "RUN:TRACK"),
        (["1:2:3"], EMB, TrackRefError, "RUN:TRACK"),
        ([], EMB, EnrollmentError, "at least one"),
        (["{t1}"], "other-embedder", EnrollmentError, "never mix"),
        (["{t1}"], EMB, IdentityExistsError, "already exists"),
    ],
)
def test_enroll_from_tracks_refuses_writing_nothing(log, refs, embedder, error, message):
    name = "bob" if error is IdentityExistsError else "eve"
    refs = [_ref(log, 1) if r == "{t1}" else r for r in refs]
    version, media = log.version(), sum(i.media for i in log.identities())
    with pytest.raises(error, match=message):
        _enroller(log, embedder).enroll_tracks(name, refs)
    assert (log.version(), sum(i.media for i in log.identities())) == (version, media)
    assert not log.has_identity("eve")


@pytest.mark.parametrize(
    "track,name,rematched,message",
    [
        (2, "eve", False, r"track \d+:2 is matched to 'bob' \(score 0\.\d\d, when logged\)"),
        (6, "eve", True, r"track \d+:6 is matched to 'ann' \(score 0\.\d\d, retroactively\)"),
        (
            0,
            "eve",
            False,
            r"track \d+:0 scores 0\.\d\d against 'ann' \(threshold 0\.50\)",
        ),  # not rematched yet
        (3, "bob", False, r"track \d+:3 scores -?0\.\d\d against 'bob', below the threshold 0\.50"),
        (5, "ann", False, r"track \d+:5 scores -?0\.\d\d against 'ann', below the threshold 0\.50"),
    ],
)
def test_enroll_from_a_doubtful_track_needs_force(log, track, name, rematched, message):
    if rematched:
        rematch(log, EMB, THRESHOLD)
    add = log.has_identity(name)
    version = log.version()
    with pytest.raises(DoubtfulTrackError, match=message + r"; expected tracks of \w+: nothing enrolled"):
        _enroller(log).enroll_tracks(name, [_ref(log, track)], add=add, threshold=THRESHOLD)
    assert log.version() == version and log.has_identity(name) == add
    report = _enroller(log).enroll_tracks(name, [_ref(log, track)], add=add, threshold=THRESHOLD, force=True)
    assert [o.status for o in report.outcomes] == ["enrolled"]
    assert ("track", _pk(log, track)) in _media(log, name)


def test_enroll_from_tracks_of_the_person_goes_through(log):
    refs = [_ref(log, t) for t in (0, 1)]  # ann's, unknown when logged: scored against ann now
    report = _enroller(log).enroll_tracks("ann", refs, add=True, threshold=THRESHOLD)
    assert report.count("enrolled") == 2
    report = _enroller(log).enroll_tracks("cyd", [_ref(log, 5)], threshold=THRESHOLD)  # nobody's yet
    assert report.count("enrolled") == 1


def _decisions(gallery) -> tuple[list, list]:
    tracks = find_tracks(gallery.db, Filters(page_size=1000)).rows
    return tracks, find_matches(gallery.db, Filters(page_size=1000)).rows


def test_undo_a_rematch_restores_the_decisions_exactly(log):
    first = rematch(log, EMB, THRESHOLD, identities=["bob"])  # nothing to name: no pass
    assert first.rematch_id is None
    before, events = _decisions(log), _events(log)
    report = rematch(log, EMB, THRESHOLD, identities=["ann"], cause="enroll")
    assert _decisions(log) != before
    done = undo_rematch(log, report.rematch_id)
    assert (done.rematch_id, done.removed, done.identities, done.already) == (
        report.rematch_id,
        4,
        ["ann"],
        False,
    )
    assert _decisions(log) == before and _events(log) == events
    row = find_rematches(log.db, Filters()).rows[0]
    assert (row["id"], row["matches"], row["current"], row["undone_at"]) == (
        report.rematch_id,
        4,
        0,
        done.undone_at.isoformat(),
    )
    again = undo_rematch(log, report.rematch_id)  # undone before: nothing changes
    assert (again.already, again.removed, again.undone_at) == (True, 0, done.undone_at)
    assert len(rematch(log, EMB, THRESHOLD).matches) == 4  # a new pass names them again
    with pytest.raises(QueryError, match="rematch 999: expected the id of a rematch"):
        undo_rematch(log, 999)


def test_undo_the_names_of_one_identity(log):
    before = _decisions(log)
    ann = rematch(log, EMB, THRESHOLD, identities=["ann"])
    _enroller(log).enroll_tracks("cyd", [_ref(log, 5)])
    cyd = rematch(log, EMB, THRESHOLD, identities=["cyd"])
    assert [h.track_id for h in cyd.matches] == [5]
    done = undo_identity(log, "ann")
    assert [(d.rematch_id, d.removed, d.undone_at is not None) for d in done] == [(ann.rematch_id, 4, True)]
    tracks = {r["track_id"]: r for r in find_tracks(log.db, Filters()).rows}
    assert {t: tracks[t]["identity"] for t in (0, 1, 4, 5, 6)} == {
        0: None,
        1: None,
        4: None,
        5: "cyd",
        6: "bob",
    }
    assert undo_identity(log, "ann") == []  # nothing left to undo
    undo_rematch(log, cyd.rematch_id)
    after = _decisions(log)
    assert [(r["track_id"], r["decision"], r["identity"]) for r in after[0]] == [
        (r["track_id"], r["decision"], r["identity"]) for r in before[0]
    ]
    with pytest.raises(IdentityNotFoundError, match="'zed'"):
        undo_identity(log, "zed")


def test_undo_by_identity_leaves_the_other_names_of_a_pass(log):
    _enroller(log).enroll_tracks("cyd", [_ref(log, 5)])
    both = rematch(log, EMB, THRESHOLD)  # one pass names ann's four tracks and cyd's one
    assert sorted(h.identity for h in both.matches) == ["ann"] * 4 + ["cyd"]
    (done,) = undo_identity(log, "ann")
    assert (done.removed, done.undone_at) == (4, None)
    (row,) = find_rematches(log.db, Filters()).rows
    assert (row["current"], row["undone_at"]) == (1, None)
    assert undo_rematch(log, both.rematch_id).removed == 1
    assert _count(log, RetroMatch) == 0


def test_http_api_marks_retroactive_matches(log):
    from fastapi.testclient import TestClient

    from pipeline.web.app import create_app

    rematch(log, EMB, THRESHOLD)
    client = TestClient(create_app(log.db, None))
    matches = client.get("/api/matches", params={"identity": "ann"}).json()["rows"]
    assert sorted(r["track_id"] for r in matches) == ANN and all(r["retroactive"] for r in matches)
    tracks = {r["track_id"]: r for r in client.get("/api/tracks").json()["rows"]}
    assert (tracks[6]["identity"], tracks[6]["retroactive"], tracks[6]["logged_identity"]) == (
        "ann",
        True,
        "bob",
    )
    assert client.get("/", params={"identity": "ann"}).text.count("match (retroactive)") == len(ANN)


def test_two_passes_at_once_name_each_track_once(log):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: rematch(log, EMB, THRESHOLD, batch_size=2), range(2)))
    assert sorted(h.track_id for r in reports for h in r.matches) == ANN  # between them, each once
    assert _count(log, RetroMatch) == len(ANN)
