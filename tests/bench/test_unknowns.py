"""bench/unknowns.py runs end to end in its quick mode (SQLite) and reports every figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.bench.conftest import load_bench


@pytest.mark.parametrize(
    "extra, search",
    [([], "IVF 100 cells, probe 16"), (["--exact-up-to", "5000"], "exact")],
    ids=["inverted-file", "exact"],
)
def test_unknowns_bench_quick(tmp_path, capsys, extra, search):
    out = tmp_path / "out.json"
    assert load_bench("unknowns").main(["--quick", "--json", str(out), *extra]) == 0
    row = json.loads(out.read_text())
    assert row["tracks"] == 3000 and row["dim"] == 128 and row["search"] == search
    assert row["total_s"] >= row["load_s"] + row["group_s"] - 0.1 and row["load"] >= 0
    # a person's tracks score 0.2-0.8 together: most groups are found whole, hardly any mixes two people
    assert row["purity"] >= 0.95 and row["completeness"] >= 0.85 and row["pair_f1"] >= 0.8, row
    assert 0.8 <= row["groups_2plus"] / row["people_2plus"] <= 1.25
    assert "## recurring unknowns (3,000 tracks, 128-d)" in capsys.readouterr().out


def test_synthetic_people_and_scenes():
    bench = load_bench("unknowns")
    rng = np.random.default_rng(0)
    who = bench.people(rng, 1000, 0.3, 5.0)
    sizes = np.bincount(who)
    assert len(who) == 1000 and (sizes[140:] == 1).all() and sizes[:140].mean() == pytest.approx(5.0)
    camera, start, end = bench.scenes(rng, who, 3)
    assert set(camera.tolist()) == {0, 1, 2} and (end > start).all()
    for cam in range(3):  # nobody is on screen twice at once
        for person in set(who[camera == cam].tolist()):
            spans = sorted(
                zip(start[(camera == cam) & (who == person)], end[(camera == cam) & (who == person)])
            )
            assert all(b[0] > a[1] for a, b in zip(spans, spans[1:]))
    c = bench.centres(rng, 200, 64, 0.5)
    x = bench.templates(rng, c, who % 200, (0.5, 0.5))
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert np.allclose((x * c[who % 200]).sum(axis=1), 0.5, atol=1e-4)  # the drawn cosine to the centre
