"""``serve`` binds its port before it says it serves: a busy port is one line and exit 2; a free one serves."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx
import pytest

from gallery.store import Gallery
from tests.gallery.pgcluster import free_port
from tests.pipeline.commands import cli, cli_env

pytest.importorskip("uvicorn")


@pytest.fixture
def db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    Gallery.open(url).close()
    return url


def test_a_busy_port_is_one_line_and_nothing_is_announced(tmp_path, db):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            cli("serve", "--db", db, "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=120,
            env=cli_env(),
            cwd=tmp_path,
        )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: serve: expected a free port") and f"127.0.0.1:{port}" in lines[0]
    assert "serving" not in proc.stderr


def test_a_free_port_is_announced_once_bound_and_answers(tmp_path, db):
    port = free_port()
    child = subprocess.Popen(
        cli("serve", "--db", db, "--port", str(port)),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
    )
    try:
        line = child.stderr.readline()
        assert line.startswith("serving ") and f"http://127.0.0.1:{port}/" in line
        with socket.socket() as other:  # bound before the announcement: the port is taken
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/identities", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.2)
        assert response.status_code == 200
    finally:
        child.terminate()
        child.wait(timeout=30)


def test_an_address_of_another_machine_names_host_not_port(tmp_path, db):
    env = cli_env() | {"FACEMOE_API_TOKEN": "t" * 40}  # a token: serving beyond loopback is allowed
    proc = subprocess.run(
        cli(
            "serve", "--db", db, "--host", "192.0.2.1", "--port", "0"
        ),  # TEST-NET-1: no machine's own address
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: serve --host '192.0.2.1': expected an address of this machine")
