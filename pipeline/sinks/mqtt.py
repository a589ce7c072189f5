"""Alerts published to an MQTT broker (``live.alerts.mqtt``; the ``mqtt`` extra: paho-mqtt), the way home-automation
setups take camera events.

Each alert goes to the topic ``<topic_prefix>/<camera>/<identity>`` (:func:`alert_topic`; ``unknown`` for an alert
without an identity), its payload the same JSON object a webhook receives, at the configured QoS and retain flag.
paho's network thread keeps the connection (keep-alive, reconnects with backoff); the delivery thread
(:class:`pipeline.sinks.delivery.QueuedDelivery`) publishes each alert once connected, waiting at most ``timeout_s`` for
the connection and the broker's acknowledgement (QoS 1 and 2), and retries with doubling waits. A broker that is
down or goes away is logged once (and once when it is back) and counted in ``outages``; the alerts it misses fail
after their retries (counted, logged), the pipeline goes on.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from typing import Any

from core.errors import ConfigError
from core.secrets import env_secret
from pipeline.sinks.alert_config import MqttConfig
from pipeline.sinks.delivery import QueuedDelivery

__all__ = ["MqttDelivery", "alert_topic", "check_mqtt", "topic_level"]

logger = logging.getLogger(__name__)

INSTALL = "pip install 'facemoe-surveillance[mqtt]'"
_UNSAFE = {ord(c): "_" for c in "+#/"} | {c: "_" for c in (*range(0x20), *range(0x7F, 0xA0))}


def _paho():
    """The ``paho.mqtt.client`` module; :class:`ConfigError` (one line, exit 2) when paho-mqtt is missing."""
    try:
        import paho.mqtt.client as client
    except ImportError:
        raise ConfigError(f"alerts.mqtt: expected the paho-mqtt package, got it missing; {INSTALL}") from None
    return client


def check_mqtt(cfg: MqttConfig) -> None:
    """What publishing needs before it starts: paho-mqtt installed and the password's variable set
    (:class:`ConfigError` otherwise)."""
    _paho()
    if cfg.password_env is not None:
        env_secret(cfg.password_env, f"alerts.mqtt {cfg.display} password_env")


def topic_level(name: str | None) -> str:
    """``name`` as one topic level: ``+``, ``#``, ``/``, NUL and control characters as ``_``; ``unknown`` for
    None, ``_`` for an empty name."""
    if name is None:
        return "unknown"
    return name.translate(_UNSAFE) or "_"


def alert_topic(prefix: str, alert: dict[str, Any]) -> str:
    """``<prefix>/<camera>/<identity>`` of an alert body (its ``camera`` and ``identity``)."""
    return f"{prefix}/{topic_level(alert.get('camera'))}/{topic_level(alert.get('identity'))}"


class MqttDelivery(QueuedDelivery):
    """Publishes alerts to one broker (see the module). ``outages``: how many times the broker was found down."""

    kind = "mqtt"
    log = logger
    retry_level = logging.DEBUG  # a down broker is logged once, not at every retry

    def __init__(self, cfg: MqttConfig, queue_size: int = 1000) -> None:
        mqtt = _paho()
        password = (
            None if cfg.password_env is None else env_secret(cfg.password_env, f"alerts.mqtt {cfg.display}")
        )
        super().__init__(cfg.display, cfg.timeout_s, cfg.retries, cfg.backoff_s, queue_size)
        self.cfg = cfg
        self.outages = 0
        self.connected = threading.Event()
        self._down = False  # an outage is logged; cleared (and logged) when connected again
        self._stopping = False
        self._error_string = mqtt.error_string
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"facemoe-{os.getpid()}-{secrets.token_hex(4)}"
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            client.tls_set()
        client.connect_timeout = cfg.timeout_s
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self._client = client
        client.connect_async(cfg.host, cfg.port, cfg.keepalive_s)
        client.loop_start()
        self._start()

    def _went_down(self, why: str) -> None:
        self.connected.clear()
        if self._down or self._stopping:
            return
        self._down = True
        self.outages += 1
        self.log.error("mqtt %s: %s; alerts wait for it (retried, then counted as failed)", self.name, why)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._went_down(f"broker refused the connection ({reason_code})")
            return
        if self._down:
            self.log.warning("mqtt %s: connected again", self.name)
        self._down = False
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._went_down(f"connection lost ({reason_code})")

    def _on_connect_fail(self, client, userdata) -> None:
        self._went_down("broker unreachable")

    def _attempt(self, alert: dict[str, Any], timeout: float) -> str | None:
        if not self.connected.wait(timeout):
            return f"not connected within {timeout:.1f}s"
        topic = alert_topic(self.cfg.topic_prefix, alert)
        info = self._client.publish(topic, json.dumps(alert), qos=self.cfg.qos, retain=self.cfg.retain)
        if info.rc:
            return f"publish failed: {self._error_string(info.rc)}"
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            return f"publish failed: {exc}"
        return None if info.is_published() else f"not acknowledged within {timeout:.1f}s"

    def _end(self) -> None:
        self._stopping = True
        client = self._client
        client.disconnect()
        threading.Thread(
            target=client.loop_stop, name="mqtt-stop", daemon=True
        ).start()  # joins paho's thread
