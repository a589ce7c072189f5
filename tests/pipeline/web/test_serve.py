"""pipeline/web/serve.py: ``serve``'s app with search by photo and unknown groups, on the friends clip processed
with an empty gallery (configs/test.yaml), then Rachel enrolled from her still with ``--rematch``; the page in
headless Chromium. Bad uploads (corrupt, no face, over the size limit, ...) are refused with 4xx, nothing written.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections import Counter
from contextlib import contextmanager

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import run_pipeline
from gallery.access_models import AuditEntry
from gallery.db import Database
from gallery.models import Base
from pipeline.build import build
from pipeline.config import load_config
from pipeline.web.serve import LazyModels, serve_app
from tests.conftest import ASSETS, ROOT, require
from tests.pipeline.web.test_app import csp_violations, log_in, served_in_chromium

logger = logging.getLogger(__name__)

CONFIG = ROOT / "configs" / "test.yaml"
CLIP = ASSETS / "videos" / "friends_in_video.mp4"
STILLS = ASSETS / "images" / "friends_gallery"
GROUP = ASSETS / "images" / "groups" / "insightface_t1.jpg"
TOKEN = "forensic-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The clip processed with an empty gallery; then Rachel enrolled from her still, her past tracks named."""
    url = f"sqlite:///{tmp_path_factory.mktemp('forensic') / 'log.db'}"
    argv = ["process", str(require(CLIP)), "--db", url, "--config", str(CONFIG), "--no-progress"]
    assert run_pipeline.main(argv) == 0
    rachel = str(require(STILLS) / "Rachel.png")
    argv = ["enroll", "--db", url, "--config", str(CONFIG), "--name", "Rachel", rachel, "--rematch"]
    assert run_pipeline.main(argv) == 0
    return url


