"""The ``stream`` command: live cameras through the pipeline until SIGINT/SIGTERM (or ``--duration``).

    run_pipeline.py stream URL... [--cameras cameras.yaml] [--config FILE] [--live-config FILE]
                           [--db URL] [--gallery DIR] [--duration S] [--metrics-port N]
                           [--engine local|ray] [--address RAY_ADDRESS]

Each finished track is printed as one line, matched against the gallery of the database and written to its
match log (one run per camera, one transaction per track). ``--gallery DIR`` first enrolls the folder's people
(the ``enroll --dir`` rule) into ``--db``, or without ``--db`` into a temporary database deleted at the end.
On SIGINT/SIGTERM the cameras stop reading, open tracks are finished and matched, the sinks are flushed, and the
command exits 0.
``--engine ray`` runs one actor per camera and a shared embedding service (``pipeline/live/ray_engine.py``).
Cameras whose recording is on (``live.recording``, a camera's ``record``) are also remuxed into MP4 segments
indexed in ``--db`` (``pipeline/live/recorder.py``), over connections of their own.
Camera and webhook URLs are shown, logged and stored redacted (``core.secrets``); a camera's ``password_env``
and a webhook's ``auth_header_env`` must name set environment variables (checked before anything starts).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from core.config import load
from core.errors import ConfigError
from core.secrets import redact_text
from core.types import MatchResult, TrackTemplate
from pipeline.build import build
from pipeline.commands.common import add_config_options, config_of
from pipeline.live.cameras import LiveCameras
from pipeline.live.config import CameraConfig, LiveConfig, load_cameras, name_cameras
from pipeline.live.decode import check_decoders
from pipeline.live.health import HealthRegistry, MetricsServer
from pipeline.live.ray_engine import run_ray
from pipeline.live.recorder import record_cameras
from pipeline.runners.live_runner import LiveRunner
from pipeline.sinks.alerts import watchlist_alerts
from pipeline.sinks.mqtt import check_mqtt
from pipeline.sinks.outputs import logged_ref, sighting_span
from pipeline.sinks.sql_gallery import LoggedSource

__all__ = ["TrackLineSink", "register", "run_stream"]

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stream",
        help="run live cameras (RTSP and other URLs) until stopped",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "urls",
        nargs="*",
        metavar="URL",
        help="camera URLs (named after their path: rtsp://host/gate -> gate)",
    )
    p.add_argument("--cameras", type=Path, help="YAML file: cameras: [{name, url, transport, ...}]")
    add_config_options(p, db=False)
    p.add_argument(
        "--db",
        metavar="URL",
        help="database of the gallery and the match log; no default: without it, --gallery DIR is enrolled into "
        "a temporary database deleted at the end (one of the two is needed; --engine ray needs --db)",
    )
    p.add_argument(
        "--live-config",
        type=Path,
        help="YAML of the live section (timeouts, reconnect, alerts); replaces the config's live section",
    )
    p.add_argument(
        "--gallery",
        type=Path,
        help="folder of known people to enroll first (one subfolder per person): "
        "into --db, or without --db into a temporary database",
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until stopped)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: one process; ray: an actor per camera and a shared embedding service",
    )
    p.add_argument("--address", help="with --engine ray: an existing cluster (default: start Ray locally)")
    p.set_defaults(func=run_stream)


def live_section(base: LiveConfig, path: Path | None, metrics_port: int | None = None) -> LiveConfig:
    """The config's live section, or the one of ``--live-config``; ``--metrics-port`` on top."""
    live = base if path is None else load(path, LiveConfig, what="live config file")
    if metrics_port is not None:
        live = live.model_copy(
            update={"health": live.health.model_copy(update={"metrics_port": metrics_port})}
        )
    return live


class TrackLineSink:
    """Prints one line per finished track as it happens: its reference (``run_ids``: the match-log run of each
    camera), camera, sighting times, counts, decision and the camera zones it entered (when the camera has some)."""

    def __init__(self, run_ids: dict[str, int] | None = None) -> None:
        self.run_ids = run_ids

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        best = result.identity
        who = f"{best.name} {best.score:.3f}" if best else "unknown"
        ref = logged_ref(self.run_ids, template) or f"track {template.track_id}"
        zones = "" if template.zones is None else f" zones={','.join(template.zones) or '-'}"
        print(
            f"{ref} {template.source_id} {sighting_span(template)} "
            f"frames={template.num_frames} crops={template.num_crops} {who}{zones}",
            flush=True,
        )

    def close(self) -> None:
        sys.stdout.flush()


def _cameras(args: argparse.Namespace, live: LiveConfig) -> list[CameraConfig]:
    cams = [CameraConfig(url=u) for u in args.urls] + list(live.cameras)
    if args.cameras is not None:
        cams += list(load_cameras(args.cameras))
    if not cams:
        raise ConfigError(
            "stream: expected camera URLs, --cameras FILE or cameras in --live-config, got none"
        )
    try:
        cams = list(name_cameras(cams))
    except ConfigError as exc:
        raise ConfigError(f"stream: {exc}") from None
    for cam in cams:
        cam.open_url()  # a password_env that is unset: one line, exit 2, before anything starts
        logger.info("camera %s: %s", cam.name, cam.display_url)
    return cams


