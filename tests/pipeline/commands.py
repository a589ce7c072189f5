"""The command line as a child process, for tests that kill, race or chain real commands."""

from __future__ import annotations

import os
import sys

from tests.conftest import ROOT

TEST_CONFIG = ROOT / "configs" / "test.yaml"


def cli(*args: str) -> list[str]:
    """``run_pipeline.py ARGS --config configs/test.yaml`` with this interpreter."""
    return [sys.executable, str(ROOT / "run_pipeline.py"), *args, "--config", str(TEST_CONFIG)]


def cli_env() -> dict[str, str]:
    """The environment of such a child: the checkout importable from any working folder."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}
