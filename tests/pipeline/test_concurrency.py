"""Commands started together on one new database: two ``process --gallery`` runs and one ``enroll``, on a new
SQLite file and on PostgreSQL. All succeed: the schema is created once (serialized, atomic), the people of the
gallery folder are enrolled once (races settled by the unique constraints and a retry), the file is logged once
(the second ``process`` finds it being processed, or both run and the last to finish replaces the other's tracks).
"""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import func, select

from gallery.db import Database
from gallery.models import Identity, Media, Run, Track
from tests.conftest import ASSETS, require
from tests.pipeline.commands import cli, cli_env

QUICK = ("--set", "source.end=2.0", "--set", "source.stride=4", "--set", "detect.input_size=[320, 320]")


@pytest.mark.slow
def test_two_process_runs_and_an_enroll_at_once_on_a_new_database(db_url, tmp_path):
    clip = require(ASSETS / "videos" / "friends_in_video.mp4")
    people = require(ASSETS / "images" / "friends_gallery")
    commands = [
        cli("process", str(clip), "--gallery", str(people), "--db", db_url, *QUICK),
        cli("process", str(clip), "--gallery", str(people), "--db", db_url, *QUICK),
        cli("enroll", "--db", db_url, "--dir", str(people)),
    ]
    env = cli_env()
    children = [
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for cmd in commands
    ]
    try:
        results = [(c.communicate(timeout=300), c.returncode) for c in children]
    finally:
        for c in children:
            c.kill()
            c.wait(timeout=10)
    failed = [
        f"{' '.join(cmd[2:4])} -> {rc}: {err[-1500:]}" for cmd, ((_, err), rc) in zip(commands, results) if rc
    ]
    assert not failed, "\n".join(failed)
    with Database(db_url, create=False) as db, db.session() as session:
        names = set(session.scalars(select(Identity.name)))
        assert names == {p.stem for p in people.iterdir() if p.is_file()}
        assert session.scalar(select(func.count()).select_from(Media)) == len(names)  # each image once
        statuses = sorted(session.scalars(select(Run.status)))
        assert statuses in (["finished"], ["finished", "replaced"]), statuses
        finished = session.scalar(select(Run.id).where(Run.status == "finished"))
        assert session.scalar(select(func.count()).select_from(Track)) >= 2
        assert set(session.scalars(select(Track.run_id))) == {finished}
