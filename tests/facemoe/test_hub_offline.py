"""facemoe/checkpoint.py offline: an unreachable Hub is one line within seconds that names the file, where to put
it, and (from the embed stage) the config key ``embed.checkpoint``; no retry lines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from facemoe.checkpoint import RELEASES, hub_unreachable
from facemoe.errors import CheckpointError
from tests.conftest import ROOT
from tests.gallery.pgcluster import free_port

pytest.importorskip("huggingface_hub")


def _closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connections are refused at once


def test_a_closed_endpoint_is_unreachable_and_a_listening_one_is_not():
    assert "no connection to 127.0.0.1" in hub_unreachable(_closed_endpoint())
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert hub_unreachable(f"http://127.0.0.1:{listening.getsockname()[1]}") is None
    assert hub_unreachable("https://nonexistent.invalid", timeout=3.0) is not None


def test_the_embed_stage_names_its_config_key_within_seconds(tmp_path, monkeypatch):
    from huggingface_hub import constants

    import facemoe.embedder  # noqa: F401 - torch imported before the clock starts
    from stages.config import EmbedConfig
    from stages.embed import FaceMoEBackend

    monkeypatch.setattr(constants, "ENDPOINT", _closed_endpoint())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        FaceMoEBackend(EmbedConfig(backend="facemoe", checkpoint="briar"))
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert message.startswith("embed.checkpoint 'briar': cannot fetch ")
    assert RELEASES["briar"].filename in message and str(tmp_path / "hub") in message and "\n" not in message


@pytest.mark.slow
def test_offline_default_config_is_one_line_naming_embed_checkpoint(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_ENDPOINT": _closed_endpoint(),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
    }
    detector = ROOT.parent / "shared" / "assets" / "models" / "scrfd_500m_bnkps.onnx"
    if not detector.is_file():
        pytest.skip(f"shared asset missing: {detector}")
    argv = [sys.executable, str(ROOT / "run_pipeline.py"), "enroll", "--name", "Ann", str(detector)]
    argv += ["--db", f"sqlite:///{tmp_path / 'g.db'}", "--set", f"detect.model={detector}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: embed.checkpoint 'briar': cannot fetch") and "Retry" not in proc.stderr
    assert str(tmp_path / "hf" / "hub") in lines[0]
