"""Configuration of live sources: cameras, reconnect policy, health endpoint and watchlist alerts.

``LiveConfig`` is the ``live`` section (YAML, validated by pydantic with unknown keys refused). A cameras file
is a YAML document ``{cameras: [{name, url, ...}, ...]}``; per-camera keys left out take the section defaults.
Secrets can stay out of the files: a camera's ``password_env`` and a webhook's ``auth_header_env`` name
environment variables read when the camera is opened or the webhook started (``core.secrets``); URLs are shown
redacted (``display_url``), and kept out of the configs' repr.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from core.config import Section, read_yaml, validate
from core.errors import ConfigError
from core.secrets import ENV_NAME_PATTERN, redact_url, url_with_password
from pipeline.sinks.alert_config import AlertConfig, MqttConfig, WebhookConfig
from stages.zones import MAX_ZONES, ZoneConfig, check_unique

__all__ = [
    "AlertConfig",
    "CameraConfig",
    "CameraRecordConfig",
    "HealthConfig",
    "LiveConfig",
    "MqttConfig",
    "ReconnectConfig",
    "RecordingConfig",
    "RestartConfig",
    "WebhookConfig",
    "load_cameras",
    "name_cameras",
    "url_names",
]

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class ReconnectConfig(Section):
    initial_s: float = Field(0.5, gt=0, le=600, description="wait before the first reconnect attempt (s)")
    max_s: float = Field(30.0, gt=0, le=3600, description="cap of the exponential backoff (s)")
    multiplier: float = Field(
        2.0, ge=1.0, le=10.0, description="growth factor of the wait per failed attempt"
    )
    jitter: float = Field(
        0.2, ge=0.0, le=1.0, description="each wait is scaled by a random factor in 1 +- jitter"
    )
    max_attempts: int | None = Field(
        None,
        ge=1,
        le=10**9,
        description="give a camera up after this many failed attempts in a row; null = never",
    )

    @model_validator(mode="after")
    def _cap(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s must be >= initial_s, got max_s={self.max_s} initial_s={self.initial_s}")
        return self


class RestartConfig(Section):
    """Restarts of the Ray engine's actors (``pipeline.live.ray_engine``): a camera actor or the embedding service that
    dies is started again after a wait growing from ``initial_s`` by ``multiplier`` up to ``max_s``, at most
    ``max_restarts`` times within ``window_s``; then a camera is given up (its run ``failed``) and a dead
    embedding service ends the run."""

    max_restarts: int = Field(
        5,
        ge=0,
        le=10**6,
        description="restarts of one actor within window_s before it is given up; 0 = never",
    )
    window_s: float = Field(
        600.0, gt=0, le=7 * 86400, description="the window (s) in which max_restarts are counted"
    )
    initial_s: float = Field(1.0, gt=0, le=600, description="wait before the first restart (s)")
    max_s: float = Field(30.0, gt=0, le=3600, description="cap of the exponential backoff (s)")
    multiplier: float = Field(2.0, ge=1.0, le=10.0, description="growth factor of the wait per restart")
    service_wait_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="a camera waits this long (s) for a restarted embedding service, then fails",
    )
    shutdown_timeout_s: float = Field(
        120.0,
        gt=0,
        le=86400,
        description="at a stop, cameras still finishing their open tracks after this long (s) are killed",
    )

    @model_validator(mode="after")
    def _cap(self) -> RestartConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s must be >= initial_s, got max_s={self.max_s} initial_s={self.initial_s}")
        return self


class CameraRecordConfig(Section):
    """A camera's recording (``pipeline.live.recorder``); a key left null takes the ``live.recording`` default."""

    enabled: bool | None = Field(
        None, description="record this camera's stream to MP4 segments; null = live.recording.enabled"
    )
    segment_s: float | None = Field(
        None, ge=1, le=3600, description="segment length (s), cut at the next keyframe; null = the default"
    )


