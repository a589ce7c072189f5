"""Grouping recurring unknowns (``query unknowns``) at scale: 100,000 synthetic unknown tracks in a real match log.

The match log is written by the real writer (``MatchLogWriter``, one run per camera) into a SQLite file (or
``--db URL``); the timed part is :func:`gallery.unknowns.group_unknowns` end to end: reading the unknown tracks and
their templates from SQL ("load"), the neighbour search and the joining ("group",
:func:`gallery.grouping.group_templates`) and the groups' summaries.

Synthetic tracks (``--tracks``, ``--dim``-d unit templates):
- people: a share ``--once`` of the tracks are people seen once; the others belong to recurring people, each
  track drawn uniformly among ``tracks * (1 - once) / --mean-size`` people (so a person has ~Poisson(mean-size)
  tracks); person centres are random unit vectors, and a share ``--lookalikes`` of the people have a look-alike
  (a centre at cosine 0.5 to another person's);
- a track's template: ``q * centre + sqrt(1 - q^2) * noise`` with ``q`` uniform in ``--quality`` (its cosine to
  the person's centre), so two tracks of one person score ``q1 * q2`` (0.2-0.8 by default) and tracks of
  look-alikes half that;
- time: each of ``--cameras`` cameras shows scenes of 1-3 people on screen together (overlapping tracks of
  different people, 2-10 s each, a scene every 20 s of stream time); a share ``--matched`` more tracks are logged
  as matches (they must be left out).

Reported against the true people: purity, completeness, pairwise precision/recall/F1 (every track counted, single
ones too), the number of groups of 2+ and of people seen 2+ times, and the 1-minute load average of the machine.

    python bench/unknowns.py                       # 100,000 tracks of 512-d
    python bench/unknowns.py --quick               # 3,000 tracks of 128-d, the inverted-file path (seconds)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe  # noqa: E402
from gallery.config import UnknownsConfig
from gallery.db import Database
from gallery.grouping import score_grouping
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.unknowns import group_unknowns

logger = logging.getLogger(__name__)

EMBEDDER = "bench-synthetic"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
SCENE_S = 20.0  # stream seconds between scenes of one camera
QUICK = {"tracks": 3000, "dim": 128, "cameras": 4, "exact_up_to": 1000, "cell_size": 30}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def people(rng: np.random.Generator, n: int, once: float, mean_size: float) -> np.ndarray:
    """The true person of each of ``n`` tracks (ids from 0), in a random order."""
    recurring = int(round(n * (1 - once)))
    count = max(1, int(round(recurring / mean_size)))
    who = np.concatenate([rng.integers(0, count, recurring), count + np.arange(n - recurring)])
    rng.shuffle(who)
    return who


def centres(rng: np.random.Generator, count: int, dim: int, lookalikes: float) -> np.ndarray:
    """Unit centres; a share ``lookalikes`` of them at cosine 0.5 to another person's."""
    c = _unit(rng.normal(size=(count, dim)).astype(np.float32))
    twins = np.nonzero(rng.random(count) < lookalikes)[0]
    if len(twins) and count > 1:
        other = (twins + rng.integers(1, count, len(twins))) % count
        fresh = c[twins] - (c[twins] * c[other]).sum(axis=1, keepdims=True) * c[other]
        c[twins] = _unit(0.5 * c[other] + np.sqrt(0.75) * _unit(fresh))
    return c


def templates(
    rng: np.random.Generator, c: np.ndarray, who: np.ndarray, quality: tuple[float, float]
) -> np.ndarray:
    """One unit template per track: cosine ``q`` (uniform in ``quality``) to its person's centre."""
    out = np.empty((len(who), c.shape[1]), np.float32)
    for s in range(0, len(who), 20_000):
        centre = c[who[s : s + 20_000]]
        q = rng.uniform(*quality, size=(len(centre), 1)).astype(np.float32)
        noise = rng.normal(size=centre.shape).astype(np.float32)
        noise = _unit(noise - (noise * centre).sum(axis=1, keepdims=True) * centre)
        out[s : s + 20_000] = _unit(q * centre + np.sqrt(1 - q**2) * noise)
    return out


