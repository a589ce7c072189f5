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
        "model / ref (median)",
        "int8 crops/s",
        "int8 / ref (median)",
    ):
        assert column in header
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2
    # a checkpoint brings the int8 report: routing agreement and sensitivity for each of the six blocks
    blocks = [line for line in out.splitlines() if line.startswith("| layers.")]
    assert [line.split(" | ")[0] for line in blocks] == [
        f"| layers.{s}.blocks.{b}" for s in range(3) for b in range(2)
    ]
    assert all(0.0 <= float(cell) <= 1.0 for line in blocks for cell in line.strip("| ").split(" | ")[1:])
    assert "routing equal to fp32: mean" in out and "suggested fp32-kept set for cosine >= 0.999" in out


def test_embed_bench_int8_report_suggests_a_kept_set(fixtures_dir, capsys):
    argv = ["--checkpoint", str(fixtures_dir / "fixtureA_perturbed_state.pt"), "--batches", "2"]
    argv += ["--repeats", "1", "--no-onnx", "--no-bf16", "--int8-target", "1.5", "--int8-max-keep", "2"]
    assert load_bench("embed").main(argv) == 0
    out = capsys.readouterr().out
    kept = [line.split()[1] for line in out.splitlines() if line.startswith("  keep ")]
    assert len(kept) == 2 and all(name.endswith((".attn", ".mlp")) for name in kept)
    assert "(target 1.5 not reached within 2 groups)" in out
    assert f"embed.int8_fp32_layers: [{', '.join(kept)}]" in out


def test_the_reference_is_the_official_forward_on_the_same_weights(fixtures_dir):
    """The reference reproduces the official fixtures: same operations on the same weights."""
    import torch

    from bench.embed_reference import reference_copy
    from facemoe.checkpoint import load_model

    for name in ("A_perturbed", "C_perturbed"):
        model = load_model(fixtures_dir / f"fixture{name}_state.pt")
        x = torch.load(fixtures_dir / f"fixture{name[0]}_input.pt")
        with torch.inference_mode():
            out = reference_copy(model)(x)
        torch.testing.assert_close(
            out, torch.load(fixtures_dir / f"fixture{name}_eval_out.pt"), atol=1e-5, rtol=0
        )


def test_embed_bench_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert load_bench("embed").main(["--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: checkpoint not found")
