"""pipeline/web/ (tracks, search, pages) and gallery/forensic.py on a seeded match log (SQLite and
PostgreSQL): one track beside the enrolled face it matched (a photo of gallery.serve.media_dirs, or the track a
face was enrolled from), enrolled photos served only from those folders with their enrolled content, timelines,
404s, the token. Search by photo and unknown groups need the pipeline: tests/pipeline/web/test_serve.py.

Tracks (one minute apart; 64-d templates around three people):

    0 bob, match bob (live), clip.mp4 | 1 cyd unknown, clip.mp4 | 2 cyd unknown, cam | 3 nobody unknown, cam

Bob is enrolled from a photo file (closest to his track) and a second, far vector; cyd is enrolled afterwards
from track 1, and a rematch names track 2 cyd (retroactive).
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gallery.enroll import Enroller
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.media import MediaVector
from gallery.models import Media, Track
from gallery.rematch import rematch
from gallery.store import Gallery
from gallery.thumbnails import ThumbnailStore
from pipeline.web.app import create_app
from pipeline.web.common import Forensic
from tests.gallery.helpers import people, unit

TOKEN = "forensic-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMB, DIM = "e64", 64
START = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
PLAN = [
    ("bob", "clip.mp4", "file"),
    ("cyd", "clip.mp4", "file"),
    ("cyd", "cam", "camera"),
    (None, "cam", "camera"),
]


def _photo(path, shape=(400, 600)) -> MediaVector:
    image = np.zeros((*shape, 3), np.uint8)
    image[:, : shape[1] // 2] = (0, 0, 200)  # left half red, right half black
    cv2.imwrite(str(path), image)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def log(db_url, tmp_path):
    rng = np.random.default_rng(3)
    views = dict(zip(("bob", "cyd"), people(rng, 2, 8, DIM, spread=0.2).values()))
    store = ThumbnailStore(tmp_path / "thumbs")
    photos = tmp_path / "photos"
    photos.mkdir()
    digest = _photo(photos / "bob.png")
    with Gallery.open(db_url) as gallery:
        bob_media = [
            MediaVector(str(photos / "bob.png"), digest, 0.9, views["bob"][0], 1.0),
            MediaVector("elsewhere/bob-2.jpg", "hash-bob-2", 0.9, unit(rng, 1, DIM)[0], 1.0),
        ]
        gallery.add_media("bob", EMB, bob_media, create=True)
        bob = gallery.identities()[0].id
        writers = {
            name: MatchLogWriter(gallery.db, source=name, kind=kind, config_hash="t", thumbnails=store)
            for name, kind in (("clip.mp4", "file"), ("cam", "camera"))
        }
        for t, (who, source, _) in enumerate(PLAN):
            template = views[who][1 + t] if who else unit(rng, 1, DIM)[0]
            score = float(template @ gallery.template("bob", EMB))
            decision = "match" if who == "bob" else "unknown"
            crop = np.full((48, 40, 3), 40 * (t + 1), np.uint8)
            at = START + timedelta(minutes=t)
            record = TrackRecord(
                t,
                60.0 * t + 2,
                60.0 * t + 5.5,
                20,
                5,
                template,
                EMB,
                [(bob, "bob", score)],
                decision,
                0.5,
                crop,
                at,
            )
            if source == "cam":  # a camera's tracks carry its wall clock; the file has no recording time
                seen = {"seen_start": at - timedelta(seconds=3.5), "seen_end": at, "time_origin": "camera"}
                record = dataclasses.replace(record, **seen)
            writers[source].record(record)
        for writer in writers.values():
            writer.close()
        pks = {t: _pk(gallery, t) for t in range(len(PLAN))}
        refs = {t: _ref(gallery, t) for t in range(len(PLAN))}
        enroller = Enroller(gallery, lambda image: [], SimpleNamespace(embedder_id=EMB, dim=DIM))
        with gallery.db.session() as s:
            run = s.scalar(select(Track.run_id).where(Track.id == pks[1]))
        enroller.enroll_tracks("cyd", [f"{run}:1"])
        rematch(gallery, EMB, 0.5, identities=["cyd"], cause="from-track")
        yield SimpleNamespace(db=gallery.db, store=store, photos=photos, pks=pks, refs=refs, tmp=tmp_path)


def _pk(gallery, track_id: int) -> int:
    with gallery.db.session() as s:
        return s.scalar(select(Track.id).where(Track.track_id == track_id))


def _ref(gallery, track_id: int) -> str:
    """The reference RUN:TRACK of the track numbered ``track_id``."""
    with gallery.db.session() as s:
        return "{}:{}".format(
            *s.execute(select(Track.run_id, Track.track_id).where(Track.track_id == track_id)).one()
        )


def _client(log, media_dirs=None, token=None) -> TestClient:
    dirs = (str(log.photos),) if media_dirs is None else media_dirs
    return TestClient(create_app(log.db, log.store, token=token, forensic=Forensic(media_dirs=dirs)))


def test_a_live_match_beside_the_enrolled_photo_it_matched(log):
    client = _client(log)
    track = client.get(f"/api/tracks/{log.refs[0]}").json()
    assert (track["decision"], track["identity"], track["retroactive"]) == ("match", "bob", False)
    assert (track["kind"], track["start_time"], track["end_time"]) == ("file", 2.0, 5.5)
    assert track["thumbnail_url"] == "/thumbnails/source1/run1/track0.jpg"
    enrolled = track["enrolled"]
    assert enrolled["enrolled_from"] == "bob.png" and enrolled["score"] > 0.5  # the closer of bob's two media
    image = client.get(enrolled["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    decoded = cv2.imdecode(np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (341, 512, 3)  # shown at most 512 px a side
    assert decoded[170, 100, 2] > 150 and decoded[170, 400].max() < 60  # the enrolled photo itself
    page = client.get(f"/track/{log.refs[0]}").text
    assert 'class="thumb crop"' in page and f'src="{enrolled["url"]}"' in page
    assert "0:02.0 &ndash; 0:05.5" in page and "bob.png" in page


def test_a_retroactive_match_beside_the_track_its_face_was_enrolled_from(log):
    client = _client(log)
    track = client.get(f"/api/tracks/{log.refs[2]}").json()
    assert (track["decision"], track["identity"], track["retroactive"]) == ("match", "cyd", True)
    assert (track["logged_decision"], track["logged_identity"]) == ("unknown", None)
    assert track["seen_end"] == (START + timedelta(minutes=2)).isoformat()  # a camera: its wall clock
    assert (track["ref"], track["time_origin"]) == (log.refs[2], "camera")
    enrolled = track["enrolled"]
    assert enrolled["enrolled_from"].startswith("track ") and enrolled["enrolled_from"].endswith(
        ":1 (clip.mp4)"
    )
    image = client.get(enrolled["url"])
    assert (
        image.status_code == 200
        and image.content == (log.store.root / "source1/run1/track1.jpg").read_bytes()
    )
    assert "(retroactive, rematch" in client.get(f"/track/{log.refs[2]}").text
    unknown = client.get(f"/api/tracks/{log.refs[3]}").json()
    assert unknown["decision"] == "unknown" and unknown["enrolled"] is None


def _bob_media(log) -> int:
    with log.db.session() as s:
        return s.scalar(select(Media.id).where(Media.path.endswith("bob.png")))


@pytest.mark.parametrize(
    "case", ["no folders", "another folder", "changed", "gone", "link out", "far vector"]
)
def test_enrolled_photos_are_shown_only_from_their_folders_with_their_content(log, case):
    media, dirs = _bob_media(log), None
    secret = log.tmp / "secret.png"
    _photo(secret, (50, 50))
    if case == "no folders":
        dirs = ()
    elif case == "another folder":
        dirs = (str(log.tmp / "thumbs"),)
    elif case == "changed":
        _photo(log.photos / "bob.png", (40, 40))
    elif case == "gone":
        (log.photos / "bob.png").unlink()
    elif case == "link out":  # a photo inside the folder that is a link to a file outside it
        (log.photos / "link.png").symlink_to(secret)
        with log.db.session() as s:
            row = s.get(Media, media)
            row.path, row.content_hash = (
                str(log.photos / "link.png"),
                hashlib.sha256(secret.read_bytes()).hexdigest(),
            )
    else:
        with log.db.session() as s:
            media = s.scalar(select(Media.id).where(Media.path == "elsewhere/bob-2.jpg"))
    response = _client(log, dirs).get(f"/media/{media}")
    expected = {
        "no folders": "media_dirs is empty",
        "another folder": "outside gallery.serve.media_dirs",
        "changed": "no longer holds the enrolled photo",
        "gone": "no longer where it was enrolled from",
        "link out": "outside gallery.serve.media_dirs",
        "far vector": "outside gallery.serve.media_dirs",
    }[case]
    assert response.status_code == 404 and expected in response.json()["detail"]
    if case in ("no folders", "another folder"):
        enrolled = _client(log, dirs).get(f"/api/tracks/{log.refs[0]}").json()["enrolled"]
        assert enrolled["url"] is None and expected in enrolled["note"]
        assert expected in _client(log, dirs).get(f"/track/{log.refs[0]}").text


def test_timeline_api_and_page(log):
    client = _client(log)
    body = client.get("/api/timeline", params={"name": "cyd"}).json()
    # by sighting time: the camera's track (its wall clock known) before the file's (no recording time)
    assert [(r["ref"], r["retroactive"]) for r in body["rows"]] == [(log.refs[2], True), (log.refs[1], True)]
    assert [r["seen_start"] is None for r in body["rows"]] == [False, True]
    assert all(r["thumbnail_url"].startswith("/thumbnails/") for r in body["rows"])
    assert [r["ref"] for r in client.get("/api/timeline", params={"name": "bob"}).json()["rows"]] == [
        log.refs[0]
    ]
    page = client.get("/timeline", params={"name": "cyd"}).text
    assert (
        page.count('class="thumb"') == 2
        and "(retroactive)" in page
        and f'href="/track/{log.refs[2]}"' in page
    )
    assert "<option>bob</option>" in client.get("/timeline").text  # no name yet: the choice of identities


@pytest.mark.parametrize(
    "url,status,message",
    [
        ("/api/timeline?name=zed", 404, "'zed': not in the gallery"),
        ("/timeline?name=zed", 404, "'zed': not in the gallery"),
        ("/api/timeline", 422, ""),
        ("/api/timeline?name=bob&since=2026-03-01T10:00:00", 400, "timezone"),
        ("/api/tracks/9:999999", 404, "track 9:999999: not in the match log"),
        ("/track/9:999999", 404, "track 9:999999: not in the match log"),
        ("/media/999999", 404, "enrolled media 999999: not in the gallery"),
        ("/api/tracks/0", 422, ""),
        ("/api/tracks/1", 422, ""),  # a bare number is no reference
        ("/track/1", 422, ""),
        ("/api/tracks/abc", 422, ""),
        ("/api/tracks/99999999999999999999", 422, ""),
        ("/media/-1", 422, ""),
    ],
)
def test_unknown_ids_and_bad_parameters(log, url, status, message):
    response = _client(log).get(url)
    assert response.status_code == status and message in str(response.json()["detail"])


def test_the_token_is_required(log):
    client = _client(log, token=TOKEN)
    urls = [f"/api/tracks/{log.refs[0]}", "/api/timeline?name=bob", f"/media/{_bob_media(log)}"]
    urls += ["/timeline?name=bob", f"/track/{log.refs[0]}"]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 401 and "token" in response.json()["detail"]
        assert client.get(url, headers=AUTH).status_code == 200


def test_search_and_unknowns_are_absent_without_the_pipeline(log):
    client = _client(log)
    for method, url in [
        ("post", "/api/search"),
        ("get", "/api/unknowns"),
        ("get", "/search"),
        ("get", "/unknowns"),
    ]:
        assert getattr(client, method)(url).status_code in (404, 405)
    nav = client.get("/").text
    assert 'href="/timeline"' in nav and 'href="/search"' not in nav and 'href="/unknowns"' not in nav


def test_faces_and_views_are_neither_cached_sniffed_nor_framed(log):
    client = _client(log, token=TOKEN)
    for url in (f"/media/{_bob_media(log)}", "/thumbnails/source1/run1/track0.jpg", "/timeline?name=bob"):
        response = client.get(url, headers=AUTH)
        assert response.status_code == 200, url
        assert (response.headers["cache-control"], response.headers["x-content-type-options"]) == (
            "no-store",
            "nosniff",
        )
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
