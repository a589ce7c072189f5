"""Forensic search at scale: the match log's track-template index against exact search.

Data (``--dim`` 512: FaceMoE's template size): ``--data people`` logs ``--n`` unit templates of ``n / --per-person``
people, each seen in ``--per-person`` tracks (a track: the person's centre plus noise of norm ``--noise``; two tracks
of one person score about 0.5, two people about 0); the queries are fresh views of logged people, as a photo of
someone who passed a camera. ``--data random``: uniform random unit templates and queries, the worst case of a graph
index (no neighbourhood structure: the 10 nearest of a random point are barely nearer than the rest).

Measured, with the 1-minute load average of the (shared) machine:
- log: the templates bulk-inserted into a real SQLite match log (tracks and events; ``--no-sql``: skipped, the
  index is built from the generated vectors directly);
- build: the track index built from SQL through :class:`gallery.track_index.TrackIndexes` (exact up to
  ``--hnsw-above``, HNSW above), its save and file size, and a later process opening it (load, check against
  SQL, catch-up);
- search (one query, ``--search-threads`` threads): index search p50/p99 and recall@10 against exact search for
  each ``--ef-search``; the whole ``search_tracks`` (index, then the rows from SQL) at the default efSearch; the
  exact search streamed from SQL (the search without an index) for ``--exact-queries`` queries;
- update: ``--updates`` tracks logged one per transaction through ``MatchLogWriter`` with the index open: the
  index update per track (``note_logged``), and the whole write for scale;
- memory: peak RSS of the process (the generated vectors for the exact answer included) and the index file.

    python bench/track_search.py                          # 1,000,000 x 512-d in SQLite (long: the HNSW build)
    python bench/track_search.py --data random --no-sql   # the worst case, index only
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import delete, insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.gallery import load, percentiles, table
from bench.machine import describe  # noqa: E402
from gallery.config import GalleryConfig, IndexConfig
from gallery.db import Database
from gallery.index import VectorIndex
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.models import MatchEvent, Run, Source, Track, to_blob
from gallery.track_index import TrackIndex, TrackIndexes
from gallery.track_search import search_tracks

logger = logging.getLogger(__name__)

EMBEDDER = "bench-tracks"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(
    args, rng: np.random.Generator, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(templates [n, D], queries [Q, D], extra [U, D])``: the log, the queries, the tracks logged later."""
    n, dim, total = args.n, args.dim, args.n + args.updates
    if args.data == "random":
        return (
            unit(rng.normal(size=(n, dim))),
            unit(rng.normal(size=(args.queries, dim))),
            unit(rng.normal(size=(args.updates, dim))),
        )
    people = max(1, total // args.per_person)
    centres = rng.normal(size=(people, dim))
    if args.groups:  # each person near the centre of a look-alike group
        groups = unit(rng.normal(size=(args.groups, dim)))
        centres = groups[np.arange(people) % args.groups] + args.group_spread * centres / np.sqrt(dim)
    centres = unit(centres)
    noise = args.noise / np.sqrt(dim)
    out = np.empty((total, dim), np.float32)
    for s in range(0, total, chunk):
        m = min(chunk, total - s)
        out[s : s + m] = unit(centres[np.arange(s, s + m) % people] + noise * rng.normal(size=(m, dim)))
    queries = unit(
        centres[rng.integers(0, people, args.queries)] + noise * rng.normal(size=(args.queries, dim))
    )
    return out[:n], queries, out[n:]


def fill_log(db: Database, vectors: np.ndarray, chunk: int = 20_000) -> None:
    """Bulk-insert a track (and its event) per vector over 30 days, 10 cameras, in pk order (Core inserts)."""
    with db.session() as session:
        sources = session.scalars(
            insert(Source).returning(Source.id, sort_by_parameter_order=True),
            [
                {"name": f"camera{i:02d}", "kind": "camera", "uri": None, "created_at": START}
                for i in range(10)
            ],
        ).all()
        run = dict(config_hash="bench", status="finished", frames_done=0, started_at=START, updated_at=START)
        runs = session.scalars(
            insert(Run).returning(Run.id, sort_by_parameter_order=True),
            [{"source_id": s} | run for s in sources],
        ).all()
    dim, step = vectors.shape[1], 30 * 86400 / max(1, len(vectors))
    fixed = dict(start_time=0.0, end_time=2.0, frames=20, crops_embedded=3, embedder_id=EMBEDDER, dim=dim)
    for s in range(0, len(vectors), chunk):
        with db.session() as session:
            rows = [
                {"run_id": runs[i % 10], "source_id": sources[i % 10], "track_id": i, "thumbnail": None}
                | fixed
                | {"template": to_blob(vectors[i]), "created_at": START + timedelta(seconds=i * step)}
                for i in range(s, min(s + chunk, len(vectors)))
            ]
            pks = session.scalars(insert(Track).returning(Track.id, sort_by_parameter_order=True), rows).all()
            events = [
                {"track_pk": pk, "source_id": r["source_id"], "identity_id": None, "score": 0.2}
                | {"decision": "unknown", "threshold": 0.5, "candidates": [], "at": r["created_at"]}
                for pk, r in zip(pks, rows)
            ]
            session.execute(insert(MatchEvent), events)
        if s and s % 200_000 == 0:
            logger.info("logged %d tracks", s)


class TimedIndexes(TrackIndexes):
    """Track indexes that time each update from the writer."""

    def __init__(self, db, config) -> None:
        super().__init__(db, config)
        self.seconds: list[tuple[int, float]] = []

    def note_logged(self, ids, records) -> None:
        t = time.perf_counter()
        super().note_logged(ids, records)
        self.seconds.append((len(ids), time.perf_counter() - t))


def time_calls(fn, items, repeats: int) -> tuple[float, float]:
    lat = []
    for r in range(repeats):
        t = time.perf_counter()
        fn(items[r % len(items)])
        lat.append(time.perf_counter() - t)
    return percentiles(lat)


def bench_search(index, queries: np.ndarray, truth: np.ndarray, args, whole=None) -> list[dict]:
    """Index search p50/p99 (ms) and recall@10 against ``truth [Q, 10]`` ids for each efSearch, and the p50/p99
    (ms) of ``whole(query)``, the whole search, when given.

    ``index``: a ``TrackIndex``, or a ``VectorIndex`` (``--no-sql``)."""
    if isinstance(index, TrackIndex):
        vectors, search = index.vectors, lambda q: index.search(q, 10)[1]
    else:
        vectors, search = index, lambda q: index.search(q.reshape(1, -1), 10)[1][0]
    rows = []
    for ef in args.ef_search if vectors.tag.kind == "hnsw" else [0]:
        vectors.set_ef_search(ef)
        found = [search(q) for q in queries]
        recall = float(
            np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)])
        )
        p50, p99 = time_calls(search, queries, args.repeats)
        name = f"hnsw M={args.hnsw_m} ef={ef}" if ef else "exact (flat)"
        rows.append({"index": name, "p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "recall@10": recall})
        if whole is not None:
            p50, p99 = time_calls(whole, queries, args.repeats)
            rows[-1] |= {"search_tracks_p50_ms": round(p50, 3), "search_tracks_p99_ms": round(p99, 3)}
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="track templates in the log")
    p.add_argument("--dim", type=int, default=512, help="template size (FaceMoE: 512)")
    p.add_argument("--data", choices=("people", "random"), default="people")
    p.add_argument("--per-person", type=int, default=10, help="tracks per person (--data people)")
    p.add_argument("--noise", type=float, default=1.0, help="norm of a track's noise around its person")
    p.add_argument("--groups", type=int, default=1000, help="look-alike groups of people (0: none)")
    p.add_argument(
        "--group-spread", type=float, default=1.5, help="norm of a person's offset from their group's centre"
    )
    p.add_argument("--queries", type=int, default=300, help="queries for recall and latency")
    p.add_argument("--repeats", type=int, default=300, help="timed single-query searches per setting")
    p.add_argument("--hnsw-above", type=int, default=IndexConfig().hnsw_above)
    p.add_argument("--hnsw-m", type=int, default=IndexConfig().hnsw_m)
    p.add_argument("--ef-construction", type=int, default=IndexConfig().hnsw_ef_construction)
    p.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--search-threads", type=int, default=1, help="FAISS threads while searching")
    p.add_argument("--exact-queries", type=int, default=3, help="exact searches streamed from SQL (baseline)")
    p.add_argument(
        "--updates", type=int, default=1000, help="tracks logged one at a time with the index open"
    )
    p.add_argument("--no-sql", action="store_true", help="index only: build it from the generated vectors")
    p.add_argument("--db-dir", type=Path, help="where the temporary folder of the SQLite log and index goes")
    p.add_argument(
        "--keep",
        type=Path,
        help="keep the log and its index in this folder, and reuse them when there (same --n, --dim, --data, --seed)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    print(describe(), flush=True)  # what the figures below were measured on
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    build_threads = faiss.omp_get_max_threads()
    rng = np.random.default_rng(args.seed)
    vectors, queries, extra = make_data(args, rng)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    t = time.perf_counter()
    truth = ids[faiss.knn(queries, vectors, min(10, args.n), metric=faiss.METRIC_INNER_PRODUCT)[1]]
    out: dict = {
        "n": args.n,
        "dim": args.dim,
        "data": args.data,
        "exact_truth_s": round(time.perf_counter() - t, 1),
    }
    config = IndexConfig(
        hnsw_above=args.hnsw_above,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.ef_construction,
        track_ef_search=IndexConfig().track_ef_search,
        gpu=False,  # CPU figures, comparable across machines
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-tracks-", dir=args.db_dir) as temp:
        work = args.keep or Path(temp)
        if args.no_sql:
            out |= bench_index_only(work, vectors, ids, queries, truth, extra, config, args, build_threads)
        else:
            out |= bench_sql(work, vectors, queries, truth, extra, config, args, build_threads)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["load"] = load()
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


def bench_index_only(work, vectors, ids, queries, truth, extra, config, args, build_threads) -> dict:
    faiss.omp_set_num_threads(build_threads)
    t = time.perf_counter()
    index = VectorIndex.build(ids, vectors, embedder_id=EMBEDDER, gallery_version=0, config=config)
    build_s = time.perf_counter() - t
    faiss.omp_set_num_threads(args.search_threads)
    rows = bench_search(index, queries, truth, args)
    add = []
    for i, v in enumerate(extra):
        t = time.perf_counter()
        index.add(np.array([args.n + 1 + i]), v.reshape(1, -1))
        add.append(time.perf_counter() - t)
    t = time.perf_counter()
    index.save(work / "index.faiss")
    return {
        "build_s": round(build_s, 1),
        "save_s": round(time.perf_counter() - t, 1),
        "kind": index.tag.kind,
        "index_mb": round((work / "index.faiss").stat().st_size / 2**20),
        "search": rows,
        "update_p50_ms": round(percentiles(add)[0], 3) if add else None,
        "update_p99_ms": round(percentiles(add)[1], 3) if add else None,
    }


def bench_sql(work, vectors, queries, truth, extra, config, args, build_threads) -> dict:
    url = f"sqlite:///{work / 'log.db'}"
    section = GalleryConfig(db_url=url, index=config)
    out: dict = {}
    kept = (
        work / "log.db"
    ).is_file()  # --keep: the log (and index) of an earlier run with the same arguments
    with Database(url) as db:
        t = time.perf_counter()
        if not kept:
            fill_log(db, vectors)
        out["log_s"] = None if kept else round(time.perf_counter() - t, 1)
        out["db_mb"] = round((work / "log.db").stat().st_size / 2**20)
        faiss.omp_set_num_threads(build_threads)
        indexes = TimedIndexes(db, section)
        t = time.perf_counter()
        built = not indexes.path(EMBEDDER).is_file()
        index = indexes.get(EMBEDDER)  # built from SQL and saved (--keep: opened when kept)
        out["build_s"] = round(time.perf_counter() - t, 1) if built else None
        index.unsaved = 1
        t = time.perf_counter()
        index.save(force=True)
        out["save_s"] = round(time.perf_counter() - t, 1)
        out["kind"], out["index_mb"] = (
            index.vectors.tag.kind,
            round(indexes.path(EMBEDDER).stat().st_size / 2**20),
        )
        del index, indexes
        faiss.omp_set_num_threads(args.search_threads)
        indexes = TimedIndexes(db, section)
        t = time.perf_counter()
        index = indexes.get(EMBEDDER)  # another process: load, check against SQL, catch up
        out["open_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        index.check()
        out["check_ms"] = round((time.perf_counter() - t) * 1e3, 1)
        whole = lambda q: search_tracks(db, q, EMBEDDER, 10, indexes=indexes)  # noqa: E731
        out["search"] = bench_search(index, queries, truth, args, whole)
        index.vectors.set_ef_search(config.track_ef_search)
        lat = []
        for q in queries[: args.exact_queries]:
            t = time.perf_counter()
            search_tracks(db, q, EMBEDDER, 10)
            lat.append(time.perf_counter() - t)
        out["exact_sql_p50_ms"] = round(percentiles(lat)[0], 1) if lat else None
        t = time.perf_counter()
        with MatchLogWriter(
            db, source="camera-new", kind="camera", config_hash="bench", keep_thumbnails=False, batch_size=1,
            track_index=indexes,
        ) as writer:  # fmt: skip
            for i, v in enumerate(extra):
                writer.record(TrackRecord(i, 0.0, 1.0, 10, 3, v, EMBEDDER, [], "unknown", 0.5))
        if args.keep:  # the log as it was, for the next run
            with db.session() as session:
                session.execute(delete(MatchEvent).where(MatchEvent.source_id == writer.source_id))
                session.execute(delete(Track).where(Track.source_id == writer.source_id))
        write_s = time.perf_counter() - t
        each = [s / n for n, s in indexes.seconds]
        assert index.live == args.n + len(extra), "every logged track is in the index"
        if len(each):
            out["update_p50_ms"], out["update_p99_ms"] = (round(x, 3) for x in percentiles(each))
            out["write_per_track_ms"] = round(write_s / len(extra) * 1e3, 2)
    return out


def report(out: dict) -> None:
    """The figures as Markdown."""
    print(f"## track search ({out['n']:,} x {out['dim']}-d, {out['data']}, load {out['load']})\n")
    print(table(out["search"]) + "\n")
    keys = [k for k in out if k not in ("search", "n", "dim", "data", "load")]
    print(table([{"figure": k, "value": json.dumps(out[k])} for k in keys]))


if __name__ == "__main__":
    sys.exit(main())
