from __future__ import annotations

import numpy as np
import pytest

from core.types import TrackTemplate
from stages.config import MatchConfig
from stages.match import GalleryIndex, Matcher
from tests.fakes import FixedIndex


def _unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _template(vec, crops=1):
    return TrackTemplate("clip.mp4", 7, np.asarray(vec, np.float32), 1.0, crops, None, 0.0, 1.0)


def test_search_orders_by_cosine():
    g = FixedIndex(["a", "b", "c"], _unit([[1, 0, 0], [0, 1, 0], [1, 1, 0]]), 0.5)
    assert isinstance(g, GalleryIndex)
    res = g.search(_unit([[1, 0.1, 0], [0, 0, 1]]), k=2)
    assert [c.name for c in res[0]] == ["a", "c"]
    assert res[0][0].score == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)
    assert len(res[1]) == 2 and res[1][0].score == pytest.approx(0.0, abs=1e-6)


def test_empty_gallery_gives_unknown():
    g = FixedIndex([], np.zeros((0, 3), np.float32), 0.5)
    assert g.search(_unit([[1, 0, 0]]), 3) == [[]]
    res = Matcher(MatchConfig(), g).match(_template(_unit([[1, 0, 0]])[0]))
    assert res.decision == "unknown" and res.candidates == ()


@pytest.mark.parametrize("threshold,decision", [(0.9, "match"), (0.999, "unknown"), (None, "match")])
def test_open_set_threshold(threshold, decision):
    g = FixedIndex(["a", "b"], _unit([[1, 0], [0, 1]]), 0.95)
    res = Matcher(MatchConfig(threshold=threshold, top_k=1), g).match(_template(_unit([[1, 0.2]])[0]))
    assert res.decision == decision and len(res.candidates) == 1
    assert (res.identity.name if res.identity else None) == ("a" if decision == "match" else None)


def test_template_without_crops_is_unknown():
    g = FixedIndex(["a"], _unit([[1, 0]]), 0.1)
    assert Matcher(MatchConfig(), g).match(_template(np.zeros(2), crops=0)).decision == "unknown"