class RecordingConfig(Section):
    """Camera recordings: MP4 segments remuxed from the stream without re-encoding, indexed in SQL
    (:mod:`gallery.recordings`), kept by age and by a disk cap, oldest first, never one an open case holds."""

    enabled: bool = Field(False, description="record every camera whose own record.enabled is null")
    segment_s: float = Field(
        60.0, ge=1, le=3600, description="default segment length (s), cut at the next keyframe"
    )
    dir: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="folder of the segments (relative: to the working directory); null = "
        "<storage dir>/<db stem>_recordings beside the database",
    )
    retention_days: float | None = Field(
        None, gt=0, le=36500, description="delete segments that ended longer ago than this; null = keep"
    )
    max_bytes: int | None = Field(
        None,
        ge=1,
        le=2**62,
        description="disk cap of all segments: the oldest are deleted beyond it; null = no cap",
    )
    retention_every_s: float = Field(
        60.0, gt=0, le=86400, description="how often (s) a recording process applies the retention"
    )


class CameraConfig(Section):
    name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="camera id used in logs, metrics and the match log (keep it: a new name is a new source); "
        "null = from the URL's path (name_cameras)",
    )
    url: str = Field(
        ...,
        min_length=1,
        max_length=2000,
        repr=False,
        description="rtsp://, rtmp://, http(s):// or udp:// URL (a password in it is shown as ***)",
    )
    password_env: str | None = Field(
        None,
        pattern=ENV_NAME_PATTERN,
        description="environment variable holding the password, put into the URL (which names the user) "
        "when the camera is opened, never stored; null = the URL as given",
    )
    transport: Literal["tcp", "udp", "auto"] | None = Field(
        None, description="RTSP transport; null = the section default"
    )
    open_timeout_s: float | None = Field(
        None, gt=0, le=600, description="connect + probe limit (s); null = default"
    )
    read_timeout_s: float | None = Field(None, gt=0, le=600, description="no packet this long is a stall (s)")
    decode: Literal["auto", "cpu", "vaapi", "cuda"] | None = Field(
        None, description="decoder of this camera (see live.decode); null = the section default"
    )
    record: CameraRecordConfig = Field(
        default_factory=CameraRecordConfig, description="recording of this camera (off by default)"
    )
    zones: tuple[ZoneConfig, ...] = Field(
        (),
        max_length=MAX_ZONES,
        description="named polygons over the frame (stages.zones: points as fractions 0..1 of width and height); "
        "mask: true blacks the area out before detection and in snapshots and clips",
    )

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: tuple[ZoneConfig, ...]) -> tuple[ZoneConfig, ...]:
        check_unique(zones)
        return zones

    @model_validator(mode="after")
    def _user_for_password(self) -> CameraConfig:
        if self.password_env is not None and not urlsplit(self.url).username:
            raise ValueError(
                f"password_env needs a user name in the URL (scheme://user@host/...), got {self.display_url}"
            )
        return self

    @property
    def display_url(self) -> str:
        """The URL as logs, metrics, the match log and outputs show it: password and tokens as ``***``."""
        return redact_url(self.url)

    def open_url(self) -> str:
        """The URL to open: with the password of ``password_env`` read now (never stored); ConfigError when the
        variable is unset or empty."""
        return url_with_password(self.url, self.password_env, f"camera {self.name}")

    def recorded(self, recording: RecordingConfig) -> float | None:
        """This camera's segment length (s) when it is recorded under ``recording``, else None."""
        enabled = recording.enabled if self.record.enabled is None else self.record.enabled
        return (self.record.segment_s or recording.segment_s) if enabled else None


class HealthConfig(Section):
    status_interval_s: float = Field(
        10.0, ge=0, le=86400, description="log a status line this often; 0 = never"
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve Prometheus metrics on this port (0 = any free one); null = off",
    )
    metrics_host: str = Field("127.0.0.1", pattern=r"^[0-9A-Za-z.:-]{1,255}$", description="address to bind")
    fps_window_s: float = Field(
        5.0, gt=0, le=600, description="frame rates are averaged over this window (s)"
    )


