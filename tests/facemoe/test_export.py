"""ONNX export: dynamic batch, top-k routing in the graph, onnxruntime within 1e-4 of torch."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from facemoe.export import INPUT_NAME, OUTPUT_NAME, ExportError, check_onnx, export_onnx, onnx_session
from facemoe.model import create_facemoe

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SMALL = dict(embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 4], drop_path_rate=0.0)


@pytest.fixture(scope="module")
def fixture_a(fixtures_dir):
    model = create_facemoe(**SMALL, num_experts=3, k=2)
    model.load_state_dict(torch.load(fixtures_dir / "fixtureA_perturbed_state.pt"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def exported(fixture_a, tmp_path_factory):
    path = export_onnx(fixture_a, tmp_path_factory.mktemp("onnx") / "facemoe.onnx")
    return path, onnx_session(path, threads=1)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_onnxruntime_matches_torch(fixture_a, exported, batch):
    assert check_onnx(fixture_a, exported[1], batch_sizes=(batch,), atol=1e-4, seed=batch) <= 1e-4


def test_official_fixture_output_through_onnx(fixture_a, exported, fixtures_dir):
    x = torch.load(fixtures_dir / "fixtureA_input.pt")
    expected = torch.load(fixtures_dir / "fixtureA_perturbed_eval_out.pt").numpy()
    got = exported[1].run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_graph_routes_sparsely_with_dynamic_batch(exported):
    import onnx

    graph = onnx.load(str(exported[0])).graph
    ops = {node.op_type for node in graph.node}
    assert {"TopK", "NonZero", "ScatterElements"} <= ops
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_dense_model_exports(tmp_path):
    torch.manual_seed(0)
    model = create_facemoe(**SMALL, use_moe=False).eval()
    session = onnx_session(export_onnx(model, tmp_path / "dense.onnx", batch=2))
    assert check_onnx(model, session, batch_sizes=(2,)) <= 1e-4


def test_export_keeps_training_mode(tmp_path):
    model = create_facemoe(**SMALL).train()
    export_onnx(model, tmp_path / "m.onnx", batch=2)
    assert model.training


@pytest.mark.parametrize("kwargs,match", [(dict(opset=13), "opset"), (dict(batch=0), "batch")])
def test_bad_arguments_are_refused(tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match):
        export_onnx(create_facemoe(**SMALL), tmp_path / "m.onnx", **kwargs)


def test_missing_onnx_says_what_to_install(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ExportError, match="pip install onnx"):
        export_onnx(create_facemoe(**SMALL), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
