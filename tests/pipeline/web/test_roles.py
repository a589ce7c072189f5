"""pipeline/web/access.py in the app: every route of the app tried as each role (users' tokens, the shared token,
sessions) and without credentials, allowed exactly where docs/access.md says (401/403 elsewhere), each attempt in
the audit trail as the matrix says (every refusal; allowed requests of audited actions) and `audit verify` passing
after them all; the login by
name and password; a disabled or rotated user's sessions end at the next request; login attempts limited; pages
hide what the role cannot use. On a seeded SQLite match log. Headless Chromium: a viewer has no search form and
gets 403 from the search API, logs out, an investigator searches a photo and confirms the top match from its track
page, an admin sees it all in the audit page."""

from __future__ import annotations

import logging
import re
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import run_pipeline
from core.errors import UserError
from gallery.access_models import AuditEntry
from gallery.db import Database
from gallery.errors import QueryError
from gallery.queries import Filters, find_tracks
from gallery.thumbnails import ThumbnailStore
from gallery.users import ROLES, add_user, disable_user, rank, rotate_user
from pipeline.web.access import route_roles
from pipeline.web.app import create_app
from pipeline.web.common import Evidence, Forensic
from pipeline.web.guard import Guard
from tests.conftest import ROOT
from tests.gallery.helpers import seed_log

