"""pipeline/web/app.py: JSON endpoints, token auth, thumbnails (no traversal), and the page in headless
Chromium (logged in through the login page: the session cookie's attributes, the security headers, no CSP
violation)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from gallery.db import Database
from gallery.queries import MAX_PAGE
from gallery.thumbnails import ThumbnailStore
from pipeline.web.app import COOKIE, create_app, trusted_hosts
from pipeline.web.guard import CSP
from tests.gallery.helpers import seed_log

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def served(db_url, tmp_path):
    store = ThumbnailStore(tmp_path / "thumbs")
    (tmp_path / "outside.txt").write_text("not for the web")
    with Database(db_url) as db:
        seed_log(db, store)
        yield db, store


def test_api_endpoints(served):
    db, store = served
    client = TestClient(create_app(db, store, token=TOKEN))
    body = client.get("/api/matches", params={"identity": "ann", "page_size": 3}, headers=AUTH).json()
    assert [r["track_id"] for r in body["rows"]] == [6, 4, 2] and body["has_more"]
    body = client.get("/api/matches", params={"source": "lobby", "decision": "match"}, headers=AUTH).json()
    assert [(r["track_id"], r["identity"]) for r in body["rows"]] == [(3, "bob")]
    body = client.get(
        "/api/matches", params={"since": "2026-03-01T10:05:00Z", "min_score": 0.5}, headers=AUTH
    )
    assert [r["track_id"] for r in body.json()["rows"]] == [6]
    assert [
        r["track_id"]
        for r in client.get("/api/tracks", params={"page": 2, "page_size": 5}, headers=AUTH).json()["rows"]
    ] == [2, 1, 0]
    assert [
        r["name"]
        for r in client.get("/api/identities", params={"watchlist": True}, headers=AUTH).json()["rows"]
    ] == ["bob"]


@pytest.mark.parametrize(
    "params,status,message",
    [
        ({"identity": "zed"}, 404, "'zed': not in the gallery"),
        ({"since": "2026-03-01T10:00:00"}, 400, "expected a time with a timezone"),
        ({"decision": "maybe"}, 422, "match"),
        ({"page": 0}, 422, ""),
        ({"page": "10000000000000000000"}, 422, ""),
        ({"page_size": "10000000000000000000"}, 422, ""),
        ({"page": "-10000000000000000000"}, 422, ""),
        ({"page": 20_000_002}, 400, "page: expected at most 20000001 with page size 50"),
        ({"page": 1_000_002, "page_size": 1000}, 400, "page: expected at most 1000001 with page size 1000"),
        ({"min_score": "nan"}, 400, "min_score: expected a finite number"),
        ({"since": "-2226"}, 400, "since: expected an ISO 8601 time with a timezone"),
        ({"until": "yesterday"}, 400, "until: expected an ISO 8601 time with a timezone"),
        (
            {"until": ""},
            400,
            "until: expected an ISO 8601 time with a timezone, e.g. 2026-03-01T10:00:00Z, got ''",
        ),
        ({"identity": ["ann", "bob"]}, 400, "query parameter identity: expected one value"),
        ({"identity": "a\x00b"}, 400, "identity: expected a name without NUL"),
        ({"since": "0001-01-01T00:00:00+05:00"}, 400, "since: expected a time between years 1 and 9999"),
    ],
)
def test_api_bad_filters(served, params, status, message):
    db, store = served
    client = TestClient(create_app(db, store))
    for url in ("/api/matches", "/api/tracks"):
        response = client.get(url, params=params)
        assert response.status_code == status and message in str(response.json()["detail"])


def test_page_beyond_the_bound_is_refused_on_the_page_too(served):
    db, store = served
    client = TestClient(create_app(db, store))
    assert client.get("/", params={"page": "10000000000000000000"}).status_code == 422
    response = client.get("/", params={"page": 20_000_002})
    assert response.status_code == 400 and "page: expected at most" in response.json()["detail"]
    assert "No matches." in client.get("/", params={"page": 20_000_001}).text


@pytest.mark.parametrize(
    "bind,extra,host,status",
    [
        ("127.0.0.1", (), "127.0.0.1:8000", 200),
        ("127.0.0.1", (), "localhost:8000", 200),
        ("127.0.0.1", (), "LOCALHOST.", 200),
        ("127.0.0.1", (), "[::1]:8000", 200),
        ("::1", (), "[::1]", 200),
        ("127.0.0.1", (), "attacker.example:8000", 400),
        ("127.0.0.1", (), "attacker.example", 400),
        ("127.0.0.1", (), "127.0.0.1.attacker.example", 400),
        ("127.0.0.1", (), "", 400),
        ("127.0.0.1", ("gallery.lan",), "gallery.lan:8000", 200),
        ("127.0.0.1", ("gallery.lan",), "other.lan", 400),
        ("10.1.2.3", (), "10.1.2.3:8000", 200),
        ("10.1.2.3", (), "localhost", 400),
        ("0.0.0.0", (), "localhost:8000", 200),
        ("0.0.0.0", (), "attacker.example", 400),
        ("127.0.0.1", ("*",), "anything.example", 200),
    ],
)
def test_trusted_hosts(served, bind, extra, host, status):
    db, store = served
    client = TestClient(create_app(db, store, token=TOKEN, allowed_hosts=trusted_hosts(bind, extra)))
    for url in ("/api/matches", "/", "/openapi.json", "/thumbnails/source1/run1/track0.jpg"):
        response = client.get(url, headers=AUTH | {"host": host})
        assert response.status_code == status, (url, response.text)
        if status == 400:
            assert response.json()["detail"].startswith("Host header: expected one of")


def test_trusted_hosts_of_a_wildcard_bind_hold_this_machine():
    names = trusted_hosts("0.0.0.0")
    assert {"localhost", "127.0.0.1", "::1", socket.gethostname().lower()} <= names
    assert "0.0.0.0" not in names and "" not in names


def test_openapi_schema_is_behind_the_token(served):
    db, store = served
    client = TestClient(create_app(db, store, token=TOKEN))
    assert client.get("/openapi.json").status_code == 401
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert {"/api/matches", "/api/tracks", "/api/identities", "/", "/thumbnails/{rel}"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    params = schema["paths"]["/api/matches"]["get"]["parameters"]
    assert {p["name"]: p["schema"].get("maximum") for p in params}["page"] == MAX_PAGE


@pytest.mark.parametrize(
    "headers,cookies",
    [
        ({}, {}),
        ({"Authorization": "Bearer wrong-token"}, {}),
        ({"Authorization": TOKEN}, {}),
        ({}, {COOKIE: "wrong-token"}),
    ],
)
def test_wrong_or_missing_token_is_refused(served, headers, cookies):
    db, store = served
    client = TestClient(create_app(db, store, token=TOKEN), cookies=cookies)
    for url in ("/api/matches", "/api/identities", "/", "/thumbnails/source1/run1/track0.jpg"):
        response = client.get(url, headers=headers)
        assert response.status_code == 401 and "token" in response.json()["detail"]
    assert client.get("/?token=wrong-token", follow_redirects=False).status_code == 401


def test_login_sets_a_session_cookie(served):
    db, store = served
    client = TestClient(create_app(db, store, token=TOKEN))
    first = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    assert client.cookies[COOKIE] != TOKEN
    assert client.get("/").text.count('class="thumb"') == 8  # the cookie now authorises


@pytest.mark.parametrize(
    "rel",
    [
        "..%2F..%2Foutside.txt",
        "%2E%2E/outside.txt",
        "source1/..%2F..%2F..%2Foutside.txt",
        "%2Fetc%2Fpasswd",
        "source1%5C..%5Coutside.txt",
    ],
)
def test_thumbnail_traversal_is_refused(served, rel):
    db, store = served
    response = TestClient(create_app(db, store)).get(f"/thumbnails/{rel}")
    assert response.status_code in (400, 404) and b"not for the web" not in response.content
    if response.status_code == 400:
        assert "thumbnail path" in response.json()["detail"]


def test_thumbnails_and_page(served):
    db, store = served
    client = TestClient(create_app(db, store))
    image = client.get("/thumbnails/source1/run1/track0.jpg")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert client.get("/thumbnails/source1/run1/track99.jpg").status_code == 404
    page = client.get("/", params={"identity": "ann"}).text
    assert page.count('class="thumb"') == 4 and "0.860" in page
    assert (
        '<nav><a href="/">Recent matches</a><a href="/tracks">Tracks</a><a href="/feed">Live feed</a>'
        '<a href="/timeline">Timelines</a><a href="/reviews">Review queue</a><a href="/audit">Audit trail</a></nav>'
        in page  # an open server's actor is the local admin
    )
    assert (
        "No matches."
        in TestClient(create_app(db, store)).get("/", params={"source": "lobby", "identity": "ann"}).text
    )


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _browser_or_skip():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium not installed (pip install selenium)"
    )
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip(
            "headless browser test needs chromium and chromedriver (scripts/system-deps.sh installs them)"
        )
    return webdriver, browser, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Every thumbnail image on the page: loaded?, natural size, the grey level of its centre pixel, and the track id
# its alt text ends with ("track 7", "track 1:7").
PIXELS = """return Array.from(document.querySelectorAll('img.thumb')).map(img => {
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const p = img.naturalWidth ? g.getImageData(img.naturalWidth >> 1, img.naturalHeight >> 1, 1, 1).data :
  [-1];
  return [img.complete, img.naturalWidth, img.naturalHeight, p[0],
          img.alt.split(/[ :]/).pop()];
});"""


@contextmanager
def served_in_chromium(app, tmp_path, monkeypatch):
    """``app`` served by uvicorn on a free loopback port, seen by a headless Chromium: yields (driver, base URL)."""
    webdriver, browser, driver_path = _browser_or_skip()
    import uvicorn
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium fetch drivers or browsers
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path / 'profile'}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for CSP violations
    chrome = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        chrome.set_page_load_timeout(30)
        yield chrome, f"http://127.0.0.1:{port}"
    finally:
        chrome.quit()
        server.should_exit = True
        thread.join(timeout=10)


def log_in(chrome, base: str, token: str = TOKEN) -> None:
    """Open the page in ``chrome``: redirected to the login page, log in with ``token``, back on the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chrome.get(f"{base}/")
    assert chrome.current_url == f"{base}/login"
    chrome.find_element(By.NAME, "token").send_keys(token)
    chrome.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(chrome, 20).until(lambda d: d.current_url == f"{base}/")