def scenes(
    rng: np.random.Generator, who: np.ndarray, cameras: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera, start and end (stream seconds) of each track: scenes of 1-3 tracks of different people on screen
    together (the next tracks in order; a person already in the scene starts the next one), one scene every
    ``SCENE_S`` seconds per camera, each track 2-10 s."""
    n = len(who)
    camera, start, end = np.empty(n, np.int64), np.empty(n), np.empty(n)
    clock = np.zeros(cameras)
    i = 0
    while i < n:
        cam, size = int(rng.integers(0, cameras)), int(rng.integers(1, 4))
        members = [i]
        while len(members) < size and members[-1] + 1 < n and who[members[-1] + 1] not in who[members]:
            members.append(members[-1] + 1)
        begin = clock[cam] + rng.uniform(0, 1, len(members))
        camera[members], start[members], end[members] = cam, begin, begin + rng.uniform(2, 10, len(members))
        clock[cam] += SCENE_S
        i = members[-1] + 1
    return camera, start, end


def write_log(db: Database, who, x, camera, start, end, matched: float, rng) -> float:
    """The tracks (and a share ``matched`` more, logged as matches) through the match-log writer; seconds."""
    t0 = time.perf_counter()
    writers = [
        MatchLogWriter(
            db,
            source=f"camera{c:02d}",
            kind="camera",
            config_hash="bench",
            keep_thumbnails=False,
            batch_size=5000,
        )
        for c in range(int(camera.max()) + 1 if len(camera) else 0)
    ]
    extra = rng.random(len(who)) < matched
    for t in range(len(who)):
        for decision in ("unknown", "match") if extra[t] else ("unknown",):
            writers[camera[t]].record(
                TrackRecord(
                    track_id=2 * t + (decision == "match"),
                    start_time=float(start[t]),
                    end_time=float(end[t]),
                    frames=int((end[t] - start[t]) * 25),
                    crops_embedded=int(rng.integers(1, 9)),
                    template=x[t] if decision == "unknown" else -x[t],
                    embedder_id=EMBEDDER,
                    candidates=[(1, "someone", 0.9)] if decision == "match" else [],
                    decision=decision,
                    threshold=0.5,
                    at=START + timedelta(seconds=float(end[t])),
                )
            )
    for writer in writers:
        writer.close()
    return time.perf_counter() - t0


def load_average() -> float:
    return round(os.getloadavg()[0], 1)


def run(args: argparse.Namespace, url: str) -> dict:
    rng = np.random.default_rng(args.seed)
    who = people(rng, args.tracks, args.once, args.mean_size)
    x = templates(rng, centres(rng, int(who.max()) + 1, args.dim, args.lookalikes), who, tuple(args.quality))
    camera, start, end = scenes(rng, who, args.cameras)
    config = UnknownsConfig(
        neighbours=args.neighbours, exact_up_to=args.exact_up_to, cell_size=args.cell_size, probe=args.probe
    )
    with Database(url) as db:
        write_s = write_log(db, who, x, camera, start, end, args.matched, rng)
        logger.info("match log written in %.1f s", write_s)
        t0 = time.perf_counter()
        grouping = group_unknowns(db, EMBEDDER, args.threshold, config, min_size=1)
        total_s = time.perf_counter() - t0
    pairs = [
        (g.group, int(who[t.track_id // 2])) for g in grouping.groups for t in g.tracks
    ]  # ids: 2 * index
    scores = score_grouping([a for a, _ in pairs], [b for _, b in pairs])
    sizes = np.bincount(who)
    search = (
        "exact" if len(x) <= args.exact_up_to else f"IVF {len(x) // args.cell_size} cells, probe {args.probe}"
    )
    return {
        "tracks": grouping.tracks,
        "dim": args.dim,
        "threshold": args.threshold,
        "search": search,
        "write_s": round(write_s, 1),
        "load_s": round(grouping.seconds["load"], 1),
        "group_s": round(grouping.seconds["group"], 1),
        "total_s": round(total_s, 1),
        "purity": round(scores["purity"], 4),
        "completeness": round(scores["completeness"], 4),
        "pair_precision": round(scores["precision"], 4),
        "pair_recall": round(scores["recall"], 4),
        "pair_f1": round(scores["f1"], 4),
        "groups_2plus": sum(g.size >= 2 for g in grouping.groups),
        "people_2plus": int((sizes >= 2).sum()),
        "load": load_average(),
    }


def table(row: dict) -> str:
    cols = list(row)
    cells = [str(row[c]) for c in cols]
    widths = [max(len(c), len(v)) for c, v in zip(cols, cells)]
    line = "| " + " | ".join(v.ljust(w) for v, w in zip(cells, widths)) + " |"
    head = "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"
    return "\n".join([head, "|" + "|".join("-" * (w + 2) for w in widths) + "|", line])


def parse(argv: list[str] | None) -> argparse.Namespace:
    defaults = UnknownsConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracks", type=int, default=100_000, help="unknown tracks")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--once", type=float, default=0.3, help="share of the tracks of people seen once")
    p.add_argument("--mean-size", type=float, default=6.0, help="tracks per recurring person, on average")
    p.add_argument("--lookalikes", type=float, default=0.2, help="share of the people with a look-alike")
    p.add_argument(
        "--quality", type=float, nargs=2, default=[0.45, 0.9], help="cosine of a track to its person"
    )
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--matched", type=float, default=0.1, help="share of matched tracks logged besides")
    p.add_argument("--threshold", type=float, default=0.35, help="grouping threshold (cosine)")
    p.add_argument("--neighbours", type=int, default=defaults.neighbours)
    p.add_argument("--exact-up-to", type=int, default=defaults.exact_up_to)
    p.add_argument("--cell-size", type=int, default=defaults.cell_size)
    p.add_argument("--probe", type=int, default=defaults.probe)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", help="database URL of an empty match log (default: a temporary SQLite file)")
    p.add_argument("--quick", action="store_true", help=f"a small run: {QUICK}")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    if args.tracks < 1 or args.dim < 2 or args.cameras < 1:
        p.error("--tracks, --dim and --cameras: expected at least 1, 2 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse(argv)
    print(describe(), flush=True)  # what the figures below were measured on
    with tempfile.TemporaryDirectory(prefix="bench-unknowns-") as work:
        row = run(args, args.db or f"sqlite:///{Path(work) / 'unknowns.db'}")
    print(f"## recurring unknowns ({row['tracks']:,} tracks, {args.dim}-d)\n\n{table(row)}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
