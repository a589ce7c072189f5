"""The audit trail through the real command line, on SQLite and PostgreSQL: every acting command appends an entry
(the OS account as its actor, failures with their reason; every action a command audits is run here), ``query
audit`` filters them, ``audit verify`` passes after a scripted day of work by three accounts and fails, naming the
first bad entry, once a row is edited or deleted by hand in SQL."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import text

import run_pipeline
from gallery.db import Database
from pipeline.web.access_log import AccessLog, open_access_log
from tests.conftest import ASSETS, ROOT, require

CONFIG = str(ROOT / "configs" / "test.yaml")
COMMANDS = ROOT / "pipeline" / "commands"
# actions run by test_gallery_commands_are_audited_and_tampering_is_named and the day of work (slow)
RUN_ELSEWHERE = {
    "enroll",
    "merge",
    "remove",
    "purge",
    "search",
    "export",
    "rematch",
    "review",
}  # review: tests/pipeline/test_review_cli.py
CLIP = ASSETS / "videos" / "friends_in_video.mp4"
STILLS = ASSETS / "images" / "friends_gallery"


class Shell:
    """``run_pipeline.main`` on one database, as the OS account ``as_user``."""

    def __init__(self, url: str, head, monkeypatch, capsys) -> None:
        self.url, self.monkeypatch, self.capsys = url, monkeypatch, capsys
        self.extra = ["--set", f"gallery.audit.head_file={head}"]

    def __call__(self, user: str, *argv: str) -> tuple[int, str, str]:
        self.monkeypatch.setenv("LOGNAME", user)
        code = run_pipeline.main([*argv, "--db", self.url, "--config", CONFIG, *self.extra])
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def audit(self, *filters: str) -> list[dict]:
        code, out, err = self(
            "auditor", "query", "audit", "--format", "json", "--page-size", "1000", *filters
        )
        assert code == 0, err
        return json.loads(out)["rows"]

    def sql(self, statement: str, **params) -> None:
        with Database(self.url, create=False) as db, db.engine.begin() as conn:
            conn.execute(text(statement), params)


@pytest.fixture
def shell(db_url, tmp_path, monkeypatch, capsys) -> Shell:
    return Shell(db_url, tmp_path / "audit-head", monkeypatch, capsys)


def test_gallery_commands_are_audited_and_tampering_is_named(shell):
    ross, joey = str(require(STILLS) / "Ross.png"), str(STILLS / "Joey.png")
    assert shell("ana", "enroll", "--name", "Ross", ross)[0] == 0
    assert shell("ben", "enroll", "--name", "Joey", joey)[0] == 0
    assert shell("ben", "enroll", "--name", "Ross", ross)[0] == 2  # taken: refused, audited as failed
    assert shell("carl", "merge", "Joey", "Ross")[0] == 0
    assert shell("carl", "remove", "Nobody")[0] == 2
    assert shell("ana", "purge", "--older-than", "30")[0] == 0
    rows = shell.audit()
    assert [(r["actor"], r["action"], r["result"]) for r in reversed(rows)] == [
        ("ana", "enroll", "ok"),
        ("ben", "enroll", "ok"),
        ("ben", "enroll", "failed"),
        ("carl", "merge", "ok"),
        ("carl", "remove", "failed"),
        ("ana", "purge", "ok"),
    ]
    assert {r["actor_kind"] for r in rows} == {"os"}
    assert rows[-1]["objects"] == ["Ross"] and rows[-1]["details"]["variant"] == "images"
    assert rows[1]["details"]["reason"] and "Nobody" in rows[1]["details"]["reason"]
    assert [r["actor"] for r in shell.audit("--user", "ben")] == ["ben", "ben"]
    assert len(shell.audit("--action", "enroll", "--user", "ana")) == 1
    assert shell.audit("--since", "2999-01-01T00:00:00Z") == []
    code, out, _ = shell("auditor", "query", "audit", "--format", "csv")
    assert code == 0 and out.splitlines()[0] == "id,at,actor,actor_kind,action,result,objects,details"
    code, _, err = shell("auditor", "audit", "verify")
    assert code == 0 and "6 entries, chain intact" in err
    merge = next(r for r in rows if r["action"] == "merge")
    shell.sql("UPDATE audit SET actor = 'mallory' WHERE id = :id", id=merge["id"])
    code, _, err = shell("auditor", "audit", "verify")
    assert code == 1 and f"broken at entry {merge['id']}:" in err and "edited" in err
    shell.sql("UPDATE audit SET actor = 'carl' WHERE id = :id", id=merge["id"])
    assert shell("auditor", "audit", "verify")[0] == 0
    shell.sql("DELETE FROM audit WHERE id = :id", id=merge["id"])
    code, _, err = shell("auditor", "audit", "verify")
    after = min(r["id"] for r in rows if r["id"] > merge["id"])
    assert code == 1 and f"broken at entry {after}:" in err and "prev_hash" in err


def test_verify_and_query_bad_input_is_one_line(shell, tmp_path):
    code, _, err = shell("ana", "query", "audit", "--since", "yesterday")
    assert code == 2 and err.count("\n") == 1
    code, _, err = shell("ana", "query", "matches", "--user", "ana")
    assert code == 2 and "'query audit' only" in err
    missing = ["--db", f"sqlite:///{tmp_path / 'none.db'}"]
    assert run_pipeline.main(["audit", "verify", *missing, "--config", CONFIG]) == 2


@pytest.mark.slow
def test_a_day_of_work_by_three_accounts_verifies(shell, tmp_path):
    """process, enroll, search (the photo's SHA-256 and the filters), export, rematch, review, purge; then verify."""
    video = shutil.copyfile(require(CLIP), tmp_path / "friends.mp4")
    monica = str(require(STILLS) / "Monica.png")
    assert shell("ana", "process", str(video), "--no-progress")[0] == 0
    assert shell("ben", "enroll", "--dir", str(STILLS))[0] == 0
    code, out, _ = shell("carl", "search", monica, "--format", "json", "--top", "3", "--min-score", "0.2")
    assert code == 0
    refs = [r["ref"] for r in json.loads(out)["rows"]]
    assert shell("ana", "evidence", refs[0], "--out", str(tmp_path / "case"))[0] == 0
    assert shell("ben", "rematch")[0] == 0
    code, out, _ = shell("carl", "query", "matches", "--identity", "Monica", "--format", "json")
    matched = json.loads(out)["rows"][0]["ref"]
    assert shell("carl", "review", matched, "--confirm", "--note", "seen on the footage")[0] == 0
    assert shell("carl", "purge", "--older-than", "0")[0] == 0
    rows = {r["action"]: r for r in shell.audit()}
    assert set(rows) == {"enroll", "search", "export", "rematch", "review", "purge"}
    assert rows["review"]["actor"] == "carl" and matched in rows["review"]["objects"]
    photo = rows["search"]["objects"][0]
    assert photo["sha256"] == hashlib.sha256(Path(monica).read_bytes()).hexdigest()
    assert rows["search"]["details"]["filters"]["min_score"] == 0.2
    assert rows["search"]["details"]["hits"] == refs
    assert rows["export"]["objects"] == [refs[0]] and rows["export"]["actor"] == "ana"
    code, _, err = shell("auditor", "audit", "verify")
    assert code == 0 and "6 entries, chain intact" in err


def _audited_actions() -> set[str]:
    """Every action a command wraps in ``audited(trail, "action", ...)``, as a regular expression (an f-string's
    ``{...}`` standing for any word)."""
    found = set()
    for path in COMMANDS.glob("*.py"):
        for action in re.findall(r'audited\(\s*[\w.()]+,\s*f?"([a-z][a-z0-9_.{}-]*)"', path.read_text()):
            found.add(re.sub(r"\\\{[^}]*\\\}", "[a-z]+", re.escape(action)))
    return found


def test_every_audited_command_lands_in_the_trail_as_the_os_account(shell, monkeypatch):
    """The CLI has no roles: it acts as the OS account running it. Each action a command audits, run here or in
    the tests above, is in the trail with that account (kind ``os``), ok or failed."""
    monkeypatch.setenv("AUDIT_TEST_PASSWORD", "correct horse battery")
    ross = str(require(STILLS) / "Ross.png")
    runs = [
        ("fred", ("enroll", "--name", "Ross", ross), 0),  # creates the database
        ("dora", ("users", "add", "erin", "--role", "viewer", "--password-env", "AUDIT_TEST_PASSWORD"), 0),
        ("dora", ("users", "rotate", "erin"), 0),
        ("dora", ("users", "disable", "erin"), 0),
        ("dora", ("users", "disable", "nobody"), 2),
        ("fred", ("rematch",), 0),
        ("gwen", ("rematch", "--undo", "--identity", "Ross"), 0),
        ("gwen", ("evidence", "--close", "no-such-case"), 2),
        ("hana", ("watchlist", "add", "suspects"), 0),
        ("hana", ("watchlist", "join", "suspects", "Ross"), 0),
        ("hana", ("watchlist", "leave", "suspects", "Ross"), 0),
        ("hana", ("watchlist", "remove", "suspects"), 0),
        ("hana", ("review", "999:0", "--confirm"), 2),
    ]
    for user, argv, expected in runs:
        code, _, err = shell(user, *argv)
        assert code == expected, (argv, err)
    rows = list(reversed(shell.audit()))
    assert [(r["actor"], r["actor_kind"], r["action"], r["result"]) for r in rows] == [
        ("fred", "os", "enroll", "ok"),
        ("dora", "os", "user.add", "ok"),
        ("dora", "os", "user.rotate", "ok"),
        ("dora", "os", "user.disable", "ok"),
        ("dora", "os", "user.disable", "failed"),
        ("fred", "os", "rematch", "ok"),
        ("gwen", "os", "undo", "ok"),
        ("gwen", "os", "case.close", "failed"),
        ("hana", "os", "watchlist.add", "ok"),
        ("hana", "os", "watchlist.join", "ok"),
        ("hana", "os", "watchlist.leave", "ok"),
        ("hana", "os", "watchlist.remove", "ok"),
        ("hana", "os", "review", "failed"),
    ]
    closed = rows[7]
    assert closed["objects"] == ["no-such-case"] and "no-such-case" in closed["details"]["reason"]
    run = {r["action"] for r in rows} | RUN_ELSEWHERE
    untested = [a for a in _audited_actions() if not any(re.fullmatch(a, done) for done in run)]
    assert untested == [], "a command's audited action that no test runs"
    code, _, err = shell("auditor", "audit", "verify")
    assert code == 0 and f"{len(rows)} entries, chain intact" in err


COMBINED = re.compile(
    r'^(?P<host>\S+) - (?P<user>\S+) \[(?P<when>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "(?P<request>[^"]*)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)


def test_access_log_lines_are_combined_format_without_credentials(tmp_path):
    app = FastAPI()

    @app.get("/api/things")
    def things(request: Request) -> dict:
        request.state.actor = type("A", (), {"name": "ana"})()
        return {"ok": True}

    path = tmp_path / "access.log"
    with open_access_log(path) as out:
        app.add_middleware(AccessLog, out=out)
        client = TestClient(app)
        secret = "s3cret-token-value"
        headers = {"Authorization": f"Bearer {secret}", "User-Agent": 'evil"\nagent', "Referer": "http://x/"}
        assert (
            client.get(f"/api/things?page=2&token={secret}&api_key={secret}", headers=headers).status_code
            == 200
        )
        assert client.get("/missing", cookies={"facemoe_session": secret}).status_code == 404
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and oct(path.stat().st_mode & 0o777) == "0o600"
    first, second = (COMBINED.match(line) for line in lines)
    assert first and second, lines
    assert first["user"] == "ana" and first["status"] == "200" and int(first["size"]) == len('{"ok":true}')
    assert first["request"] == "GET /api/things?page=2&token=REDACTED&api_key=REDACTED HTTP/1.1"
    assert first["agent"] == "evil\\x22\\x0aagent" and first["referer"] == "http://x/"
    assert second["user"] == "-" and second["status"] == "404"
    assert secret not in path.read_text()
