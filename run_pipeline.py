"""Command line of the face-recognition system: enroll, process, stream, query, serve, eval, train.

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr), 1 anything else.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module registers its sub-commands with ``register(subparsers)``; the parser's ``func(args) -> int`` runs it.
COMMAND_MODULES = (
    "pipeline.cli",
    "pipeline.stream_cli",
    "gallery.cli",
    "pipeline.enroll",
    "facemoe.cli",
    "facemoe.export_cli",
)
# Base classes of the errors that mean "bad input": reported in one line with exit code 2.
USER_ERRORS = (
    "facemoe.errors:FaceMoEError",
    "gallery.errors:GalleryError",
    "pipeline.errors:PipelineError",
)


def _load(spec: str):
    module, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None  # that part of the system is not installed in this checkout
        raise
    return getattr(mod, attr) if attr else mod


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_pipeline.py", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in COMMAND_MODULES:
        module = _load(spec)
        if module is not None:
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    user_errors = tuple(e for e in (_load(s) for s in USER_ERRORS) if e is not None)
    try:
        return int(args.func(args) or 0)
    except user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
