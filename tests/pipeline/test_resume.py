"""Interrupted runs and finished files: a ``process`` killed mid-file is marked ``interrupted`` by the next command
and its rerun resumes from the committed position; a finished file is not processed again (its tracks are shown);
``--reprocess`` processes it again and its tracks replace the earlier runs'; ``--restart`` starts an interrupted file
from the beginning; an interrupted ``--reprocess`` resumes like any run; ``mark_interrupted_runs`` leaves a live
process's run alone.

One scenario on one database serves the first five tests (each command is a real subprocess, the kills are
SIGKILL once the run has committed progress past the first shot cut): P1 killed -> P2 resumes it -> P3 shows the
finished file -> P4 ``--reprocess`` -> P5 ``--reprocess`` killed -> P6 ``--restart`` -> P7 ``--reprocess`` killed
-> P8 resumes it.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from gallery.db import Database
from gallery.matchlog import MatchLogWriter
from gallery.models import Run, process_owner
from gallery.runs import mark_interrupted_runs
from gallery.store import Gallery
from tests.conftest import ASSETS, require
from tests.pipeline.commands import cli, cli_env

WINDOW = (
    "--set",
    "source.end=16",
    "--set",
    "source.stride=4",
    "--set",
    "detect.input_size=[320, 320]",
)
KILL_AFTER_S = 4.0  # stream seconds: kill once a run has committed a resume point past the shot cut at 4.3 s
TIMEOUT_S = 120.0


@dataclass
class Scenario:
    db_file: Path
    runs: dict[str, Run | None]  # P1..P8 as they are in the database at the end (P3 logs no run)
    stdout: dict[str, str]  # of the commands that ran to their end
    stderr: dict[str, str]
    tracks: dict[
        str, list[tuple[float, float]]
    ]  # each run's tracks right after it ended (before any replaced them)
    refs: dict[str, list[str]]  # the same, as RUN:TRACK references


def _complete(argv: list[str], cwd: Path) -> tuple[str, str]:
    done = subprocess.run(argv, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def _newest_run(db_file: Path) -> tuple[int, str, float | None] | None:
    with closing(sqlite3.connect(db_file, timeout=5)) as conn:
        return conn.execute("SELECT id, status, resume_at FROM runs ORDER BY id DESC LIMIT 1").fetchone()


def _tracks_of(db_file: Path, run_id: int) -> list[tuple[int, float, float]]:
    with closing(sqlite3.connect(db_file, timeout=5)) as conn:
        query = (
            "SELECT track_id, start_time, end_time FROM tracks WHERE run_id = ? ORDER BY start_time, end_time"
        )
        return conn.execute(query, (run_id,)).fetchall()


def _kill_mid_file(argv: list[str], cwd: Path, db_file: Path, after_run: int) -> int:
    """Start a command, SIGKILL it once its run (newer than ``after_run``) has committed a resume point past
    ``KILL_AFTER_S``; returns that run's id."""
    child = subprocess.Popen(
        argv, cwd=cwd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    start = time.monotonic()
    try:
        while child.poll() is None and time.monotonic() - start < TIMEOUT_S:
            run = _newest_run(db_file)
            if run is not None and run[0] > after_run and run[2] is not None and run[2] >= KILL_AFTER_S:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
                assert child.returncode == -signal.SIGKILL
                return run[0]
            time.sleep(0.02)
        _, err = child.communicate(timeout=30)
        pytest.fail(f"the run ended ({child.returncode}) before it could be killed mid-file:\n{err[-2000:]}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    clip = require(ASSETS / "videos" / "friends_in_video.mp4")
    people = require(ASSETS / "images" / "friends_gallery")
    folder = tmp_path_factory.mktemp("resume")
    db_file = folder / "g.db"
    url = f"sqlite:///{db_file}"
    _complete(cli("enroll", "--dir", str(people), "--db", url), folder)
    process = cli(
        "process",
        str(clip),
        "--db",
        url,
        "--no-progress",
        "--set",
        "gallery.match_log.heartbeat_s=0.5",
        *WINDOW,
    )
    reprocess = [*process, "--reprocess"]

    ids: dict[str, int | None] = {}
    out: dict[str, tuple[str, str]] = {}
    tracks: dict[str, list[tuple[int, float, float]]] = {}

    def complete(name: str, argv: list[str]) -> None:
        out[name] = _complete(argv, folder)
        newest = _newest_run(db_file)[0]
        ids[name] = newest if newest not in ids.values() else None
        if ids[name] is not None:
            tracks[name] = _tracks_of(db_file, ids[name])

    def killed(name: str, argv: list[str]) -> None:
        ids[name] = _kill_mid_file(argv, folder, db_file, max(v for v in (*ids.values(), 0) if v is not None))
        tracks[name] = _tracks_of(db_file, ids[name])  # what it committed before the kill

    killed("P1", process)
    with closing(sqlite3.connect(db_file, timeout=5)) as conn:  # nothing has marked it yet
        assert conn.execute("SELECT status FROM runs WHERE id = ?", (ids["P1"],)).fetchone() == ("running",)
    complete("P2", process)
    complete("P3", process)
    complete("P4", reprocess)
    killed("P5", reprocess)
    complete("P6", [*process, "--restart"])
    killed("P7", reprocess)
    complete("P8", process)
    assert ids["P3"] is None and len({v for v in ids.values() if v is not None}) == 7

    with Database(url, create=False) as db, db.session() as session:
        runs = {name: None if run_id is None else session.get(Run, run_id) for name, run_id in ids.items()}
        session.expunge_all()
    return Scenario(
        db_file,
        runs,
        {k: v[0] for k, v in out.items()},
        {k: v[1] for k, v in out.items()},
        {k: sorted((a, b) for _, a, b in v) for k, v in tracks.items()},
        {k: sorted(f"{ids[k]}:{t}" for t, _, _ in v) for k, v in tracks.items()},
    )


def _table_refs(stdout: str) -> list[str]:
    lines = stdout.strip().splitlines()
    assert lines and lines[0].split()[0] == "ref", stdout
    return sorted(line.split()[0] for line in lines[1:])


@pytest.mark.slow
def test_a_killed_run_is_marked_interrupted_and_its_rerun_resumes_it(scenario):
    p1, p2, p4 = (scenario.runs[k] for k in ("P1", "P2", "P4"))
    assert (
        p1.finished_at is not None and p2.resumed_from == p1.id
    )  # marked interrupted by the next command (P2)
    assert p1.resume_at is not None and p1.resume_at >= KILL_AFTER_S and p1.frames_done > 0
    assert f"at {p1.resume_at:.2f} s (run {p1.id} was interrupted" in scenario.stderr["P2"]
    # it decoded from the resume point: fewer frames than a whole run (P4)
    assert 0 < p2.frames_done < p4.frames_done
    # together, the killed run and its continuation logged each track of a whole run once
    assert sorted(scenario.tracks["P1"] + scenario.tracks["P2"]) == scenario.tracks["P4"]


@pytest.mark.slow
def test_a_finished_file_is_not_processed_again_and_its_tracks_are_shown(scenario):
    p2 = scenario.runs["P2"]
    assert scenario.runs["P3"] is None  # no run logged
    err = scenario.stderr["P3"]
    assert f"processed already by run {p2.id} (finished " in err and "resuming" not in err
    assert f", {len(scenario.tracks['P4'])} tracks" in err  # those of the run and of the one it continued
    # the table of the logged tracks, each under its own run's reference
    assert _table_refs(scenario.stdout["P3"]) == sorted(scenario.refs["P1"] + scenario.refs["P2"])


@pytest.mark.slow
def test_reprocess_logs_a_new_run_whose_tracks_replace_the_earlier_runs(scenario):
    p1, p2, p4 = (scenario.runs[k] for k in ("P1", "P2", "P4"))
    assert p4.status == "replaced" and p4.resumed_from is None  # (P6 replaced it in turn)
    assert p1.status == p2.status == "replaced"
    assert f"run {p4.id} replaces runs {p1.id}, {p2.id} of the same video" in scenario.stderr["P4"]
    assert _table_refs(scenario.stdout["P4"]) == scenario.refs["P4"]


@pytest.mark.slow
def test_restart_processes_an_interrupted_file_from_the_start(scenario):
    p4, p5, p6 = (scenario.runs[k] for k in ("P4", "P5", "P6"))
    assert p5.resume_at >= KILL_AFTER_S and p5.status == "replaced"  # interrupted, then replaced by P6
    assert p6.resumed_from is None and "resuming" not in scenario.stderr["P6"]
    assert f"run {p6.id} replaces runs {p4.id}, {p5.id} of the same video" in scenario.stderr["P6"]
    assert p6.frames_done == p4.frames_done and scenario.tracks["P6"] == scenario.tracks["P4"]


@pytest.mark.slow
def test_an_interrupted_reprocess_resumes_and_then_replaces_the_finished_run(scenario):
    p6, p7, p8 = (scenario.runs[k] for k in ("P6", "P7", "P8"))
    assert p7.status == "interrupted" and p8.status == "finished" and p8.resumed_from == p7.id
    assert f"(run {p7.id} was interrupted" in scenario.stderr["P8"]
    assert (
        p6.status == "replaced"
        and f"run {p8.id} replaces run {p6.id} of the same video" in scenario.stderr["P8"]
    )
    assert sorted(scenario.tracks["P7"] + scenario.tracks["P8"]) == scenario.tracks["P4"]
    with closing(sqlite3.connect(scenario.db_file, timeout=5)) as conn:  # the log holds one processing
        left = conn.execute("SELECT DISTINCT run_id FROM tracks").fetchall()
    assert sorted(r for (r,) in left) == sorted({p7.id, p8.id})


def test_mark_interrupted_runs_leaves_a_live_process_run_alone(tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)  # a process that has ended (its pid is not reused this quickly)
    host, pid, started = process_owner()
    with Gallery.open(f"sqlite:///{tmp_path / 'g.db'}") as gallery:
        db = gallery.db
        with MatchLogWriter(db, source="live.mp4", config_hash="h") as writer:  # a run of this live process
            live = writer.run_id
            with db.session() as session:  # runs of processes that are gone, as a SIGKILL leaves them
                source = session.scalar(select(Run.source_id).where(Run.id == live))
                gone_runs = [
                    Run(source_id=source, config_hash="h", status="running", owner_host=host, **owner)
                    for owner in (
                        {"owner_pid": dead_pid, "owner_started": started},  # its pid is dead
                        {
                            "owner_pid": pid,
                            "owner_started": started - 100.0,
                        },  # its pid now is a later process
                    )
                ]
                session.add_all(gone_runs)
                session.flush()
                dead, reused = (r.id for r in gone_runs)
            assert mark_interrupted_runs(db) == 2
            assert mark_interrupted_runs(db) == 0  # nothing more the next time
            with db.session() as session:
                statuses = dict(session.execute(select(Run.id, Run.status)).all())
                owner = session.execute(select(Run.owner_host, Run.owner_pid).where(Run.id == live)).one()
            assert statuses == {live: "running", dead: "interrupted", reused: "interrupted"}
            assert tuple(owner) == (host, pid)
        with db.session() as session:  # the live run goes on to finish normally
            assert session.scalar(select(Run.status).where(Run.id == live)) == "finished"
