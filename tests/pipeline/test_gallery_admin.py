"""pipeline/commands/gallery_admin.py through the real command line: query formats, serve refusals, remove,
merge, purge."""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gallery.config import GalleryConfig, ServeConfig
from gallery.db import Database
from gallery.enroll import Enroller
from gallery.errors import AuthError, QueryError
from gallery.queries import Filters, find_tracks
from gallery.store import Gallery
from pipeline.commands.common import parse_time
from pipeline.commands.gallery_admin import check_bind, serve_token
from run_pipeline import main
from tests.gallery.helpers import media, seed_log, unit

ROOT = Path(__file__).resolve().parents[2]


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
    assert code == 0 and [r["ref"] for r in rows] == [
        "2:5",
        "2:3",
    ]  # the lobby camera's run, by sighting time
    code, out, _ = _run(capsys, "query", "tracks", "--db", seeded_url, "--page-size", "3")
    lines = out.splitlines()
    assert (
        code == 0 and lines[0].split()[:4] == ["ref", "seen_start", "seen_end", "source"] and len(lines) == 5
    )
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


def test_remove_one_enrolled_photo_or_track(seeded_url, capsys):
    """ann (one vector) also enrolled from track 1:0 and track 1:2 (tracks of camera gate, run 1): query media lists
    them with their ids, kinds and references; remove --track and --media take one each, the template re-fused;
    the last one is refused."""
    with Gallery.open(seeded_url) as g:
        enroller = Enroller(g, lambda image: [], SimpleNamespace(embedder_id="e4", dim=4))
        assert enroller.enroll_tracks("ann", ["1:0", "1:2"], add=True, force=True).count("enrolled") == 2
        three, version = g.template("ann", "e4"), g.version()
    code, out, _ = _run(capsys, "query", "media", "--db", seeded_url, "--identity", "ann", "--format", "json")
    rows = json.loads(out)["rows"]
    assert code == 0 and [(r["kind"], r["track"]) for r in rows] == [
        ("image", None),
        ("track", "1:0"),
        ("track", "1:2"),
    ]
    code, out, _ = _run(capsys, "query", "media", "--db", seeded_url)
    assert (
        code == 0 and out.splitlines()[0].split()[:4] == ["id", "identity", "kind", "track"] and "1:2" in out
    )
    code, _, err = _run(capsys, "remove", "ann", "--db", seeded_url, "--track", "1:2")
    assert code == 0 and f"removed media {rows[2]['id']} (track 1:2: track 1:2 (gate)) from ann" in err, err
    code, _, err = _run(capsys, "remove", "ann", "--db", seeded_url, "--media", str(rows[1]["id"]))
    assert code == 0 and f"removed media {rows[1]['id']} (track 1:0" in err
    with Gallery.open(seeded_url) as g:
        assert g.version() == version + 2 and [i.media for i in g.identities() if i.name == "ann"] == [1]
        alone = g.media_vectors("ann", "e4")[0]
        np.testing.assert_allclose(g.template("ann", "e4"), alone, atol=1e-6)  # re-fused from what is left
        assert not np.allclose(three, alone, atol=1e-3)
    code, out, err = _run(capsys, "remove", "ann", "--db", seeded_url, "--media", str(rows[0]["id"]))
    assert code == 2 and "would leave it none" in err and "remove ann" in err and len(err.splitlines()) == 1
    code, _, err = _run(capsys, "remove", "bob", "--db", seeded_url, "--media", str(rows[0]["id"]))
    assert code == 2 and "expected a media of 'bob', got one of 'ann'" in err


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


