"""pipeline/web/multipart.py: flat multipart/form-data bodies as browsers and HTTP clients send them, malformed bodies,
nested parts and limits refused, and one pass over the body however it is built (no recursion, no quadratic
scan)."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from pipeline.web.multipart import MAX_PARTS, FormRefused, MalformedForm, header_params, parse_form

CT = "multipart/form-data; boundary=zz"


def _body(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(b"--zz\r\n" + p + b"\r\n" for p in parts) + (b"--zz--\r\n" if close else b"")


def _field(name: str, data: bytes, extra: str = "") -> bytes:
    return f'Content-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode() + data


def _nested(depth: int) -> bytes:
    """A form whose one part is ``multipart/mixed`` nested ``depth`` deep."""
    inner = b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    for level in range(depth, 0, -1):
        inner = (
            f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n".encode()
            + inner
            + f"\r\n--b{level}--".encode()
        )
    return _body(b'Content-Disposition: form-data; name="photo"\r\n' + inner)


def test_a_form_sent_by_an_http_client():
    files = {"photo": ('a;b "c".png', b"\x89PNG\r\n--zz not the boundary\r\n\r\n", "image/png")}
    request = httpx.Request("POST", "http://h/", files=files, data={"top": "3", "since": ""})
    parts = parse_form(request.headers["content-type"], request.read())
    got = {p.name: (p.filename, p.content_type, p.data) for p in parts}
    assert got == {
        "top": (None, "", b"3"),
        "since": (None, "", b""),
        "photo": ("a;b %22c%22.png", "image/png", b"\x89PNG\r\n--zz not the boundary\r\n\r\n"),
    }


@pytest.mark.parametrize(
    "body,expected",
    [
        (_body(_field("photo", b"DATA", '; filename="r.png"')), [("photo", "r.png", b"DATA")]),
        (b"preamble\r\n" + _body(_field("a", b"1")) + b"epilogue", [("a", None, b"1")]),
        (_body(_field("a", b""), _field("b", b"\r\n")), [("a", None, b""), ("b", None, b"\r\n")]),
        (_body(_field("a", b"1", '; filename="x\\"y.png"')), [("a", 'x"y.png', b"1")]),
        (_body(_field("a", b"1", "; filename=plain.png ; x")), [("a", "plain.png", b"1")]),
        (b"--zz  \r\n" + _field("a", b"1") + b"\r\n--zz--", [("a", None, b"1")]),  # padding after a boundary
        (b"--zz--\r\n", []),
    ],
)
def test_well_formed_bodies(body, expected):
    assert [(p.name, p.filename, p.data) for p in parse_form(CT, body)] == expected


@pytest.mark.parametrize(
    "content_type,body,error,message",
    [
        ("multipart/form-data", _body(_field("a", b"1")), MalformedForm, "with a boundary"),
        ("multipart/form-data; boundary=" + "z" * 71, b"", MalformedForm, "1 to 70 characters"),
        ("multipart/mixed; boundary=zz", _body(_field("a", b"1")), MalformedForm, "multipart/form-data"),
        (CT, b"no boundary here", MalformedForm, "got no boundary"),
        (CT, _body(_field("a", b"1"), close=False), MalformedForm, "closing boundary"),
        (CT, b"--zzjunk\r\n" + _field("a", b"1") + b"\r\n--zz--", MalformedForm, "line break after"),
        (CT, _body(b"\r\nno headers"), MalformedForm, "Content-Disposition: form-data"),
        (CT, _body(b"Content-Disposition: attachment\r\n\r\nx"), MalformedForm, "Content-Disposition"),
        (CT, _body(b"Content-Disposition: form-data\r\n folded\r\n\r\nx"), MalformedForm, "'Name: value'"),
        (CT, _body(b"X: " + b"y" * 9000 + b"\r\n\r\nx"), FormRefused, "8,192 bytes"),
        (CT, _body(b"X: y\r\n" * 20 + _field("a", b"1")), FormRefused, "at most 16 lines"),
        (CT, _body(*[_field(f"f{i}", b"1") for i in range(MAX_PARTS + 1)]), FormRefused, "at most 64 parts"),
        (CT, _nested(1), FormRefused, "nested 'multipart/mixed; boundary=b1' part"),
        (CT, _nested(1000), FormRefused, "nested"),
    ],
)
def test_bodies_refused(content_type, body, error, message):
    with pytest.raises(error, match=re.escape(message)):
        parse_form(content_type, body)


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@pytest.mark.parametrize(
    "build",
    [
        lambda n: ("x; " + "a;" * n, None),  # parameters without values
        lambda n: ('x; a="' + ';b="' * n, None),  # an unclosed quote over many parameters
        lambda n: (CT, b"--zz\r\n" + b"\r\n--z" * n),  # near-boundaries, never closed
        lambda n: (CT, _nested(n // 100)),
    ],
)
def test_parsing_is_linear(build):
    """Ten times the input takes about ten times as long, not a hundred (best of three, after a warm-up)."""

    def run(n: int) -> float:
        header, body = build(n)
        call = (lambda: header_params(header)) if body is None else (lambda: _parse_or_refuse(header, body))
        return min(_seconds(call) for _ in range(3))

    run(1000)
    small, large = run(20_000), run(200_000)
    assert large < 30 * max(small, 1e-4), (small, large)


def _parse_or_refuse(content_type: str, body: bytes) -> None:
    try:
        parse_form(content_type, body)
    except (MalformedForm, FormRefused):
        pass
