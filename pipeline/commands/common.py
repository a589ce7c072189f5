"""What every command shares: the ``--config``/``--set``/``--db`` options and loading the config from them."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from gallery.errors import QueryError

from ..config import AppConfig, load_config

__all__ = ["add_config_options", "config_of", "db_of", "parse_time"]


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
