"""Command line of the face-recognition system: enroll, process, stream, query, serve, eval, train.

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr; storage that refuses a write too: a
read-only database, a full disk or database), 1 a run that failed (one line when the engine gave up, e.g. a Ray
embedding service that keeps dying) or anything else, 141 (as a program ended by SIGPIPE) when the reader of
stdout went away first, e.g. ``query matches | head``.
"""

from __future__ import annotations

import logging
import os
import sys

from core.errors import RunFailure, UserError
from gallery.db import storage_error
from pipeline.commands import build_parser

CLOSED_PIPE = 128 + 13  # what a shell reports for a program ended by SIGPIPE


def _stdout_closed() -> int:
    """Point stdout at /dev/null so that no later flush (at exit included) fails again; the Python docs'
    handling of SIGPIPE (library/signal.html, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file descriptor (captured, replaced): nothing left to flush
        pass
    finally:
        os.close(devnull)
    return CLOSED_PIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("run_pipeline.py", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit where it would print a traceback
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (
        OSError
    ) as exc:  # a full or read-only disk under any file written (index, export, ...): one line too
        mapped = storage_error(exc, str(exc.filename or "storage"))
        if mapped is None:
            raise
        print(f"error: {mapped}", file=sys.stderr)
        return 2
    except RunFailure as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
