"""gallery/reviews.py and gallery/review_state.py on the seeded match log of tests/gallery/test_rematch.py, SQLite and
PostgreSQL: reviews stored beside the logged decisions (never rewriting them), shown by every reader, surviving
rematch and its undo, keeping a rejected pair out of later rematches and in calibration as a known impostor; the
review queue (open items by score) and the refusals."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gallery.access_models import Review
from gallery.errors import IdentityNotFoundError, QueryError
from gallery.forensic import track_detail
from gallery.models import MatchEvent, RetroMatch
from gallery.queries import Filters, find_matches, find_tracks
from gallery.rematch import rematch
from gallery.rematches import undo_rematch
from gallery.review_state import rejected_pairs
from gallery.reviews import ReviewError, add_review, find_reviews, open_items
from gallery.timeline import find_timeline
from tests.gallery.test_rematch import ANN, EMB, THRESHOLD, log  # noqa: F401  (the fixture)


def _ref(gallery, track_id: int) -> str:
    rows = find_tracks(gallery.db, Filters(page_size=100)).rows
    return next(r["ref"] for r in rows if r["track_id"] == track_id)


def _events(gallery) -> list[tuple]:
    with gallery.db.session() as s:
        return [
            tuple(r)
            for r in s.execute(select(MatchEvent.track_pk, MatchEvent.identity_id, MatchEvent.decision))
        ]


def _matches(gallery, identity: str) -> dict[tuple[int, bool], dict]:
    rows = find_matches(gallery.db, Filters(identity=identity, page_size=100)).rows
    return {(r["track_id"], r["retroactive"]): r for r in rows}


def test_rejected_logged_match_shown_everywhere_and_never_rematched(log):  # noqa: F811
    before = _events(log)
    ref6 = _ref(log, 6)  # ann, logged (wrongly) as bob
    done = add_review(log.db, ref6, "rejected", "alice", note="that is ann")
    assert (done["kind"], done["identity"], done["verdict"], done["offer"]) == (
        "match",
        "bob",
        "rejected",
        None,
    )
    assert _events(log) == before  # the logged decision stays as it was
    bob = _matches(log, "bob")
    assert bob[(6, False)]["reviewed"] == "rejected" and bob[(6, False)]["review"]["reviewer"] == "alice"
    assert bob[(2, False)]["reviewed"] is None
    assert {r["track_id"]: r["reviewed"] for r in find_timeline(log.db, Filters(identity="bob")).rows} == {
        2: None,
        6: "rejected",
    }
    detail = track_detail(log.db, ref6)
    assert (detail["identity"], detail["reviewed"], detail["review"]["note"]) == (
        "bob",
        "rejected",
        "that is ann",
    )
    report = rematch(log, EMB, THRESHOLD)  # names ann on her tracks; the bob review of 6 stays
    assert sorted(h.track_id for h in report.matches) == ANN
    assert _matches(log, "bob")[(6, False)]["reviewed"] == "rejected"
    tracks = {r["track_id"]: r for r in find_tracks(log.db, Filters(page_size=100)).rows}
    assert (tracks[6]["identity"], tracks[6]["reviewed"]) == (
        "ann",
        None,
    )  # ann's retroactive match: unreviewed
    with log.db.session() as s:
        assert len(rejected_pairs(s)) == 1


def test_rejected_retro_match_survives_undo_and_stays_rejected(log):  # noqa: F811
    first = rematch(log, EMB, THRESHOLD, identities=["ann"])
    ref0, ref1 = _ref(log, 0), _ref(log, 1)
    rejected = add_review(log.db, ref0, "rejected", "alice")
    assert (rejected["kind"], rejected["identity"]) == ("retro", "ann") and rejected["retro_id"] is not None
    confirmed = add_review(log.db, ref1, "confirmed", "bea")
    assert confirmed["offer"] == f"run_pipeline.py enroll --name ann --from-track {ref1}"
    timeline = {r["track_id"]: r["reviewed"] for r in find_timeline(log.db, Filters(identity="ann")).rows}
    assert timeline == {0: "rejected", 1: "confirmed", 4: None, 6: None}
    assert _matches(log, "ann")[(1, True)]["reviewed"] == "confirmed"
    undo_rematch(log, first.rematch_id)  # the retroactive matches go; the reviews stay, their retro_id NULL
    with log.db.session() as s:
        rows = s.execute(select(Review.retro_id, Review.verdict).order_by(Review.id)).all()
    assert [tuple(r) for r in rows] == [(None, "rejected"), (None, "confirmed")]
    again = rematch(log, EMB, THRESHOLD, identities=["ann"])  # the rejected pair is not named again
    assert sorted(h.track_id for h in again.matches) == [1, 4, 6]
    timeline = {r["track_id"]: r["reviewed"] for r in find_timeline(log.db, Filters(identity="ann")).rows}
    assert timeline == {1: "confirmed", 4: None, 6: None}  # the confirmation applies to the pair again
    with log.db.session() as s:
        assert s.scalar(select(RetroMatch.id).where(RetroMatch.track_pk == _pk(s, ref0))) is None


def _pk(session, ref: str) -> int:
    from gallery.models import Track

    run, track = (int(x) for x in ref.split(":"))
    return session.scalar(select(Track.id).where(Track.run_id == run, Track.track_id == track))


def test_a_later_review_replaces_the_earlier_one(log):  # noqa: F811
    ref2 = _ref(log, 2)
    add_review(log.db, ref2, "rejected", "alice")
    add_review(log.db, ref2, "acknowledged", "bea")  # an alert acknowledged: the pair's verdict stays
    assert _matches(log, "bob")[(2, False)]["reviewed"] == "rejected"
    add_review(log.db, ref2, "confirmed", "cyd")
    row = _matches(log, "bob")[(2, False)]
    assert (row["reviewed"], row["review"]["reviewer"]) == ("confirmed", "cyd")
    with log.db.session() as s:
        assert rejected_pairs(s) == set()
    assert [r["verdict"] for r in find_reviews(log.db, Filters()).rows] == [
        "confirmed",
        "acknowledged",
        "rejected",
    ]
    assert [r["verdict"] for r in find_reviews(log.db, Filters(identity="ann")).rows] == []


def test_naming_an_unknown_track(log):  # noqa: F811
    ref3 = _ref(log, 3)
    named = add_review(log.db, ref3, "named", "alice", identity="ann")
    assert (named["kind"], named["offer"]) == (
        "unknown",
        f"run_pipeline.py enroll --name ann --from-track {ref3}",
    )
    tracks = {r["track_id"]: r for r in find_tracks(log.db, Filters(page_size=100)).rows}
    assert (tracks[3]["decision"], tracks[3]["reviewed"], tracks[3]["review"]["identity"]) == (
        "unknown",
        "named",
        "ann",
    )
    ref6 = _ref(log, 6)
    with pytest.raises(ReviewError, match="got a match to bob"):
        add_review(log.db, ref6, "named", "alice", identity="ann")
    add_review(log.db, ref6, "rejected", "alice")  # not bob: now it may be named
    assert add_review(log.db, ref6, "named", "alice", identity="ann")["kind"] == "unknown"


def test_calibration_counts_a_rejected_pair_as_a_known_impostor(log):  # noqa: F811
    before = log.calibrate(EMB).impostor_scores
    add_review(log.db, _ref(log, 6), "rejected", "alice")
    assert log.calibrate(EMB).impostor_scores == before + 1
    add_review(log.db, _ref(log, 6), "confirmed", "alice")  # reviewed again: no longer an impostor
    assert log.calibrate(EMB).impostor_scores == before


def test_open_items_by_score_with_counts(log):  # noqa: F811
    rematch(log, EMB, THRESHOLD)
    found = open_items(log.db, Filters(page_size=100))
    assert found["counts"] == {"match": 2, "retro": len(ANN), "total": 2 + len(ANN)}
    scores = [r["score"] for r in found["rows"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 2 + len(ANN)
    add_review(log.db, _ref(log, 6), "rejected", "alice", identity="bob")
    add_review(log.db, _ref(log, 4), "confirmed", "alice")
    add_review(log.db, _ref(log, 2), "acknowledged", "alice")  # acknowledging leaves the match to judge
    found = open_items(log.db, Filters(page_size=100))
    assert found["counts"] == {"match": 1, "retro": len(ANN) - 1, "total": len(ANN)}
    assert {(r["track_id"], r["identity"]) for r in found["rows"]} == {
        (2, "bob"),
        (0, "ann"),
        (1, "ann"),
        (6, "ann"),
    }
    assert open_items(log.db, Filters(identity="bob"))["counts"]["total"] == 1
    with pytest.raises(IdentityNotFoundError):
        open_items(log.db, Filters(identity="zed"))


@pytest.mark.parametrize(
    "track,verdict,kwargs,error,message",
    [
        (3, "confirmed", {}, ReviewError, "expected a match or a retroactive match on the track, got none"),
        (3, "acknowledged", {}, ReviewError, "no alert was raised"),
        (2, "rejected", {"identity": "ann"}, ReviewError, "expected a match to one of bob, got 'ann'"),
        (3, "named", {"identity": "zed"}, ReviewError, "expected an enrolled identity to name it, got 'zed'"),
        (3, "named", {}, ReviewError, "expected an identity name, got none"),
        (2, "approved", {}, ReviewError, "expected a verdict confirmed, rejected, acknowledged, named"),
        (2, "confirmed", {"note": "x" * 2001}, ReviewError, "at most 2000 characters"),
        (None, "confirmed", {}, ReviewError, "expected a track of the match log, got none such"),
        ("7", "confirmed", {}, QueryError, "bare number"),
    ],
)
def test_refusals_write_nothing(log, track, verdict, kwargs, error, message):  # noqa: F811
    ref = _ref(log, track) if isinstance(track, int) else "999:1" if track is None else track
    with pytest.raises(error, match=message):
        add_review(log.db, ref, verdict, "alice", **kwargs)
    with log.db.session() as s:
        assert s.scalar(select(Review.id)) is None