def csp_violations(chrome) -> list[str]:
    """Console messages of the pages opened since the last call that report a Content-Security-Policy violation."""
    return [e["message"] for e in chrome.get_log("browser") if "Content Security Policy" in e["message"]]


SECURITY = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.mark.slow
def test_page_renders_thumbnails_in_headless_chromium(served, tmp_path, monkeypatch):
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    db, store = served
    with served_in_chromium(create_app(db, store, token=TOKEN), tmp_path, monkeypatch) as (chrome, base):
        log_in(chrome, base)
        # the session cookie as the browser keeps it: not the token, HttpOnly, SameSite=Strict, the app's path,
        # expiring with the session
        [cookie] = [c for c in chrome.get_cookies() if c["name"] == COOKIE]
        assert cookie["value"] != TOKEN and TOKEN not in cookie["value"]
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")
        assert abs(cookie["expiry"] - (time.time() + 12 * 3600)) < 300
        # the security headers of the page, a thumbnail and the API, fetched with the browser's session
        with requests.Session() as web:
            web.cookies.set(COOKIE, cookie["value"])
            for url in ("/", "/thumbnails/source1/run1/track0.jpg", "/api/matches", "/style.css"):
                response = web.get(f"{base}{url}", timeout=10)
                assert response.status_code == 200, url
                assert {name: response.headers.get(name) for name in SECURITY} == SECURITY
        # and the page works under that policy: its stylesheet applies, every thumbnail loads, nothing refused
        height = "return getComputedStyle(document.querySelector('img.thumb')).height"
        assert chrome.execute_script(height) == "64px"
        shown = chrome.execute_script(PIXELS)
        assert [s[4] for s in shown] == [str(t) for t in range(7, -1, -1)]  # newest first
        for complete, width, height, grey, track in shown:
            assert complete and (width, height) == (40, 48)
            assert abs(grey - 30 * int(track)) <= 3  # the seeded crop of that very track
        chrome.get(f"{base}/?identity=bob")
        assert [s[4] for s in chrome.execute_script(PIXELS)] == ["3"]
        assert csp_violations(chrome) == []
        chrome.find_element(By.ID, "logout").click()  # logs out: the cookie is gone, the page asks to log in
        WebDriverWait(chrome, 20).until(lambda d: d.current_url == f"{base}/login")
        assert chrome.current_url == f"{base}/login" and COOKIE not in {
            c["name"] for c in chrome.get_cookies()
        }
        chrome.get(f"{base}/")
        assert chrome.current_url == f"{base}/login" and csp_violations(chrome) == []
