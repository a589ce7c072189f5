"""Gallery and match-log speed at scale on clustered synthetic data.

Templates: ``--templates`` unit vectors of ``--dim`` dimensions around ``--clusters`` random centres (people
of one look-alike group are close, as in real galleries). Probes: enrolled templates with fresh noise.

Reported, each against a baseline measured in the same run, each row with the 1-minute load average of the
machine when it finished:
- enrollment rate (templates/s) through ``Gallery.bulk_enroll`` into SQLite (and PostgreSQL), overall and over
  the first and the last ``--enroll-slice`` templates (does it slow down as the tables grow?);
- index build time, search latency p50/p99 for 1 and 100 queries, exact (the baseline) and HNSW at several
  ``efSearch`` values, with HNSW recall@1 against exact and the speed-up over exact (on the CPU, even where
  FAISS sees a GPU, so that figures stay comparable);
- match-log query latency p50/p99 over ``--events`` events on SQLite and PostgreSQL: one identity + a one-day
  window (newest 50), one identity over all time (newest 50 of a few hundred), and the unfiltered newest-50
  page as the baseline.

    python bench/gallery.py                                      # everything at 1,000,000 (long)
    python bench/gallery.py --parts enroll --enroll 1000000      # enrollment only
    python bench/gallery.py --parts match_log                    # match log only
    python bench/gallery.py --pg-url postgresql+psycopg://user@host/db   # else a throwaway cluster if found
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe  # noqa: E402
from gallery.config import IndexConfig
from gallery.db import Database
from gallery.index import VectorIndex
from gallery.models import Identity, MatchEvent, Run, Source, Track, to_blob
from gallery.queries import Filters, find_matches
from gallery.store import Gallery

logger = logging.getLogger(__name__)

EMBEDDER = "bench-synthetic"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
PARTS = ("enroll", "index", "match_log")


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int, chunk: int = 100_000) -> np.ndarray:
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        block = centres[rng.integers(0, clusters, m)] + rng.normal(size=(m, dim)).astype(
            np.float32
        ) / np.sqrt(dim)
        out[s : s + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def time_search(index: VectorIndex, queries: np.ndarray, batch: int, repeats: int) -> tuple[float, float]:
    lat = []
    for r in range(repeats):
        s = (r * batch) % max(1, len(queries) - batch + 1)
        q = queries[s : s + batch]
        t = time.perf_counter()
        index.search(q, 10)
        lat.append(time.perf_counter() - t)
    return percentiles(lat)


def load() -> float:
    """The 1-minute load average (the machine may be shared: latencies are only comparable at a like load)."""
    return round(os.getloadavg()[0], 1)


def bench_enroll(url: str, vectors: np.ndarray, slice_size: int) -> dict:
    """Enroll ``vectors`` in slices of ``slice_size`` (``bulk_enroll`` commits every 20,000 anyway): the rate
    overall, over the first slice and over the last one."""
    names = [f"person{i:07d}" for i in range(len(vectors))]
    rates = []
    with Gallery.open(url) as gallery:
        t0 = time.perf_counter()
        for s in range(0, len(vectors), slice_size):
            t = time.perf_counter()
            gallery.bulk_enroll(names[s : s + slice_size], EMBEDDER, vectors[s : s + slice_size])
            rates.append(len(names[s : s + slice_size]) / (time.perf_counter() - t))
            logger.info("enrolled %d/%d (%.0f/s)", s + len(names[s : s + slice_size]), len(names), rates[-1])
        seconds = time.perf_counter() - t0
    return {
        "templates": len(vectors),
        "seconds": round(seconds, 1),
        "per_s": round(len(vectors) / seconds),
        "first_per_s": round(rates[0]),
        "last_per_s": round(rates[-1]),
        "slice": min(slice_size, len(vectors)),
        "load": load(),
    }


INDEX_COLUMNS = "index build_s q1_p50_ms q1_p99_ms q100_p50_ms q100_p99_ms recall@1 speedup_q1".split()


def _index_row(name: str, build_s: float, q1: tuple, q100: tuple, recall: float, speedup: float) -> dict:
    """One row of the search table: p50/p99 latencies (ms) of 1 and 100 queries."""
    return dict(zip(INDEX_COLUMNS, (name, round(build_s, 1), *q1, *q100, recall, speedup)))


def bench_index(vectors: np.ndarray, queries: np.ndarray, args) -> list[dict]:
    """Builds use every core; searches run on ``--search-threads`` (a matcher serves one track at a time)."""
    import faiss

    build_threads = faiss.omp_get_max_threads()
    ids = np.arange(len(vectors))
    rows = []
    t = time.perf_counter()
    cfg = IndexConfig(hnsw_above=len(vectors), gpu=False)  # CPU search: figures comparable across machines
    exact = VectorIndex.build(ids, vectors, embedder_id=EMBEDDER, gallery_version=0, config=cfg)
    exact_build = time.perf_counter() - t
    faiss.omp_set_num_threads(args.search_threads)
    truth = exact.search(queries, 1)[1][:, 0]
    base1 = time_search(exact, queries, 1, args.repeats)
    base100 = time_search(exact, queries, 100, max(3, args.repeats // 20))
    rows.append(_index_row("exact", exact_build, base1, base100, 1.0, 1.0))
    faiss.omp_set_num_threads(build_threads)
    t = time.perf_counter()
    cfg = IndexConfig(hnsw_above=0, hnsw_m=args.hnsw_m, hnsw_ef_construction=args.ef_construction, gpu=False)
    hnsw = VectorIndex.build(ids, vectors, embedder_id=EMBEDDER, gallery_version=0, config=cfg)
    hnsw_build = time.perf_counter() - t
    faiss.omp_set_num_threads(args.search_threads)
    for ef in args.ef_search:
        hnsw.set_ef_search(ef)
        recall = float((hnsw.search(queries, 1)[1][:, 0] == truth).mean())
        q1 = time_search(hnsw, queries, 1, args.repeats)
        q100 = time_search(hnsw, queries, 100, max(3, args.repeats // 20))
        name = f"hnsw M={args.hnsw_m} ef={ef}"
        rows.append(_index_row(name, hnsw_build, q1, q100, recall, base1[0] / q1[0]))
    return rows


def fill_match_log(
    db: Database, events: int, identities: int, sources: int, rng: np.random.Generator, chunk: int = 50_000
) -> None:
    """Bulk-insert ``events`` tracks with events over 30 days (Core inserts, a transaction per chunk)."""
    from sqlalchemy import insert

    with Gallery(db) as gallery:
        names = [f"id{i:05d}" for i in range(identities)]
        gallery.bulk_enroll(names, EMBEDDER, rng.normal(size=(identities, 8)).astype(np.float32))
    with db.session() as session:
        ident_ids = [
            i for (i,) in session.execute(Identity.__table__.select().with_only_columns(Identity.id))
        ]
        src_ids = session.scalars(
            insert(Source).returning(Source.id),
            [
                {"name": f"camera{i:02d}", "kind": "camera", "uri": None, "created_at": START}
                for i in range(sources)
            ],
        ).all()
        run = dict(config_hash="bench", status="finished", frames_done=0, started_at=START, updated_at=START)
        runs = session.scalars(insert(Run).returning(Run.id), [{"source_id": s} | run for s in src_ids]).all()
    template = to_blob(np.ones(128, np.float32) / np.sqrt(128))
    fixed = dict(start_time=0.0, end_time=1.0, frames=10, crops_embedded=3, embedder_id=EMBEDDER, dim=128)
    fixed |= {"template": template, "thumbnail": None}
    next_track = 0
    for s in range(0, events, chunk):
        m = min(chunk, events - s)
        offsets = rng.uniform(0, 30 * 86400, m)
        which = rng.integers(0, sources, m)
        matched = rng.random(m) < 0.3
        who = rng.integers(0, identities, m)
        scores = np.where(matched, rng.uniform(0.5, 0.9, m), rng.uniform(0.1, 0.5, m))
        with db.session() as session:
            tracks = [
                {"run_id": runs[w], "source_id": src_ids[w], "track_id": next_track + i}
                | fixed
                | {"created_at": START + timedelta(seconds=float(o))}
                for i, (w, o) in enumerate(zip(which, offsets))
            ]
            pks = session.scalars(
                insert(Track).returning(Track.id, sort_by_parameter_order=True), tracks
            ).all()
            session.execute(
                insert(MatchEvent),
                [
                    {
                        "track_pk": pk,
                        "source_id": src_ids[w],
                        "identity_id": ident_ids[h] if mt else None,
                        "score": float(sc),
                        "decision": "match" if mt else "unknown",
                        "threshold": 0.5,
                        "candidates": [
                            {"identity_id": ident_ids[h], "name": f"id{h:05d}", "score": float(sc)}
                        ],
                        "at": START + timedelta(seconds=float(o)),
                    }
                    for pk, w, o, mt, h, sc in zip(pks, which, offsets, matched, who, scores)
                ],
            )
        next_track += m
    if db.backend == "postgresql":
        # what autovacuum does after a bulk load (statistics, visibility map), done now so that it does not
        # run in the middle of the timed queries
        from sqlalchemy import text

        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))


def bench_match_log(url: str, args, rng: np.random.Generator) -> dict:
    with Database(url) as db:
        t = time.perf_counter()
        fill_match_log(db, args.events, args.log_identities, 16, rng)
        fill_s = time.perf_counter() - t
        window, whole, base, found = [], [], [], 0
        for _ in range(args.log_queries):
            name = f"id{int(rng.integers(0, args.log_identities)):05d}"
            since = START + timedelta(days=float(rng.uniform(0, 29)))
            t = time.perf_counter()
            page = find_matches(db, Filters(identity=name, since=since, until=since + timedelta(days=1)))
            window.append(time.perf_counter() - t)
            found += len(page.rows)
            t = time.perf_counter()
            find_matches(db, Filters(identity=name))
            whole.append(time.perf_counter() - t)
            t = time.perf_counter()
            find_matches(db, Filters())
            base.append(time.perf_counter() - t)
    p50, p99 = percentiles(window)
    w50, w99 = percentiles(whole)
    b50, b99 = percentiles(base)
    return {
        "events": args.events,
        "fill_s": round(fill_s, 1),
        "query_p50_ms": p50,
        "query_p99_ms": p99,
        "rows_per_query": found / args.log_queries,
        "identity_all_p50_ms": w50,
        "identity_all_p99_ms": w99,
        "newest50_p50_ms": b50,
        "newest50_p99_ms": b99,
        "load": load(),
    }


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(f[i]) for f in fmt)) for i, c in enumerate(cols)]
    head = "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join(
        [head, rule] + ["| " + " | ".join(v.ljust(w) for v, w in zip(f, widths)) + " |" for f in fmt]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--templates", type=int, default=1_000_000, help="templates in the index")
    p.add_argument("--enroll", type=int, help="templates enrolled through SQL for the rate (default: all)")
    p.add_argument(
        "--enroll-slice", type=int, default=100_000, help="enrollment rate also over the first/last this many"
    )
    p.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="what to measure (default: everything)",
    )
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000, help="probe set for recall")
    p.add_argument("--repeats", type=int, default=300, help="timed single-query searches")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--search-threads", type=int, default=1, help="FAISS threads while searching")
    p.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--events", type=int, default=1_000_000, help="match-log events")
    p.add_argument("--log-identities", type=int, default=1000)
    p.add_argument("--log-queries", type=int, default=1000, help="timed queries of each kind")
    p.add_argument(
        "--pg-url", help="PostgreSQL URL of an empty database (default: start a throwaway cluster)"
    )
    p.add_argument("--no-pg", action="store_true", help="SQLite only")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    print(describe(), flush=True)  # what the figures below were measured on
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    work.chmod(0o755)  # a throwaway PostgreSQL server runs as another user inside it
    cluster = None
    try:
        pg_urls = None
        if not args.no_pg:
            pg_urls = _pg_urls(args, work)
            cluster = pg_urls[2] if pg_urls else None
        enroll_n = args.enroll or args.templates
        vectors = None
        if {"enroll", "index"} & set(args.parts):
            vectors = clustered(rng, max(args.templates, enroll_n), args.dim, args.clusters)
        results = {
            "config": vars(args) | {"json": str(args.json)},
            "enroll": [],
            "index": [],
            "match_log": [],
        }
        if "enroll" in args.parts:
            for backend, url in [("sqlite", f"sqlite:///{work / 'gallery.db'}")] + (
                [("postgresql", pg_urls[0])] if pg_urls else []
            ):
                results["enroll"].append(
                    {"backend": backend} | bench_enroll(url, vectors[:enroll_n], args.enroll_slice)
                )
                print(table(results["enroll"][-1:]), flush=True)
                _drop(url, work / "gallery.db")
        if "index" in args.parts:
            vectors = vectors[: args.templates]
            pick = rng.integers(0, args.templates, args.queries)
            queries = vectors[pick] + 0.5 * rng.normal(size=(args.queries, args.dim)).astype(
                np.float32
            ) / np.sqrt(args.dim)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            results["index"] = bench_index(vectors, queries, args)
            print(table(results["index"]), flush=True)
        del vectors
        if "match_log" in args.parts:
            for backend, url in [("sqlite", f"sqlite:///{work / 'matchlog.db'}")] + (
                [("postgresql", pg_urls[1])] if pg_urls else []
            ):
                results["match_log"].append({"backend": backend} | bench_match_log(url, args, rng))
                print(table(results["match_log"][-1:]), flush=True)
        if results["enroll"]:
            print("\n## enrollment\n" + table(results["enroll"]))
        if results["index"]:
            print(
                f"\n## search ({args.templates} x {args.dim}-d, {args.clusters} clusters)\n"
                + table(results["index"])
            )
        if results["match_log"]:
            print(
                "\n## match log (identity + one-day window / identity all time / everything, newest 50)\n"
                + table(results["match_log"])
            )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _drop(url: str, sqlite_file: Path) -> None:
    """Free the disk of an enrollment database once measured (a million templates take gigabytes)."""
    if url.startswith("sqlite"):
        for path in sqlite_file.parent.glob(sqlite_file.name + "*"):
            path.unlink()
        return
    from sqlalchemy import text

    with Database(url) as db, db.session() as session:
        for table_name in ("templates", "media", "identities"):
            session.execute(text(f"TRUNCATE {table_name} CASCADE"))


def _pg_urls(args, work: Path):
    if args.pg_url:
        return args.pg_url, args.pg_url, None
    from tests.gallery.pgcluster import PgCluster, pg_bindir

    bindir = pg_bindir()
    if bindir is None:
        print("PostgreSQL binaries not found: SQLite only", file=sys.stderr)
        return None
    cluster = PgCluster(bindir, work / "pg")
    cluster.start()
    return cluster.new_database(), cluster.new_database(), cluster


if __name__ == "__main__":
    sys.exit(main())
