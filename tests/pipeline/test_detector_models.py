"""Detector models through the commands: every command that detects refuses, with one ``error:`` line and exit code
2, a detector model whose layout is not read or that does not see its self-check photo; and SCRFD-2.5G (the
insightface model zoo layout, outputs without a batch axis) names the people of the friends clip as SCRFD-500M
does."""

from __future__ import annotations

import json
import sqlite3

import pytest

import run_pipeline
from pipeline.build import build
from pipeline.config import load_config
from stages.detect import FaceDetector, check_image
from tests.conftest import ASSETS, ROOT, require
from tests.pipeline.runners.test_runner import FRIENDS_TRUTH, _run, _truth
from tests.stages import scrfd_variants as variants
from tests.stages.conftest import SCRFD, SCRFD_25G

CONFIG = str(ROOT / "configs" / "test.yaml")
CLIP = ASSETS / "videos" / "friends_in_video.mp4"
GALLERY = ASSETS / "images" / "friends_gallery"
PHOTO = GALLERY / "Rachel.png"
GROUND_TRUTH = ROOT / "tests" / "facemoe" / "evaluate" / "data" / "friends_in_video_gt.csv"
PEOPLE = {"Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross"}

# name -> (how the model is made from SCRFD-500M, what its one line says)
BAD_MODELS = {
    "blind": (lambda src, out: variants.scaled_scores(src, out, 0.0), "does not see"),
    "no-landmarks": (lambda src, out: variants.kept_outputs(src, out, list(range(6))), "without landmarks"),
    "8-outputs": (lambda src, out: variants.kept_outputs(src, out, list(range(8))), "9 or 15 outputs"),
}


COMMANDS = ["process", "enroll", "search", "eval-video", "stream", "stream-ray"]


def _commands(db: str) -> dict[str, list[str]]:
    """Every command that detects, each on real input, reading the config and a database of its own."""
    clip, photo = str(require(CLIP)), str(require(PHOTO))
    return {
        "process": ["process", clip, "--db", db, "--no-progress"],
        "enroll": ["enroll", "--db", db, "--name", "Rachel", photo],
        "search": ["search", photo, "--db", db],
        "eval-video": ["eval", "video", clip, "--ground-truth", str(GROUND_TRUTH), "--gallery", str(GALLERY)],
        "stream": ["stream", "rtsp://127.0.0.1:9/gate", "--db", db],
        "stream-ray": ["stream", "rtsp://127.0.0.1:9/gate", "--db", db, "--engine", "ray"],
    }


@pytest.mark.parametrize("model", list(BAD_MODELS))
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_that_detects_refuses_a_bad_detector(tmp_path, capsys, command, model):
    make, says = BAD_MODELS[model]
    bad = make(require(SCRFD), tmp_path / f"{model}.onnx")
    db = tmp_path / "gallery.db"
    argv = _commands(f"sqlite:///{db}")[command] + ["--config", CONFIG, "--set", f"detect.model={bad}"]
    assert run_pipeline.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(bad) in err[0] and says in err[0], err
    if db.exists():  # nothing was written: no identity, no run
        with sqlite3.connect(db) as con:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
            for table in {"identities", "runs"} & tables:
                assert con.execute(f"select count(*) from {table}").fetchone()[0] == 0


def test_the_detector_checks_itself_once_per_build(monkeypatch):
    calls = []
    check = FaceDetector.self_check
    monkeypatch.setattr(FaceDetector, "self_check", lambda self: calls.append(self) or check(self))
    cfg = load_config(CONFIG, [f"detect.model={require(SCRFD_25G)}"])
    with build(cfg, embedder=False, gallery=False) as system:
        assert calls == [system.detector]
        assert len(system.detector.detect([check_image().copy()] * 3)) == 3
    assert len(calls) == 1


@pytest.mark.slow
def test_the_users_command_with_scrfd_25g_finds_faces(tmp_path, capsys):
    """The command of the report: five seconds of the friends clip with SCRFD-2.5G found no face."""
    out = tmp_path / "r.json"
    argv = [
        "process",
        str(require(CLIP)),
        "--config",
        CONFIG,
        "--no-progress",
        "--db",
        f"sqlite:///{tmp_path / 'x.db'}",
    ]
    argv += ["--set", f"detect.model={require(SCRFD_25G)}", "--set", "source.end=5", "--json", str(out)]
    assert run_pipeline.main(argv) == 0
    assert "no face tracks found" not in capsys.readouterr().err
    assert len(json.loads(out.read_text())["tracks"]) >= 2  # Joey and Rachel, then the next shot


# Faces the screen truth leaves open (None: seen in profile, any decision but no name) that SCRFD-2.5G finds well
# enough to be named: who they are (checked by eye on frames 420 and 560). The third open face is the back of a head.
IN_PROFILE = {(16.72, 850): "Joey", (23.04, 300): "Monica"}


def _who(row: int) -> str | None:
    """Who the screen shows in row ``row`` of FRIENDS_TRUTH (None: nobody to name)."""
    t0, _, x0, _, name = FRIENDS_TRUTH[row]
    return name if name is not None else IN_PROFILE.get((t0, x0))


@pytest.mark.slow
def test_scrfd_25g_names_the_six_people_of_the_friends_clip():
    """The friends clip (configs/test.yaml, every second frame) with SCRFD-2.5G: every one of the six enrolled
    people named in at least one track, and every named track named as the screen shows (as with SCRFD-500M,
    tests/pipeline/test_runner.py)."""
    stats, results, boxes = _run(
        "friends_in_video.mp4", ["source.stride=2", f"detect.model={require(SCRFD_25G)}"]
    )
    named = set()
    for template, result in results:
        people = {j for t, b in boxes[template.track_id] for j in _truth(t, (b[0] + b[2]) / 2)}
        assert len(people) == 1, f"track {template.track_id} covers {people}: one id on two people"
        if result.decision == "match":
            assert result.identity.name == _who(people.pop()), f"track {template.track_id}"
            named.add(result.identity.name)
    assert named == PEOPLE
