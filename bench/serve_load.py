"""``serve`` under load while ``process`` writes to the same database: latency of filtered ``/api/matches``.

A fresh SQLite database (WAL) gets the people of ``--gallery`` enrolled (``enroll``); then ``serve`` listens on
a free loopback port, ``process`` runs over ``--copies`` links to ``--video`` (one source each) with every
track committed as it closes (``gallery.match_log.batch_size=1``), and ``--workers`` threads fire filtered
queries at the server until ``process`` ends (or ``--max-seconds``):

- ``identity``: one enrolled person (random), newest 50;
- ``identity+window``: one person within the last minute of wall time;
- ``source+window``: one video (random, once its first track is logged) within the last minute;
- ``match+window``: decision ``match`` since the bench started;
- ``newest``: the unfiltered newest-50 page (the baseline).

Reported per kind: requests, p50 and p99 latency (ms), errors (any answer but 200, or no answer); then the
tracks ``process`` logged meanwhile. Exit status 1 when any query failed or ``process`` did.

    python bench/serve_load.py                                   # 2 copies of the friends clip, 4 workers
    python bench/serve_load.py --copies 3 --workers 8 --max-seconds 300
"""

from __future__ import annotations

import argparse
import logging
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402

logger = logging.getLogger(__name__)

ASSETS = ROOT.parent / "shared" / "assets"
KINDS = ("identity", "identity+window", "source+window", "match+window", "newest")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(*argv: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_pipeline.py"), *argv]


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _enroll(work: Path, gallery: Path, url: str, config: Path) -> list[str]:
    """Enroll every image of ``gallery`` (flat: named after the person, or one subfolder per person)."""
    people = work / "gallery"
    people.mkdir()
    for image in sorted(gallery.iterdir()):
        if image.is_dir():
            (people / image.name).symlink_to(image.resolve(), target_is_directory=True)
        elif image.suffix.lower() in (".jpg", ".jpeg", ".png"):
            (people / image.stem).mkdir(exist_ok=True)
            (people / image.stem / image.name).symlink_to(image.resolve())
    subprocess.run(
        _cli("enroll", "--db", url, "--dir", str(people), "--config", str(config)),
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    return sorted(p.name for p in people.iterdir())


def _wait_ready(client: httpx.Client, server: subprocess.Popen, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"serve exited with status {server.returncode} before answering")
        try:
            if client.get("/api/identities").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"serve: no answer within {limit_s:.0f} s")


def _params(kind: str, rng: random.Random, people: list[str], sources: list[str], start: datetime) -> dict:
    now = datetime.now(timezone.utc)
    window = {"since": _iso(now - timedelta(minutes=1)), "until": _iso(now + timedelta(seconds=1))}
    if kind == "identity":
        return {"identity": rng.choice(people)}
    if kind == "identity+window":
        return {"identity": rng.choice(people)} | window
    if kind == "source+window":
        return {"source": rng.choice(sources)} | window
    if kind == "match+window":
        return {"decision": "match", "since": _iso(start)}
    return {}


def _worker(
    base: str, seed: int, people, sources, start, stop: threading.Event, out: list, errors: list
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            kind = rng.choice(KINDS if sources else [k for k in KINDS if k != "source+window"])
            params = _params(kind, rng, people, sources, start)
            t0 = time.perf_counter()
            try:
                response = client.get("/api/matches", params=params)
                status = response.status_code
                detail = response.text[:200] if status != 200 else ""
            except httpx.HTTPError as exc:
                status, detail = 0, f"{type(exc).__name__}: {exc}"
            out.append((kind, time.perf_counter() - t0, status))
            if status != 200:
                errors.append(f"{kind} {params}: {status} {detail}")


def _table(samples: list[tuple[str, float, int]]) -> list[str]:
    lines = ["| query | requests | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|"]
    for kind in (*KINDS, "all"):
        rows = [s for s in samples if kind in ("all", s[0])]
        if not rows:
            continue
        ms = np.array([r[1] for r in rows]) * 1000
        bad = sum(r[2] != 200 for r in rows)
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        lines.append(f"| {kind} | {len(rows)} | {p50:.1f} | {p99:.1f} | {bad} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=ASSETS / "videos" / "friends_in_video.mp4")
    ap.add_argument("--gallery", type=Path, default=ASSETS / "images" / "friends_gallery")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "test.yaml")
    ap.add_argument("--copies", type=int, default=2, help="links to --video processed in one run (1..50)")
    ap.add_argument("--workers", type=int, default=4, help="query threads (1..64)")
    ap.add_argument("--max-seconds", type=float, default=240, help="stop querying after this long")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(describe(), flush=True)  # what the figures below were measured on
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if not (1 <= args.copies <= 50 and 1 <= args.workers <= 64 and 1 <= args.max_seconds <= 3600):
        ap.error(f"expected --copies 1..50, --workers 1..64, --max-seconds 1..3600, got {vars(args)}")
    for path in (args.video, args.gallery, args.config):
        if not path.exists():
            ap.error(f"expected an existing path, got {path}")

    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'load.db'}"
        people = _enroll(work, args.gallery, url, args.config)
        videos = []
        for i in range(args.copies):
            link = work / f"{args.video.stem}_{i + 1}{args.video.suffix}"
            link.symlink_to(args.video.resolve())
            videos.append(link)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            _cli("serve", "--db", url, "--port", str(port), "--config", str(args.config)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        writer = None
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                _wait_ready(client, server)
            start = datetime.now(timezone.utc)
            writer = subprocess.Popen(
                _cli(
                    "process",
                    *map(str, videos),
                    "--db",
                    url,
                    "--config",
                    str(args.config),
                    "--set",
                    "gallery.match_log.batch_size=1",
                    "--no-progress",
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            stop, samples, errors, sources = threading.Event(), [], [], []
            threads = [
                threading.Thread(
                    target=_worker,
                    args=(
                        base,
                        args.seed + i,
                        people,
                        sources,
                        start,
                        stop,
                        samples,
                        errors,
                    ),
                    daemon=True,
                )
                for i in range(args.workers)
            ]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            with httpx.Client(base_url=base, timeout=30) as client:
                while writer.poll() is None and time.monotonic() - t0 < args.max_seconds:
                    if len(sources) < len(videos):  # names as process logs them: learnt from the log
                        rows = client.get("/api/tracks", params={"page_size": 1000}).json()["rows"]
                        sources.extend(sorted({r["source"] for r in rows} - set(sources)))
                    time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            elapsed = time.monotonic() - t0
            if writer.poll() is None:
                writer.terminate()
            _, writer_err = writer.communicate(timeout=120)
            with httpx.Client(base_url=base, timeout=30) as client:
                logged = client.get("/api/tracks", params={"page_size": 1000}).json()["rows"]
        finally:
            for proc in (server, writer):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)

    print(f"serve on {url.split('/')[-1]} (SQLite WAL) while process wrote {args.copies} x {args.video.name}")
    print(
        f"{len(samples)} queries by {args.workers} threads in {elapsed:.1f} s; process exit {writer.returncode}"
    )
    print(f"tracks logged during the run: {len(logged)}")
    print("\n".join(_table(samples)))
    for line in errors[:10]:
        print(f"error: {line}")
    if writer.returncode != 0:
        print(f"process failed: {writer_err.strip().splitlines()[-1:] if writer_err else ''}")
    return 1 if errors or writer.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
