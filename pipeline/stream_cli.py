"""The ``stream`` command: live cameras through the pipeline until SIGINT/SIGTERM (or ``--duration``).

    run_pipeline.py stream URL... [--cameras cameras.yaml] [--config FILE] [--live-config FILE]
                           (--db URL | --gallery DIR) [--duration S] [--metrics-port N]
                           [--engine local|ray] [--address RAY_ADDRESS]

Each finished track is printed as one line. With ``--db`` it is matched against that database's gallery and
written to its match log (one run per camera, one transaction per track); with ``--gallery DIR`` it is matched
against the folder's identities, enrolled in memory at start, and nothing is written. On SIGINT/SIGTERM the
cameras stop reading, open tracks are finished and matched, the sinks are flushed, and the command exits 0.
``--engine ray`` runs one actor per camera and a shared embedding service (``pipeline/ray_engine.py``).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

import yaml
from pydantic import ValidationError

from gallery.matchlog import config_hash
from gallery.store import Gallery
from stages.detect import FaceDetector
from stages.embed import build_embedder
from stages.match import InMemoryGallery, Matcher

from .alerts import WatchlistAlerts
from .config import load_config
from .errors import ConfigError
from .health import HealthRegistry, MetricsServer
from .live import LiveCameras
from .live_config import CameraConfig, LiveConfig, cameras_from_urls, load_cameras
from .live_runner import LiveRunner
from .sql_gallery import MatchLogSink, SqlGalleryIndex
from core.types import MatchResult, TrackTemplate

__all__ = ["TrackLineSink", "load_live_config", "register", "run_stream"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "configs/default.yaml"
DEFAULT_THRESHOLD = 0.3


def register(subparsers) -> None:
    p = subparsers.add_parser("stream", help="run live cameras (RTSP and other URLs) until stopped",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("urls", nargs="*", metavar="URL", help="camera URLs (named cam0-..., cam1-...)")
    p.add_argument("--cameras", type=Path, help="YAML file: cameras: [{name, url, transport, ...}]")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="pipeline config (default %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a pipeline key")
    p.add_argument("--live-config", type=Path, help="YAML of the live section (timeouts, reconnect, alerts)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="database URL: its gallery is searched and the match log written there")
    where.add_argument("--gallery", type=Path,
                       help="folder with one subfolder of images per identity (enrolled in memory; no match log)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until stopped)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: one process; ray: an actor per camera and a shared embedding service")
    p.add_argument("--address", help="with --engine ray: an existing cluster (default: start Ray locally)")
    p.set_defaults(func=run_stream)


def load_live_config(path: Path | None, metrics_port: int | None = None) -> LiveConfig:
    """The live section from a YAML file (top-level keys are its fields), or the defaults."""
    data: dict = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"live config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"live config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"live config {path}: expected a mapping, got {type(data).__name__}")
    if metrics_port is not None:
        data.setdefault("health", {})["metrics_port"] = metrics_port
    try:
        return LiveConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"live config {path or '(defaults)'}: {key}: {err['msg']}") from None


class TrackLineSink:
    """Prints one line per finished track as it happens."""

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        best = result.identity
        who = f"{best.name} {best.score:.3f}" if best else "unknown"
        print(f"{template.source_id} track {template.track_id} {template.first_timestamp:.1f}-"
              f"{template.last_timestamp:.1f}s frames={template.num_frames} crops={template.num_crops} {who}",
              flush=True)

    def close(self) -> None:
        sys.stdout.flush()


def _cameras(args: argparse.Namespace, live: LiveConfig) -> list[CameraConfig]:
    cams = list(cameras_from_urls(args.urls)) + list(live.cameras)
    if args.cameras is not None:
        cams += list(load_cameras(args.cameras))
    if not cams:
        raise ConfigError("stream: expected camera URLs, --cameras FILE or cameras in --live-config, got none")
    names = [c.name for c in cams]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"stream: camera names must be unique, got duplicates {dup}")
    return cams


def _stop_on_signals(stack: ExitStack) -> threading.Event:
    """An event set by SIGINT/SIGTERM (the previous handlers come back when ``stack`` closes)."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    stack.callback(lambda: [signal.signal(s, h) for s, h in previous.items()])
    return stop


