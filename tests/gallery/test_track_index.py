"""gallery/track_index.py: the track-template index in step with the match log (catch-up, check, purge, rebuild),
and search through it giving the exact search's answer, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
import pytest

import gallery.track_index as track_index_module
import gallery.track_search as track_search_module
from gallery.config import GalleryConfig, IndexConfig
from gallery.db import Database
from gallery.errors import IndexFileError
from gallery.matchlog import MatchLogWriter, TrackRecord, purge_older_than
from gallery.models import utcnow
from gallery.track_index import TrackIndexes
from gallery.track_search import search_tracks
from tests.gallery.helpers import unit

DIM = 8


def _config(tmp_path, hnsw_above: int = 1000) -> GalleryConfig:
    return GalleryConfig(
        storage_dir=str(tmp_path / "store"), index=IndexConfig(hnsw_above=hnsw_above, gpu=False)
    )


def _log(db, vectors, source="a.mp4", embedder="e8", at=None, indexes=None, batch=1000) -> None:
    """One run of ``source`` with a track per vector (decisions alternate match-less unknown)."""
    with MatchLogWriter(
        db, source=source, config_hash="h", keep_thumbnails=False, batch_size=batch, track_index=indexes
    ) as writer:
        for i, v in enumerate(vectors, start=1):
            writer.record(TrackRecord(i, float(i), i + 1.0, 5, 1, v, embedder, [], "unknown", 0.5, at=at))


def _same(a, b) -> None:
    assert [(h.source, h.run_id, h.track_id) for h in a] == [(h.source, h.run_id, h.track_id) for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-6)


def _no_exact(*args):
    raise AssertionError("the exact search was used")


FILTERS = [
    {},
    {"source": "b.mp4"},
    {"min_score": 0.2},
    {"top": 50},
    {"since": "later"},
    {"source": "nowhere.mp4"},
]


@pytest.mark.parametrize("n", [0, 1, 60])
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_exact_index_gives_the_exact_answer(db_url, tmp_path, monkeypatch, n, filters):
    rng = np.random.default_rng(n)
    with Database(db_url) as db:
        indexes = TrackIndexes(db, _config(tmp_path))
        _log(db, unit(rng, n, DIM))
        _log(db, unit(rng, 3, DIM), source="b.mp4")
        _log(db, unit(rng, 5, DIM), embedder="other")  # another embedder's tracks never mix in
        kwargs = dict(filters)
        if kwargs.get("since") == "later":
            kwargs["since"] = utcnow() + timedelta(hours=1)
        queries = unit(rng, 4, DIM)
        expected = [search_tracks(db, q, "e8", **kwargs) for q in queries]
        monkeypatch.setattr(track_search_module, "_exact", _no_exact)  # the index answers alone
        for query, hits in zip(queries, expected):
            _same(search_tracks(db, query, "e8", indexes=indexes, **kwargs), hits)
        assert indexes.get("e8").live == n + 3 and indexes.get("e8").vectors.tag.kind == "exact"


def test_hnsw_index_finds_the_nearest(db_url, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    with Database(db_url) as db:
        indexes = TrackIndexes(db, _config(tmp_path, hnsw_above=50))
        vectors = unit(rng, 200, DIM)
        _log(db, vectors)
        assert indexes.get("e8").vectors.tag.kind == "hnsw"
        expected = [search_tracks(db, v, "e8", top=5) for v in vectors[:20]]
        monkeypatch.setattr(track_search_module, "_exact", _no_exact)
        for v, hits in zip(vectors[:20], expected):
            _same(search_tracks(db, v, "e8", top=5, indexes=indexes), hits)


def test_saved_beside_the_gallery_index_and_caught_up_by_another_process(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    rng = np.random.default_rng(2)
    with Database(url) as db:
        config = _config(tmp_path)
        first = TrackIndexes(db, config)
        _log(db, unit(rng, 30, DIM))
        assert first.get("e8").live == 30
        path = first.path("e8")
        assert path.is_file() and path.parent == tmp_path / "store" and path.name.endswith(".tracks.faiss")
        _log(db, unit(rng, 7, DIM), source="b.mp4")  # logged by a process without the index
        with caplog.at_level(logging.INFO, logger="gallery.track_index"):
            second = TrackIndexes(db, config)  # another process: loads the file and catches up
            assert second.get("e8").live == 37
        assert not [r for r in caplog.records if "building" in r.message or r.levelno >= logging.WARNING]
        q = unit(rng, 1, DIM)[0]
        _same(search_tracks(db, q, "e8", indexes=second), search_tracks(db, q, "e8"))


@pytest.mark.parametrize("damage", [b"", b"garbage", "truncated"])
def test_a_damaged_file_is_rebuilt_with_one_warning(tmp_path, caplog, damage):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with Database(url) as db:
        config = _config(tmp_path)
        _log(db, unit(np.random.default_rng(3), 12, DIM))
        path = TrackIndexes(db, config).path("e8")
        TrackIndexes(db, config).get("e8")
        path.write_bytes(path.read_bytes()[:100] if damage == "truncated" else damage)
        with caplog.at_level(logging.WARNING):
            assert TrackIndexes(db, config).get("e8").live == 12
        assert len([r for r in caplog.records if "rebuilding the track index" in r.message]) == 1


def test_another_embedders_file_is_refused(tmp_path):
    with Database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        config = _config(tmp_path)
        _log(db, unit(np.random.default_rng(4), 3, DIM))
        _log(db, unit(np.random.default_rng(5), 3, DIM), embedder="other")
        indexes = TrackIndexes(db, config)
        indexes.get("other")
        indexes.path("other").rename(indexes.path("e8"))
        with pytest.raises(IndexFileError, match="expected embedder 'e8'"):
            TrackIndexes(db, config).get("e8")


def test_the_writer_of_the_same_process_adds_each_batch(db_url, tmp_path):
    rng = np.random.default_rng(6)
    with Database(db_url) as db:
        indexes = TrackIndexes(db, _config(tmp_path))
        _log(db, unit(rng, 4, DIM))
        index = indexes.get("e8")
        _log(db, unit(rng, 3, DIM), source="b.mp4")  # another process's tracks: a gap below the next batch
        _log(db, unit(rng, 5, DIM), source="c.mp4", indexes=indexes, batch=2)
        assert index.live == 12 and index.id_sum == sum(range(1, 13))  # the gap was read from SQL
        assert not indexes.get("e8").unsaved  # saved at once: tiny


@pytest.mark.parametrize("hnsw_above", [1000, 10])
def test_purged_tracks_leave_the_index(db_url, tmp_path, caplog, monkeypatch, hnsw_above):
    rng = np.random.default_rng(7)
    with Database(db_url) as db:
        config = _config(tmp_path, hnsw_above)
        mine = TrackIndexes(db, config)
        old, new = unit(rng, 20, DIM), unit(rng, 20, DIM)
        _log(db, old, at=utcnow() - timedelta(days=40))
        _log(db, new, source="b.mp4")
        assert mine.get("e8").live == 40
        other = TrackIndexes(db, config)
        other.get("e8")
        with caplog.at_level(logging.WARNING):
            assert purge_older_than(db, 30, track_index=mine) == 20
            assert mine.get("e8").live == 20  # dropped at once, without a warning
            assert not caplog.records
            monkeypatch.setattr(track_index_module, "RECHECK_S", 0.0)
            assert other.get("e8").live == 20  # another process's index finds out at its next check
        assert ["20 tracks no longer logged, 0 not in it" in r.message for r in caplog.records] == [True]
        hits = search_tracks(db, old[0], "e8", top=20, indexes=other)
        assert {h.source for h in hits} == {"b.mp4"}
        _same(hits, search_tracks(db, old[0], "e8", top=20))


def test_a_track_missing_below_the_end_is_found_at_the_check(tmp_path, monkeypatch, caplog):
    """As a track committed late on PostgreSQL (its id below others already indexed) would be."""
    with Database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        indexes = TrackIndexes(db, _config(tmp_path))
        _log(db, unit(np.random.default_rng(8), 10, DIM))
        index = indexes.get("e8")
        index.vectors.remove(np.array([3]))
        index.id_sum -= 3
        monkeypatch.setattr(track_index_module, "RECHECK_S", 0.0)
        with caplog.at_level(logging.WARNING):
            assert indexes.get("e8").live == 10 and 3 in indexes.get("e8").vectors.ids()
        assert "0 tracks no longer logged, 1 not in it" in caplog.text


def test_an_exact_index_grows_into_hnsw_and_a_mostly_dead_graph_is_compacted(tmp_path, monkeypatch):
    rng = np.random.default_rng(9)
    with Database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        indexes = TrackIndexes(db, _config(tmp_path, hnsw_above=30))
        _log(db, unit(rng, 25, DIM), at=utcnow() - timedelta(days=40))
        assert indexes.get("e8").vectors.tag.kind == "exact"
        _log(db, unit(rng, 15, DIM), indexes=indexes)
        index = indexes.get("e8")  # past hnsw_above: rebuilt as HNSW at the search
        assert index.vectors.tag.kind == "hnsw" and index.live == 40
        monkeypatch.setattr(track_index_module, "COMPACT_MIN", 5)
        purge_older_than(db, 30, track_index=indexes)
        assert index.vectors.dead == 25 and index.live == 15
        _log(db, unit(rng, 1, DIM), source="b.mp4")
        index = indexes.get("e8")  # more tombstones than live entries: compacted, exact again at this size
        assert (index.vectors.dead, index.live, index.vectors.tag.kind) == (0, 16, "exact")
        assert TrackIndexes(db, indexes.config).get("e8").live == 16  # and saved


def test_selective_filters_fall_back_to_the_exact_search(db_url, tmp_path, monkeypatch):
    rng = np.random.default_rng(10)
    with Database(db_url) as db:
        indexes = TrackIndexes(db, _config(tmp_path, hnsw_above=50))
        _log(db, unit(rng, 150, DIM))
        _log(db, unit(rng, 2, DIM), source="b.mp4")
        q = unit(rng, 1, DIM)[0]
        expected = search_tracks(db, q, "e8", source="b.mp4")
        calls = []
        exact = track_search_module._exact
        monkeypatch.setattr(track_search_module, "_exact", lambda *a: calls.append(1) or exact(*a))
        monkeypatch.setattr(track_search_module, "MAX_FETCH", 4)  # too few candidates to find b's tracks
        hits = search_tracks(db, q, "e8", source="b.mp4", top=2, indexes=indexes)
        assert [h.source for h in hits] == ["b.mp4", "b.mp4"] and calls == [1]
        _same(hits, expected)


def test_memory_only_for_a_server_database_without_storage(tmp_path):
    with Database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        indexes = TrackIndexes(db, GalleryConfig(index=IndexConfig(persist=False)))
        _log(db, unit(np.random.default_rng(11), 5, DIM))
        assert indexes.path("e8") is None and indexes.get("e8").live == 5
        assert not list(tmp_path.glob("*.faiss"))


def test_an_index_of_another_database_of_the_same_name_is_rebuilt(tmp_path, caplog):
    rng = np.random.default_rng(12)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with Database(url) as db:
        _log(db, unit(rng, 10, DIM))
        indexes = TrackIndexes(db, _config(tmp_path))
        indexes.get("e8")
        assert indexes.path("e8").is_file()
    for leftover in tmp_path.glob("log.db*"):
        leftover.unlink()
    with Database(url) as db:  # a new database, its track ids from 1 again, the old index file still there
        _log(db, unit(rng, 10, DIM))
        with caplog.at_level(logging.WARNING):
            indexes = TrackIndexes(db, _config(tmp_path))
            q = unit(rng, 1, DIM)[0]
            _same(search_tracks(db, q, "e8", indexes=indexes), search_tracks(db, q, "e8"))
        assert "differ from the match log's" in caplog.text
