"""run_pipeline.py: a reader of stdout that goes away early ends the command quietly (no traceback); a run that
gives up and bad input end with one line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import run_pipeline
from core.errors import ConfigError, RunFailure
from gallery.db import Database
from run_pipeline import CLOSED_PIPE
from tests.gallery.helpers import seed_log

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def seeded(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with Database(url) as db:
        seed_log(db)
    return url


def _query(url: str, fmt: str, cwd: Path) -> subprocess.Popen:
    argv = [sys.executable, str(ROOT / "run_pipeline.py"), "query", "matches", "--db", url, "--format", fmt]
    return subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_closed_stdout_pipe_ends_quietly(seeded, tmp_path, fmt):
    """The reader closes before the first byte is written, as ``head -c0`` would: exit 141, empty stderr."""
    proc = _query(seeded, fmt, tmp_path)
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == CLOSED_PIPE and err == b""


@pytest.mark.slow
def test_head_reads_one_line(seeded, tmp_path):
    """``query matches | head -n 1`` through a shell: head's line arrives, the query's stderr stays empty."""
    cmd = (
        f"{sys.executable} {ROOT / 'run_pipeline.py'} query matches --db {seeded} --format json 2>err.txt"
        " | head -n 1; echo ${PIPESTATUS[0]}"
    )
    out = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines()[0] == "{"
    assert int(out.stdout.splitlines()[1]) in (0, CLOSED_PIPE)  # the output may fit the pipe before head ends
    assert (tmp_path / "err.txt").read_text() == ""


@pytest.mark.parametrize(
    "exc, code, line",
    [
        (RunFailure("embedding service failed; given up after 5 restarts"), 1, "failed: embedding service"),
        (ConfigError("detect.input_size: expected multiples of 32, got 33"), 2, "error: detect.input_size"),
    ],
)
def test_a_run_that_gives_up_and_bad_input_end_with_one_line(monkeypatch, capsys, exc, code, line):
    def fail(_args):
        raise exc

    monkeypatch.setattr(run_pipeline, "build_parser", lambda *a: _parser_running(fail))
    assert run_pipeline.main([]) == code
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err


def _parser_running(func):
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.set_defaults(func=func)
    return parser