class LiveConfig(Section):
    transport: Literal["tcp", "udp", "auto"] = Field("tcp", description="default RTSP transport")
    open_timeout_s: float = Field(10.0, gt=0, le=600, description="default connect + probe limit (s)")
    read_timeout_s: float = Field(
        5.0, gt=0, le=600, description="default stall limit: no packet this long (s)"
    )
    decode: Literal["auto", "cpu", "vaapi", "cuda"] = Field(
        "auto",
        description="video decoder: auto = hardware (NVDEC via cuda, else VAAPI) where PyAV's FFmpeg has it and "
        "a device opens, else the CPU; cpu; vaapi or cuda = that device or refuse to start",
    )
    buffer_frames: int = Field(
        1, ge=1, le=1000, description="newest frames kept per camera; older ones are dropped and counted"
    )
    drop_frames: bool = Field(
        True, description="false: a full buffer makes the decoder wait instead of dropping (recorded sources)"
    )
    timestamps: Literal["arrival", "stream"] = Field(
        "arrival", description="frame time: when decoded (live), or the stream's own pts (recorded sources)"
    )
    camera_clock_max_skew_s: float | None = Field(
        300.0,
        gt=0,
        le=10**9,
        description="a camera clock (RTCP sender reports) further than this (s) from this machine's is not "
        "trusted: its frames' wall clock is their arrival time instead; null = always trust the camera",
    )
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="reconnect backoff")
    restart: RestartConfig = Field(
        default_factory=RestartConfig, description="restarts of dead Ray actors (--engine ray)"
    )
    health: HealthConfig = Field(default_factory=HealthConfig, description="status line and metrics")
    alerts: AlertConfig = Field(default_factory=AlertConfig, description="watchlist alerts")
    recording: RecordingConfig = Field(
        default_factory=RecordingConfig, description="camera recordings: folder, segment length, retention"
    )
    cameras: tuple[CameraConfig, ...] = Field(
        (), max_length=1000, description="cameras (or use --cameras FILE)"
    )

    @field_validator("cameras")
    @classmethod
    def _unique(cls, cams: tuple[CameraConfig, ...]) -> tuple[CameraConfig, ...]:
        names = [c.name for c in cams if c.name is not None]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"camera names must be unique, got duplicates {dup}")
        return cams  # unnamed ones are named with the others of a run (name_cameras)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.")


def url_names(url: str) -> list[str]:
    """Names for a camera of ``url``, most readable first: its path (``rtsp://host/gate`` -> ``gate``,
    ``/Streaming/Channels/101`` -> ``Streaming-Channels-101``; the host where the path is empty), then host and
    path, then host, path and query. Of the redacted URL: a secret never becomes part of a name."""
    parts = urlsplit(redact_url(url))
    try:
        port = parts.port
    except ValueError:
        port = None
    host = _safe(parts.hostname or "") + (f"_{port}" if port else "")
    path = "-".join(filter(None, (_safe(p) for p in parts.path.split("/"))))
    query = _safe(parts.query)
    levels = [path or host, "-".join(filter(None, (host, path))), "-".join(filter(None, (host, path, query)))]
    names: list[str] = []
    for name in levels:
        name = name[:64].strip("_.-") or "camera"
        if name not in names:
            names.append(name)
    return names


def name_cameras(cams: Sequence[CameraConfig]) -> tuple[CameraConfig, ...]:
    """The cameras with a name each: a camera's own, else the first of :func:`url_names` that no other camera
    takes (so a name depends on the set of cameras, never on their order). Two cameras left with one name are a
    :class:`ConfigError`."""
    options = [[c.name] if c.name is not None else url_names(c.url) for c in cams]
    level = [0] * len(cams)
    while True:
        names = [opts[i] for opts, i in zip(options, level)]
        clash = {n for n in names if names.count(n) > 1}
        movable = [k for k, n in enumerate(names) if n in clash and level[k] + 1 < len(options[k])]
        if not movable:
            break
        for k in movable:
            level[k] += 1
    if clash:
        raise ConfigError(
            f"camera names must be unique, got duplicates {sorted(clash)} (name the cameras in a cameras file)"
        )
    return tuple(c if c.name == n else c.model_copy(update={"name": n}) for c, n in zip(cams, names))


def load_cameras(path: str | Path) -> tuple[CameraConfig, ...]:
    """Read a cameras YAML file (``cameras: [...]``); raises :class:`ConfigError` in one line."""
    data = read_yaml(path, "cameras file")
    if set(data) != {"cameras"}:
        raise ConfigError(
            f"cameras file {path}: expected a mapping with the one key 'cameras', got {sorted(data)}"
        )
    cams = validate(LiveConfig, {"cameras": data["cameras"] or ()}, f"cameras file {path}").cameras
    if not cams:
        raise ConfigError(f"cameras file {path}: expected at least one camera, got none")
    return cams
