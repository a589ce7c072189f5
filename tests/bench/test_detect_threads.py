"""bench/detect_threads.py: the machine line, then one row per input size with every layout and both ratios."""

from __future__ import annotations

import re

from tests.bench.conftest import load_bench
from tests.conftest import require

detect_threads = load_bench("detect_threads")


def test_one_row_per_size_with_every_layout(capsys):
    require(detect_threads.MODEL)
    assert detect_threads.main(["--rounds", "1", "--sizes", "64x64", "96x64", "--pixels", "1e5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU ")
    rows = [line for line in lines if line.startswith("| 64x64 |") or line.startswith("| 96x64 |")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 1 + len(detect_threads.LAYOUTS) + 2
        assert all(re.fullmatch(r"[\d.]+ \([\d.]+\)", c) for c in cells[1:-2])
        assert all(re.fullmatch(r"[\d.]+x", c) and float(c[:-1]) > 0 for c in cells[-2:])


def test_a_missing_model_is_one_line_and_exit_2(tmp_path, capsys):
    assert (
        detect_threads.main(["--model", str(tmp_path / "none.onnx"), "--rounds", "1", "--sizes", "64x64"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.onnx" in err[0]
