"""pipeline/web/guard.py with pipeline/web/session.py in the app: authentication before any other check of a request,
each check one pass (11,500 query parameters take well under 10 times what 1,150 do), the browser's login session
(cookie attributes, forged, expired, logged out, rotated), and the security headers on every answer, on a seeded
SQLite match log."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import pipeline.web.guard as guard
from gallery.db import Database
from gallery.thumbnails import ThumbnailStore
from pipeline.web.app import create_app, trusted_hosts
from pipeline.web.guard import CSP, Guard
from pipeline.web.session import COOKIE
from tests.gallery.helpers import seed_log

TOKEN = "guard-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what a browser opening a page sends
SECURITY = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    store = ThumbnailStore(root / "thumbs")
    with Database(f"sqlite:///{root / 'log.db'}") as db:
        seed_log(db, store)
        yield db, store


def _client(log, **options) -> TestClient:
    db, store = log
    return TestClient(create_app(db, store, token=TOKEN, **options))


def _login(client: TestClient, token: str = TOKEN):
    return client.post("/login", data={"token": token}, follow_redirects=False)


def _sessions(client: TestClient):
    """The app's session keeper (to move its clock)."""
    return next(m.kwargs["sessions"] for m in client.app.user_middleware if m.cls is Guard)


def _params(n: int) -> str:
    return "&".join(f"{i:x}" for i in range(n))  # distinct names, about 5 bytes each


