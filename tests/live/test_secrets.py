"""Secrets: a ``stream`` run with a camera password (from the environment and inline in a URL) and a webhook
token (in its URL and in an auth header from the environment) leaves neither in the database, the logs, stdout,
stderr, the metrics page or the query exports, while the webhook still receives its token."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect, select, text

from gallery.models import Source
from gallery.store import Gallery
from run_pipeline import main
from tests.conftest import ASSETS, ROOT, require
from tests.live.rtsp import free_port
from tests.live.test_alerts import Receiver

CONFIG = ROOT / "configs" / "test.yaml"
FRIENDS_GALLERY = ASSETS / "images" / "friends_gallery"
FRIENDS = ("Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross")

CAM_PASSWORD = "CamPw7Xq91zz"  # given by environment variable (password_env)
INLINE_PASSWORD = "InlinePw4Kd02"  # written in a camera URL on the command line
HOOK_TOKEN = "HookTok5Rm33"  # in the webhook URL's query string
HOOK_HEADER = "HookHdr8Wn47"  # in the auth header, given by environment variable
SECRETS = (CAM_PASSWORD, INLINE_PASSWORD, HOOK_TOKEN, HOOK_HEADER)


def leaked(where: str, content: str | bytes) -> list[str]:
    """The secrets found in ``content`` (text, or bytes searched as UTF-8 and UTF-16), as ``where: secret``."""
    found = []
    for secret in SECRETS:
        needles = (secret,) if isinstance(content, str) else (secret.encode(), secret.encode("utf-16-le"))
        if any(n in content for n in needles):
            found.append(f"{where}: {secret}")
    return found


class MetricsPoller:
    """Fetches ``/metrics`` and ``/healthz`` every half second while the command runs; keeps every page."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.pages: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            for path in ("/metrics", "/healthz"):
                try:
                    self.pages.append(httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).text)
                except httpx.HTTPError:
                    continue


def database_text(db_file: Path) -> str:
    """Every row of every table, as text."""
    engine = create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            return "\n".join(
                repr(row)
                for table in inspect(engine).get_table_names()
                for row in conn.execute(text(f'SELECT * FROM "{table}"'))
            )
    finally:
        engine.dispose()


@pytest.mark.slow
def test_no_secret_is_stored_logged_shown_or_exported(
    rtsp_server, stream_clip, tmp_path, capfd, caplog, monkeypatch
):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FACEMOE_TEST_CAM_PASSWORD", CAM_PASSWORD)
    monkeypatch.setenv("FACEMOE_TEST_HOOK_AUTH", f"Bearer {HOOK_HEADER}")
    rtsp_server.publish("door", stream_clip)
    hook = Receiver()
    port = free_port()
    live = tmp_path / "live.yaml"
    live.write_text(
        "transport: udp\nread_timeout_s: 2\nopen_timeout_s: 1\nreconnect: {initial_s: 0.2, max_s: 1}\n"
        "health: {status_interval_s: 1}\n"
        f"alerts: {{watchlist: [{', '.join(FRIENDS)}], shutdown_timeout_s: 5, webhooks: "
        f"[{{url: '{hook.url}?token={HOOK_TOKEN}', auth_header_env: FACEMOE_TEST_HOOK_AUTH}}]}}\n"
    )
    door_url = rtsp_server.url("door").replace("rtsp://", "rtsp://operator@")
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(
        f"cameras:\n  - {{name: door, url: '{door_url}', password_env: FACEMOE_TEST_CAM_PASSWORD}}\n"
    )
    refused = f"rtsp://operator:{INLINE_PASSWORD}@127.0.0.1:{free_port()}/gate"  # reconnects, logs its errors
    db_file = tmp_path / "secrets.db"
    db = f"sqlite:///{db_file}"
    poller = MetricsPoller(port)
    poller.thread.start()
    argv = ["stream", refused, "--cameras", str(cameras), "--live-config", str(live), "--config", str(CONFIG)]
    argv += [
        "--db",
        db,
        "--gallery",
        str(require(FRIENDS_GALLERY)),
        "--metrics-port",
        str(port),
        "--duration",
        "12",
    ]
    try:
        with caplog.at_level(logging.DEBUG):
            assert main(argv) == 0
            run_out, run_err = capfd.readouterr()
            exports = []
            for kind in ("tracks", "matches"):
                for fmt in ("json", "csv"):
                    assert main(["query", kind, "--format", fmt, "--db", db, "--page-size", "1000"]) == 0
                    exports.append(capfd.readouterr().out)
    finally:
        poller.stop.set()
        poller.thread.join(5)
        hook.close()

    # the run did what it should: tracks matched, an alert delivered with its token, both cameras logged
    assert any(" door " in line and "frames=" in line for line in run_out.splitlines()), run_err[-2000:]
    assert hook.bodies, "no alert reached the webhook"
    assert all(h.get("Authorization") == f"Bearer {HOOK_HEADER}" for h in hook.headers)
    assert all(p.endswith(f"?token={HOOK_TOKEN}") for p in hook.paths)
    assert any('camera="door"' in page for page in poller.pages)
    assert any("reconnecting in" in r.getMessage() and "gate" in r.getMessage() for r in caplog.records)
    # no secret anywhere
    found = []
    for path in sorted(tmp_path.iterdir()):
        if path.name.startswith(db_file.name):  # the database and its -wal / -shm / index files
            found += leaked(f"file {path.name}", path.read_bytes())
    found += leaked("database rows", database_text(db_file))
    found += leaked("logs", caplog.text + "\n".join(r.getMessage() for r in caplog.records))
    found += leaked("stdout", run_out) + leaked("stderr", run_err)
    found += leaked("metrics", "\n".join(poller.pages))
    found += leaked("query exports", "\n".join(exports))
    assert not found, found
    with Gallery.open(db) as gallery, gallery.db.session() as s:
        uris = dict(s.execute(select(Source.name, Source.uri)).all())
    assert uris["door"] == door_url and uris["gate"].startswith("rtsp://operator:***@127.0.0.1:")
    assert exports[0].strip().startswith(("[", "{")) and "door" in exports[0]


@pytest.mark.parametrize("missing", ["camera", "webhook"])
def test_unset_secret_variable_is_one_line_and_exit_2(missing, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FACEMOE_TEST_UNSET_SECRET", raising=False)
    cameras = tmp_path / "cameras.yaml"
    live = tmp_path / "live.yaml"
    env = {"camera": "FACEMOE_TEST_UNSET_SECRET", "webhook": None}[missing]
    cameras.write_text(
        "cameras:\n  - {name: door, url: 'rtsp://op@127.0.0.1/a'"
        + (f", password_env: {env}" if env else "")
        + "}\n"
    )
    hook_env = "FACEMOE_TEST_UNSET_SECRET" if missing == "webhook" else None
    live.write_text(
        "alerts: {webhooks: [{url: 'http://127.0.0.1:9/h?token=TOK'"
        + (f", auth_header_env: {hook_env}" if hook_env else "")
        + "}]}\n"
    )
    argv = ["stream", "--cameras", str(cameras), "--live-config", str(live), "--gallery", "g"]
    assert main(argv + ["--config", str(CONFIG)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "FACEMOE_TEST_UNSET_SECRET" in err and "\n" not in err
    assert "TOK" not in err
