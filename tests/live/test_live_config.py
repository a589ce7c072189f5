"""The live configuration section and the cameras file."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.errors import ConfigError
from pipeline.live_config import (
    AlertConfig,
    CameraConfig,
    LiveConfig,
    ReconnectConfig,
    WebhookConfig,
    camera_name_from_url,
    cameras_from_urls,
    load_cameras,
)


def test_defaults_bind_metrics_to_loopback_and_reconnect_forever():
    cfg = LiveConfig()
    assert cfg.health.metrics_host == "127.0.0.1" and cfg.reconnect.max_attempts is None
    assert cfg.buffer_frames == 1 and cfg.transport == "tcp"


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"transport": "http"}, "transport"),
        ({"read_timeout_s": 0}, "read_timeout_s"),
        ({"bogus": 1}, "bogus"),
        ({"reconnect": {"initial_s": 5, "max_s": 1}}, "max_s must be >= initial_s"),
        ({"cameras": [{"name": "a", "url": "rtsp://x/1"}, {"name": "a", "url": "rtsp://x/2"}]}, "unique"),
        ({"cameras": [{"name": "bad name", "url": "rtsp://x/1"}]}, "name"),
        ({"alerts": {"webhooks": [{"url": "ftp://x"}]}}, "url"),
    ],
)
def test_bad_values_are_refused(kw, fragment):
    with pytest.raises(ValidationError, match=fragment):
        LiveConfig(**kw)


@pytest.mark.parametrize(
    "url, index, name",
    [
        ("rtsp://127.0.0.1:8554/lobby", 0, "cam0-lobby"),
        ("rtsp://127.0.0.2/stream?channel=1", 3, "cam3-stream"),
        ("rtsp://127.0.0.1:8554", 1, "cam1"),
        ("rtsp://h/a b", 2, "cam2-a_b"),
    ],
)
def test_names_from_urls(url, index, name):
    assert camera_name_from_url(url, index) == name
    CameraConfig(name=name, url=url)


def test_cameras_from_urls_are_numbered_in_order():
    assert [c.name for c in cameras_from_urls(["rtsp://h/a", "rtsp://h/a"])] == ["cam0-a", "cam1-a"]


def test_load_cameras(tmp_path):
    path = tmp_path / "cameras.yaml"
    path.write_text(
        "cameras:\n  - {name: gate, url: 'rtsp://127.0.0.1/gate', transport: udp}\n"
        "  - {name: lobby, url: 'rtsp://127.0.0.1/lobby', read_timeout_s: 2}\n"
    )
    cams = load_cameras(path)
    assert [(c.name, c.transport, c.read_timeout_s) for c in cams] == [
        ("gate", "udp", None),
        ("lobby", None, 2.0),
    ]


@pytest.mark.parametrize(
    "text, fragment",
    [
        (None, "not found"),
        ("cameras: [", "not valid YAML"),
        ("- a\n", "expected a mapping"),
        ("cameras: []\n", "at least one camera"),
        ("cameras:\n  - {name: a}\n", "cameras.0.url"),
        ("cameras:\n  - {name: a, url: 'rtsp://h/a', fps: 3}\n", "cameras.0.fps"),
    ],
)
def test_bad_cameras_files_raise_one_line(tmp_path, text, fragment):
    path = tmp_path / "cameras.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_cameras(path)
    assert "\n" not in str(info.value)


def test_reconnect_max_attempts_bounds():
    with pytest.raises(ValidationError):
        ReconnectConfig(max_attempts=0)


@pytest.mark.parametrize(
    "url, index, name",
    [
        ("rtsp://op:PASS@127.0.0.1/lobby", 0, "cam0-lobby"),
        ("rtsp://h/user=admin;password=PASS", 1, "cam1-user_admin_password_"),
        ("rtsp://h/cam?token=PASS", 2, "cam2-cam"),
    ],
)
def test_names_from_urls_never_carry_a_secret(url, index, name):
    got = camera_name_from_url(url, index)
    assert got == name and "PASS" not in got


def test_camera_password_env_is_read_at_open_time_only(monkeypatch):
    cam = CameraConfig(name="door", url="rtsp://op@127.0.0.1/a", password_env="FACEMOE_CAM_PW")
    monkeypatch.delenv("FACEMOE_CAM_PW", raising=False)
    with pytest.raises(ConfigError, match="FACEMOE_CAM_PW"):
        cam.open_url()
    monkeypatch.setenv("FACEMOE_CAM_PW", "hunter22")
    assert cam.open_url() == "rtsp://op:hunter22@127.0.0.1/a"
    assert "hunter22" not in repr(cam) + cam.model_dump_json() + cam.display_url


def test_urls_are_shown_redacted_and_left_out_of_repr():
    cam = CameraConfig(name="door", url="rtsp://op:PASS@h/a")
    hook = WebhookConfig(url="https://h/hook?token=TOK")
    assert cam.display_url == "rtsp://op:***@h/a" and hook.display_url == "https://h/hook?token=***"
    assert "PASS" not in repr(cam) and "TOK" not in repr(hook)


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"name": "a", "url": "rtsp://h/a", "password_env": "PW"}, "needs a user name"),
        ({"name": "a", "url": "rtsp://u@h/a", "password_env": "bad name"}, "password_env"),
    ],
)
def test_bad_password_env_is_refused(kw, fragment):
    with pytest.raises(ValidationError, match=fragment):
        CameraConfig(**kw)


def test_webhook_auth_header_from_the_environment(monkeypatch):
    hook = WebhookConfig(url="https://h/hook", auth_header_env="FACEMOE_HOOK_AUTH", auth_header="X-Auth")
    monkeypatch.delenv("FACEMOE_HOOK_AUTH", raising=False)
    with pytest.raises(ConfigError, match="FACEMOE_HOOK_AUTH"):
        hook.headers()
    monkeypatch.setenv("FACEMOE_HOOK_AUTH", "Bearer xyz-123")
    assert hook.headers() == {"X-Auth": "Bearer xyz-123"}
    assert WebhookConfig(url="https://h/hook").headers() == {}


@pytest.mark.parametrize("value", [-1, 3601])
def test_alert_shutdown_timeout_is_bounded(value):
    assert AlertConfig().shutdown_timeout_s == 10.0
    with pytest.raises(ValidationError, match="shutdown_timeout_s"):
        AlertConfig(shutdown_timeout_s=value)