def _run_on_ray(args: argparse.Namespace, cfg, live: LiveConfig, cams: list[CameraConfig]) -> int:
    from .ray_engine import run_ray

    registry = HealthRegistry(live.health.fps_window_s)
    with ExitStack() as stack:
        if live.health.metrics_port is not None:  # served by the driver from the actors' polled health
            server = MetricsServer(registry, live.health.metrics_host, live.health.metrics_port).start()
            stack.callback(server.close)
            print(f"metrics on http://{server.host}:{server.port}/metrics", file=sys.stderr, flush=True)
        stop = _stop_on_signals(stack)
        result = run_ray(cfg, live, cams, args.db, config_hash(cfg.model_dump_json()), stop, args.duration,
                         args.address, registry)
    print(f"stream (ray): {result['tracks']} tracks, {result['matches']} matches", file=sys.stderr)
    for cam in result["cameras"]:
        print(f"{cam['camera']}: {cam['state']} frames={cam['frames']} dropped={cam['dropped']} "
              f"reconnects={cam['reconnects']} failures={cam['failures']}"
              + (f" ({cam['error']})" if cam.get("error") else ""), file=sys.stderr)
    return 1 if all(c["state"] == "failed" for c in result["cameras"]) else 0


def run_stream(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration: expected a positive number of seconds, got {args.duration}")
    if args.address is not None and args.engine != "ray":
        raise ConfigError(f"--address is for --engine ray, got --engine {args.engine}")
    cfg = load_config(args.config, args.set)
    live = load_live_config(args.live_config, args.metrics_port)
    if args.engine == "ray" and args.db is None:
        raise ConfigError("--engine ray: expected --db URL (the gallery and match log in SQL), got --gallery")
    cams = _cameras(args, live)
    if args.engine == "ray":
        return _run_on_ray(args, cfg, live, cams)
    detector = FaceDetector(cfg.detect)
    embedder = build_embedder(cfg.embed)
    with ExitStack() as stack:
        gallery = stack.enter_context(Gallery.open(args.db)) if args.db else None
        if gallery is None:
            threshold = cfg.match.threshold if cfg.match.threshold is not None else DEFAULT_THRESHOLD
            index = InMemoryGallery.from_folder(args.gallery, detector, embedder, threshold)
        else:
            index = SqlGalleryIndex(gallery, embedder.embedder_id, cfg.match.threshold)
        watch = set(live.alerts.watchlist)
        if gallery is not None:
            watch |= {i.name for i in gallery.identities() if i.watchlist}
        alerts = WatchlistAlerts(live.alerts.model_copy(update={"watchlist": tuple(sorted(watch))}))
        log = None
        if gallery is not None:
            log = MatchLogSink.for_cameras(gallery, cams, embedder.embedder_id, config_hash(cfg.model_dump_json()))
        sinks = [TrackLineSink(), alerts] + ([log] if log else [])
        registry = HealthRegistry(live.health.fps_window_s)
        cameras = LiveCameras(cams, live, registry)
        if live.health.metrics_port is not None:
            server = MetricsServer(registry, live.health.metrics_host, live.health.metrics_port).start()
            stack.callback(server.close)
            print(f"metrics on http://{server.host}:{server.port}/metrics", file=sys.stderr, flush=True)
        stop = _stop_on_signals(stack)
        runner = LiveRunner(cfg, detector, embedder, Matcher(cfg.match, index), sinks, cameras, registry)
        status = "failed"
        try:
            stats = runner.run(stop, args.duration, live.health.status_interval_s)
            status = "finished"
        finally:
            for sink in sinks:
                sink.close(status) if sink is log else sink.close()
    print(f"stream: {stats.frames} frames, {stats.tracks} tracks, {stats.matches} matches "
          f"({stats.closed_at_loss} closed at a stream loss)", file=sys.stderr)
    print(registry.status_line(), file=sys.stderr, flush=True)
    given_up = all(s.state == "failed" for s in registry.snapshots())
    return 1 if given_up else 0
