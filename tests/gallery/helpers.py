"""Small builders shared by the gallery tests: seeded unit vectors and media items."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from sqlalchemy import select

from gallery.media import MediaVector
from gallery.models import Identity, MatchEvent, Source, Track
from gallery.store import Gallery


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def media(tag: str, vectors: np.ndarray, norms=None) -> list[MediaVector]:
    norms = np.ones(len(vectors)) if norms is None else norms
    return [
        MediaVector(f"{tag}/{i}.jpg", f"hash-{tag}-{i}", 0.9, v, float(w))
        for i, (v, w) in enumerate(zip(vectors, norms))
    ]


def people(rng: np.random.Generator, count: int, per: int, dim: int, spread: float = 0.3):
    """``count`` identities, each ``per`` noisy unit views around its own centre: ``{name: [per, dim]}``."""
    centres = unit(rng, count, dim)
    out = {}
    for i, c in enumerate(centres):
        views = c + spread * rng.normal(size=(per, dim)).astype(np.float32) / np.sqrt(dim)
        out[f"person{i:03d}"] = (views / np.linalg.norm(views, axis=1, keepdims=True)).astype(np.float32)
    return out


def seed_log(db, store=None):
    """Two identities, two cameras, eight tracks seen and logged one minute apart from 2026-03-01 10:00 UTC (newest
    last): tracks 0-7 alternate cameras ``gate`` / ``lobby``; even tracks match ``ann`` (0.80 + t/100), track 3
    matches ``bob`` (0.65), the rest are unknown (0.20). Thumbnails are solid 48x40 crops when ``store`` is
    given."""
    from datetime import datetime, timedelta, timezone

    from gallery.matchlog import MatchLogWriter, TrackRecord
    from gallery.store import Gallery

    start = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
    rng = np.random.default_rng(0)
    g = Gallery(db)
    ids = {n: g.add_identity(n, watchlist=n == "bob") for n in ("ann", "bob")}
    g.add_media("ann", "e4", media("ann", unit(rng, 1, 4)))
    writers = {
        cam: MatchLogWriter(
            db,
            source=cam,
            kind="camera",
            config_hash="seed",
            thumbnails=store,
            keep_thumbnails=store is not None,
            batch_size=2,
        )
        for cam in ("gate", "lobby")
    }
    for t in range(8):
        name, score = ("ann", 0.80 + t / 100) if t % 2 == 0 else ("bob", 0.65) if t == 3 else ("ann", 0.20)
        decision = "match" if t % 2 == 0 or t == 3 else "unknown"
        writers["gate" if t % 2 == 0 else "lobby"].record(
            TrackRecord(
                track_id=t,
                start_time=float(t),
                end_time=t + 1.5,
                frames=12,
                crops_embedded=4,
                template=unit(rng, 1, 4)[0],
                embedder_id="e4",
                candidates=[(ids[name], name, score)],
                decision=decision,
                threshold=0.5,
                thumbnail=np.full((48, 40, 3), 30 * t, np.uint8),
                at=start + timedelta(minutes=t),
                seen_start=start + timedelta(minutes=t),
                seen_end=start + timedelta(minutes=t, seconds=1.5),
                time_origin="camera",
            )
        )
    for writer in writers.values():
        writer.close()
    return start


def copy_sqlite(url: str, folder: Path, name: str) -> str:
    """A copy of a SQLite database (``sqlite:///...``) as ``folder/<name>.db``; returns its URL."""
    dst = folder / f"{name}.db"
    shutil.copy(url.removeprefix("sqlite:///"), dst)
    return f"sqlite:///{dst}"


def logged_tracks(url: str) -> list[tuple]:
    """Every track of the match log with its decision: (source, track id, start, end, frames, crops embedded,
    decision, identity or None, score or None)."""
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        columns = (Source.name, Track.track_id, Track.start_time, Track.end_time, Track.frames)
        columns += (Track.crops_embedded, MatchEvent.decision, Identity.name, MatchEvent.score)
        rows = s.execute(
            select(*columns)
            .join(Source, Track.source_id == Source.id)
            .join(MatchEvent, MatchEvent.track_pk == Track.id)
            .outerjoin(Identity, MatchEvent.identity_id == Identity.id)
        ).all()
    return [tuple(r) for r in rows]
