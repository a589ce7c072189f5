"""Fault injection: ``process`` and ``enroll --dir`` killed with SIGKILL at seeded random moments, each kill
followed by a rerun (kill -> rerun, until a run completes).

After every kill: the database opens, no track lacks its match event and no event its track, the thumbnails on
disk are the ones SQL references (a killed run's leftovers may wait in its own folder only until the next command
marks the run ``interrupted``), and the FAISS index agrees with SQL. At the end of every chain of ``process`` runs
the match log holds every track of an uninterrupted run of the same configuration with the same decision: a track
open at a kill may come back split (its pieces cover the reference span), never lost, never logged twice.

Storage that refuses writes (a read-only database, a full disk: a file-size limit on the child) ends each writing
command with one ``error:`` line and exit 2, changes nothing or leaves the run ``interrupted`` with its progress no
further than the tracks committed, and a rerun on writable storage resumes without loss.

Kill moments: one drawn in each of equal slices of [1 s, 90% of the reference run's wall time], shuffled, so they
spread over start-up, decoding, embedding, commits and closing. A run that ends before its moment hands the moment
to the next run.
"""

from __future__ import annotations

import hashlib
import random
import resource
import signal
import sqlite3
import subprocess
import time
from collections import deque
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from gallery.config import GalleryConfig
from gallery.errors import IndexFileDamagedError
from gallery.index import VectorIndex
from gallery.models import Identity, MatchEvent, Media, Run, Template, Track
from gallery.runs import mark_interrupted_runs
from gallery.store import Gallery
from gallery.thumbnails import ThumbnailStore
from tests.conftest import ASSETS, require
from tests.pipeline.commands import cli, cli_env

SEED = 13
PROCESS_KILLS = 10
ENROLL_KILLS = 5  # spread over the whole run
ENROLL_WRITE_KILLS = 3  # while it stores images and calibrates
EARLIEST_KILL_S = 1.0
RUN_TIMEOUT_S = 120.0  # one command, killed or not
MAX_RUNS = 40  # commands per phase, whatever the timing
PHASE_DEADLINE_S = 240.0  # a guard against a hang; a phase takes 30-90 s
TIME_TOL = 1e-3  # stream seconds: the same frame
GAP_TOL = 0.5  # stream seconds between the pieces of a split track (a few kept frames)
WINDOW = (
    "--set",
    "source.end=20",
    "--set",
    "source.stride=4",
    "--set",
    "detect.input_size=[320, 320]",
)


@dataclass
class Outcome:
    killed: bool
    returncode: int
    wall_s: float
    stderr: str


@dataclass(frozen=True)
class Logged:
    start: float
    end: float
    decision: str
    identity: str | None


def _processcli(clip: Path, url: str) -> list[str]:
    return cli(
        "process",
        str(clip),
        "--db",
        url,
        "--no-progress",
        "--set",
        "gallery.match_log.heartbeat_s=0.5",
        "--reprocess",  # each chain processes the file again (an interrupted run still resumes)
        *WINDOW,
    )


def _enrollcli(people: Path, url: str) -> list[str]:
    return cli("enroll", "--dir", str(people), "--db", url)


def _run(argv: list[str], cwd: Path, kill_at: float | None) -> Outcome:
    """Run a command; SIGKILL it ``kill_at`` seconds after its start unless it has ended by then."""
    env = cli_env()
    log = cwd / "stderr.txt"
    start = time.monotonic()
    with log.open("w") as err:
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            try:
                child.wait(timeout=RUN_TIMEOUT_S if kill_at is None else kill_at)
            except subprocess.TimeoutExpired:
                if kill_at is None:
                    raise
                child.send_signal(signal.SIGKILL)  # a no-op when it has just ended by itself
                child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
    wall = time.monotonic() - start
    return Outcome(child.returncode == -signal.SIGKILL, child.returncode, wall, log.read_text())


def _moments(rng: random.Random, count: int, first: float, last: float) -> deque[float]:
    """One moment in each of ``count`` equal slices of [first, last], shuffled."""
    last = max(last, first + 0.5)
    width = (last - first) / count
    moments = [first + (i + rng.random()) * width for i in range(count)]
    rng.shuffle(moments)
    return deque(moments)