async def _status(app, query: bytes, headers: dict) -> int:
    """One GET /api/matches straight through the ASGI app (no HTTP client to build the URL): its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/matches",
        "raw_path": b"/api/matches",
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    started = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            started.append(message["status"])

    await app(scope, receive, send)
    return started[0]


def _time(app, query: str, headers: dict, status: int) -> float:
    """The best of 20 times the app takes to answer a request with ``query``."""

    async def timed() -> float:
        best = float("inf")
        for _ in range(20):
            start = time.perf_counter()
            assert await _status(app, query.encode(), headers) == status
            best = min(best, time.perf_counter() - start)
        return best

    return asyncio.run(timed())


@pytest.mark.parametrize("headers,status", [({}, 401), (AUTH, 400)])
def test_many_query_parameters_cost_one_pass_after_authentication(log, monkeypatch, headers, status):
    """11,500 parameters: 401 without credentials, 400 with them, neither parsing them (no call of parse_qsl)
    nor taking much longer than 1,150 (a quadratic check took 100 times longer)."""
    calls = []
    monkeypatch.setattr(guard, "parse_qsl", lambda *a, **k: calls.append(1) or [])
    client = _client(log)
    response = client.get(f"/api/matches?{_params(11_500)}", headers=headers)
    assert response.status_code == status and calls == []
    if status == 400:
        assert response.json()["detail"] == "query: expected at most 100 parameters, got 11,500"
    else:
        assert "Authorization: Bearer <token>" in response.json()["detail"]
    small = _time(client.app, _params(1_150), headers, status)
    large = _time(client.app, _params(11_500), headers, status)
    # ten times the bytes: linear is at most 10 times (here 1-4: the fixed cost dominates); quadratic was 100
    assert large < 10 * small, (small, large)


@pytest.mark.parametrize(
    "query,status,message",
    [
        (_params(100), 200, ""),
        (_params(101), 400, "query: expected at most 100 parameters, got 101"),
        (
            "identity=ann&page=1&identity=bob",
            400,
            "query parameter identity: expected one value, got several",
        ),
        ("identit%79=ann&identity=bob", 400, "query parameter identity: expected one value"),  # once decoded
        ("identity=" + "a" * 9000, 414, "query: expected at most 8,192 bytes, got 9,009"),
    ],
)
def test_query_limits(log, query, status, message):
    client = _client(log)
    assert client.get(f"/api/matches?{query}").status_code == 401  # authentication first
    response = client.get(f"/api/matches?{query}", headers=AUTH)
    assert response.status_code == status and message in str(response.json().get("detail", ""))


@pytest.mark.parametrize(
    "headers,message",
    [
        ({f"x-h{i}": "1" for i in range(70)}, "headers: expected at most 64, got"),
        ({"x-big": "b" * 17_000}, "headers: expected at most 16,384 bytes, got"),
    ],
)
def test_header_limits(log, headers, message):
    client = _client(log)
    assert client.get("/api/matches", headers=headers).status_code == 401
    response = client.get("/api/matches", headers=headers | AUTH)
    assert response.status_code == 431 and message in response.json()["detail"]


def test_the_host_is_checked_after_authentication(log):
    db, store = log
    app = create_app(db, store, token=TOKEN, allowed_hosts=trusted_hosts("127.0.0.1"))
    client = TestClient(app, base_url="http://attacker.example")
    assert client.get("/api/matches").status_code == 401
    response = client.get("/api/matches", headers=AUTH)
    assert response.status_code == 400 and response.json()["detail"].startswith("Host header")


def test_the_login_session(log):
    client = _client(log, session_max_age_s=600)
    assert client.get("/").status_code == 401
    page = client.get("/login")
    assert page.status_code == 200 and 'type="password" name="token"' in page.text
    response = _login(client)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    value = cookie.split(";")[0].split("=", 1)[1]
    assert value and value != TOKEN and TOKEN not in cookie
    assert cookie.endswith("; Path=/; Max-Age=600; HttpOnly; SameSite=Strict")
    page = client.get("/")  # the cookie now authorises the page, its images and the API
    assert page.status_code == 200 and page.text.count('class="thumb"') == 8 and 'id="logout"' in page.text
    assert client.get("/thumbnails/gate/run1/track0.jpg").status_code in (200, 404)
    assert client.get("/api/matches").status_code == 200
    response = client.post("/logout", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert response.headers["set-cookie"] == f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
    again = TestClient(client.app, cookies={COOKIE: value})  # the old cookie, kept by someone
    response = again.get("/api/matches")
    assert response.status_code == 401 and "session logged out" in response.json()["detail"]


@pytest.mark.parametrize("case", ["forged", "the token", "expired", "another server", "rotated token"])
def test_a_cookie_that_is_no_session_is_refused_and_cleared(log, case):
    client = _client(log)
    value = _login(client).headers["set-cookie"].split(";")[0].split("=", 1)[1]
    if case == "forged":
        expires, nonce, signature = value.split(".")
        value = f"{int(expires) + 86400}.{nonce}.{signature}"
    elif case == "the token":  # the former cookie held the token itself
        value = TOKEN
    elif case == "expired":
        sessions = _sessions(client)
        sessions.clock = lambda: time.time() + sessions.max_age_s
    elif case == "another server":  # a restart with the same token
        client = _client(log)
    else:
        db, store = log
        client = TestClient(create_app(db, store, token=TOKEN + "-new"))
    client.cookies.clear()
    client.cookies.set(COOKIE, value)
    response = client.get("/api/matches")
    assert response.status_code == 401 and "session cookie" in response.json()["detail"]
    assert response.headers["set-cookie"].startswith(f"{COOKIE}=; Path=/; Max-Age=0")
    page = client.get("/", headers=HTML, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"


@pytest.mark.parametrize(
    "request_kwargs,status,message",
    [
        ({"data": {"token": "wrong-token"}}, 401, "token: not this server&#39;s API token"),
        ({"data": {"other": TOKEN}}, 401, "not this server"),
        ({"json": {"token": TOKEN}}, 415, "expected a form"),
        ({"data": {"token": "x" * 5000}}, 413, "at most 4,096 bytes"),
        (
            {
                "content": "&".join(["a=1"] * 11) + f"&token={TOKEN}",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            400,
            "too many fields",
        ),
    ],
)
def test_bad_logins(log, request_kwargs, status, message):
    client = _client(log)
    response = client.post("/login", follow_redirects=False, **request_kwargs)
    assert response.status_code == status and message in response.text and 'id="error"' in response.text
    assert "set-cookie" not in response.headers


def test_the_token_in_a_link_no_longer_logs_in(log):
    client = _client(log)
    response = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert response.status_code == 401 and "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "authorization", ["Basic " + TOKEN, TOKEN, "Bearer", "Bearer wrong-token", f"Bearer {TOKEN}x"]
)
def test_a_wrong_authorization_header_is_refused_even_with_a_session(log, authorization):
    client = _client(log)
    _login(client)
    response = client.get("/api/matches", headers={"Authorization": authorization})
    assert (
        response.status_code == 401
        and "Authorization: expected 'Bearer <token>'" in response.json()["detail"]
    )
    assert client.get("/api/matches").status_code == 200


@pytest.mark.parametrize(
    "method,url,credentials,status",
    [
        ("get", "/api/matches", AUTH, 200),
        ("get", "/", AUTH, 200),
        ("get", "/timeline?name=ann", AUTH, 200),
        ("get", "/thumbnails/{thumb}", AUTH, 200),
        ("get", "/thumbnails/nothing.jpg", AUTH, 404),
        ("get", "/openapi.json", AUTH, 200),
        ("get", "/api/matches?since=yesterday", AUTH, 400),
        ("get", "/api/matches", {}, 401),
        ("get", "/", HTML, 303),
        ("get", "/login", {}, 200),
        ("get", "/style.css", {}, 200),
        ("post", "/logout", {}, 303),
    ],
)
def test_security_headers_on_every_answer(log, method, url, credentials, status):
    db, store = log
    thumb = next(p for p in store.root.rglob("*.jpg")).relative_to(store.root).as_posix()
    client = _client(log)
    response = getattr(client, method)(url.format(thumb=thumb), headers=credentials, follow_redirects=False)
    assert response.status_code == status
    assert {name: response.headers.get(name) for name in SECURITY} == SECURITY
    assert response.headers["cross-origin-resource-policy"] == "same-origin"


def test_without_a_token_the_headers_are_there_and_no_login(log):
    db, store = log
    client = TestClient(create_app(db, store))
    response = client.get("/")
    assert response.status_code == 200 and 'id="logout"' not in response.text
    assert response.headers["content-security-policy"] == CSP
    assert client.get("/login").status_code == 404
    assert client.get("/api/matches?a=1&a=2").status_code == 400  # the limits hold without a token too


def test_websockets_are_refused(log):
    client = _client(log)
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/api/matches", headers=AUTH):
            pass


def test_the_pages_need_no_inline_style(log):
    client = _client(log)
    for url in ("/", "/timeline", "/login"):
        text = client.get(url, headers=AUTH).text
        assert "<style" not in text and "style=" not in text and "<script" not in text
        assert '<link rel="stylesheet" href="/style.css">' in text
    css = client.get("/style.css")
    assert css.headers["content-type"].startswith("text/css") and "img.thumb" in css.text
