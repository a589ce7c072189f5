"""A flat ``multipart/form-data`` body (RFC 7578) read from memory in one pass, linear in its size.

Only the form's own parts are read: a part that is itself multipart (``multipart/mixed``, which RFC 7578 no
longer allows) is refused, never descended into, so no nesting depth or recursion reaches the parser. Part
headers are bounded (:data:`MAX_HEAD` bytes, :data:`MAX_HEADERS` lines), parts are counted (:data:`MAX_PARTS`).
``Content-Transfer-Encoding`` is ignored, as RFC 7578 (4.7) allows: the bytes are taken as sent.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FormRefused", "MalformedForm", "Part", "header_params", "parse_form"]

MAX_PARTS = 64  # parts of one form
MAX_HEAD = 8 * 1024  # bytes of one part's headers
MAX_HEADERS = 16  # header lines of one part
MAX_BOUNDARY = 70  # RFC 2046


class MalformedForm(ValueError):
    """The body is not a ``multipart/form-data`` body with the boundary its ``Content-Type`` names."""


class FormRefused(ValueError):
    """A well-formed body this server does not read: nested multipart parts, too many parts, too long headers."""


@dataclass(frozen=True)
class Part:
    name: str  # the form field
    filename: str | None  # the file name a file part was sent with, None for a plain field
    content_type: str  # as sent, "" for none
    data: bytes


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """A header value such as ``form-data; name="photo"; filename="a;b.png"``: its first token, lower case, and
    its parameters (names lower case, quoted values unquoted). One pass over the characters."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:  # every character is looked at once: key, '=', value, ';'
        start = i
        while i < n and rest[i] not in "=;":
            i += 1
        key = rest[start:i].strip().lower()
        if i == n or rest[i] == ";":  # a parameter without a value: skipped
            i += 1
            continue
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        chars: list[str] = []
        quoted = i < n and rest[i] == '"'
        if quoted:
            i += 1
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n and rest[i + 1] in '"\\':
                    i += 1
                chars.append(rest[i])
                i += 1
            while i < n and rest[i] != ";":  # past the closing quote, up to the next parameter
                i += 1
        else:
            while i < n and rest[i] != ";":
                chars.append(rest[i])
                i += 1
        i += 1
        if key:
            text = "".join(chars)
            params.setdefault(key, text if quoted else text.strip())
    return head.strip().lower(), params


def _headers(block: bytes) -> dict[str, str]:
    """A part's header lines, names lower case (the first of a repeated name wins)."""
    if not block:
        return {}
    lines = block.split(b"\r\n", MAX_HEADERS)
    if len(lines) > MAX_HEADERS:
        raise FormRefused(f"part headers: expected at most {MAX_HEADERS} lines, got more")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name.strip() or line[:1] in (b" ", b"\t"):
            raise MalformedForm(f"part header: expected 'Name: value', got {line[:60]!r}")
        headers.setdefault(name.strip().lower().decode("latin-1"), value.strip().decode("utf-8", "replace"))
    return headers


def _part(block: bytes, data: bytes) -> Part:
    headers = _headers(block)
    content_type = headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower().startswith("multipart/"):
        raise FormRefused(f"part: expected a field or a file, got a nested {content_type[:60]!r} part")
    kind, params = header_params(headers.get("content-disposition", ""))
    if kind != "form-data" or "name" not in params:
        raise MalformedForm("part: expected 'Content-Disposition: form-data; name=...', got none")
    return Part(params["name"], params.get("filename"), content_type, data)


def parse_form(content_type: str, body: bytes) -> list[Part]:
    """The parts of a ``multipart/form-data`` ``body`` whose ``Content-Type`` header is ``content_type``, in
    order. Raises :class:`MalformedForm` for a body that is not one, :class:`FormRefused` for one not read."""
    kind, params = header_params(content_type)
    boundary = params.get("boundary", "")
    if kind != "multipart/form-data" or not 0 < len(boundary) <= MAX_BOUNDARY:
        raise MalformedForm(
            f"Content-Type: expected multipart/form-data with a boundary of 1 to {MAX_BOUNDARY} characters, "
            f"got {content_type[:100]!r}"
        )
    delimiter = b"\r\n--" + boundary.encode("latin-1", "replace")
    data = b"\r\n" + body  # the first delimiter may open the body: give it the line break the others have
    pos = data.find(delimiter)
    if pos < 0:
        raise MalformedForm("body: expected parts separated by the boundary, got no boundary")
    parts: list[Part] = []
    while True:
        pos += len(delimiter)
        if data.startswith(b"--", pos):  # the closing delimiter; what follows is an epilogue
            return parts
        eol = data.find(b"\r\n", pos, pos + 1024)
        if eol < 0 or data[pos:eol].strip(b" \t"):
            raise MalformedForm("body: expected a line break after the boundary, got other bytes")
        end = data.find(b"\r\n\r\n", eol, eol + MAX_HEAD + 4)
        if end < 0:
            raise FormRefused(f"part headers: expected at most {MAX_HEAD:,} bytes ending in a blank line")
        following = data.find(delimiter, end + 4)
        if following < 0:
            raise MalformedForm("body: expected a closing boundary, got the end of the body")
        if len(parts) == MAX_PARTS:
            raise FormRefused(f"form: expected at most {MAX_PARTS} parts, got more")
        parts.append(_part(data[eol + 2 : end], data[end + 4 : following]))
        pos = following