DOCS = ROOT / "docs" / "access.md"
CONFIG = str(ROOT / "configs" / "test.yaml")
MATRIX_ROW = re.compile(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)` \| (\w+) \|(?: ([^|]*?) \|)?$", re.M)
TOKEN = "roles-shared-token-0123"
PASSWORD = "correct horse battery"


def _refused(_ref: str):
    raise UserError("no source file in this test")


def _no_groups(**_options):
    raise QueryError("no unknown groups in this test")


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """The seeded log with one user per role: yields (db, store, {role: token})."""
    root = tmp_path_factory.mktemp("roles")
    store = ThumbnailStore(root / "thumbs")
    with Database(f"sqlite:///{root / 'log.db'}") as db:
        seed_log(db, store)
        tokens = {role: add_user(db, f"{role}-user", role, PASSWORD)[1] for role in ROLES}
        yield db, store, tokens


def _app(log, token: str | None = TOKEN, **options):
    db, store, _ = log
    forensic = Forensic(search=lambda photos, **_: [], unknowns=_no_groups)
    return create_app(
        db,
        store,
        token=token,
        forensic=forensic,
        evidence=Evidence(clip=_refused, export=_refused),
        **options,
    )


def _documented() -> dict[tuple[str, str], str | None]:
    rows = MATRIX_ROW.findall(DOCS.read_text())
    table = {(method, path): (None if role == "open" else role) for method, path, role, _ in rows}
    assert len(table) == len(rows), "a route listed twice in docs/access.md"
    return table


def _audited() -> dict[tuple[str, str], set[str]]:
    """The audit actions an allowed request of each route appends, as docs/access.md lists them (empty: none)."""
    return {
        (method, path): {a.strip() for a in actions.split(",") if a.strip() not in ("", "—", "-")}
        for method, path, _, actions in MATRIX_ROW.findall(DOCS.read_text())
    }


def _entries_after(db: Database, after: int) -> list[AuditEntry]:
    with db.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id)))


def _last_id(db: Database) -> int:
    entries = _entries_after(db, 0)
    return entries[-1].id if entries else 0


def test_the_documented_matrix_is_the_apps(log):
    app = _app(log)
    code = route_roles(app)
    shown = "\n".join(f"| {m} | `{p}` | {r or 'open'} |" for (m, p), r in code.items())
    assert code == _documented(), f"docs/access.md is not the app's matrix; the app's:\n{shown}"
    assert set(code.values()) == {None, *ROLES}  # each role guards at least one route


def _concrete(log, method: str, path: str) -> tuple[str, dict]:
    """A request to the route ``path``: its path parameters filled with values of the seeded log, and the
    headers that keep an allowed request short (the feed answers 400 to a bad Last-Event-ID, not a stream)."""
    db, store, _ = log
    ref = find_tracks(db, Filters(page_size=1)).rows[0]["ref"]
    thumb = next(p for p in store.root.rglob("*.jpg")).relative_to(store.root).as_posix()
    url = (
        path.replace("{ref}", ref)
        .replace("{rel:path}", thumb)
        .replace("{media}", "1")
        .replace("{name}", "ann")
    )
    assert "{" not in url, f"no value for a path parameter of {path}"
    headers = {"Last-Event-ID": "not-an-id"} if path == "/api/feed" else {}
    return url, headers


def _as(log, who: str) -> dict:
    _, _, tokens = log
    if who == "nobody":
        return {}
    return {"Authorization": f"Bearer {TOKEN if who == 'shared token' else tokens[who]}"}


WHO = ("nobody", *ROLES, "shared token")
ACTOR = {"nobody": ("anonymous", "anonymous"), "shared token": ("api-token", "token")} | {
    role: (f"{role}-user", "user") for role in ROLES
}


def _audit_problem(
    entries: list[AuditEntry], method: str, url: str, who: str, allowed: bool, needed, actions
):
    """Why the entries one attempt appended are not what docs/access.md says, or None."""
    got = [(e.action, e.result) for e in entries]
    if not allowed:
        actor = ACTOR[who]
        if len(entries) != 1 or got[0] != ("request", "denied"):
            return f"expected one ('request', 'denied') entry, got {got}"
        e = entries[0]
        where = (e.details.get("method"), e.details.get("path"), (e.actor, e.actor_kind))
        return None if where == (method, url, actor) else f"expected {(method, url, actor)}, got {where}"
    if not actions:
        return None if entries == [] else f"allowed browsing, expected no entry, got {got}"
    if len(entries) != 1 or entries[0].action not in actions:
        return f"expected one entry of {sorted(actions)}, got {got}"
    actor = ACTOR[who] if needed is not None else ("anonymous", "anonymous")  # open routes: no actor yet
    got_actor = (entries[0].actor, entries[0].actor_kind)
    return None if got_actor == actor else f"expected the actor {actor}, got {got_actor}"


def test_every_route_as_each_role_and_without_credentials(log, capsys):
    """Allowed (neither 401 nor 403) exactly where the matrix says; 401 without credentials, 403 below the role;
    each refusal one ``denied`` entry naming the method, path and actor, each allowed request of an audited route
    one entry of the action the matrix lists, other allowed requests none; the chain verifies afterwards."""
    db = log[0]
    client = TestClient(_app(log))
    matrix, audited = _documented(), _audited()
    assert matrix == route_roles(client.app)  # no route left untried
    wrong, denials = [], 0
    for (method, path), needed in matrix.items():
        url, headers = _concrete(log, method, path)
        for who in WHO:
            role = {"nobody": None, "shared token": "admin"}.get(who, who)
            before = _last_id(db)
            response = client.request(method, url, headers=headers | _as(log, who), follow_redirects=False)
            allowed = needed is None or (role is not None and rank(role) >= rank(needed))
            if allowed:
                ok = response.status_code not in (401, 403)
            elif role is None:
                ok = response.status_code == 401
            else:
                ok = response.status_code == 403 and needed in response.json()["detail"]
            if not ok:
                wrong.append(
                    f"{method} {path} as {who}: {response.status_code} (needs {needed or 'nothing'})"
                )
            entries = _entries_after(db, before)
            problem = _audit_problem(entries, method, url, who, allowed, needed, audited[(method, path)])
            if problem is not None:
                wrong.append(f"{method} {path} as {who}: audit: {problem}")
            denials += not allowed
    assert wrong == []
    assert denials > sum(
        needed is not None for needed in matrix.values()
    )  # nobody's, and some roles' refusals
    url = f"sqlite:///{db.sqlite_path}"
    assert run_pipeline.main(["audit", "verify", "--db", url, "--config", CONFIG]) == 0
    assert "chain intact" in capsys.readouterr().err


def _login(client: TestClient, **fields) -> str:
    response = client.post("/login", data=fields, follow_redirects=False)
    assert response.status_code == 303, response.text
    value = response.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    assert PASSWORD not in value and all(t not in value for t in client.tokens)
    return value


@pytest.mark.parametrize("token", [TOKEN, None])  # with the shared token and with users only
def test_sessions_carry_the_users_role(log, token):
    db, store, tokens = log
    client = TestClient(_app(log, token=token))
    client.tokens = list(tokens.values())
    _login(client, name="viewer-user", password=PASSWORD)
    page = client.get("/")
    assert page.status_code == 200 and 'href="/search"' not in page.text and 'id="logout"' in page.text
    assert client.get("/search").status_code == 403
    assert client.post("/api/search", files={"photo": ("a.png", b"x")}).status_code == 403
    assert client.get("/api/users").status_code == 403
    track = client.get(f"/track/{_concrete(log, 'GET', '/track/{ref}')[0].split('/')[-1]}")
    assert track.status_code == 200 and 'id="export"' not in track.text and 'id="clip"' not in track.text
    client.post("/logout")
    assert client.get("/").status_code == 401
    _login(client, token=tokens["investigator"])  # a user's token logs in too
    page = client.get("/")
    assert 'href="/search"' in page.text and client.get("/search").status_code == 200
    track = client.get(f"/track/{_concrete(log, 'GET', '/track/{ref}')[0].split('/')[-1]}")
    assert 'id="export"' in track.text
    assert client.get("/api/users").status_code == 403


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "viewer-user", "password": PASSWORD + "x"},
        {"name": "nobody-at-all", "password": PASSWORD},
        {"name": "viewer-user", "password": ""},
        {"name": "viewer-user"},
        {"token": "abc.def"},
    ],
)
def test_bad_logins_are_refused(log, fields):
    client = TestClient(_app(log))
    response = client.post("/login", data=fields, follow_redirects=False)
    assert response.status_code == 401 and "set-cookie" not in response.headers


def test_disabling_or_rotating_ends_the_users_sessions_at_the_next_request(log, tmp_path):
    root = tmp_path
    with Database(f"sqlite:///{root / 'users.db'}") as db:
        _, kept_token = add_user(db, "kept", "viewer", PASSWORD)
        _, gone_token = add_user(db, "gone", "investigator", PASSWORD)
        _, turned_token = add_user(db, "turned", "admin", PASSWORD)
        app = create_app(db, ThumbnailStore(root / "thumbs"))  # users only: authentication without a token
        clients = {}
        for name in ("kept", "gone", "turned"):
            clients[name] = TestClient(app)
            clients[name].tokens = []
            _login(clients[name], name=name, password=PASSWORD)
            assert clients[name].get("/api/matches").status_code == 200
        disable_user(db, "gone")
        _, new_token = rotate_user(db, "turned")
        assert clients["kept"].get("/api/matches").status_code == 200
        for name, why in (("gone", "disabled"), ("turned", "rotated")):
            response = clients[name].get("/api/matches")
            assert response.status_code == 401 and why in response.json()["detail"]
        bearer = lambda t: TestClient(app).get("/api/matches", headers={"Authorization": f"Bearer {t}"})  # noqa: E731
        assert [bearer(t).status_code for t in (kept_token, gone_token, turned_token, new_token)] == [
            200,
            401,
            401,
            200,
        ]
        fresh = TestClient(app)
        fresh.tokens = []
        _login(fresh, name="turned", password=PASSWORD)  # the password still works after a rotation
        assert fresh.get("/api/users").status_code == 200
        refused = fresh.post("/login", data={"name": "gone", "password": PASSWORD}, follow_redirects=False)
        assert refused.status_code == 401


def test_sessions_expire(log):
    client = TestClient(_app(log, session_max_age_s=60))
    client.tokens = []
    _login(client, name="admin-user", password=PASSWORD)
    assert client.get("/api/users").status_code == 200
    sessions = next(m.kwargs["sessions"] for m in client.app.user_middleware if m.cls is Guard)
    sessions.clock = lambda: time.time() + 61
    response = client.get("/api/users")
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_login_attempts_are_limited_per_client(log):
    client = TestClient(_app(log))
    statuses = [client.post("/login", data={"token": "wrong-token"}).status_code for _ in range(8)]
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:]
    time.sleep(1.1)
    assert client.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303


def test_the_shared_token_beside_users_warns_once_at_start(log, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.web.app"):
        _app(log)
    assert [r.message for r in caplog.records].count(
        "the shared API token acts as an admin beside the users; prefer users' own tokens"
    ) == 1


def test_a_server_without_token_or_users_is_open_as_the_local_admin(tmp_path):
    with Database(f"sqlite:///{tmp_path / 'open.db'}") as db:
        client = TestClient(create_app(db, None))
        assert client.get("/api/users").status_code == 200


@pytest.mark.slow
def test_viewer_then_investigator_in_headless_chromium(tmp_path_factory, tmp_path, monkeypatch):
    """A viewer logs in by name and password: no search link nor form, 403 from the search API with the session;
    logs out; an investigator logs in and searches a photo of Rachel (enrolled, then the friends clip processed,
    real models), opens the top hit's track page (a match on her) and confirms it there, the review shown on the
    page; an admin's audit page shows the viewer's refusal, the search with the photo's SHA-256, the review under
    the investigator's name and the logins."""
    import hashlib

    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import run_pipeline
    from tests.conftest import require
    from tests.pipeline.web.test_app import csp_violations, served_in_chromium
    from tests.pipeline.web.test_serve import CLIP, CONFIG, STILLS, _serve

    url = f"sqlite:///{tmp_path_factory.mktemp('chromium') / 'log.db'}"
    rachel = str(require(STILLS) / "Rachel.png")
    assert (
        run_pipeline.main(["enroll", "--db", url, "--config", str(CONFIG), "--name", "Rachel", rachel]) == 0
    )
    # enrolled before the clip is processed: her tracks are logged as matches, which a reviewer can confirm
    argv = ["process", str(require(CLIP)), "--db", url, "--config", str(CONFIG), "--no-progress"]
    assert run_pipeline.main(argv) == 0
    with Database(url, create=False) as db:
        add_user(db, "vera", "viewer", PASSWORD)
        add_user(db, "ivan", "investigator", PASSWORD)
        add_user(db, "ada", "admin", PASSWORD)

    def log_in(chrome, base: str, name: str) -> None:
        chrome.get(f"{base}/")
        assert chrome.current_url == f"{base}/login"
        chrome.find_element(By.CSS_SELECTOR, "#password-login input[name=name]").send_keys(name)
        chrome.find_element(By.CSS_SELECTOR, "#password-login input[name=password]").send_keys(PASSWORD)
        chrome.find_element(By.CSS_SELECTOR, "#password-login button[type=submit]").click()
        WebDriverWait(chrome, 20).until(lambda d: d.current_url == f"{base}/")

    with (
        _serve(url) as (client, _),
        served_in_chromium(client.app, tmp_path, monkeypatch) as (chrome, base),
    ):
        log_in(chrome, base, "vera")
        assert chrome.find_elements(By.CSS_SELECTOR, "nav a[href='/search']") == []
        chrome.get(f"{base}/search")
        assert chrome.find_elements(By.NAME, "photo") == [] and "403" not in chrome.title
        [cookie] = [c for c in chrome.get_cookies() if c["name"] == "facemoe_session"]
        answer = requests.post(
            f"{base}/api/search",
            files={"photo": ("Rachel.png", (STILLS / "Rachel.png").read_bytes(), "image/png")},
            cookies={cookie["name"]: cookie["value"]},
            timeout=30,
        )
        assert answer.status_code == 403 and "investigator" in answer.json()["detail"]
        chrome.get(f"{base}/")
        chrome.find_element(By.ID, "logout").click()
        WebDriverWait(chrome, 20).until(lambda d: d.current_url == f"{base}/login")
        chrome.get(f"{base}/")
        assert chrome.current_url == f"{base}/login"  # the session ended
        log_in(chrome, base, "ivan")
        chrome.find_element(By.CSS_SELECTOR, "nav a[href='/search']").click()
        chrome.find_element(By.NAME, "photo").send_keys(str(STILLS / "Rachel.png"))
        chrome.find_element(By.CSS_SELECTOR, "form[action='/search'] button[type=submit]").click()
        WebDriverWait(chrome, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results tr.row"))
        chrome.save_screenshot(str(tmp_path / "investigator-search.png"))
        assert csp_violations(chrome) == []
        # the top hit (best score first): its track page, a match on Rachel, confirmed by its button
        top = chrome.find_elements(By.CSS_SELECTOR, "#results tr.row")[0]
        ref = top.find_element(By.CSS_SELECTOR, "td.ref").text
        assert top.find_element(By.CSS_SELECTOR, "td.match").text == "Rachel"
        top.find_element(By.CSS_SELECTOR, "a.view").click()
        WebDriverWait(chrome, 20).until(lambda d: d.current_url == f"{base}/track/{ref}")
        assert chrome.find_element(By.CSS_SELECTOR, "#track td.match").text.startswith("Rachel, score")
        assert chrome.find_elements(By.ID, "reviewed") == []  # nobody reviewed it yet
        chrome.find_element(By.CSS_SELECTOR, "#review input[name=note]").send_keys("seen on the clip")
        chrome.find_element(By.ID, "confirm").click()
        WebDriverWait(chrome, 20).until(lambda d: d.find_elements(By.ID, "reviewed"))
        assert chrome.current_url == f"{base}/track/{ref}#review"
        reviewed = chrome.find_element(By.ID, "reviewed")
        assert reviewed.get_attribute("class") == "confirmed"
        assert reviewed.text.startswith("confirmed Rachel by ivan, ") and "seen on the clip" in reviewed.text
        assert f"enroll --name Rachel --from-track {ref}" in reviewed.text
        assert chrome.find_elements(By.ID, "confirm") != []  # a confirmed match may still be rejected later
        chrome.save_screenshot(str(tmp_path / "investigator-review.png"))
        assert csp_violations(chrome) == []
        chrome.find_element(By.ID, "logout").click()
        WebDriverWait(chrome, 20).until(lambda d: d.current_url == f"{base}/login")
        log_in(chrome, base, "ada")
        chrome.find_element(By.CSS_SELECTOR, "nav a[href='/audit']").click()
        rows = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in chrome.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
        ]
        seen = [(r[2], r[3], r[4]) for r in rows]  # actor, action, result; newest first
        assert ("vera (user)", "request", "denied") in seen and ("ivan (user)", "search", "ok") in seen
        assert [a for a in seen if a[1] == "login"][:3] == [
            ("ada (user)", "login", "ok"),
            ("ivan (user)", "login", "ok"),
            ("vera (user)", "login", "ok"),
        ]
        search = next(r for r in rows if r[3] == "search")
        assert hashlib.sha256((STILLS / "Rachel.png").read_bytes()).hexdigest() in search[5]
        denied = next(r for r in rows if r[3] == "request" and r[2] == "vera (user)")
        assert '"/api/search"' in denied[6] and "403" in denied[6]
        [review] = [r for r in rows if r[3] == "review"]
        assert (review[2], review[4], review[5]) == ("ivan (user)", "ok", f'["{ref}"]')
        assert '"verdict": "confirmed"' in review[6] and '"identity": "Rachel"' in review[6]
        assert seen.index(("ivan (user)", "review", "ok")) < seen.index(("ivan (user)", "search", "ok"))
        chrome.save_screenshot(str(tmp_path / "admin-audit.png"))
        assert csp_violations(chrome) == []