def _first_enrolled_s(argv: list[str], cwd: Path, db_file: Path) -> tuple[Outcome, float]:
    """Run an enroll to its end, watching its database: (outcome, seconds until its first image was stored)."""
    start = time.monotonic()
    child = subprocess.Popen(
        argv,
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = None
    try:
        while child.poll() is None and time.monotonic() - start < RUN_TIMEOUT_S:
            if first is None:
                with closing(sqlite3.connect(db_file, timeout=5)) as conn:
                    if conn.execute("SELECT count(*) FROM media").fetchone()[0]:
                        first = time.monotonic() - start
            time.sleep(0.02)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    wall = time.monotonic() - start
    return Outcome(False, child.returncode, wall, err), wall if first is None else first


def _new_database(folder: Path) -> str:
    """A database with its schema (made here, so that no kill lands in schema creation)."""
    folder.mkdir(parents=True)
    url = f"sqlite:///{folder / 'g.db'}"
    Gallery.open(url).close()
    return url


def _thumbnail_files(store: ThumbnailStore | None) -> set[str]:
    if store is None or not store.root.is_dir():
        return set()
    return {p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()}


def check_invariants(url: str) -> None:
    """What must hold after any kill (see the module docstring)."""
    gallery = Gallery.open(url, create=False)
    try:
        db = gallery.db
        with db.session() as session:
            orphan_tracks = session.scalar(
                select(func.count())
                .select_from(Track)
                .outerjoin(MatchEvent, MatchEvent.track_pk == Track.id)
                .where(MatchEvent.id.is_(None))
            )
            orphan_events = session.scalar(
                select(func.count())
                .select_from(MatchEvent)
                .outerjoin(Track, MatchEvent.track_pk == Track.id)
                .where(Track.id.is_(None))
            )
            files = session.execute(select(Track.thumbnail, Track.snapshot)).all()
            referenced = {f for row in files for f in row if f}
            running = [
                (r.source_id, r.id) for r in session.scalars(select(Run).where(Run.status == "running"))
            ]
            media = dict(
                session.execute(
                    select(Media.identity_id, func.count()).group_by(Media.identity_id, Media.embedder_id)
                ).all()
            )
            templates = session.execute(
                select(Template.identity_id, Template.embedder_id, Template.num_media)
            ).all()
            identity_ids = set(session.scalars(select(Identity.id)))
        print(
            f"  after: {len(identity_ids)} identities, {len(referenced)} thumbnails, runs running {running}"
        )
        assert (orphan_tracks, orphan_events) == (0, 0), (
            "a track without its match event or an event without its track"
        )

        store = ThumbnailStore.for_database(db, GalleryConfig())
        on_disk = _thumbnail_files(store)
        assert referenced <= on_disk, f"thumbnails in SQL but not on disk: {sorted(referenced - on_disk)}"
        waiting = tuple(f"source{s}/run{r}/" for s, r in running)  # the next command cleans these
        stray = sorted(p for p in on_disk - referenced if not p.startswith(waiting))
        assert not stray, f"thumbnails on disk that SQL does not reference: {stray}"

        # every identity has one template per embedder it has media of, fitted from all its media
        assert {t.identity_id for t in templates} == identity_ids, "an identity without its template"
        assert all(t.num_media == media.get(t.identity_id) for t in templates), (templates, media)
        for embedder_id in sorted({t.embedder_id for t in templates}):
            path = gallery.index_path(embedder_id)
            if path is not None and path.is_file():  # written atomically: never half a file
                try:
                    VectorIndex.load(path, embedder_id)
                except IndexFileDamagedError as exc:
                    pytest.fail(f"damaged index file after a kill: {exc}")
            in_sql = {t.identity_id for t in templates if t.embedder_id == embedder_id}
            found = gallery.index(embedder_id)
            assert found is not None
            index, names = found
            assert index.tag.count == len(in_sql) and set(names) == in_sql
            query = np.random.default_rng(SEED).standard_normal((4, index.tag.dim)).astype(np.float32)
            hits = gallery.search(query, len(in_sql) + 5, embedder_id)
            assert all(len(row) == len(in_sql) and {i for i, _, _ in row} == in_sql for row in hits)
            for identity_id in in_sql:  # each template finds itself first
                name = names[identity_id]
                best = gallery.search(gallery.template(name, embedder_id)[None], 1, embedder_id)[0][0]
                assert best[0] == identity_id and best[2] > 0.999
    finally:
        gallery.close()


def _mark_like_the_next_command(url: str) -> None:
    """What the next writing command does first: runs of a process that is gone marked ``interrupted``, their
    unreferenced thumbnails deleted. Afterwards no run is ``running`` and the thumbnails match exactly."""
    gallery = Gallery.open(url, create=False)
    try:
        mark_interrupted_runs(gallery.db, ThumbnailStore.for_database(gallery.db, GalleryConfig()))
        with gallery.db.session() as session:
            assert not list(session.scalars(select(Run.id).where(Run.status == "running")))
    finally:
        gallery.close()


def _gallery_summary(url: str) -> dict[str, tuple[tuple[str, ...], int]]:
    """Per identity: the content hashes of its media and its template's media count."""
    with Gallery.open(url, create=False) as gallery, gallery.db.session() as session:
        hashes = session.execute(select(Identity.name, Media.content_hash).join(Media)).all()
        counts = dict(session.execute(select(Identity.name, Template.num_media).join(Template)).all())
    names = {n for n, _ in hashes} | set(counts)
    return {n: (tuple(sorted(h for m, h in hashes if m == n)), counts.get(n, 0)) for n in names}


def _logged(url: str, runs: list[int] | None = None) -> list[Logged]:
    """The tracks of ``runs`` (default: all), with their decision and identity name."""
    with Gallery.open(url, create=False) as gallery, gallery.db.session() as session:
        query = (
            select(Track.start_time, Track.end_time, MatchEvent.decision, Identity.name)
            .join(MatchEvent, MatchEvent.track_pk == Track.id)
            .outerjoin(Identity, Identity.id == MatchEvent.identity_id)
        )
        rows = session.execute(query if runs is None else query.where(Track.run_id.in_(runs))).all()
    return sorted(
        (Logged(*row) for row in rows), key=lambda t: (t.start, t.end, t.decision, t.identity or "")
    )


def _chains(url: str) -> tuple[list[list[int]], list[int]]:
    """Per finished run, the runs it completes (itself, then the interrupted runs it resumed, newest first), and
    every run id."""
    with Gallery.open(url, create=False) as gallery, gallery.db.session() as session:
        runs = {r.id: r for r in session.scalars(select(Run))}
    chains = []
    for run in sorted((r for r in runs.values() if r.status == "finished"), key=lambda r: r.id):
        chain = [run.id]
        while runs[chain[-1]].resumed_from is not None and len(chain) <= len(runs):
            chain.append(runs[chain[-1]].resumed_from)
            assert runs[chain[-1]].status == "interrupted", (
                f"run {chain[-2]} resumed a run that was not interrupted"
            )
        chains.append(chain)
    return chains, sorted(runs)


def compare_to_reference(logged: list[Logged], reference: list[Logged]) -> None:
    """Every reference track is in ``logged`` with its decision and identity, whole or in pieces that cover its
    span; no logged track is extra; no two logged tracks start together on one reference track."""
    pieces: dict[int, list[Logged]] = {i: [] for i in range(len(reference))}
    for track in logged:
        owners = [
            i
            for i, ref in enumerate(reference)
            if (ref.decision, ref.identity) == (track.decision, track.identity)
            and track.start <= ref.end + TIME_TOL
            and track.end >= ref.start - TIME_TOL
        ]
        assert len(owners) == 1, f"logged {track} is not one track of the reference run: {owners}"
        pieces[owners[0]].append(track)
    for i, ref in enumerate(reference):
        got = sorted(pieces[i], key=lambda t: t.start)
        assert got, f"lost: {ref}"
        starts = [round(t.start, 3) for t in got]
        assert len(set(starts)) == len(starts), f"logged twice: {ref} as {got}"
        assert all(ref.start - TIME_TOL <= t.start and t.end <= ref.end + TIME_TOL for t in got), (ref, got)
        assert got[0].start <= ref.start + TIME_TOL and max(t.end for t in got) >= ref.end - TIME_TOL, (
            ref,
            got,
        )
        covered = got[0].end
        for t in got[1:]:
            assert t.start <= covered + GAP_TOL, f"{ref} not covered by its pieces {got}"
            covered = max(covered, t.end)


def _kill_chain(
    argv: Callable[[], list[str]],
    cwd: Path,
    moments: deque[float],
    on_kill: Callable[[int], bool],
    on_complete: Callable[[], None],
    what: str,
) -> tuple[int, int]:
    """Run ``argv()`` with the kill moments, kill -> rerun until a run completes, then again while moments remain.
    ``on_kill(kill number)`` after each kill (True: the killed command's work was all done, so its rerun runs to
    its end); ``on_complete()`` after each completed run. Returns (kills, completed runs)."""
    kills = completed = runs = 0
    fresh = True  # the next run starts a chain
    plain = False  # the next run is not killed
    deadline = time.monotonic() + PHASE_DEADLINE_S
    while moments or not fresh:
        runs += 1
        assert runs <= MAX_RUNS and time.monotonic() < deadline, f"{what}: {kills} kills in {runs - 1} runs"
        kill_at = None if plain or not moments else moments.popleft()
        out = _run(argv(), cwd, kill_at)
        print(
            f"{what}: kill at {kill_at}: {'killed' if out.killed else out.returncode} after {out.wall_s:.1f} s"
        )
        if out.killed:
            kills += 1
            fresh = False
            plain = on_kill(kills)
            continue
        assert out.returncode == 0, f"{what} rerun failed ({out.returncode}):\n{out.stderr[-3000:]}"
        if kill_at is not None:  # it ended before its moment: the next run gets the moment
            moments.appendleft(min(kill_at, 0.75 * out.wall_s) if fresh else kill_at)
        on_complete()
        completed += 1
        fresh, plain = True, False
    return kills, completed


@pytest.mark.slow
def test_kills_at_random_moments_lose_nothing_and_leak_nothing(tmp_path):
    clip = require(ASSETS / "videos" / "friends_in_video.mp4")
    people = require(ASSETS / "images" / "friends_gallery")
    rng = random.Random(SEED)

    # the uninterrupted reference: a normal enroll (watched: when does it store its first image?), a normal process
    ref_url = _new_database(tmp_path / "reference")
    enrolled, first_write_s = _first_enrolled_s(
        _enrollcli(people, ref_url), tmp_path, tmp_path / "reference" / "g.db"
    )
    assert enrolled.returncode == 0, enrolled.stderr[-3000:]
    processed = _run(_processcli(clip, ref_url), tmp_path, None)
    assert processed.returncode == 0, processed.stderr[-3000:]
    reference_gallery, reference = _gallery_summary(ref_url), _logged(ref_url)
    assert len(reference_gallery) == 6 and len(reference) >= 4

    # enroll --dir killed at moments over its run, and some more while it stores images and calibrates (most of
    # its run is start-up); a chain whose gallery is complete ends with a rerun, and while moments remain the
    # next chain starts on a new database (killing an enroll of a complete gallery would show little)
    folders = iter(range(1, MAX_RUNS + 1))
    url = _new_database(tmp_path / "enroll0")
    enroll_moments = _moments(rng, ENROLL_KILLS, EARLIEST_KILL_S, 0.9 * enrolled.wall_s)
    enroll_moments += _moments(rng, ENROLL_WRITE_KILLS, first_write_s - 0.1, 0.95 * enrolled.wall_s)
    rng.shuffle(enroll_moments)

    def enroll_killed(_n: int) -> bool:
        check_invariants(url)
        return _gallery_summary(url) == reference_gallery

    def enroll_complete() -> None:
        nonlocal url
        check_invariants(url)
        assert _gallery_summary(url) == reference_gallery
        if enroll_moments:
            url = _new_database(tmp_path / f"enroll{next(folders)}")

    kills, _ = _kill_chain(
        lambda: _enrollcli(people, url), tmp_path, enroll_moments, enroll_killed, enroll_complete, "enroll"
    )
    assert kills >= ENROLL_KILLS + ENROLL_WRITE_KILLS and _gallery_summary(url) == reference_gallery

    # process killed at moments over its run, in the completely enrolled gallery of the last enroll
    completed_chains: list[list[int]] = []

    def finished_chains() -> list[list[int]]:
        """Every finished run with the interrupted runs it resumed logged the reference run's tracks (noted, as a
        later run replaces them)."""
        chains = _chains(url)[0]
        for chain in chains:
            compare_to_reference(_logged(url, chain), reference)
        completed_chains.extend(c for c in chains if c not in completed_chains)
        return chains

    def process_killed(n: int) -> bool:
        check_invariants(url)
        finished_chains()  # a kill may land after a run finished its work: then the next run starts a new chain
        if n % 2 == 0:  # every other kill the test does what the next command does first; else the rerun does
            _mark_like_the_next_command(url)
            check_invariants(url)
        return False

    def process_complete() -> None:
        """The completed chain's tracks replaced the earlier chains': it is the only finished one."""
        check_invariants(url)
        chains = finished_chains()
        assert len(chains) == 1, f"one processing of the file expected, got the chains {chains}"

    moments = _moments(rng, PROCESS_KILLS, EARLIEST_KILL_S, 0.9 * processed.wall_s)
    kills, completed = _kill_chain(
        lambda: _processcli(clip, url), tmp_path, moments, process_killed, process_complete, "process"
    )
    assert kills >= PROCESS_KILLS and completed >= 1
    chains, runs = completed_chains, _chains(url)[1]
    assert sorted(r for chain in chains for r in chain) == runs, f"runs outside any completed chain: {chains}"
    assert max(len(chain) for chain in chains) >= 2, (
        f"expected a run that resumed an interrupted one: {chains}"
    )


def _one_error(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a command that refused (exit 2, no traceback)."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.slow
def test_a_read_only_database_ends_every_writing_command_with_one_line(tmp_path):
    clip = require(ASSETS / "videos" / "friends_in_video.mp4")
    people = require(ASSETS / "images" / "friends_gallery")
    url = _new_database(tmp_path / "g")
    enrolled = subprocess.run(
        cli("enroll", "--name", "Joey", str(people / "Joey.png"), "--db", url),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=cli_env(),
        cwd=tmp_path,
    )
    assert enrolled.returncode == 0, enrolled.stderr[-3000:]
    db_file = tmp_path / "g" / "g.db"
    before = hashlib.sha256(db_file.read_bytes()).hexdigest()
    read_only = f"sqlite:///file:{db_file}?mode=ro&uri=true"
    commands = {
        "enroll": ("enroll", "--name", "Ross", str(people / "Ross.png")),
        "enroll --dir": ("enroll", "--dir", str(people)),
        "process": ("process", str(clip), "--no-progress", "--set", "source.end=2"),
        "purge": ("purge", "--older-than", "0"),
        "remove": ("remove", "Joey"),
    }
    for what, args in commands.items():
        proc = subprocess.run(
            cli(*args, "--db", read_only),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=cli_env(),
            cwd=tmp_path,
        )
        line = _one_error(proc)
        assert "expected a writable database, got a read-only one" in line, (what, line)
        assert str(db_file) in line, (what, line)
    assert hashlib.sha256(db_file.read_bytes()).hexdigest() == before
    assert _gallery_summary(url).keys() == {"Joey"}


def _file_size_limit(limit: int) -> Callable[[], None]:
    """For ``preexec_fn``: a child that cannot grow any file past ``limit`` bytes (``write`` fails with EFBIG,
    SIGXFSZ ignored): a full disk for that child only."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_rerun_resumes_without_loss(tmp_path):
    clip = require(ASSETS / "videos" / "friends_in_video.mp4")
    people = require(ASSETS / "images" / "friends_gallery")
    ref_url = _new_database(tmp_path / "reference")
    url = _new_database(tmp_path / "full")
    for target in (ref_url, url):
        assert _run(_enrollcli(people, target), tmp_path, None).returncode == 0
    processed = _run(_processcli(clip, ref_url), tmp_path, None)
    assert processed.returncode == 0, processed.stderr[-3000:]
    reference = _logged(ref_url)

    # room for a few commits of the match log (batches of 2, progress every 0.5 s), not for the whole run
    room = (tmp_path / "full" / "g.db").stat().st_size + 60_000
    argv = _processcli(clip, url) + ["--set", "gallery.match_log.batch_size=2"]
    full = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=cli_env(),
        cwd=tmp_path,
        preexec_fn=_file_size_limit(room),
    )
    assert "expected room to write" in _one_error(full)
    check_invariants(url)
    with Gallery.open(url, create=False) as gallery, gallery.db.session() as session:
        run = session.scalars(select(Run)).one()
    assert run.status in ("interrupted", "running")  # running: not even its status could be written
    logged = _logged(url, [run.id])
    done = [r for r in reference if run.last_timestamp is not None and r.end <= run.last_timestamp - TIME_TOL]
    for ref in done:  # progress never ahead of the tracks committed with it
        assert any(t.start <= ref.end + TIME_TOL and t.end >= ref.start - TIME_TOL for t in logged), ref

    rerun = _run(argv, tmp_path, None)  # writable again: resumes the interrupted run
    assert rerun.returncode == 0 and "resuming" in rerun.stderr, rerun.stderr[-3000:]
    check_invariants(url)
    chains, runs = _chains(url)
    assert [len(c) for c in chains] == [2] and sorted(chains[0]) == runs
    compare_to_reference(_logged(url, chains[0]), reference)
