"""gallery.track_search: logged track templates searched by face, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from gallery.db import Database
from gallery.errors import EmbeddingError, QueryError
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.track_search import search_tracks

RECORDED = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)  # the files' recording time: tracks seen from then


def _log(db: Database, source: str, embedder_id: str, templates: list[np.ndarray]) -> None:
    with MatchLogWriter(db, source=source, config_hash="h", keep_thumbnails=False) as writer:
        for i, t in enumerate(templates, start=1):
            unit = np.asarray(t, np.float32) / np.linalg.norm(t)
            seen = {
                "seen_start": RECORDED + timedelta(seconds=i),
                "seen_end": RECORDED + timedelta(seconds=i + 1),
            }
            rec = TrackRecord(i, float(i), i + 1.0, 10, 2, unit, embedder_id, [], "unknown", 0.5)
            writer.record(dataclasses.replace(rec, **seen, time_origin="given"))


def test_ranked_by_cosine_with_filters(db_url):
    with Database(db_url) as db:
        _log(db, "a.mp4", "e3", [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]])
        _log(db, "b.mp4", "e3", [[0.8, 0.2, 0.1]])
        _log(db, "a.mp4", "other", [[1, 0, 0]])  # another embedder's templates never mix in
        hits = search_tracks(db, np.array([1, 0, 0]), "e3", top=3)
        assert [(h.source, h.track_id) for h in hits] == [("a.mp4", 1), ("a.mp4", 2), ("b.mp4", 1)]
        assert (
            hits[0].score == pytest.approx(1.0) and hits[0].decision == "unknown" and hits[0].identity is None
        )
        assert [h.track_id for h in search_tracks(db, np.array([1, 0, 0]), "e3", source="b.mp4")] == [1]
        assert len(search_tracks(db, np.array([1, 0, 0]), "e3", min_score=0.97)) == 2
        later = RECORDED + timedelta(seconds=2)  # by sighting time, not when they were logged
        assert [h.track_id for h in search_tracks(db, np.array([1, 0, 0]), "e3", since=later)] == [2, 3]
        assert [h.ref for h in search_tracks(db, np.array([1, 0, 0]), "e3", until=later)] == ["1:1", "2:1"]
        hit = search_tracks(db, np.array([1, 0, 0]), "e3", top=1)[0].as_row()
        assert (hit["ref"], hit["seen_start"], hit["time_origin"]) == (
            "1:1",
            "2026-03-01T08:00:01+00:00",
            "given",
        )
        assert search_tracks(db, np.array([1, 0, 0]), "nobody") == []


@pytest.mark.parametrize(
    "query, kwargs, error, message",
    [
        ([0, 0, 0], {}, EmbeddingError, "non-zero"),
        ([1, 0], {}, EmbeddingError, "dimension 2"),
        ([1, 0, 0], {"top": 0}, QueryError, "top"),
    ],
)
def test_bad_queries(db_url, query, kwargs, error, message):
    with Database(db_url) as db:
        _log(db, "a.mp4", "e3", [[1, 0, 0]])
        with pytest.raises(error, match=message):
            search_tracks(db, np.array(query, np.float32), "e3", **kwargs)
