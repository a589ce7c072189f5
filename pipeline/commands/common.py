"""What every command shares: the ``--config``/``--set``/``--db`` options and loading the config from them, ISO
times, and the listening socket of ``serve`` (bound before it says it serves)."""

from __future__ import annotations

import argparse
import errno
import socket
from datetime import datetime
from pathlib import Path

from gallery.errors import QueryError
from pipeline.config import AppConfig, load_config
from pipeline.errors import PipelineError

__all__ = ["add_config_options", "config_of", "db_of", "listen_socket", "parse_time"]


def add_config_options(parser: argparse.ArgumentParser, db: bool = True) -> None:
    """``--config FILE`` (default: the packaged ``configs/default.yaml``), ``--set KEY=VALUE`` and ``--db URL``."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML configuration (default: the packaged configs/default.yaml)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set source.stride=2 (repeatable)",
    )
    if db:
        parser.add_argument(
            "--db",
            help="database of the gallery and the match log (default: gallery.db_url of "
            "the config, sqlite:///facemoe.db)",
        )


def config_of(args: argparse.Namespace) -> AppConfig:
    """The validated config named by ``--config`` with the ``--set`` overrides."""
    return load_config(args.config, args.overrides)


def db_of(args: argparse.Namespace, cfg: AppConfig) -> str:
    """``--db``, else the config's ``gallery.db_url``."""
    return args.db or cfg.gallery.db_url


def parse_time(text: str, what: str = "time") -> datetime:
    """ISO 8601 with a timezone (``2026-03-01T10:00:00Z`` or ``...+02:00``); ``what`` names it in errors."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise QueryError(f"{what}: expected ISO 8601 like 2026-03-01T10:00:00Z, got {text!r}") from None
    if value.tzinfo is None:
        raise QueryError(f"{what}: expected a timezone (Z or +HH:MM), got {text!r}")
    return value


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (IPv4 or IPv6, ``SO_REUSEADDR`` as uvicorn sets it), for the server
    to listen on; a port in use or an address that is not this machine's is a :class:`PipelineError`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        raise PipelineError(
            f"serve --host {host!r}: expected an address of this machine, got {exc}"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            raise PipelineError(
                f"serve --host {host!r}: expected an address of this machine, got {exc.strerror or exc}"
            ) from None
        raise PipelineError(
            f"serve: expected a free port to listen on, got {host}:{port} refused ({exc.strerror or exc}); "
            "stop what uses it or pick another --port"
        ) from None
    return sock
