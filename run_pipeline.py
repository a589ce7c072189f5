"""Command line of the face-recognition system: enroll, process, stream, query, serve, eval, train.

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr), 1 anything else.
"""

from __future__ import annotations

import logging
import sys

from core.errors import UserError
from pipeline.commands import build_parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("run_pipeline.py", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
