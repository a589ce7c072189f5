"""The friends clip (configs/test.yaml, SCRFD-500M + MobileFaceNet, the six friends enrolled): embedding only what
can still change a decision gives every track the same best identity as embedding each track's best_k crops."""

from __future__ import annotations

import pytest

from tests.pipeline.runners.test_runner import _run

OFF = ["runner.decisive_margin=0"]
ON = ["runner.decisive_margin=0.1"]  # off by default


@pytest.mark.slow
def test_early_stop_keeps_every_best_identity_with_fewer_crops():
    on_stats, on, _ = _run("friends_in_video.mp4", ON)
    off_stats, off, _ = _run("friends_in_video.mp4", OFF)

    def best(results):
        return {t.track_id: (r.identity.name if r.identity else None) for t, r in results}

    assert best(on) == best(off) and len(on) >= 10
    assert sum(name is not None for name in best(on).values()) >= 8
    assert on_stats.decisive_stops >= 5 and off_stats.decisive_stops == 0
    assert on_stats.crops_embedded < 0.6 * off_stats.crops_embedded
    assert (
        sum(t.num_crops for t, _ in on) == on_stats.crops_embedded
    )  # each template counts the crops it used
    assert all(
        t.num_crops == 5 for t, _ in off if t.num_frames >= 5
    )  # best_k each (a photo on the fridge: 3)
