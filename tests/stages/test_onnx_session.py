"""stages/onnx_session.py: the provider chain per device and provider, and a missing provider falling back to
the CPU with one warning. The GPU tests run only where onnxruntime has the CUDA provider and a GPU."""

from __future__ import annotations

import logging

import onnxruntime as ort
import pytest
from pydantic import ValidationError

from stages import onnx_session as module
from stages.config import DetectConfig, EmbedConfig
from stages.detect import FaceDetector
from stages.embed import build_embedder
from stages.errors import ModelError
from stages.onnx_session import onnx_session, provider_chain
from tests.conftest import require
from tests.stages.conftest import MOBILEFACENET, SCRFD, YUNET

NO_CUDA = "CUDAExecutionProvider" not in ort.get_available_providers()
needs_cuda = pytest.mark.skipif(
    NO_CUDA, reason="this onnxruntime has no CUDA provider (onnxruntime-gpu and a GPU)"
)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(module, "_warned", set())


def test_cpu_session_runs_on_the_cpu_provider():
    session = onnx_session(require(SCRFD), 1, "cpu", "detector")
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_provider_chains():
    assert provider_chain("cpu") == ["CPUExecutionProvider"]
    assert provider_chain("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert provider_chain("cuda", "cuda") == provider_chain("cuda:0")
    trt, cuda, cpu = provider_chain("cuda:2", "tensorrt")
    assert trt[0] == "TensorrtExecutionProvider" and trt[1]["device_id"] == 2
    assert trt[1]["trt_engine_cache_enable"] and trt[1]["trt_engine_cache_path"].endswith("facemoe/tensorrt")
    assert cuda == ("CUDAExecutionProvider", {"device_id": 2}) and cpu == "CPUExecutionProvider"


@pytest.mark.parametrize(
    "device,provider,match",
    [
        ("mps", "auto", "onnxruntime models run on cpu or cuda"),
        ("cpu", "tensorrt", "provider tensorrt runs on a GPU: expected device cuda"),
        ("cuda", "rocm", "expected auto, cuda or tensorrt"),
    ],
)
def test_bad_device_or_provider_is_one_line(device, provider, match):
    with pytest.raises(ModelError, match=match):
        onnx_session(require(SCRFD), 1, device, "embedder", provider=provider)


class FakeSession:
    """Records the providers asked for; ``started`` is what onnxruntime reports it runs on."""

    started: list[str] | None = None

    def __init__(self, path, sess_options, providers):
        self.asked = providers
        self.started = FakeSession.started or [p if isinstance(p, str) else p[0] for p in providers]

    def get_providers(self):
        return self.started


def _fake_ort(monkeypatch, available, started=None):
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    monkeypatch.setattr(FakeSession, "started", started)


def test_tensorrt_chain_is_handed_to_onnxruntime(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _fake_ort(monkeypatch, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING):
        session = onnx_session(tmp_path / "m.onnx", 1, "cuda:1", "detector", provider="tensorrt")
    assert [p if isinstance(p, str) else p[0] for p in session.asked] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert session.asked[0][1]["trt_engine_cache_path"] == str(tmp_path / "facemoe" / "tensorrt")
    assert (tmp_path / "facemoe" / "tensorrt").is_dir() and not caplog.records


def test_tensorrt_missing_falls_back_to_cuda_with_one_warning(monkeypatch, tmp_path, caplog):
    _fake_ort(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            session = onnx_session(tmp_path / "m.onnx", 1, "cuda", "detector", provider="tensorrt")
    assert session.asked == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert len(caplog.records) == 1
    assert "no TensorrtExecutionProvider" in caplog.text and "runs on CUDAExecutionProvider" in caplog.text


def test_cuda_libraries_missing_at_start_is_one_warning(monkeypatch, tmp_path, caplog):
    _fake_ort(
        monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"], started=["CPUExecutionProvider"]
    )
    with caplog.at_level(logging.WARNING):
        onnx_session(tmp_path / "m.onnx", 1, "cuda", "embedder")
        onnx_session(tmp_path / "m.onnx", 1, "cuda", "embedder")
    assert len(caplog.records) == 1
    assert (
        "could not start CUDAExecutionProvider" in caplog.text
        and "runs on CPUExecutionProvider" in caplog.text
    )


@pytest.mark.skipif(not NO_CUDA, reason="this onnxruntime has the CUDA provider")
@pytest.mark.parametrize(
    "build",
    [
        lambda: FaceDetector(DetectConfig(model=str(require(SCRFD)), device="cuda"))._impl.session,
        lambda: (
            build_embedder(
                EmbedConfig(
                    backend="onnx", model=str(require(MOBILEFACENET)), device="cuda:1", provider="tensorrt"
                )
            ).session
        ),
    ],
)
def test_cuda_without_the_gpu_build_runs_on_the_cpu_with_one_warning(build, caplog):
    with caplog.at_level(logging.WARNING):
        session = build()
    assert session.get_providers() == ["CPUExecutionProvider"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "runs on CPUExecutionProvider" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "make",
    [
        lambda: DetectConfig(model="m.onnx", provider="tensorrt"),
        lambda: EmbedConfig(backend="onnx", model="m.onnx", provider="cuda"),
        lambda: EmbedConfig(backend="facemoe", checkpoint="briar", device="cuda", provider="tensorrt"),
    ],
)
def test_config_refuses_a_gpu_provider_off_the_gpu_or_for_facemoe(make):
    with pytest.raises(ValidationError, match="provider"):
        make()


@needs_cuda
def test_detector_and_embedder_run_on_the_cuda_provider():
    detector = FaceDetector(DetectConfig(model=str(require(SCRFD)), device="cuda"))
    embedder = build_embedder(EmbedConfig(backend="onnx", model=str(require(MOBILEFACENET)), device="cuda"))
    assert (
        detector._impl.session.get_providers()[0]
        == embedder.session.get_providers()[0]
        == "CUDAExecutionProvider"
    )


def test_yunet_stays_on_the_cpu():
    with pytest.raises(ModelError, match="YuNet runs on the CPU"):
        FaceDetector(DetectConfig(backend="yunet", model=str(require(YUNET)), device="cuda"))
