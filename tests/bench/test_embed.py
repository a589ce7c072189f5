"""bench/embed.py runs end to end on the fixture-sized model and on an official-format checkpoint."""

from __future__ import annotations

from tests.bench.conftest import load_bench


def test_embed_bench_on_a_checkpoint_prints_every_engine(fixtures_dir, capsys):
    argv = [
        "--checkpoint",
        str(fixtures_dir / "fixtureA_state.pt"),
        "--batches",
        "1,2",
        "--repeats",
        "1",
        "--no-onnx",
    ]
    assert load_bench("embed").main(argv) == 0
    out = capsys.readouterr().out
    assert "variant: checkpoint" in out and "fixtureA_state.pt" in out
    header = next(line for line in out.splitlines() if line.startswith("| batch"))
    for column in (
        "model crops/s",
        "nn.Linear crops/s",
        "reference crops/s",
        "ratio (median)",
        "int8 speed-up",
    ):
        assert column in header
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2


def test_embed_bench_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert load_bench("embed").main(["--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: checkpoint not found")
