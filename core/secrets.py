"""Credentials: redacted before anything is stored, logged, shown or exported; read from the environment.

:func:`redact_url` is the one rule for a URL: the password of its user info and the value of every secret-looking
``key=value`` (query string, path parameters: ``token=``, ``key=``, ``access_token=``, ``sig=``, ``password=``...)
become ``***``; scheme, user, host, port and path stay, so the URL still says which camera or endpoint it is.
:func:`redact_text` applies it to every URL inside a free text (an FFmpeg or HTTP error message) and masks every
secret value read through :func:`env_secret`. :class:`RedactingFilter` does the same to log records.

A secret given by environment variable (``password_env``, ``auth_header_env`` in the config) is read at the
moment it is used (:func:`env_secret`, :func:`url_with_password`), never stored in a config or a database.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from urllib.parse import quote, urlsplit, urlunsplit

from .errors import ConfigError

__all__ = [
    "MASK",
    "ENV_NAME_PATTERN",
    "RedactingFilter",
    "env_secret",
    "redact_text",
    "redact_url",
    "url_with_password",
]

MASK = "***"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

# keys whose value is a credential, matched as a substring of the lower-cased key (api_key, X-Amz-Signature...)
_SECRET_KEYS = ("pass", "pwd", "token", "secret", "key", "sig", "auth", "credential", "session")
_PAIR = re.compile(r"(?P<key>[^&;/?#=\s]+)=(?P<value>[^&;/#\s]*)")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_MIN_SECRET_LEN = 4  # shorter env values are not masked in free text (they would mask ordinary words)

_known: set[str] = set()  # values read by env_secret, masked wherever redact_text sees them
_known_lock = threading.Lock()


def _secret_key(key: str) -> bool:
    low = key.lower()
    return any(word in low for word in _SECRET_KEYS)


def _redact_pairs(part: str) -> str:
    """``a=1&token=x`` -> ``a=1&token=***`` (every secret-looking key)."""

    def repl(m: re.Match) -> str:
        return f"{m['key']}={MASK}" if _secret_key(m["key"]) and m["value"] else m[0]

    return _PAIR.sub(repl, part)


def redact_url(url: str) -> str:
    """``url`` with its password and secret-looking parameters replaced by ``***`` (user, host, path kept).

    Not a URL (a file path): only secret-looking ``key=value`` pairs are masked. Idempotent."""
    if not isinstance(url, str):
        raise TypeError(f"expected a URL string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:  # e.g. a bad IPv6 literal: mask what looks like user info and pairs
        return _redact_pairs(re.sub(r"(//[^/:@\s]*:)[^@/\s]*@", rf"\1{MASK}@", url))
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon and password:
            netloc = f"{user}:{MASK}@{hostport}"
    path, query = _redact_pairs(parts.path), _redact_pairs(parts.query)
    if (netloc, path, query) == (parts.netloc, parts.path, parts.query):
        return url  # nothing secret: the URL exactly as given
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`) and every secret read from the environment
    masked."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m[0]), str(text))
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        text = text.replace(value, MASK)
    return text


def env_secret(name: str, what: str) -> str:
    """The value of environment variable ``name`` (a secret for ``what``); :class:`ConfigError` when it is
    unset or empty. The value is remembered so that :func:`redact_text` masks it wherever it shows up."""
    if not re.match(ENV_NAME_PATTERN, name or ""):
        raise ConfigError(f"{what}: expected an environment variable name, got {name!r}")
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(
            f"{what}: expected environment variable {name} to hold the secret, got it unset or empty"
        )
    if len(value) >= _MIN_SECRET_LEN:
        with _known_lock:
            _known.add(value)
            _known.add(quote(value, safe=""))
    return value


def url_with_password(url: str, password_env: str | None, what: str = "camera") -> str:
    """``url`` with the password of environment variable ``password_env`` in its user info (replacing any
    there); ``url`` itself when ``password_env`` is None. The URL must name a user (``rtsp://user@host/...``)."""
    if password_env is None:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        raise ConfigError(
            f"{what}: password_env needs a user name in the URL (scheme://user@host/...), got none"
        )
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    if not user:
        raise ConfigError(
            f"{what}: password_env needs a user name in the URL (scheme://user@host/...), got none"
        )
    password = quote(env_secret(password_env, f"{what} password_env"), safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{hostport}"))


class RedactingFilter(logging.Filter):
    """A log filter rewriting each record's message through :func:`redact_text` (URLs and known secrets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: leave it to the handler to report
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