def _hostile_log(url: str) -> None:
    """One camera and one identity whose names a spreadsheet would run, one unknown track with a negative
    score."""
    from datetime import datetime, timezone

    from gallery.matchlog import MatchLogWriter, TrackRecord

    rng = np.random.default_rng(1)
    with Database(url) as db:
        g = Gallery(db)
        ident = g.add_identity('=HYPERLINK("http://x")')
        writer = MatchLogWriter(db, source="@cam", kind="camera", config_hash="x", batch_size=1)
        for t, (decision, score) in enumerate([("match", 0.9), ("unknown", -0.25)]):
            writer.record(
                TrackRecord(
                    track_id=t,
                    start_time=0.0,
                    end_time=1.0,
                    frames=3,
                    crops_embedded=1,
                    template=unit(rng, 1, 4)[0],
                    embedder_id="e4",
                    candidates=[(ident, '=HYPERLINK("http://x")', score)],
                    decision=decision,
                    threshold=0.5,
                    at=datetime(2026, 3, 1, 10, t, tzinfo=timezone.utc),
                )
            )
        writer.close()


def test_query_csv_neutralises_formula_cells(db_url, capsys):
    _hostile_log(db_url)
    code, out, _ = _run(capsys, "query", "matches", "--db", db_url, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["source"] for r in rows] == ["'@cam", "'@cam"]
    assert [r["identity"] for r in rows] == ["", '\'=HYPERLINK("http://x")']
    assert [r["score"] for r in rows] == ["-0.2500", "0.9000"]  # numbers stay numbers
    code, out, _ = _run(capsys, "query", "identities", "--db", db_url, "--format", "csv")
    assert code == 0 and next(csv.DictReader(io.StringIO(out)))["name"] == '\'=HYPERLINK("http://x")'
    code, out, _ = _run(capsys, "query", "matches", "--db", db_url, "--format", "json")
    assert json.loads(out)["rows"][0]["source"] == "@cam"  # JSON is data, not a spreadsheet: unchanged


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--page", "10000000000000000000"], "page: expected at most 20000001 with page size 50"),
        (["--page", "1000001", "--page-size", "1000"], ""),
        (["--page", "1000002", "--page-size", "1000"], "page: expected at most 1000001 with page size 1000"),
        (["--page-size", "10000000000000000000"], "page size: expected 1..1000"),
    ],
)
def test_query_page_bound(seeded_url, capsys, argv, message):
    code, out, err = _run(capsys, "query", "tracks", "--db", seeded_url, *argv)
    if not message:
        assert code == 0 and len(out.splitlines()) == 1  # the header of an empty page
    else:
        assert code == 2 and out == "" and err == f"error: {err[7:]}" and message in err
        assert len(err.splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, host: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/identities", headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_serve_answers_only_its_own_host_names(seeded_url, tmp_path):
    """The real ``serve`` on a loopback port: localhost and the address answer, a rebound name gets 400."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "FACEMOE_API_TOKEN"}
    argv = ["serve", "--db", seeded_url, "--port", str(port), "--allow-host", "gallery.lan"]
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "run_pipeline.py"), *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = _get(port, f"127.0.0.1:{port}")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert status == 200
        for host in ("localhost", f"[::1]:{port}", f"gallery.lan:{port}"):
            assert _get(port, host)[0] == 200
        status, body = _get(port, f"attacker.example:{port}")
        assert status == 400 and b"Host header: expected one of" in body
    finally:
        server.terminate()
        server.wait(timeout=20)
        server.stderr.close()


@pytest.mark.parametrize("threshold, sizes", [("-1", [3]), ("0.9999", [1, 1, 1])])
def test_query_unknowns_groups_the_unknown_tracks(seeded_url, capsys, threshold, sizes):
    argv = ["query", "unknowns", "--db", seeded_url, "--min-size", "1", "--threshold", threshold]
    code, out, _ = _run(capsys, *argv, "--format", "json")
    groups = json.loads(out)["groups"]
    assert code == 0 and sorted(len(g["tracks"]) for g in groups) == sizes
    assert sorted(t["track_id"] for g in groups for t in g["tracks"]) == [1, 5, 7]  # the unknown ones


@pytest.mark.parametrize("option", [["--threshold", "0.5"], ["--min-size", "2"], ["--embedder", "e4"]])
def test_grouping_options_apply_to_query_unknowns_only(seeded_url, capsys, option):
    code, _, err = _run(capsys, "query", "matches", "--db", seeded_url, *option)
    assert code == 2 and f"{option[0]} applies to 'query unknowns' only" in err
