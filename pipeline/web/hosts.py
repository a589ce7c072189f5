"""Which ``Host`` headers the app answers (DNS rebinding): :func:`trusted_hosts` derives the set from the listen
address, :class:`TrustedHosts` refuses a request naming another host with 400: a page of another site whose name
was re-pointed at this address cannot read the API."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

__all__ = ["LOOPBACK_NAMES", "TrustedHosts", "host_name", "trusted_hosts"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def host_name(header: str) -> str:
    """The host of a ``Host`` header, lower case, without port or trailing dot: ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        header = header[1 : header.find("]")] if "]" in header else header[1:]
    elif header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


def trusted_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host names a server listening on ``bind`` answers to: the address itself, the loopback names when it is
    loopback, this machine's names and addresses when it is every interface, plus ``extra``."""
    names = {host_name(bind)} | {host_name(e) for e in extra}
    if host_name(bind) in LOOPBACK_NAMES:
        names |= LOOPBACK_NAMES
    elif host_name(bind) in WILDCARDS:
        names |= LOOPBACK_NAMES | {socket.gethostname().lower(), socket.getfqdn().lower()}
        try:
            names |= {info[4][0].lower() for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError as exc:
            logger.warning("addresses of this machine unknown (%s): list them in allowed_hosts", exc)
    return frozenset(names - WILDCARDS)


class TrustedHosts:
    """ASGI middleware: 400 for a request whose ``Host`` names none of ``allowed`` (``*`` allows any)."""

    def __init__(self, app, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(raw) not in self.allowed:
                shown = ", ".join(sorted(self.allowed))
                detail = f"Host header: expected one of {shown}, got {raw[:100]!r}"
                await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)
