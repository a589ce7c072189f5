"""pipeline/commands/users.py: ``users add/list/disable/rotate`` on SQLite and PostgreSQL (a token printed once,
rotation ends the old one, bad input one line and exit 2, each change in the audit trail), and the secrets test for
users: after adding users with passwords, logging in over the web app by token and by password, failed logins and a
rotation, no token nor password is in the logs, the database (every table, the SQLite file and its WAL), the audit
trail, the cookies or the command's stderr (the token only on stdout, once)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text

import run_pipeline
from gallery.access_models import User
from gallery.db import Database
from pipeline.web.app import create_app
from tests.conftest import ROOT

CONFIG = str(ROOT / "configs" / "test.yaml")
PASSWORD = "Pw-of-ann-9Qz7"
SHARED = "shared-token-Xy81Lm"


class Cli:
    def __init__(self, url: str, head: Path, monkeypatch, capsys) -> None:
        self.url, self.monkeypatch, self.capsys = url, monkeypatch, capsys
        self.extra = ["--db", url, "--config", CONFIG, "--set", f"gallery.audit.head_file={head}"]

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = run_pipeline.main(["users", *argv, *self.extra])
        out = self.capsys.readouterr()
        return code, out.out, out.err


@pytest.fixture
def cli(db_url, tmp_path, monkeypatch, capsys) -> Cli:
    Database(db_url).close()
    monkeypatch.setenv("ANN_PW", PASSWORD)
    return Cli(db_url, tmp_path / "audit-head", monkeypatch, capsys)


def _audit(url: str) -> list[tuple[str, list, dict, str]]:
    with Database(url, create=False) as db, db.engine.connect() as conn:
        rows = conn.execute(text("SELECT action, objects, details, result FROM audit ORDER BY id")).all()
    return [
        (a, o if isinstance(o, list) else json.loads(o), d if isinstance(d, dict) else json.loads(d), r)
        for a, o, d, r in rows
    ]


def test_add_list_disable_rotate(cli):
    code, token, err = cli("add", "ann", "--role", "investigator", "--password-env", "ANN_PW")
    token = token.strip()
    assert code == 0 and "added as investigator" in err and "." in token and token not in err
    code, bob, _ = cli("add", "bob", "--role", "viewer")
    assert code == 0 and bob.strip() != token
    code, out, _ = cli("list", "--format", "json")
    rows = json.loads(out)["rows"]
    assert [(r["name"], r["role"], r["password"], r["disabled_at"]) for r in rows] == [
        ("ann", "investigator", True, None),
        ("bob", "viewer", False, None),
    ]
    assert token not in out and "scrypt" not in out and "sha256" not in out
    code, table, _ = cli("list")
    assert code == 0 and table.splitlines()[0].split() == [
        "name",
        "role",
        "created_at",
        "rotated_at",
        "disabled_at",
        "password",
    ]
    with Database(cli.url, create=False) as db:
        app = create_app(db, None)
        bearer = lambda t: TestClient(app).get("/api/matches", headers={"Authorization": f"Bearer {t}"})  # noqa: E731
        assert bearer(token).status_code == 200
        code, new, err = cli("rotate", "ann")
        new = new.strip()
        assert code == 0 and new != token and "rotated" in err
        assert bearer(token).status_code == 401 and bearer(new).status_code == 200
        assert cli("disable", "bob")[0] == 0
        assert bearer(bob.strip()).status_code == 401
    code, out, _ = cli("list", "--format", "json")
    assert [r["disabled_at"] is not None for r in json.loads(out)["rows"]] == [False, True]
    assert [(a, o, r) for a, o, _, r in _audit(cli.url)] == [
        ("user.add", ["ann"], "ok"),
        ("user.add", ["bob"], "ok"),
        ("user.rotate", ["ann"], "ok"),
        ("request", [], "denied"),  # ann's old token after the rotation
        ("user.disable", ["bob"], "ok"),
        ("request", [], "denied"),  # bob's token once disabled
    ]
    assert _audit(cli.url)[0][2] == {"role": "investigator", "password": True}


@pytest.mark.parametrize(
    "argv,message",
    [
        (("add", "ann", "--role", "boss"), "role: expected one of viewer, investigator, admin, got 'boss'"),
        (("add", "ann", "--role", "admin"), "user 'ann': expected a new name, got one already taken"),
        (("add", "x\nforged", "--role", "admin"), "user name: expected printable text"),
        (("add", "carl", "--role", "admin", "--password-env", "NOT_SET_VAR"), "expected a set variable"),
        (
            ("add", "carl", "--role", "admin", "--password-env", "SHORT_PW"),
            "password: expected 8-1024 characters",
        ),
        (("disable", "nobody"), "user 'nobody': expected an existing user, got none of that name"),
        (("rotate", "nobody"), "user 'nobody': expected an existing user"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, argv, message):
    cli.monkeypatch.setenv("SHORT_PW", "short")
    assert cli("add", "ann", "--role", "viewer")[0] == 0
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, err
    with Database(cli.url, create=False) as db, db.session() as session:
        assert list(session.scalars(select(User.name))) == ["ann"]  # nothing half-written


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_token_or_password_in_logs_database_audit_or_cookies(cli, caplog):
    caplog.set_level(logging.DEBUG)
    code, token, err = cli("add", "ann", "--role", "admin", "--password-env", "ANN_PW")
    token = token.strip()
    secrets = {token, token.split(".")[1], PASSWORD}
    texts = {"add stderr": err}
    code, rotated, err = cli("rotate", "ann")
    rotated = rotated.strip()
    secrets |= {rotated, rotated.split(".")[1]}
    texts["rotate stderr"] = err
    cookies = []
    with Database(cli.url, create=False) as db:
        client = TestClient(create_app(db, None, token=SHARED))
        for fields in (
            {"token": rotated},
            {"name": "ann", "password": PASSWORD},
            {"name": "ann", "password": PASSWORD + "-wrong"},
            {"token": token},  # the rotated-away one
            {"name": PASSWORD, "password": PASSWORD},  # a password typed into the name field
        ):
            response = client.post("/login", data=fields, follow_redirects=False)
            cookies += [v for k, v in response.headers.items() if k == "set-cookie"]
            texts[f"login page {sorted(fields)}"] = response.text
        assert client.get("/api/users").status_code == 200
        texts["users api"] = client.get("/api/users").text
        assert client.get("/api/matches", headers={"Authorization": f"Bearer {rotated}"}).status_code == 200
        with db.engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                texts[f"table {table}"] = repr(conn.execute(text(f'SELECT * FROM "{table}"')).all())
    assert len(cookies) == 2
    texts["cookies"] = "\n".join(cookies)
    texts["logs"] = caplog.text
    path = Path(cli.url.removeprefix("sqlite:///"))
    files = {p.name: p.read_bytes() for p in path.parent.glob(path.name + "*")}
    leaks = [f"{where}: {s[:6]}..." for where, content in texts.items() for s in secrets if s in content]
    leaks += [
        f"{name}: {s[:6]}..." for name, content in files.items() for s in secrets if s.encode() in content
    ]
    assert leaks == []
    assert any(
        "login refused" in r.message for r in caplog.records
    )  # the log says what happened, not with what


def test_serve_listens_beyond_loopback_with_users_and_no_token():
    from gallery.errors import AuthError
    from pipeline.commands.gallery_admin import check_bind

    check_bind("0.0.0.0", None, users=True)
    with pytest.raises(AuthError, match="or add users"):
        check_bind("0.0.0.0", None, users=False)
