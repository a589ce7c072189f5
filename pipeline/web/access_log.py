"""The server's access log in the combined log format (ASGI middleware; ``serve --access-log FILE``).

One line per request: ``HOST - USER [10/Oct/2026:13:55:36 +0000] "GET /path?q HTTP/1.1" 200 2326 "REFERER" "AGENT"``.
``USER`` is the authenticated actor's name (``request.state.actor``), ``-`` before authentication. No credential
is ever written: the ``Authorization`` and ``Cookie`` headers are not logged, and the value of any query parameter
whose name says token, password, secret, key or auth is replaced by ``REDACTED``. Control characters and quotes
in logged fields are escaped, so a request cannot forge a line. The file is appended to, created 0600.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

__all__ = ["AccessLog", "combined_line", "open_access_log"]

SECRET_PARAM = re.compile(r"token|password|passwd|secret|key|auth|session", re.IGNORECASE)
UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')


def _escape(text: str) -> str:
    return UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _query(raw: bytes) -> str:
    """The query string with the values of credential-like parameters replaced."""
    if not raw:
        return ""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    shown = [(k, "REDACTED" if SECRET_PARAM.search(k) else v) for k, v in pairs]
    return "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in shown)


def combined_line(scope, status: int, size: int, when: float, user: str | None) -> str:
    """The combined-log-format line of one HTTP request ``scope`` answered with ``status`` and ``size`` bytes."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    client = scope.get("client")
    host = client[0] if client else "-"
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(when))
    path = scope.get("raw_path") or scope.get("path", "").encode()
    if isinstance(path, bytes):
        path = path.decode("latin-1")
    target = path.split("?", 1)[0] + _query(scope.get("query_string", b""))
    request = f"{scope.get('method', '-')} {target} HTTP/{scope.get('http_version', '1.1')}"
    return (
        f'{_escape(host)} - {_escape(user) if user else "-"} [{stamp}] "{_escape(request)}" {status} '
        f'{size if size else "-"} "{_escape(headers.get("referer", "-"))}" "{_escape(headers.get("user-agent", "-"))}"'
    )


def open_access_log(path: Path | str):
    """The access-log file opened for appending (created 0600); a folder that is missing or not writable is a
    :class:`PipelineError`."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise PipelineError(
            f"serve --access-log {path}: expected a writable file, got {exc.strerror or exc}"
        ) from None
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8")


class AccessLog:
    """ASGI middleware writing one :func:`combined_line` per HTTP request to ``out`` (a text file)."""

    def __init__(self, app, out) -> None:
        self.app, self.out = app, out
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        when, answer = time.time(), {"status": 500, "size": 0}

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["size"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            actor = scope.get("state", {}).get("actor")
            line = combined_line(scope, answer["status"], answer["size"], when, getattr(actor, "name", None))
            with self._lock:
                try:
                    self.out.write(line + "\n")
                except OSError as exc:
                    logger.warning("access log: cannot write: %s", exc)
