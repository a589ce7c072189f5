"""The ``export`` command through run_pipeline.main: a checked ONNX file, or one error line and no file."""

from __future__ import annotations

import pytest

import run_pipeline
from facemoe import export
from facemoe.export import ExportError


def test_export_writes_a_checked_file(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "a.onnx"
    assert run_pipeline.main(["export", str(fixtures_dir / "fixtureA_state.pt"), str(out)]) == 0
    err = capsys.readouterr().err
    assert "onnxruntime agrees with torch at batch 1, 3, 8" in err and out.stat().st_size > 1_000_000
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize(
    "make_args, fragment",
    [
        (lambda d, t: [str(t / "missing.pt"), str(t / "a.onnx")], "checkpoint not found"),
        (lambda d, t: [str(d / "fixtureA_state.pt"), str(t / "a.pt")], "expected a .onnx file name"),
        (lambda d, t: [str(d / "fixtureA_state.pt"), str(t / "a.onnx"), "--k", "4"], "k"),
    ],
)
def test_bad_input_is_one_line(fixtures_dir, tmp_path, capsys, make_args, fragment):
    assert run_pipeline.main(["export", *make_args(fixtures_dir, tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and fragment in line
    assert not list(tmp_path.glob("*.onnx*"))


def test_failed_check_leaves_no_file(fixtures_dir, tmp_path, capsys, monkeypatch):
    def disagree(*args, **kwargs):
        raise ExportError("onnxruntime vs torch at batch 1: expected within 0.0001, got 0.5")

    monkeypatch.setattr(export, "check_onnx", disagree)
    out = tmp_path / "a.onnx"
    assert run_pipeline.main(["export", str(fixtures_dir / "fixtureA_state.pt"), str(out)]) == 2
    assert "onnxruntime vs torch" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
