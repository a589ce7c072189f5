"""The ``search`` command: a photo against every logged track template (forensic search), on the friends clip."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import run_pipeline
from tests.conftest import ASSETS, ROOT, require

CONFIG = str(ROOT / "configs" / "test.yaml")
CLIP = ASSETS / "videos" / "friends_in_video.mp4"
STILLS = ASSETS / "images" / "friends_gallery"
GROUP = ASSETS / "images" / "groups" / "insightface_t1.jpg"
PEOPLE = ["Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross"]


def _process(url: str, *extra: str) -> None:
    argv = ["process", str(require(CLIP)), "--db", url, "--config", CONFIG, "--no-progress", *extra]
    assert run_pipeline.main(argv) == 0


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """The clip processed with an empty gallery, and once more with the six enrolled (their decisions label the
    tracks: each track's logged identity is who the matcher saw)."""
    folder = tmp_path_factory.mktemp("search")
    empty, named = f"sqlite:///{folder / 'empty.db'}", f"sqlite:///{folder / 'named.db'}"
    _process(empty)
    _process(named, "--gallery", str(require(STILLS)))
    return empty, named


def _search(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    code = run_pipeline.main(["search", *argv, "--db", url, "--config", CONFIG])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_each_still_finds_its_person_first(logs, capsys):
    empty, named = logs
    found = 0
    for person in PEOPLE:
        photo = str(STILLS / f"{person}.png")
        code, out, _ = _search(capsys, empty, photo, "--format", "json", "--top", "3")
        rows = json.loads(out)["rows"]
        assert code == 0 and len(rows) == 3 and all(r["decision"] == "unknown" for r in rows)  # empty gallery
        assert {"source", "start_time", "end_time", "score", "thumbnail"} <= set(rows[0])
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
        code, out, _ = _search(capsys, named, photo, "--format", "json", "--top", "3")
        labelled = json.loads(out)["rows"]
        # the same templates were logged whatever the gallery: the same ranking
        assert [(r["track_id"], r["score"]) for r in labelled] == [(r["track_id"], r["score"]) for r in rows]
        found += labelled[0]["identity"] == person
    assert found == len(PEOPLE)


@pytest.mark.slow
def test_several_photos_fuse_and_filters_apply(logs, capsys):
    empty, _ = logs
    photos = [str(STILLS / "Ross.png"), str(STILLS / "Ross.png")]
    code, out, _ = _search(capsys, empty, *photos, "--format", "json", "--min-score", "0.5")
    rows = json.loads(out)["rows"]
    assert code == 0 and rows and all(r["score"] >= 0.5 for r in rows)
    code, out, _ = _search(capsys, empty, photos[0], "--format", "json", "--source", "elsewhere.mp4")
    assert code == 0 and json.loads(out)["rows"] == []
    code, out, _ = _search(capsys, empty, photos[0], "--format", "csv", "--top", "1")
    assert code == 0 and out.splitlines()[0].startswith("ref,score,seen_start,source")


@pytest.mark.parametrize("case", ["no_face", "not_an_image", "missing", "several_faces", "bad_face_index"])
def test_bad_photos_are_one_line(case, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    run_pipeline.main(
        ["enroll", "--db", url, "--config", CONFIG, "--name", "Ross", str(require(STILLS) / "Ross.png")]
    )
    capsys.readouterr()
    extra: list[str] = []
    if case == "no_face":
        photo = tmp_path / "wall.png"
        cv2.imwrite(str(photo), np.full((120, 160, 3), 127, np.uint8))
    elif case == "not_an_image":
        photo = tmp_path / "notes.jpg"
        photo.write_text("not an image")
    elif case == "missing":
        photo = tmp_path / "nope.jpg"
    else:
        photo = require(GROUP)
        extra = ["--face", "99"] if case == "bad_face_index" else []
    code, out, err = _search(capsys, url, str(photo), *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    expected = {"no_face": "found none", "not_an_image": "decodable", "missing": "readable"}
    expected |= {"several_faces": "--face N", "bad_face_index": "--face 99"}
    assert expected[case] in lines[0] and out == ""


def test_a_group_photo_with_a_chosen_face(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    run_pipeline.main(
        ["enroll", "--db", url, "--config", CONFIG, "--name", "Ross", str(require(STILLS) / "Ross.png")]
    )
    capsys.readouterr()
    code, out, _ = _search(capsys, url, str(require(GROUP)), "--face", "1", "--format", "json")
    assert code == 0 and json.loads(out)["rows"] == []  # nothing logged yet: an empty result, not an error


@pytest.mark.slow
def test_the_track_index_is_kept_beside_the_log_and_catches_up(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    _process(url)
    capsys.readouterr()
    photo = str(STILLS / "Ross.png")
    code, out, _ = _search(capsys, url, photo, "--format", "json", "--top", "3")
    first = json.loads(out)["rows"]
    assert code == 0 and len(first) == 3 and len(list(tmp_path.glob("log.*.tracks.faiss"))) == 1
    # the clip again, by a process without the index: a new run, the same templates, replacing the first run's
    _process(url, "--reprocess")
    capsys.readouterr()
    code, out, _ = _search(capsys, url, photo, "--format", "json", "--top", "6")
    rows = json.loads(out)["rows"]
    assert code == 0 and [(r["track_id"], r["score"]) for r in rows[:3]] == [
        (r["track_id"], r["score"]) for r in first
    ]
    assert {r["run_id"] for r in rows} == {first[0]["run_id"] + 1}  # the replaced run's tracks left the index
    code, out, _ = _search(
        capsys, url, photo, "--format", "json", "--top", "6", "--set", "gallery.index.tracks=false"
    )
    exact = json.loads(out)["rows"]  # without the index: the same answer
    assert code == 0 and [(r["run_id"], r["track_id"], r["score"]) for r in exact] == [
        (r["run_id"], r["track_id"], r["score"]) for r in rows
    ]
