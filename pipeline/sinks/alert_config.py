"""Configuration of watchlist alerts (the ``live.alerts`` section): the watchlist, webhooks, an MQTT broker, the
web app's address the alerts link to, the camera zones that limit them, delivery queue and shutdown deadline.
Secrets stay out of the files: a webhook's ``auth_header_env`` and the broker's ``password_env`` name environment
variables read when delivery starts (``core.secrets``); webhook URLs are shown redacted (``display_url``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from core.config import Section
from core.secrets import ENV_NAME_PATTERN, env_secret, redact_url
from stages.zones import MAX_ZONES

__all__ = ["AlertConfig", "MqttConfig", "WebhookConfig"]


class WebhookConfig(Section):
    url: str = Field(
        ...,
        pattern=r"^https?://",
        max_length=2000,
        repr=False,
        description="endpoint receiving a JSON POST (a token in it is shown as ***)",
    )
    auth_header_env: str | None = Field(
        None,
        pattern=ENV_NAME_PATTERN,
        description="environment variable holding the auth header's value (e.g. 'Bearer xyz'), read when the "
        "webhook starts, never logged; null = no auth header",
    )
    auth_header: str = Field(
        "Authorization",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="name of the header carrying the value of auth_header_env",
    )
    timeout_s: float = Field(5.0, gt=0, le=120, description="per-request limit (s)")
    retries: int = Field(3, ge=0, le=100, description="extra attempts after a failed POST")
    backoff_s: float = Field(
        0.5, ge=0, le=600, description="wait before the first retry, doubled each time (s)"
    )

    @property
    def display_url(self) -> str:
        """The URL as logs show it: tokens and password as ``***``."""
        return redact_url(self.url)

    def headers(self) -> dict[str, str]:
        """Extra request headers: the auth header read from ``auth_header_env`` now; ConfigError when unset."""
        if self.auth_header_env is None:
            return {}
        return {
            self.auth_header: env_secret(self.auth_header_env, f"webhook {self.display_url} auth_header_env")
        }


class MqttConfig(Section):
    host: str = Field(..., pattern=r"^[0-9A-Za-z.:-]{1,255}$", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is the usual one with TLS)")
    topic_prefix: str = Field(
        "facemoe",
        min_length=1,
        max_length=200,
        description="alerts go to <topic_prefix>/<camera>/<identity>; no '+', '#', NUL, nor a '/' at either end",
    )
    username: str | None = Field(None, min_length=1, max_length=200, description="null = no login")
    password_env: str | None = Field(
        None,
        pattern=ENV_NAME_PATTERN,
        description="environment variable holding the password, read when the publisher starts, never logged",
    )
    qos: int = Field(1, ge=0, le=2, description="MQTT quality of service of each alert")
    retain: bool = Field(False, description="the broker keeps each topic's last alert for new subscribers")
    tls: bool = Field(
        False, description="connect over TLS, the broker's certificate checked with the system CAs"
    )
    timeout_s: float = Field(
        5.0, gt=0, le=120, description="limit of one attempt: connected and published (s)"
    )
    retries: int = Field(3, ge=0, le=100, description="extra attempts after a failed publish")
    backoff_s: float = Field(
        0.5, ge=0, le=600, description="wait before the first retry, doubled each time (s)"
    )
    keepalive_s: int = Field(60, ge=5, le=3600, description="MQTT keep-alive interval (s)")

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if any(c in value for c in "+#\x00") or value.startswith("/") or value.endswith("/"):
            raise ValueError(f"expected a topic without '+', '#', NUL or a '/' at either end, got {value!r}")
        return value

    @property
    def display(self) -> str:
        """The broker as logs show it: ``mqtt[s]://host:port``."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class AlertConfig(Section):
    watchlist: tuple[str, ...] = Field(
        (),
        max_length=100000,
        description="identity names on the default watch list (besides the identities flagged watchlist; other "
        "lists, their thresholds and cameras: the watchlist command)",
    )
    log: bool = Field(True, description="write a WARNING log line per alert")
    retroactive: bool = Field(
        False,
        description="also alert when a rematch (rematch, enroll --rematch) names a past track of a watchlisted "
        "identity; such alerts are marked retroactive",
    )
    webhooks: tuple[WebhookConfig, ...] = Field((), max_length=100, description="POST each alert to these")
    mqtt: MqttConfig | None = Field(
        None,
        description="publish each alert to this MQTT broker (needs the mqtt extra: paho-mqtt); null = none",
    )
    base_url: str | None = Field(
        None,
        max_length=2000,
        description="where the web app (serve) is reachable, e.g. http://host:8000/app: each alert then carries "
        "the URLs of its track page, context snapshot and best crop; null = no URLs",
    )
    zones: tuple[str, ...] = Field(
        (),
        max_length=MAX_ZONES,
        description="alert only for tracks that entered one of these camera zones (known when the track ends, so "
        "such alerts come at its end); empty = anywhere",
    )
    queue_size: int = Field(
        1000, ge=1, le=10**6, description="alerts waiting for delivery; beyond: dropped, counted"
    )
    shutdown_timeout_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="on shutdown, alerts still queued or retrying after this long are dropped, counted, logged",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"expected an http(s) URL without query or fragment, got {value[:200]!r}")
        if parts.username or parts.password:
            raise ValueError("expected a URL without a user or password (alerts carry it in the clear)")
        return value.rstrip("/")