def _stop_on_signals(stack: ExitStack) -> threading.Event:
    """An event set by SIGINT/SIGTERM (the previous handlers come back when ``stack`` closes)."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    stack.callback(lambda: [signal.signal(s, h) for s, h in previous.items()])
    return stop


def _run_on_ray(args: argparse.Namespace, cfg, live: LiveConfig, cams: list[CameraConfig]) -> int:
    registry = HealthRegistry(live.health.fps_window_s)
    with ExitStack() as stack:
        if live.health.metrics_port is not None:  # served by the driver from the actors' polled health
            server = MetricsServer(registry, live.health.metrics_host, live.health.metrics_port).start()
            stack.callback(server.close)
            print(f"metrics on http://{server.host}:{server.port}/metrics", file=sys.stderr, flush=True)
        stack.enter_context(record_cameras(live, cams, args.db, cfg.gallery))
        stop = _stop_on_signals(stack)
        result = run_ray(cfg, live, cams, args.db, stop, args.duration, args.address, registry)
    print(f"stream (ray): {result['tracks']} tracks, {result['matches']} matches", file=sys.stderr)
    for cam in result["cameras"]:
        print(
            f"{cam['camera']}: {cam['state']} frames={cam['frames']} dropped={cam['dropped']} "
            f"reconnects={cam['reconnects']} failures={cam['failures']}"
            + (f" ({redact_text(cam['error'])})" if cam.get("error") else ""),
            file=sys.stderr,
        )
    return 1 if all(c["state"] == "failed" for c in result["cameras"]) else 0


def run_stream(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration: expected a positive number of seconds, got {args.duration}")
    if args.address is not None and args.engine != "ray":
        raise ConfigError(f"--address is for --engine ray, got --engine {args.engine}")
    if args.db is None and args.gallery is None:
        raise ConfigError("stream: expected --db URL or --gallery DIR, got neither")
    cfg = config_of(args)
    live = live_section(cfg.live, args.live_config, args.metrics_port)
    if args.engine == "ray" and args.db is None:
        raise ConfigError(
            "--engine ray: expected --db URL (the gallery and match log in SQL), got --gallery only"
        )
    cams = _cameras(args, live)
    check_decoders(c.decode or live.decode for c in cams)  # hardware decode asked for but absent: exit 2
    for hook in live.alerts.webhooks:
        hook.headers()  # an auth_header_env that is unset: one line, exit 2, before anything starts
    if live.alerts.mqtt is not None:
        check_mqtt(live.alerts.mqtt)  # paho-mqtt missing or the password's variable unset: one line, exit 2
    if args.engine == "ray":
        # before the actors start: the detector checks itself (a model that does not see: one line, exit 2) and
        # --gallery is enrolled into --db
        gallery = args.gallery is not None
        with build(cfg, db_url=args.db, gallery_dir=args.gallery, embedder=False, gallery=gallery):
            pass
        return _run_on_ray(args, cfg, live, cams)
    with ExitStack() as stack:
        system = stack.enter_context(build(cfg, db_url=args.db, gallery_dir=args.gallery))
        stack.enter_context(record_cameras(live, cams, args.db, cfg.gallery))
        alerts = watchlist_alerts(live.alerts, system.gallery)
        index = system.index()
        print(f"threshold in force: {index.in_force}", file=sys.stderr, flush=True)
        sources = [LoggedSource(c.name, "camera", c.url, time_origin="camera") for c in cams]
        log = system.match_log(sources, batch_size=1, threshold=index.in_force)
        alerts.run_ids, alerts.media = log.run_ids, log.media_paths
        sinks = [TrackLineSink(log.run_ids), alerts, log]
        registry = HealthRegistry(live.health.fps_window_s)
        cameras = LiveCameras(cams, live, registry)
        if live.health.metrics_port is not None:
            server = MetricsServer(registry, live.health.metrics_host, live.health.metrics_port).start()
            stack.callback(server.close)
            print(f"metrics on http://{server.host}:{server.port}/metrics", file=sys.stderr, flush=True)
        stop = _stop_on_signals(stack)
        runner = LiveRunner(
            cfg, system.detector, system.embedder, system.matcher(index), sinks, cameras, registry
        )
        status = "failed"
        try:
            stats = runner.run(stop, args.duration, live.health.status_interval_s)
            status = "finished"
        finally:
            for sink in sinks:
                sink.close(status) if sink is log else sink.close()
    print(
        f"stream: {stats.frames} frames, {stats.tracks} tracks, {stats.matches} matches "
        f"({stats.closed_at_loss} closed at a stream loss); threshold in force: {index.in_force}",
        file=sys.stderr,
    )
    print(registry.status_line(), file=sys.stderr, flush=True)
    given_up = all(s.state == "failed" for s in registry.snapshots())
    return 1 if given_up else 0
