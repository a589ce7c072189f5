"""Identity names: the one rule for a name the gallery stores, and how user-given text is quoted and shown.

A name is printable Unicode: no control characters (category Cc: NUL, newline, ESC, DEL, ...), no line or
paragraph separators (U+2028, U+2029), no lone surrogates, no format characters that reorder text (the bidi
embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069, the marks U+200E, U+200F and U+061C);
surrounding whitespace is stripped and 1 to :data:`MAX_NAME` characters remain. Messages quote user text with
:func:`quoted` (its repr, at most :data:`QUOTED` characters), and text tables show cells through :func:`shown`
(control, separator and reordering characters escaped), so that a name never forges a row or drives the terminal.
"""

from __future__ import annotations

import re
import unicodedata

from gallery.errors import EnrollmentError

__all__ = ["MAX_NAME", "QUOTED", "identity_name", "lookup_name", "quoted", "shown"]

MAX_NAME = 200  # characters of an identity name (the column holds 200)
QUOTED = 80  # characters of user text quoted in a message
REORDERING = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
REFUSED_CATEGORIES = {"Cc": "a control character", "Cs": "a lone surrogate", "Zl": "a line separator"}
REFUSED_CATEGORIES["Zp"] = "a paragraph separator"
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff" + "".join(sorted(REORDERING)) + "]")


def quoted(text: str, limit: int = QUOTED) -> str:
    """``repr(text)`` cut to at most ``limit`` characters with an ellipsis (a message never echoes 100k
    characters)."""
    shown_repr = repr(text)
    return shown_repr if len(shown_repr) <= limit else shown_repr[: limit - 1] + "\u2026"


def _refused(text: str) -> str | None:
    """Why ``text`` cannot be a name (the first refused character), else None."""
    for ch in text:
        kind = (
            "a bidi format character"
            if ch in REORDERING
            else REFUSED_CATEGORIES.get(unicodedata.category(ch))
        )
        if kind is not None:
            return f"{kind} U+{ord(ch):04X}"
    return None


def identity_name(name: object, what: str = "identity name") -> str:
    """``name`` stripped of surrounding whitespace, checked against the rule above; else an
    :class:`EnrollmentError` that says what was expected and quotes at most :data:`QUOTED` characters of it."""
    if not isinstance(name, str):
        raise EnrollmentError(f"{what}: expected a string, got {type(name).__name__}")
    text = name.strip()
    if not 1 <= len(text) <= MAX_NAME:
        raise EnrollmentError(
            f"{what}: expected 1-{MAX_NAME} characters after stripping whitespace, got {len(text):,}: "
            f"{quoted(name)}"
        )
    reason = _refused(text)
    if reason is not None:
        raise EnrollmentError(f"{what}: expected printable text, got {reason} in {quoted(name)}")
    return text


def lookup_name(name: object, what: str = "identity name") -> str:
    """A name to look up (remove, merge, timeline): stripped, and refused only where no stored name can match
    (empty, longer than :data:`MAX_NAME`, holding NUL, which PostgreSQL text cannot hold), so that a name stored
    before the rule stays reachable."""
    if not isinstance(name, str):
        raise EnrollmentError(f"{what}: expected a string, got {type(name).__name__}")
    text = name.strip()
    if not 1 <= len(text) <= MAX_NAME or "\x00" in text:
        raise EnrollmentError(
            f"{what}: expected 1-{MAX_NAME} characters without NUL, got {len(text):,}: {quoted(name)}"
        )
    return text


def shown(text: str) -> str:
    """``text`` for one cell of a text table: control, separator and reordering characters escaped (``\\n``,
    ``\\x1b``, ``\\u202e``), so a cell stays on its line and in its order."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
