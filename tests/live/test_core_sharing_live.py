"""The live runner holds detection's share of the cores while it detects the cameras' frames (real RTSP)."""

from __future__ import annotations

import threading

from pipeline.build import build
from pipeline.config import load_config
from pipeline.live.cameras import LiveCameras
from pipeline.live.config import CameraConfig
from pipeline.live.health import HealthRegistry
from pipeline.runners.live_runner import LiveRunner
from pipeline.sinks.outputs import CollectSink
from stages.cores import CoreBudget
from tests.conftest import ROOT
from tests.live.test_live import live_config
from tests.pipeline.runners.test_core_sharing import _Recording


def test_live_run_detects_holding_its_core_and_finishes_on_every_core(rtsp_server, stream_clip):
    rtsp_server.publish("cam", stream_clip)
    cfg = load_config(ROOT / "configs" / "test.yaml", ["track.min_hits=1"])
    registry = HealthRegistry()
    cameras = LiveCameras([CameraConfig(name="lobby", url=rtsp_server.url("cam"))], live_config(), registry)
    budget, log, collect = CoreBudget(2), [], CollectSink()
    with build(cfg) as system:
        detector = _Recording(system.detector, budget, log, "detect")
        embedder = _Recording(system.embedder, budget, log, "embed")
        runner = LiveRunner(cfg, detector, embedder, system.matcher(), [collect], cameras, registry)
        runner.run(threading.Event(), duration_s=4.0)
    detects = [e for e in log if e[0] == "detect"]
    embeds = [e for e in log if e[0] == "embed"]
    assert detects and all(held == 1 and threads == 1 for _, held, threads in detects)
    assert embeds and embeds[-1] == ("embed", 0, 2)  # the tracks open when the run ends
    assert budget.detecting_now == 0 and collect.results