@pytest.fixture
def empty(tmp_path):
    """A gallery database with the schema and nothing in it."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Database(url).close()
    return url


@contextmanager
def _serve(url: str, *overrides: str, token: str | None = None):
    """``serve``'s app over ``url`` (configs/test.yaml, the stills folder as gallery.serve.media_dirs): yields
    (client, models)."""
    sets = [f"gallery.serve.media_dirs=[{STILLS}]", *overrides]
    cfg = load_config(CONFIG, sets)
    with (
        build(cfg, db_url=url, detector=False, embedder=False, create=False) as system,
        LazyModels(cfg) as models,
    ):
        yield TestClient(serve_app(system, models, token=token)), models


def _upload(path, name: str | None = None) -> dict:
    data = path.read_bytes() if hasattr(path, "read_bytes") else path
    return {"photo": (name or getattr(path, "name", "photo.png"), data, "image/png")}


@pytest.mark.slow
def test_an_uploaded_photo_finds_rachel_first(logged, capsys):
    with _serve(logged, token=TOKEN) as (client, models):
        assert not models.loaded  # serve stays light until the first search
        client.get("/", headers=AUTH)
        client.get("/api/timeline", params={"name": "Rachel"}, headers=AUTH)
        assert not models.loaded
        response = client.post(
            "/api/search", files=_upload(STILLS / "Rachel.png"), params={"top": 5}, headers=AUTH
        )
        assert response.status_code == 200 and models.loaded
        rows = response.json()["rows"]
        assert len(rows) == 5 and [r["score"] for r in rows] == sorted(
            (r["score"] for r in rows), reverse=True
        )
        for row in rows:  # times within the file, and each thumbnail served
            assert row["kind"] == "file" and 0 <= row["start_time"] <= row["end_time"] < 30
            assert client.get(row["thumbnail_url"], headers=AUTH).headers["content-type"] == "image/jpeg"
        # the rematch after her enrollment named her tracks: the best hit is one of them
        best = client.get(f"/api/tracks/{rows[0]['ref']}", headers=AUTH).json()
        assert (best["identity"], best["retroactive"], best["logged_decision"]) == ("Rachel", True, "unknown")
        assert best["enrolled"]["enrolled_from"] == "Rachel.png"
        photo = client.get(best["enrolled"]["url"], headers=AUTH)
        assert (
            photo.status_code == 200 and cv2.imdecode(np.frombuffer(photo.content, np.uint8), 1) is not None
        )
        timeline = client.get("/api/timeline", params={"name": "Rachel"}, headers=AUTH).json()["rows"]
        assert rows[0]["ref"] in {r["ref"] for r in timeline}
    # the same rows as the search command: one search, two doors
    code = run_pipeline.main(
        [
            "search",
            str(STILLS / "Rachel.png"),
            "--db",
            logged,
            "--config",
            str(CONFIG),
            "--top",
            "5",
            "--format",
            "json",
        ]
    )
    cli = json.loads(capsys.readouterr().out)["rows"]
    assert code == 0 and [(r["ref"], r["score"]) for r in cli] == [(r["ref"], r["score"]) for r in rows]


@pytest.mark.slow
def test_unknown_groups_api_and_page(logged):
    with _serve(logged) as (client, models):
        body = client.get("/api/unknowns", params={"min_size": 1}).json()
        assert body["tracks"] > 0 and body["groups"] and not models.loaded
        assert sum(g["size"] for g in body["groups"]) == body["tracks"]  # every unknown track, singletons too
        for group in body["groups"]:
            assert group["best"] in {t["ref"] for t in group["tracks"]}
            assert client.get(group["thumbnail_url"]).status_code == 200
        page = client.get("/unknowns", params={"min_size": 1}).text
        assert page.count('class="group"') == len(body["groups"]) and 'class="best thumb"' in page
        assert client.get("/api/unknowns", params={"threshold": 2}).status_code == 422
        response = client.get("/api/unknowns", params={"source": "nowhere.mp4"})
        assert response.status_code == 400 and "nowhere.mp4" in response.json()["detail"]


def _written(url: str, folder) -> tuple:
    """Row counts of every table but the audit trail and the files beside the database (but the trail's head): what
    a refused request must leave as is (it is audited: :func:`_audited`)."""
    with Database(url) as db, db.session() as s:
        counts = {
            t.name: s.scalar(select(func.count()).select_from(t))
            for t in Base.metadata.sorted_tables
            if t.name != "audit"
        }
    files = (p for p in folder.rglob("*") if p.is_file() and not p.name.endswith((".lock", ".audit-head")))
    return counts, sorted(str(p) for p in files)


def _audited(url: str) -> list[tuple[str, str]]:
    """(action, result) of every audit entry."""
    with Database(url) as db, db.session() as s:
        return [(e.action, e.result) for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def _bad(case: str, tmp_path) -> tuple[dict, dict, int, str]:
    """(files, params, status, message) of one bad request."""
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((120, 160, 3), 127, np.uint8))
    rachel = require(STILLS) / "Rachel.png"
    return {
        "corrupt": (
            _upload(b"\x89PNG\r\n\x1a\nnot really", "broken.png"),
            {},
            400,
            "broken.png: expected a decodable image file",
        ),
        "empty file": (_upload(b"", "nothing.png"), {}, 400, "got 0 bytes that do not decode"),
        "no face": (_upload(wall), {}, 400, "wall.png: expected a face, found none"),
        "several faces": (_upload(require(GROUP)), {}, 400, "pick one with face N"),
        "face out of range": (_upload(require(GROUP)), {"face": 99}, 400, "face 99: expected 1.."),
        "no photo part": ({"picture": ("r.png", rachel.read_bytes(), "image/png")}, {}, 422, "'photo' part"),
        "naive time": (_upload(rachel), {"since": "2026-01-01T00:00:00"}, 400, "timezone"),
        "bad top": (_upload(rachel), {"top": 0}, 422, ""),
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "corrupt",
        "empty file",
        "no face",
        "several faces",
        "face out of range",
        "no photo part",
        "naive time",
        "bad top",
    ],
)
def test_bad_uploads_are_refused_writing_nothing(empty, tmp_path, case):
    files, params, status, message = _bad(case, tmp_path)
    before = _written(empty, tmp_path)
    with _serve(empty) as (client, _):
        response = client.post("/api/search", files=files, params=params)
        assert response.status_code == status and message in str(response.json()["detail"])
        page = client.post("/search", files=files, data={k: str(v) for k, v in params.items()})
        assert page.status_code == status and 'id="error"' in page.text and "<form" in page.text
    assert _written(empty, tmp_path) == before
    refused = 1 if case == "bad top" else 2  # the API's parameter check (422) comes before the audited route
    assert _audited(empty) == [("search", "failed")] * refused


def test_uploads_over_the_limit_are_refused_before_they_are_read(empty, tmp_path):
    big = (require(STILLS) / "Rachel.png").read_bytes()
    limit = 1024 * (len(big) // 2048)  # half the photo
    before = _written(empty, tmp_path)
    with _serve(empty, f"gallery.serve.max_upload_bytes={limit}") as (client, models):
        response = client.post("/api/search", files=_upload(big, "Rachel.png"))
        assert response.status_code == 413 and f"at most {limit:,} bytes" in response.json()["detail"]
        body = b"x" * (limit + 100 * 1024)  # no Content-Length (chunked): counted while it is read
        response = client.post(
            "/api/search",
            content=(body[i : i + 8192] for i in range(0, len(body), 8192)),
            headers={"content-type": "multipart/form-data; boundary=zz"},
        )
        assert response.status_code == 413
        page = client.post("/search", files=_upload(big, "Rachel.png"))
        assert page.status_code == 413 and "at most" in page.text
        assert (
            client.post(
                "/api/search", content=b"{}", headers={"content-type": "application/json"}
            ).status_code
            == 415
        )
        assert not models.loaded  # refused before any model was needed
    assert _written(empty, tmp_path) == before


def _nested_form(depth: int) -> bytes:
    """A form whose ``photo`` part is a ``multipart/mixed`` body nested ``depth`` deep."""
    inner = b"Content-Type: image/png\r\n\r\nnot a photo\r\n"
    for level in range(depth, 0, -1):
        inner = (
            f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n".encode()
            + inner
            + f"\r\n--b{level}--".encode()
        )
    part = b'Content-Disposition: form-data; name="photo"; filename="x.png"\r\n' + inner
    return b"--zz\r\n" + part + b"\r\n--zz--\r\n"


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=zz", "multipart/mixed; boundary=zz"])
def test_a_nested_multipart_body_is_refused_fast(empty, tmp_path, content_type):
    """Depth 1000 (which made the former parser recurse until RecursionError, a 500): 4xx at once, no model
    loaded, nothing written."""
    before = _written(empty, tmp_path)
    body = _nested_form(1000)
    with _serve(empty, token=TOKEN) as (client, models):
        for url in ("/api/search", "/search"):
            start = time.perf_counter()
            response = client.post(url, content=body, headers=AUTH | {"content-type": content_type})
            assert time.perf_counter() - start < 2.0
            if content_type.startswith("multipart/mixed"):
                assert response.status_code == 415 and "expected multipart/form-data" in html.unescape(
                    response.text
                )
            else:
                assert (
                    response.status_code == 400
                    and "nested 'multipart/mixed; boundary=b1' part" in html.unescape(response.text)
                )
        assert not models.loaded
    assert _written(empty, tmp_path) == before


def test_a_detector_that_does_not_load_is_503(empty):
    with _serve(empty, "detect.model=/nonexistent/det.onnx") as (client, models):
        for _ in range(2):  # said again without loading again
            response = client.post("/api/search", files=_upload(require(STILLS) / "Rachel.png"))
            assert response.status_code == 503 and "/nonexistent/det.onnx" in response.json()["detail"]
        assert not models.loaded


def test_the_token_is_required(empty):
    with _serve(empty, token=TOKEN) as (client, models):
        requests = [
            ("post", "/api/search"),
            ("post", "/search"),
            ("get", "/search"),
            ("get", "/api/unknowns"),
            ("get", "/unknowns"),
        ]
        for method, url in requests:
            kwargs = {"files": _upload(require(STILLS) / "Rachel.png")} if method == "post" else {}
            response = getattr(client, method)(url, **kwargs)
            assert response.status_code == 401 and "token" in response.json()["detail"]
        assert not models.loaded
        assert client.get("/search", headers=AUTH).status_code == 200


# Each result row's thumbnail (loaded?, natural width) and its "view" link.
ROWS = """return Array.from(document.querySelectorAll('#results tr.row')).map(tr => {
  const img = tr.querySelector('img.thumb'); const link = tr.querySelector('a.view');
  return [img ? img.complete && img.naturalWidth > 0 : false, link ? link.href : null];
});"""
LOADED = """return Array.from(document.querySelectorAll(arguments[0])).map(
  img => img.complete && img.naturalWidth > 0);"""


@pytest.mark.slow
def test_search_page_in_headless_chromium(logged, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with (
        _serve(logged, token=TOKEN) as (client, _),
        served_in_chromium(client.app, tmp_path, monkeypatch) as (chrome, base),
    ):
        chrome.set_window_size(1200, 900)
        log_in(chrome, base, TOKEN)  # the session cookie
        chrome.get(f"{base}/search")
        chrome.find_element(By.NAME, "photo").send_keys(str(STILLS / "Rachel.png"))
        chrome.find_element(By.NAME, "top").clear()
        chrome.find_element(By.NAME, "top").send_keys("3")
        chrome.find_element(By.CSS_SELECTOR, "form[action='/search'] button[type=submit]").click()
        WebDriverWait(chrome, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results tr.row"))
        rows = chrome.execute_script(ROWS)
        chrome.save_screenshot(str(tmp_path / "search.png"))
        assert len(rows) == 3 and all(loaded for loaded, _ in rows) and rows[0][1]
        chrome.get(rows[0][1])  # the match view of the best hit: its crop beside Rachel's enrolled photo
        assert chrome.execute_script(LOADED, "img.crop") == [True]
        assert chrome.execute_script(LOADED, "img.enrolled") == [True]
        text = chrome.find_element(By.TAG_NAME, "body").text
        assert "Rachel" in text and "retroactive" in text and "in the file" in text
        chrome.save_screenshot(str(tmp_path / "match.png"))
        chrome.get(f"{base}/timeline?name=Rachel")
        shown = chrome.execute_script(LOADED, "#timeline img.thumb")
        assert shown and all(shown)
        chrome.get(f"{base}/unknowns?min_size=1")
        shown = chrome.execute_script(LOADED, ".group img.thumb")
        assert shown and all(shown)
        chrome.save_screenshot(str(tmp_path / "unknowns.png"))
        assert csp_violations(chrome) == []  # every view works under the Content-Security-Policy
    logger.info("screenshots in %s", tmp_path)


@pytest.mark.slow
def test_fuzzed_forensic_endpoints_answer_within_their_schema(logged):
    schemathesis = pytest.importorskip("schemathesis", reason="the fuzz needs schemathesis (the dev extra)")
    from hypothesis import HealthCheck, Phase, given, settings

    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}},
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "404", "413"]}
            },
        }
    )
    seen: list[int] = []
    stop = time.monotonic() + 180
    with _serve(logged, token=TOKEN) as (client, _):
        schema = schemathesis.openapi.from_asgi("/openapi.json", client.app, config=config, headers=AUTH)
        paths = {"/api/search", "/api/unknowns", "/api/timeline", "/api/tracks/{ref}", "/media/{media}"}
        operations = [r.ok() for r in schema.get_all_operations() if r.ok().path in paths]
        assert {op.path for op in operations} == paths
        for operation in operations:
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

                @settings(
                    max_examples=40,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case) -> None:
                    assert time.monotonic() < stop, "fuzzing ran past 180 s"
                    response = case.call()
                    seen.append(response.status_code)
                    assert response.status_code < 500, f"{case.method} {case.formatted_path}"
                    case.validate_response(response)

                run()
    logger.info("fuzzed %d requests: %s", len(seen), Counter(seen))
    assert max(seen) < 500 and {200, 400, 422} <= set(seen)


VIDEO = """const v = document.getElementById('clip'); return v ? [v.readyState, v.currentTime, v.paused] : null;"""


@pytest.mark.slow
def test_track_page_plays_its_clip_from_the_sighting_and_exports_a_verified_zip(
    logged, tmp_path, monkeypatch
):
    import hashlib
    import zipfile

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with (
        _serve(logged, token=TOKEN) as (client, _),
        served_in_chromium(client.app, tmp_path, monkeypatch) as (chrome, base),
    ):
        row = max(client.get("/api/tracks", headers=AUTH).json()["rows"], key=lambda r: r["start_time"])
        detail = client.get(f"/api/tracks/{row['ref']}", headers=AUTH).json()
        assert detail["clip_start_s"] == pytest.approx(min(2.0, row["start_time"]), abs=1e-3)
        ranged = client.get(detail["clip_url"], headers=AUTH | {"Range": "bytes=0-99"})
        assert ranged.status_code == 206 and len(ranged.content) == 100
        log_in(chrome, base, TOKEN)
        chrome.get(f"{base}/track/{row['ref']}")
        WebDriverWait(chrome, 60).until(lambda d: (d.execute_script(VIDEO) or [0])[0] >= 2)
        ready, start, _ = chrome.execute_script(VIDEO)
        assert start == pytest.approx(detail["clip_start_s"], abs=0.1)  # opened at the sighting
        chrome.execute_script("document.getElementById('clip').play()")
        WebDriverWait(chrome, 20).until(lambda d: d.execute_script(VIDEO)[1] > start + 0.3)
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        chrome.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        chrome.find_element(By.ID, "export").click()
        WebDriverWait(chrome, 120).until(lambda d: list(downloads.glob("*.zip")))
        (zipped,) = downloads.glob("*.zip")
        with zipfile.ZipFile(zipped) as zf:
            (manifest_name,) = [n for n in zf.namelist() if n.endswith("/manifest.json")]
            folder = manifest_name.rsplit("/", 1)[0]
            manifest = json.loads(zf.read(manifest_name))
            assert manifest["tracks"] == [row["ref"]] and manifest["files"]
            for f in manifest["files"]:
                data = zf.read(f"{folder}/{f['path']}")
                assert (len(data), hashlib.sha256(data).hexdigest()) == (f["bytes"], f["sha256"])
        assert csp_violations(chrome) == []
