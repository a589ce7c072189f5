"""The camera decoder choice (``decode: auto|cpu|vaapi|cuda``) on this machine's real PyAV/FFmpeg: auto falls back
to the CPU with one log line per camera and still decodes a real RTSP stream; an explicit hardware decoder that is
not here is refused before anything starts (one line, exit 2)."""

from __future__ import annotations

import logging
import time

import pytest
from pydantic import ValidationError

from core.errors import ConfigError
from pipeline.live.cameras import LiveSource
from pipeline.live.config import CameraConfig, LiveConfig
from pipeline.live.decode import AUTO_ORDER, check_decoders, choose_decoder, hw_unavailable
from pipeline.live.health import CameraHealth
from run_pipeline import main
from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "test.yaml"
MISSING = [kind for kind in ("vaapi", "cuda") if hw_unavailable(kind) is not None]
NO_HARDWARE = len(MISSING) == len(AUTO_ORDER)


def test_cpu_is_always_cpu():
    choice = choose_decoder("cpu")
    assert (choice.kind, choice.hwaccel) == ("cpu", None)


@pytest.mark.skipif(not NO_HARDWARE, reason="a hardware decoder is available here")
def test_auto_falls_back_to_cpu_and_says_why():
    choice = choose_decoder("auto")
    assert choice.kind == "cpu" and choice.hwaccel is None
    assert all(f"{kind}: " in choice.why for kind in AUTO_ORDER), choice.why


@pytest.mark.parametrize("kind", MISSING or ["none-missing"])
def test_explicit_unavailable_hardware_is_refused(kind):
    if kind == "none-missing":
        pytest.skip("every hardware decoder is available here")
    with pytest.raises(ConfigError, match=rf"^decode: {kind} asked for, but .*use decode: auto or cpu$"):
        check_decoders(["cpu", kind])


def test_unknown_decoder_is_a_config_error():
    with pytest.raises(ValidationError):
        LiveConfig(decode="gpu")
    with pytest.raises(ValidationError):
        CameraConfig(name="a", url="rtsp://127.0.0.1/a", decode="nvdec")
    assert CameraConfig(name="a", url="rtsp://127.0.0.1/a").decode is None  # the section's default applies


@pytest.mark.skipif(not NO_HARDWARE, reason="a hardware decoder is available here")
def test_auto_camera_logs_its_cpu_decode_once_and_decodes(rtsp_server, stream_clip, caplog):
    rtsp_server.publish("cam", stream_clip)
    camera = CameraConfig(name="cam", url=rtsp_server.url("cam"))
    with caplog.at_level(logging.INFO, logger="pipeline.live.cameras"):
        source = LiveSource(
            camera, LiveConfig(transport="udp", read_timeout_s=3.0), CameraHealth("cam")
        ).start()
        try:
            deadline, frame = time.monotonic() + 20, None
            while frame is None and time.monotonic() < deadline:
                frame = source.read()
                time.sleep(0.05)
        finally:
            source.stop()
            assert source.join(10)
    assert frame is not None and frame.image.shape == (360, 640, 3)
    lines = [r.getMessage() for r in caplog.records if "decode (" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("camera cam: cpu decode (auto: no hardware decoder"), lines


@pytest.mark.parametrize("where", ["section", "camera"])
def test_stream_with_unavailable_hardware_decode_is_one_line_exit_2(where, tmp_path, capsys, monkeypatch):
    if "vaapi" not in MISSING:
        pytest.skip("VAAPI decode is available here")
    live = tmp_path / "live.yaml"
    live.write_text("decode: vaapi\n" if where == "section" else "decode: cpu\n")
    cameras = tmp_path / "cameras.yaml"
    extra = ", decode: vaapi" if where == "camera" else ""
    cameras.write_text(f"cameras: [{{name: a, url: 'rtsp://127.0.0.1:9/a'{extra}}}]\n")
    monkeypatch.chdir(ROOT)
    argv = ["stream", "--cameras", str(cameras), "--live-config", str(live), "--gallery", str(tmp_path / "g")]
    assert main(argv + ["--config", str(CONFIG)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: decode: vaapi asked for, but ") and "\n" not in err, err


@pytest.mark.parametrize(
    "present, expected", [({"cuda", "vaapi"}, "cuda"), ({"vaapi"}, "vaapi"), (set(), "cpu")]
)
def test_auto_takes_nvdec_then_vaapi_then_cpu(present, expected, monkeypatch):
    import pipeline.live.decode as decode

    monkeypatch.setattr(decode, "hw_unavailable", lambda kind: None if kind in present else "absent")
    choice = decode.choose_decoder("auto")
    assert choice.kind == expected
    assert (choice.hwaccel is None) == (expected == "cpu")
    if choice.hwaccel is not None:
        assert choice.hwaccel.allow_software_fallback  # a stream the device cannot take is still decoded
    assert decode.choose_decoder("cpu").hwaccel is None
