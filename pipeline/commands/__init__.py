"""The command line, a thin layer over the builder and the runners: every sub-command registers here."""

from __future__ import annotations

import argparse

from facemoe import cli as model_commands
from facemoe import export_cli
from pipeline.commands import (
    audit,
    enroll,
    eval_video,
    evidence,
    gallery_admin,
    process,
    rematch,
    review,
    search,
    stream,
    users,
    watchlist,
)

__all__ = ["build_parser"]


def build_parser(prog: str = "run_pipeline.py", description: str = "") -> argparse.ArgumentParser:
    """The parser of every command; each sets ``func(args) -> int``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    process.register(sub)
    stream.register(sub)
    gallery_admin.register(sub)
    enroll.register(sub)
    rematch.register(sub)
    review.register(sub)
    search.register(sub)
    evidence.register(sub)
    users.register(sub)
    watchlist.register(sub)
    audit.register(sub)
    eval_video.register(model_commands.register(sub))
    export_cli.register(sub)
    return parser
