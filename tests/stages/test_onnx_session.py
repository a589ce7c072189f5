"""stages/onnx_session.py: CPU sessions, and a CUDA request refused in one line where onnxruntime has no GPU."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from stages.config import DetectConfig, EmbedConfig
from stages.detect import FaceDetector
from stages.embed import build_embedder
from stages.errors import ModelError
from stages.onnx_session import onnx_session
from tests.conftest import require
from tests.stages.conftest import MOBILEFACENET, SCRFD, YUNET

NO_CUDA = "CUDAExecutionProvider" not in ort.get_available_providers()


def test_cpu_session_runs_on_the_cpu_provider():
    session = onnx_session(require(SCRFD), 1, "cpu", "detector")
    assert session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.skipif(not NO_CUDA, reason="this onnxruntime has the CUDA provider")
@pytest.mark.parametrize(
    "build",
    [
        lambda: FaceDetector(DetectConfig(model=str(require(SCRFD)), device="cuda")),
        lambda: build_embedder(
            EmbedConfig(backend="onnx", model=str(require(MOBILEFACENET)), device="cuda:1")
        ),
    ],
)
def test_cuda_without_the_gpu_build_is_one_line(build):
    with pytest.raises(
        ModelError,
        match=r"expected onnxruntime with the CUDA provider, got providers .*"
        r"\(replace onnxruntime by onnxruntime-gpu\)",
    ):
        build()


def test_mps_is_not_an_onnxruntime_device():
    with pytest.raises(ModelError, match="onnxruntime models run on cpu or cuda"):
        onnx_session(require(SCRFD), 1, "mps", "embedder")


def test_yunet_stays_on_the_cpu():
    with pytest.raises(ModelError, match="YuNet runs on the CPU"):
        FaceDetector(DetectConfig(backend="yunet", model=str(require(YUNET)), device="cuda"))
