"""The audit trail's hash chain on SQLite and PostgreSQL: appends, verify naming the first bad entry after a row is
edited, deleted or cut off by hand in SQL, the head kept outside the table (and its HMAC), retention, and two
processes appending at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text

from gallery.access_models import AuditEntry
from gallery.audit import GENESIS, KEY_ENV, AuditError, append, entry_hash, head_path, read_head, verify
from gallery.audit_retention import AuditFilters, cut_older_than, find_audit
from gallery.db import Database

ROOT = Path(__file__).resolve().parents[2]
ACTORS = [("ana", "user"), ("ben", "user"), ("carl", "os")]
DAY = ["search", "enroll", "export", "search", "remove", "purge", "login", "login.failed"]


@pytest.fixture
def trail(db_url, tmp_path):
    """An empty gallery database and the file its audit head is kept in."""
    db = Database(db_url)
    head = head_path(db) or tmp_path / "audit-head"
    yield db, head
    db.close()


def _fill(db: Database, head: Path, n: int = len(DAY)) -> list[int]:
    ids = []
    for i in range(n):
        actor, kind = ACTORS[i % len(ACTORS)]
        action = DAY[i % len(DAY)]
        objects = [{"photo": f"p{i}.jpg", "sha256": f"{i:064x}"}] if action == "search" else [f"Person {i}"]
        details = {"filters": {"since": None, "top": 10 + i}, "score": 0.5 + i / 100}
        result = "denied" if action == "login.failed" else "ok"
        ids.append(append(db, actor, kind, action, objects, details, result, head=head))
    return ids


def _sql(db: Database, statement: str, **params) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_chain_links_every_entry_and_verifies(trail):
    db, head = trail
    ids = _fill(db, head)
    with db.session() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [r.id for r in rows] == ids
    assert rows[0].prev_hash == GENESIS
    for before, row in zip(rows, rows[1:]):
        assert row.prev_hash == before.hash
    for row in rows:  # the hash is over what was stored, read back
        assert row.hash == entry_hash(
            row.at, row.actor, row.actor_kind, row.action, row.objects, row.details, row.result, row.prev_hash
        )
    assert read_head(head) == {"id": ids[-1], "hash": rows[-1].hash}
    verdict = verify(db, head=head)
    assert verdict.ok, verdict.reason
    assert verdict.entries == len(DAY)


@pytest.mark.parametrize(
    "tamper, bad, words",
    [
        ("UPDATE audit SET actor = 'mallory' WHERE id = :id", 0, "edited"),
        ("UPDATE audit SET result = 'failed' WHERE id = :id", 0, "edited"),
        ("UPDATE audit SET details = '{}' WHERE id = :id", 0, "edited"),
        ("DELETE FROM audit WHERE id = :id", 1, "prev_hash"),
    ],
    ids=["actor", "result", "details", "deleted"],
)
def test_verify_names_the_first_bad_entry(trail, tamper, bad, words):
    db, head = trail
    ids = _fill(db, head)
    assert verify(db, head=head).ok
    _sql(db, tamper, id=ids[3])
    _sql(db, "UPDATE audit SET actor = 'later' WHERE id = :id", id=ids[6])  # a second, later edit
    verdict = verify(db, head=head)
    assert not verdict.ok
    assert verdict.bad_id == ids[3 + bad]
    assert words in verdict.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(trail):
    db, head = trail
    ids = _fill(db, head)
    with db.session() as session:
        row = session.get(AuditEntry, ids[2])
        forged = entry_hash(row.at, "mallory", row.actor_kind, row.action, row.objects, row.details, row.result,
                            row.prev_hash)  # fmt: skip
    _sql(db, "UPDATE audit SET actor = 'mallory', hash = :h WHERE id = :id", h=forged, id=ids[2])
    verdict = verify(db, head=head)
    assert (verdict.ok, verdict.bad_id) == (False, ids[3])
    assert f"entry {ids[2]} was edited" in verdict.reason


@pytest.mark.parametrize("cut", [1, 3])
def test_a_cut_off_end_is_detected_by_the_head_kept_outside(trail, cut):
    db, head = trail
    ids = _fill(db, head)
    _sql(db, "DELETE FROM audit WHERE id >= :id", id=ids[-cut])
    verdict = verify(db, head=head)
    assert (verdict.ok, verdict.bad_id) == (False, ids[-1])
    assert "cut off" in verdict.reason
    assert f"ends at entry {ids[-cut - 1]}" in verdict.reason


def test_everything_deleted_and_a_missing_head_file_fail(trail):
    db, head = trail
    ids = _fill(db, head, 3)
    _sql(db, "DELETE FROM audit")
    verdict = verify(db, head=head)
    assert (verdict.ok, verdict.bad_id) == (False, ids[-1])
    _fill(db, head, 2)
    head.unlink()
    verdict = verify(db, head=head)
    assert not verdict.ok and "no head file" in verdict.reason


def test_entries_after_the_head_are_noted_not_failed(trail):
    db, head = trail
    _fill(db, head, 3)
    append(db, "ana", "user", "search", [], {}, head=None)  # a process that ended before writing the head
    verdict = verify(db, head=head)
    assert verdict.ok
    assert any("1 entries after the head" in n for n in verdict.notes)


def test_the_head_hmac_refuses_a_forged_head(trail, monkeypatch):
    db, head = trail
    monkeypatch.setenv(KEY_ENV, "k" * 32)
    ids = _fill(db, head, 4)
    assert "mac" in read_head(head)
    assert verify(db, head=head).ok
    _sql(db, "DELETE FROM audit WHERE id = :id", id=ids[-1])
    with db.session() as session:
        prev = session.get(AuditEntry, ids[-2]).hash
    head.write_text(json.dumps({"id": ids[-2], "hash": prev, "mac": "0" * 64}))
    verdict = verify(db, head=head)
    assert (verdict.ok, verdict.bad_id) == (False, ids[-2])
    assert "HMAC" in verdict.reason
    monkeypatch.setenv(KEY_ENV, "another key of 32 characters....")
    assert not verify(db, head=head).ok


def test_retention_keeps_the_chain_verifiable_and_its_start_guarded(trail):
    db, head = trail
    ids = _fill(db, head)
    assert cut_older_than(db, 0, "carl", "os", head=head) == len(ids) - 1
    with db.session() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [r.action for r in rows] == [DAY[-1], "audit.retention"]
    assert rows[1].details["first_id"] == ids[-1]
    verdict = verify(db, head=head)
    assert verdict.ok, verdict.reason
    _sql(db, "DELETE FROM audit WHERE id = :id", id=ids[-1])  # the first entry kept, deleted by hand
    verdict = verify(db, head=head)
    assert not verdict.ok
    assert "retention" in verdict.reason


def test_retention_by_age_keeps_newer_entries(trail):
    db, head = trail
    ids = _fill(db, head, 4)
    assert cut_older_than(db, 30, "carl", "os", head=head) == 0  # nothing that old
    assert verify(db, head=head).ok
    with db.session() as session:
        assert len(session.scalars(select(AuditEntry.id)).all()) == len(ids)


def test_query_filters_by_actor_action_and_time(trail):
    db, head = trail
    _fill(db, head)
    rows = find_audit(db, AuditFilters(user="ana")).rows
    assert rows and {r["actor"] for r in rows} == {"ana"}
    rows = find_audit(db, AuditFilters(action="login.")).rows
    assert rows and {r["action"] for r in rows} == {"login.failed"}
    assert [r["action"] for r in find_audit(db, AuditFilters(action="search")).rows] == ["search", "search"]
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert find_audit(db, AuditFilters(since=later)).rows == []
    assert len(find_audit(db, AuditFilters(until=later)).rows) == len(DAY)
    page = find_audit(db, AuditFilters(page_size=3))
    assert page.has_more and len(page.rows) == 3
    assert page.rows[0]["id"] > page.rows[1]["id"]


@pytest.mark.parametrize(
    "action, result, actor", [("Bad Action", "ok", "ana"), ("search", "maybe", "ana"), ("search", "ok", "")]
)
def test_bad_entries_are_refused(trail, action, result, actor):
    db, head = trail
    with pytest.raises(AuditError):
        append(db, actor, "user", action, [], {}, result, head=head)


APPENDER = """
import sys
from pathlib import Path
from gallery.audit import append
from gallery.db import Database
db = Database(sys.argv[1])
for i in range(int(sys.argv[3])):
    append(db, sys.argv[4], "os", "search", [i], {"n": i}, head=Path(sys.argv[2]))
db.close()
"""


def test_two_processes_appending_keep_one_chain(trail):
    db, head = trail
    n = 40
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                APPENDER,
                db.url.render_as_string(hide_password=False),
                str(head),
                str(n),
                who,
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("p1", "p2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
    verdict = verify(db, head=head)
    assert verdict.ok, verdict.reason
    assert verdict.entries == 2 * n
    with db.session() as session:
        last = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).one()
    assert read_head(head) == {"id": last.id, "hash": last.hash}
