"""The live configuration section and the cameras file."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.errors import ConfigError
from pipeline.live.config import (
    AlertConfig,
    CameraConfig,
    LiveConfig,
    ReconnectConfig,
    WebhookConfig,
    load_cameras,
    name_cameras,
    url_names,
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


def named(*urls: str, **given: str) -> list[str]:
    """Names of cameras at ``urls`` (unnamed) and ``given`` (name=url)."""
    cams = [CameraConfig(url=u) for u in urls] + [CameraConfig(name=n, url=u) for n, u in given.items()]
    return [c.name for c in name_cameras(cams)]


@pytest.mark.parametrize(
    "url, names",
    [
        ("rtsp://127.0.0.1:8554/lobby", ["lobby", "127.0.0.1_8554-lobby"]),
        (
            "rtsp://10.0.0.5/Streaming/Channels/101",
            ["Streaming-Channels-101", "10.0.0.5-Streaming-Channels-101"],
        ),
        (
            "rtsp://nvr/cam/realmonitor?channel=1",
            ["cam-realmonitor", "nvr-cam-realmonitor", "nvr-cam-realmonitor-channel_1"],
        ),
        ("rtsp://127.0.0.1:8554", ["127.0.0.1_8554"]),
        ("rtsp://h/a b/", ["a_b", "h-a_b"]),
        ("rtsp://h/" + "x" * 100, ["x" * 64, "h-" + "x" * 62]),
    ],
)
def test_names_from_urls(url, names):
    assert url_names(url) == names
    for name in names:
        CameraConfig(name=name, url=url)  # every one is a valid name


@pytest.mark.parametrize(
    "urls, names",
    [
        (["rtsp://h/gate", "rtsp://h/lobby"], ["gate", "lobby"]),
        (["rtsp://h1/gate", "rtsp://h2/gate", "rtsp://h1/lobby"], ["h1-gate", "h2-gate", "lobby"]),
        (["rtsp://h:1/gate", "rtsp://h:2/gate"], ["h_1-gate", "h_2-gate"]),
        (["rtsp://nvr/live?ch=1", "rtsp://nvr/live?ch=2"], ["nvr-live-ch_1", "nvr-live-ch_2"]),
        (["rtsp://nvr/live", "rtsp://nvr/live?ch=2"], ["nvr-live", "nvr-live-ch_2"]),
    ],
)
def test_names_do_not_depend_on_the_order(urls, names):
    assert named(*urls) == names
    assert named(*reversed(urls)) == list(
        reversed(names)
    )  # a camera keeps its name when the list is reordered


def test_given_names_win_and_derived_ones_step_aside():
    assert named("rtsp://h/x", "rtsp://b/gate", gate="rtsp://a/door") == ["x", "b-gate", "gate"]


@pytest.mark.parametrize(
    "urls, given, dup",
    [
        (["rtsp://h/a", "rtsp://h/a"], {}, "h-a"),
        (["rtsp://h/a", "rtsp://op:PASS@h/a"], {}, "h-a"),
        (["rtsp://h/a"], {"h-a": "rtsp://x/1", "a": "rtsp://x/2"}, "h-a"),
    ],
)
def test_cameras_left_with_one_name_are_refused(urls, given, dup):
    with pytest.raises(ConfigError, match=rf"duplicates \['{dup}'\]") as info:
        named(*urls, **given)
    assert "\n" not in str(info.value) and "PASS" not in str(info.value)


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


def test_cameras_without_names_are_named_from_their_urls(tmp_path):
    path = tmp_path / "cameras.yaml"
    path.write_text(
        "cameras:\n  - {url: 'rtsp://127.0.0.1/gate'}\n  - {name: lobby, url: 'rtsp://127.0.0.1/x'}\n"
    )
    cams = load_cameras(path)
    assert [c.name for c in cams] == [None, "lobby"]
    assert [c.name for c in name_cameras(cams)] == ["gate", "lobby"]


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
    "url, name",
    [
        ("rtsp://op:PASS@127.0.0.1/lobby", "lobby"),
        ("rtsp://h/user=admin;password=PASS", "user_admin_password"),
        ("rtsp://h/cam?token=PASS", "cam"),
    ],
)
def test_names_from_urls_never_carry_a_secret(url, name):
    names = url_names(url)
    assert names[0] == name and not any("PASS" in n for n in names)


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
