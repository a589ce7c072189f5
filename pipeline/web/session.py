"""The page's login session: a signed cookie that is not the API token.

A browser logs in once (``POST /login``: a token, or a user's name and password) and gets a session cookie
``<expires>.<nonce>.<signature>``: ``expires`` a Unix time, ``nonce`` ``<16 random bytes>~<subject>~<issued ms>``
(``subject``: ``t`` the shared API token, ``u<id>`` a user), ``signature`` the HMAC-SHA256 of the two under a key
derived from the token and a secret drawn when the server starts. So a session ends at its expiry
(``gallery.serve.session_max_age_s``), at logout (its nonce is revoked), when the token changes and when the server
restarts (a user's session also when the user is disabled or rotated: :mod:`pipeline.web.access`); the cookie never
holds a credential, and a forged or altered one does not verify. The cookie is ``HttpOnly``, ``SameSite=Strict``,
scoped to the app's root path, with ``Max-Age`` (``Secure`` too when the request came over HTTPS).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["COOKIE", "Session", "Sessions", "cookie_header", "token_matches"]

COOKIE = "facemoe_session"
MAX_COOKIE = 200  # characters of a session value; longer is no session of ours
DEFAULT_MAX_AGE_S = 12 * 3600


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def token_matches(given: str, token: str) -> bool:
    """``given`` is the token, compared in constant time (also in its length: digests of both are compared)."""
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.encode()).digest(), digest(token.encode()).digest())


def cookie_header(value: str, max_age: int, path: str = "/", secure: bool = False) -> str:
    """The ``Set-Cookie`` value of the session cookie; ``value`` "" with ``max_age`` 0 clears it."""
    attrs = [f"{COOKIE}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    return "; ".join(attrs + (["Secure"] if secure else []))


@dataclass(frozen=True)
class Session:
    """Who a valid session cookie was issued to (``subject``: ``t`` the shared token, ``u<id>`` a user) and when
    (Unix seconds)."""

    subject: str
    issued: float


class Sessions:
    """Issues and checks the session cookies of one server for ``token`` (None: a server of users only), each valid
    ``max_age_s`` seconds; ``clock`` gives Unix seconds (tests move it). Thread-safe."""

    def __init__(
        self, token: str | None, max_age_s: int = DEFAULT_MAX_AGE_S, clock: Callable[[], float] = time.time
    ):
        if max_age_s < 1:
            raise ValueError(f"session max age: expected at least 1 s, got {max_age_s}")
        self.token, self.max_age_s, self.clock = token, int(max_age_s), clock
        self._key = hmac.new(
            secrets.token_bytes(32), b"facemoe session\0" + (token or "").encode(), "sha256"
        ).digest()
        self._revoked: dict[str, int] = {}  # nonce -> expiry of a session logged out before it ended
        self._lock = threading.Lock()

    def _sign(self, expires: int, nonce: str) -> str:
        return _b64(hmac.new(self._key, f"{expires}.{nonce}".encode(), "sha256").digest())

    def issue(self, subject: str = "t") -> str:
        """A new session's cookie value for ``subject`` (letters and digits), valid ``max_age_s`` seconds from
        now."""
        if not (subject.isascii() and subject.isalnum()):
            raise ValueError(f"session subject: expected letters and digits, got {subject!r}")
        now = self.clock()
        expires = int(now) + self.max_age_s
        nonce = f"{_b64(secrets.token_bytes(16))}~{subject}~{int(now * 1000)}"
        return f"{expires}.{nonce}.{self._sign(expires, nonce)}"

    def verify(self, value: str) -> tuple[str | None, Session | None]:
        """``(None, session)`` for a valid session cookie value, else ``(why it is not one, None)``."""
        problem = self.check(value)
        if problem is not None:
            return problem, None
        _, subject, issued = value.split(".")[1].split("~")
        return None, Session(subject, int(issued) / 1000)

    def check(self, value: str) -> str | None:
        """None for a valid session cookie value, else why it is not one (a one-line reason)."""
        parts = value.split(".") if len(value) <= MAX_COOKIE else []
        if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 12:
            return "not a session cookie"
        expires, nonce, signature = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(signature.encode(), self._sign(expires, nonce).encode()):
            return "session cookie not signed by this server (forged, from an earlier start or token)"
        now = self.clock()
        if now >= expires:
            return "session expired"
        if expires > now + self.max_age_s + 1:
            return "session cookie outlives the session length"
        with self._lock:
            if nonce in self._revoked:
                return "session logged out"
        if nonce.count("~") != 2 or not nonce.split("~")[2].isdigit():
            return "not a session cookie"
        return None

    def revoke(self, value: str) -> None:
        """Log out the session of ``value`` (a valid one; anything else is ignored); expired ones are dropped."""
        if self.check(value) is not None:
            return
        expires, nonce, _ = value.split(".")
        now = self.clock()
        with self._lock:
            self._revoked = {n: e for n, e in self._revoked.items() if e > now}
            self._revoked[nonce] = int(expires)
