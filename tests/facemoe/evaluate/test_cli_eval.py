"""The ``eval`` command with a (small, untrained) FaceMoE checkpoint: runs end to end, errors in one line."""

from __future__ import annotations

import argparse
import csv
import json

import pytest
import torch

import run_pipeline
from core.config import load
from facemoe import cli
from facemoe.checkpoint import save_checkpoint
from facemoe.evaluate.config import EvalConfig
from facemoe.model import create_facemoe
from tests.conftest import ASSETS, ROOT, require

LFW_BIN = ASSETS / "images" / "lfw_aligned_pairs" / "small_lfw.bin"


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_facemoe(embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 4], num_experts=3, k=2)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model.pt")


def test_eval_verification_small_lfw(small_checkpoint, tmp_path, capsys):
    argv = [
        "eval",
        "verification",
        "--bin",
        str(require(LFW_BIN)),
        "--checkpoint",
        str(small_checkpoint),
        "--out",
        str(tmp_path),
        "--format",
        "json",
        "--set",
        "verification.folds=5",
    ]
    assert run_pipeline.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "verification.json").read_text())
    assert printed == saved
    assert saved["counts"] == {"pairs": 10, "genuine": 10, "impostor": 0}
    assert saved["metrics"]["accuracy"] == 1.0 and -1 <= saved["metrics"]["genuine_mean_cosine"] <= 1


def test_eval_tinyface_with_config_file(small_checkpoint, aligned_photos, tmp_path, capsys):
    rows = [("image", "subject", "set")]
    seen = set()
    for path, subject in aligned_photos.values():
        rows.append((str(path), subject, "probe" if subject in seen else "gallery"))
        seen.add(subject)
    with (tmp_path / "list.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"embedder:\n  checkpoint: {small_checkpoint}\n  batch_size: 16\ntinyface:\n  ranks: [1, 3]\n"
    )
    argv = [
        "eval",
        "tinyface",
        "--list",
        str(tmp_path / "list.csv"),
        "--root",
        "/",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "out"),
    ]
    assert run_pipeline.main(argv) == 0
    table = capsys.readouterr().out
    assert "rank-1" in table and "rank-3" in table and "probes" in table
    assert (tmp_path / "out" / "tinyface.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["verification", "--bin", "missing.bin"], "pair set not found: missing.bin"),
        (["tinyface", "--list", "LIST"], "names 1 image(s) that do not exist"),
        (
            ["verification", "--bin", "x", "--set", "verification.fold=3"],
            "unknown config key verification.fold",
        ),
        (
            ["briar", "--probes", "LIST", "--gallery", "LIST", "--gallery", "LIST"],
            "briar expects one --gallery",
        ),
    ],
)
def test_eval_bad_input_one_line(small_checkpoint, tmp_path, capsys, argv_tail, message):
    lst = tmp_path / "list.csv"
    lst.write_text("image,subject,set\nghost.png,a,probe\n")
    argv = [
        "eval",
        *[str(lst) if a == "LIST" else a for a in argv_tail],
        "--checkpoint",
        str(small_checkpoint),
    ]
    assert run_pipeline.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_register_returns_the_protocol_subparsers_for_the_application():
    parser = argparse.ArgumentParser()
    protocols = cli.register(parser.add_subparsers(dest="command", required=True))
    assert cli.PROTOCOLS == ("verification", "tinyface", "ijbs", "briar")
    assert sorted(protocols.choices) == sorted(cli.PROTOCOLS)  # video is the application's
    extra = protocols.add_parser("video")
    extra.set_defaults(func="the application's")
    assert parser.parse_args(["eval", "video"]).func == "the application's"
    assert parser.parse_args(["eval", "verification", "--bin", "x"]).func is not None


def test_shipped_eval_config_is_the_defaults():
    assert load(ROOT / "configs" / "eval.yaml", EvalConfig) == EvalConfig()
