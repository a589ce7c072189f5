"""Interrupted runs: a ``process`` killed mid-file is marked ``interrupted`` by the next command and its rerun
resumes from the committed position; ``--restart`` starts from the beginning; a finished run is never resumed;
``mark_interrupted_runs`` leaves a live process's run alone.

One scenario on one database serves the first three tests (each command is a real subprocess, the kills are
SIGKILL once the run has committed progress past the first shot cut):
P1 killed -> P2 resumes it -> P3 after a finished run -> P4 killed -> P5 ``--restart``.
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
from gallery.models import Run, Track, process_owner
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
    runs: dict[str, Run]  # P1..P5 as they are in the database at the end
    stderr: dict[str, str]  # of the commands that ran to their end
    tracks: dict[str, list[tuple[float, float]]]


def _complete(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def _newest_run(db_file: Path) -> tuple[int, str, float | None] | None:
    with closing(sqlite3.connect(db_file, timeout=5)) as conn:
        return conn.execute("SELECT id, status, resume_at FROM runs ORDER BY id DESC LIMIT 1").fetchone()


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

    ids, stderr = {}, {}
    ids["P1"] = _kill_mid_file(process, folder, db_file, 0)
    with closing(sqlite3.connect(db_file, timeout=5)) as conn:  # nothing has marked it yet
        assert conn.execute("SELECT status FROM runs WHERE id = ?", (ids["P1"],)).fetchone() == ("running",)
    stderr["P2"] = _complete(process, folder)
    ids["P2"] = _newest_run(db_file)[0]
    stderr["P3"] = _complete(process, folder)
    ids["P3"] = _newest_run(db_file)[0]
    ids["P4"] = _kill_mid_file(process, folder, db_file, ids["P3"])
    stderr["P5"] = _complete([*process, "--restart"], folder)
    ids["P5"] = _newest_run(db_file)[0]
    assert len(set(ids.values())) == 5

    with Database(url, create=False) as db, db.session() as session:
        runs = {name: session.get(Run, run_id) for name, run_id in ids.items()}
        session.expunge_all()
        tracks = {
            name: sorted(
                session.execute(select(Track.start_time, Track.end_time).where(Track.run_id == run_id)).all()
            )
            for name, run_id in ids.items()
        }
    return Scenario(runs, stderr, {k: [tuple(t) for t in v] for k, v in tracks.items()})


@pytest.mark.slow
def test_a_killed_run_is_marked_interrupted_and_its_rerun_resumes_it(scenario):
    p1, p2, p3 = (scenario.runs[k] for k in ("P1", "P2", "P3"))
    assert p1.status == "interrupted" and p1.finished_at is not None  # marked by the next command (P2)
    assert p1.resume_at is not None and p1.resume_at >= KILL_AFTER_S and p1.frames_done > 0
    assert p2.status == "finished" and p2.resumed_from == p1.id
    assert f"at {p1.resume_at:.2f} s (run {p1.id} was interrupted" in scenario.stderr["P2"]
    # it decoded from the resume point: fewer frames than a whole run (P3)
    assert 0 < p2.frames_done < p3.frames_done
    # together, the killed run and its continuation logged each track of a whole run once
    assert sorted(scenario.tracks["P1"] + scenario.tracks["P2"]) == scenario.tracks["P3"]


@pytest.mark.slow
def test_restart_processes_an_interrupted_file_from_the_start(scenario):
    p3, p4, p5 = (scenario.runs[k] for k in ("P3", "P4", "P5"))
    assert p4.status == "interrupted" and p4.resume_at >= KILL_AFTER_S
    assert p5.status == "finished" and p5.resumed_from is None
    assert "resuming" not in scenario.stderr["P5"]
    assert p5.frames_done == p3.frames_done and scenario.tracks["P5"] == scenario.tracks["P3"]


@pytest.mark.slow
def test_a_finished_run_is_not_resumed(scenario):
    p2, p3 = scenario.runs["P2"], scenario.runs["P3"]
    assert p2.status == "finished"
    assert p3.status == "finished" and p3.resumed_from is None and p3.id > p2.id
    assert "resuming" not in scenario.stderr["P3"]
    assert p3.frames_done > scenario.runs["P2"].frames_done and scenario.tracks["P3"]


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
