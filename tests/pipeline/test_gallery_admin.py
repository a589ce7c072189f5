"""pipeline/commands/gallery_admin.py through the real command line: query formats, serve refusals, remove,
merge, purge."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from gallery.config import GalleryConfig, ServeConfig
from gallery.db import Database
from gallery.errors import AuthError, QueryError
from gallery.queries import Filters, find_tracks
from gallery.store import Gallery
from pipeline.commands.gallery_admin import check_bind, parse_time, serve_token
from run_pipeline import main
from tests.gallery.helpers import media, seed_log, unit


@pytest.fixture
def seeded_url(db_url, tmp_path):
    with Database(db_url) as db:
        seed_log(db)
    return db_url


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_query_formats(seeded_url, capsys):
    code, out, _ = _run(
        capsys, "query", "matches", "--db", seeded_url, "--identity", "ann", "--format", "json"
    )
    assert code == 0 and [r["track_id"] for r in json.loads(out)["rows"]] == [6, 4, 2, 0]
    code, out, _ = _run(
        capsys,
        "query",
        "matches",
        "--db",
        seeded_url,
        "--source",
        "lobby",
        "--format",
        "csv",
        "--since",
        "2026-03-01T10:02:00Z",
        "--until",
        "2026-03-01T11:07:00+01:00",
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["track_id"] for r in rows] == ["5", "3"]
    code, out, _ = _run(capsys, "query", "tracks", "--db", seeded_url, "--page-size", "3")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["created_at", "source", "run_id"] and len(lines) == 5
    assert lines[-1] == "(more: --page 2)"
    code, out, _ = _run(capsys, "query", "identities", "--db", seeded_url, "--watchlist")
    assert code == 0 and out.splitlines()[1].startswith("bob")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--identity", "zed"], "identity 'zed': not in the gallery"),
        (["--since", "yesterday"], "expected ISO 8601"),
        (["--since", "2026-03-01T10:00:00"], "expected a timezone"),
        (["--page", "0"], "page: expected 1 or more"),
        (["--min-score", "0.5", "--watchlist"], "watchlist do not apply"),
    ],
)
def test_query_bad_input(seeded_url, capsys, argv, message):
    code, out, err = _run(capsys, "query", "matches", "--db", seeded_url, *argv)
    assert (
        code == 2
        and out == ""
        and err.startswith("error: ")
        and message in err
        and len(err.splitlines()) == 1
    )


def test_query_bad_database(tmp_path, capsys):
    code, _, err = _run(capsys, "query", "matches", "--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2 and "no database file" in err and not (tmp_path / "none.db").exists()
    code, _, err = _run(capsys, "query", "matches", "--db", "postgresql+psycopg://x:pw@127.0.0.1:9/none")
    assert code == 2 and "cannot connect to postgresql+psycopg://x:***@127.0.0.1:9/none" in err


def test_remove_merge_purge(db_url, tmp_path, capsys):
    with Gallery.open(db_url) as g:
        rng = np.random.default_rng(0)
        for name in ("ann", "bob", "cyd"):
            g.add_media(name, "e4", media(name, unit(rng, 2, 4)), create=True)
    assert _run(capsys, "merge", "ann", "bob", "--db", db_url)[0] == 0
    assert _run(capsys, "remove", "cyd", "--db", db_url)[0] == 0
    code, _, err = _run(capsys, "remove", "cyd", "--db", db_url)
    assert code == 2 and "'cyd': not in the gallery" in err
    with Gallery.open(db_url) as g:
        assert [(i.name, i.media) for i in g.identities()] == [("bob", 4)]
    code, _, err = _run(capsys, "purge", "--db", db_url)
    assert code == 2 and "expected --older-than DAYS" in err
    code, _, err = _run(capsys, "purge", "--db", db_url, "--older-than", "30")
    assert code == 0 and "deleted 0 tracks" in err


def test_purge_older_than_zero_deletes_everything_and_a_negative_age_is_refused(seeded_url, capsys):
    for bad in ("-1", "-0.5", "nan"):
        code, out, err = _run(capsys, "purge", "--db", seeded_url, "--older-than", bad)
        assert code == 2 and out == "" and len(err.splitlines()) == 1
        assert err.startswith("error: purge --older-than: expected 0 or more days, got ")
    with Database(seeded_url, create=False) as db:
        assert len(find_tracks(db, Filters()).rows) == 8
    code, _, err = _run(capsys, "purge", "--db", seeded_url, "--older-than", "0")
    assert code == 0 and "deleted 8 tracks older than 0 days" in err
    with Database(seeded_url, create=False) as db:
        assert find_tracks(db, Filters()).rows == []


def test_serve_refuses_open_bind_without_token(seeded_url, capsys, monkeypatch):
    monkeypatch.delenv("FACEMOE_API_TOKEN", raising=False)
    code, _, err = _run(capsys, "serve", "--db", seeded_url, "--host", "0.0.0.0")
    assert code == 2 and "expected a loopback address without a token" in err
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "long-enough-token")
    monkeypatch.setenv("FACEMOE_API_TOKEN", "from-environment")
    assert serve_token(GalleryConfig(serve=ServeConfig(token="from-config-file"))) == "from-environment"
    monkeypatch.setenv("FACEMOE_API_TOKEN", "short")
    with pytest.raises(AuthError, match="at least 8 characters"):
        serve_token(GalleryConfig())


def test_parse_time():
    assert parse_time("2026-03-01T10:00:00Z").isoformat() == "2026-03-01T10:00:00+00:00"
    with pytest.raises(QueryError):
        parse_time("2026-03-01")
