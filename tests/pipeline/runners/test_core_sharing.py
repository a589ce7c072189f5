"""The runners hold detection's share of the cores while they detect; the embedder gets every core otherwise."""

from __future__ import annotations

import logging
import threading

import pytest

from pipeline.build import build
from pipeline.config import load_config
from pipeline.runners.runner import FileRunner
from pipeline.runners.sources import FileSource
from pipeline.sinks.outputs import CollectSink
from stages.cores import CoreBudget, available_cores, budget_of
from tests.conftest import ASSETS, ROOT, require


class _Recording:
    """An embedder or detector that records the budget's state as each of its calls starts."""

    def __init__(self, inner, budget: CoreBudget, log: list, kind: str) -> None:
        self.inner, self.cores, self.log, self.kind = inner, budget, log, kind
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _record(self) -> None:
        with self.lock:
            self.log.append((self.kind, self.cores.detecting_now, self.cores.embed_threads()))

    def embed(self, crops):
        self._record()
        return self.inner.embed(crops)

    def detect(self, images, regions=None):
        self._record()
        return self.inner.detect(images, regions)


def test_file_run_detects_holding_its_core_and_embeds_the_last_tracks_on_every_core():
    cfg = load_config(ROOT / "configs" / "test.yaml", ["source.end=1.5", "source.stride=2"])
    budget, log = CoreBudget(2), []
    collect = CollectSink()
    with build(cfg, gallery_dir=require(ASSETS / "images" / "friends_gallery")) as system:
        detector = _Recording(system.detector, budget, log, "detect")
        embedder = _Recording(system.embedder, budget, log, "embed")
        runner = FileRunner(cfg, detector, embedder, system.matcher(), [collect])
        runner.run([FileSource(str(require(ASSETS / "videos" / "friends_in_video.mp4")), cfg.source)])
    detects = [e for e in log if e[0] == "detect"]
    embeds = [e for e in log if e[0] == "embed"]
    assert detects and all(held == 1 and threads == 1 for _, held, threads in detects)
    assert embeds and embeds[-1] == ("embed", 0, 2)  # the tracks open at the end: nothing detects any more
    assert budget.detecting_now == 0 and len(collect.results) >= 2


@pytest.mark.parametrize(
    "overrides, shared",
    [
        ([], False),
        (["runner.share_cores=true"], True),
        (["runner.share_cores=true", "runner.cores=3"], True),
        (["runner.share_cores=true", "runner.cores=1"], True),
    ],
)
def test_build_gives_a_cpu_facemoe_the_budget_of_its_process_and_logs_the_split(
    fixtures_dir, caplog, overrides, shared
):
    checkpoint = fixtures_dir / "fixtureA_perturbed_state.pt"
    cfg = load_config(
        ROOT / "configs" / "test.yaml",
        ["embed.backend=facemoe", f"embed.checkpoint={checkpoint}", "embed.precision=fp32", *overrides],
    )
    with caplog.at_level(logging.INFO, logger="pipeline.build"):
        with build(cfg, gallery=False) as system:
            budget = budget_of(system.embedder)
        with build(cfg, detector=False, gallery=False) as embedding_only:  # e.g. the Ray embedding service
            assert budget_of(embedding_only.embedder) is None
    lines = [r.getMessage() for r in caplog.records if "FaceMoE threads" in r.getMessage()]
    if not shared:
        assert budget is None
        assert lines == ["FaceMoE threads: torch's own thread count throughout (runner.share_cores: false)"]
        return
    cores = cfg.runner.cores or available_cores()
    assert budget is not None and budget.cores == cores
    assert budget.detect_cores == min(cfg.detect.threads, cores - 1)
    assert lines == [f"FaceMoE threads: {budget.describe()}"]


def test_an_onnx_embedder_follows_no_budget():
    cfg = load_config(ROOT / "configs" / "test.yaml")
    with build(cfg, detector=False, gallery=False) as system:
        assert budget_of(system.embedder) is None
