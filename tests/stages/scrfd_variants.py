"""Re-exports of a real SCRFD model (``onnx`` graph surgery) in the layouts insightface reads and in broken ones, so
that layouts not shipped as files are tested on real weights.

Every function takes the path of a real SCRFD model with 9 outputs ``[B, N, C]`` (scrfd_500m_bnkps.onnx) or
``[N, C]`` (scrfd_2.5g_bnkps.onnx), ordered scores, boxes, landmarks, and writes a new model to ``out``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Nodes = Callable[[str, str], list[onnx.NodeProto]]


def _load(src: Path) -> onnx.ModelProto:
    return onnx.load(str(src))


def _save(model: onnx.ModelProto, out: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def _set_shape(value: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d


def _wrap(model: onnx.ModelProto, index: int, nodes: Nodes) -> None:
    """Output ``index`` computed by ``nodes(raw, name)`` from what the graph computed as it before."""
    name = model.graph.output[index].name
    raw = f"{name}_before"
    for node in model.graph.node:
        node.output[:] = [raw if o == name else o for o in node.output]
        node.input[:] = [raw if i == name else i for i in node.input]
    model.graph.node.extend(nodes(raw, name))


def _widths(count: int = 9) -> list[int]:
    per = count // 3
    return [1] * per + [4] * per + [10] * per


def without_batch_axis(src: Path, out: Path) -> Path:
    """Outputs ``[B, N, C]`` squeezed to ``[N, C]`` (the insightface model zoo layout)."""
    model = _load(src)
    for i, width in enumerate(_widths()):
        _wrap(model, i, lambda raw, name: [helper.make_node("Squeeze", [raw], [name], axes=[0])])
        _set_shape(model.graph.output[i], ["anchors", width])
    return _save(model, out)


def with_batch_axis(src: Path, out: Path, outputs: list[int] | None = None) -> Path:
    """Outputs ``[N, C]`` (those of ``outputs``, default all) given a batch axis: ``[1, N, C]``."""
    model = _load(src)
    for i, width in enumerate(_widths()):
        if outputs is not None and i not in outputs:
            continue
        _wrap(model, i, lambda raw, name: [helper.make_node("Unsqueeze", [raw], [name], axes=[0])])
        _set_shape(model.graph.output[i], [1, "anchors", width])
    return _save(model, out)


def fixed_input(src: Path, out: Path, size: tuple[int, int] = (640, 640), batch: int | str = "batch") -> Path:
    """The input fixed at ``size=(w, h)`` (and ``batch``)."""
    model = _load(src)
    w, h = size
    _set_shape(model.graph.input[0], [batch, 3, h, w])
    return _save(model, out)


def scaled_scores(src: Path, out: Path, factor: float) -> Path:
    """Every score output multiplied by ``factor`` (0: a detector that sees nothing)."""
    model = _load(src)
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "score_factor"))
    for i in range(3):
        _wrap(model, i, lambda raw, name: [helper.make_node("Mul", [raw, "score_factor"], [name])])
    return _save(model, out)


def kept_outputs(src: Path, out: Path, keep: list[int]) -> Path:
    """Only the outputs ``keep``, in that order (fewer outputs, another order)."""
    model = _load(src)
    outputs = [model.graph.output[i] for i in keep]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return _save(model, out)


def halved_first_scores(src: Path, out: Path) -> Path:
    """The stride-8 score output cut to its first half: it no longer fits its grid."""
    model = _load(src)
    axis = len(model.graph.output[0].type.tensor_type.shape.dim) - 2
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([2], np.int64), "two"),
            numpy_helper.from_array(np.array([axis], np.int64), "anchor_axis"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
        ]
    )

    def half(raw: str, name: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node("Shape", [raw], [f"{name}_shape"]),
            helper.make_node("Gather", [f"{name}_shape", "anchor_axis"], [f"{name}_n"], axis=0),
            helper.make_node("Div", [f"{name}_n", "two"], [f"{name}_half"]),
            helper.make_node("Slice", [raw, "zero", f"{name}_half", "anchor_axis"], [name]),
        ]

    _wrap(model, 0, half)
    return _save(model, out)


def five_strides(src: Path, out: Path) -> Path:
    """A 15-output model (strides 8 to 128, one anchor per location, insightface's other SCRFD layout) from a
    batched 9-output one: strides 8, 16 and 32 keep their first anchor only; strides 64 and 128 are added, scoring
    0 everywhere (their grids from average pools of the input)."""
    model = _load(src)
    graph = model.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0, -1, 1], np.int64), "one_column"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([2], np.int64), "anchor_axis"),
            numpy_helper.from_array(np.array(0.0, np.float32), "nothing"),
        ]
    )
    old = [o.name for o in graph.output]
    for i, width in enumerate(_widths()):
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([0, -1, 2, width], np.int64), f"per_anchor_{i}"),
                numpy_helper.from_array(np.array([0, -1, width], np.int64), f"flat_{i}"),
            ]
        )

        def first_anchor(raw: str, name: str, i: int = i) -> list[onnx.NodeProto]:
            return [
                helper.make_node("Reshape", [raw, f"per_anchor_{i}"], [f"{name}_anchors"]),
                helper.make_node(
                    "Slice", [f"{name}_anchors", "zero", "one", "anchor_axis"], [f"{name}_first"]
                ),
                helper.make_node("Reshape", [f"{name}_first", f"flat_{i}"], [name]),
            ]

        _wrap(model, i, first_anchor)
    image = graph.input[0].name
    added: dict[int, list[str]] = {}
    for stride in (64, 128):
        pooled = f"pool_{stride}"
        graph.node.extend(
            [
                helper.make_node(
                    "AveragePool", [image], [pooled], kernel_shape=[stride] * 2, strides=[stride] * 2
                ),
                helper.make_node("ReduceMean", [pooled], [f"{pooled}_mean"], axes=[1], keepdims=1),
                helper.make_node("Mul", [f"{pooled}_mean", "nothing"], [f"{pooled}_zero"]),
                helper.make_node("Transpose", [f"{pooled}_zero"], [f"{pooled}_hwc"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"{pooled}_hwc", "one_column"], [f"score_{stride}"]),
                helper.make_node("Concat", [f"score_{stride}"] * 4, [f"bbox_{stride}"], axis=2),
                helper.make_node("Concat", [f"score_{stride}"] * 10, [f"kps_{stride}"], axis=2),
            ]
        )
        added[stride] = [f"score_{stride}", f"bbox_{stride}", f"kps_{stride}"]
    outputs = []
    for kind, width in enumerate((1, 4, 10)):
        names = old[3 * kind : 3 * kind + 3] + [added[64][kind], added[128][kind]]
        outputs += [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "anchors", width]) for n in names
        ]
    del graph.output[:]
    graph.output.extend(outputs)
    return _save(model, out)
