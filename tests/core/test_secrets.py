"""core.secrets: URL and text redaction, secrets read from the environment, the redacting log filter."""

from __future__ import annotations

import logging

import pytest

from core.errors import ConfigError
from core.secrets import RedactingFilter, env_secret, redact_text, redact_url, url_with_password


@pytest.mark.parametrize(
    "url, expected",
    [
        ("rtsp://op:PASS@10.0.0.1:554/cam", "rtsp://op:***@10.0.0.1:554/cam"),
        ("rtsp://op:p@ss@host/a", "rtsp://op:***@host/a"),  # an unencoded @ in the password
        ("rtsp://op:a:b@host/a", "rtsp://op:***@host/a"),
        ("rtsp://op@host/a", "rtsp://op@host/a"),  # a user alone is no secret
        ("rtsp://host/a", "rtsp://host/a"),
        ("http://h/hook?token=T&x=1", "http://h/hook?token=***&x=1"),
        ("http://h/hook?access_token=T;sig=S", "http://h/hook?access_token=***;sig=***"),
        (
            "https://h/p?api_key=K&X-Amz-Signature=S&page=2",
            "https://h/p?api_key=***&X-Amz-Signature=***&page=2",
        ),
        ("rtsp://h/user=admin;password=xx/ch1", "rtsp://h/user=admin;password=***/ch1"),
        ("http://u:pw@h/?key=k#frag", "http://u:***@h/?key=***#frag"),
        ("http://h/a?token=", "http://h/a?token="),  # nothing to hide: unchanged
        ("rtsp://h/a?", "rtsp://h/a?"),  # kept exactly as given when nothing is secret
        ("/data/videos/clip.mp4", "/data/videos/clip.mp4"),
        ("clip token=abc.mp4", "clip token=***"),
        ("", ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent


def test_redact_url_refuses_a_non_string():
    with pytest.raises(TypeError, match="expected a URL string, got int"):
        redact_url(5)


def test_redact_text_masks_urls_in_free_text():
    text = "Connection refused: 'rtsp://op:PASS@h:554/a' (retry http://x/hook?token=TOK)"
    clean = redact_text(text)
    assert "PASS" not in clean and "TOK" not in clean
    assert "rtsp://op:***@h:554/a" in clean and "http://x/hook?token=***" in clean


def test_env_secret_is_read_and_then_masked_everywhere(monkeypatch):
    monkeypatch.setenv("FACEMOE_TEST_SECRET", "Bearer s3cr3t-value")
    assert env_secret("FACEMOE_TEST_SECRET", "webhook") == "Bearer s3cr3t-value"
    assert redact_text("header was Bearer s3cr3t-value!") == "header was ***!"


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("FACEMOE_UNSET_VAR", "unset or empty"),
        ("FACEMOE_EMPTY_VAR", "unset or empty"),
        ("1bad", "variable name"),
    ],
)
def test_env_secret_missing_is_one_line(name, fragment, monkeypatch):
    monkeypatch.delenv("FACEMOE_UNSET_VAR", raising=False)
    monkeypatch.setenv("FACEMOE_EMPTY_VAR", "")
    with pytest.raises(ConfigError, match=fragment) as info:
        env_secret(name, "camera door password_env")
    assert "\n" not in str(info.value) and "camera door" in str(info.value)


def test_url_with_password(monkeypatch):
    monkeypatch.setenv("CAM_PW", "p@ss:w/rd")
    assert url_with_password("rtsp://op@h:554/a", None) == "rtsp://op@h:554/a"
    assert url_with_password("rtsp://op@h:554/a", "CAM_PW") == "rtsp://op:p%40ss%3Aw%2Frd@h:554/a"
    assert url_with_password("rtsp://op:old@h/a", "CAM_PW") == "rtsp://op:p%40ss%3Aw%2Frd@h/a"
    assert "p%40ss" not in redact_text(url_with_password("rtsp://op@h/a", "CAM_PW"))
    for url in ("rtsp://h/a", "rtsp://:x@h/a"):
        with pytest.raises(ConfigError, match="needs a user name"):
            url_with_password(url, "CAM_PW")


def test_redacting_filter_rewrites_records(caplog):
    log = logging.getLogger("tests.core.redact")
    log.addFilter(RedactingFilter())
    with caplog.at_level(logging.DEBUG, logger="tests.core.redact"):
        log.info("POST %s -> %d", "http://h/hook?token=LEAK", 200)
        log.info("plain %s", "text")
    assert "LEAK" not in caplog.text and "http://h/hook?token=*** -> 200" in caplog.text
    assert "plain text" in caplog.text
