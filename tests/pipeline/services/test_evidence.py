"""Case export through the real command line (pipeline/commands/evidence.py, pipeline/services/evidence.py): the
friends clip processed with the six people enrolled (configs/test.yaml), then ``evidence`` of three tracks (one from
the file's first frame, one to its last, one between): clips whose ffprobe duration is the track's span plus 2 s
each side (clamped at the file's ends) and that decode to the end, records with sighting times and the decision, a
manifest whose every SHA-256 verifies, a zip of the same files and a case row. ``--redact``: the detector run again
at native resolution over every exported frame finds no face outside the exported tracks' boxes, each exported
face still matches its identity, and frame by frame against the same export without ``--redact`` the pixels inside
the exported tracks' boxes are those of the plain clip (up to codec noise) while the other tracks' boxes differ.
Bad input (an unknown reference, a missing or changed source file, a non-empty folder): one line, exit 2, nothing
written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from sqlalchemy import select, update

import run_pipeline
from gallery.access_models import AuditEntry
from gallery.db import Database
from gallery.evidence_models import Case
from gallery.models import Identity, Media, Run, Source, Track
from gallery.track_boxes import unpack_boxes
from pipeline.build import find_faces
from pipeline.config import load_config
from pipeline.services.clips import track_box
from pipeline.services.redaction import is_kept
from stages.detect import FaceDetector
from stages.embed import build_embedder
from stages.quality import QualityScorer
from tests.conftest import ASSETS, ROOT, require

CONFIG = ROOT / "configs" / "test.yaml"
CLIP = ASSETS / "videos" / "friends_in_video.mp4"
STILLS = ASSETS / "images" / "friends_gallery"
MARGIN = 2.0


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = run_pipeline.main([*argv, "--config", str(CONFIG)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _file_end(path: Path) -> float:
    """Seconds from the first frame to the end of the last one."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return float(s.duration * s.time_base)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The processed clip: (database URL, folder, the clip's copy it was processed from, {ref: (start, end, who)})."""
    folder = tmp_path_factory.mktemp("evidence")
    video = shutil.copyfile(require(CLIP), folder / "friends.mp4")
    url = f"sqlite:///{folder / 'log.db'}"
    for argv in (
        ["enroll", "--db", url, "--dir", str(require(STILLS))],
        ["process", str(video), "--db", url, "--no-progress"],
    ):
        assert run_pipeline.main([*argv, "--config", str(CONFIG)]) == 0
    with Database(url, create=False) as db, db.session() as s:
        rows = s.execute(select(Track.run_id, Track.track_id, Track.start_time, Track.end_time)).all()
    tracks = {f"{r}:{t}": (a, b) for r, t, a, b in rows}
    return url, folder, Path(video), tracks


def _three(tracks: dict) -> list[str]:
    """A track from the first frame, one to the last and a long one between."""
    first = min(tracks, key=lambda r: (tracks[r][0], -tracks[r][1]))
    last = max(tracks, key=lambda r: (tracks[r][1], tracks[r][1] - tracks[r][0]))
    middle = max((r for r in tracks if r not in (first, last)), key=lambda r: tracks[r][1] - tracks[r][0])
    assert tracks[first][0] < MARGIN and tracks[last][1] > _file_end(CLIP) - MARGIN
    return [first, middle, last]


def _probe_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout)["format"]["duration"])


def _decodes_to_the_end(path: Path) -> None:
    run = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True)
    assert run.returncode == 0 and not run.stderr, run.stderr[-500:]


@pytest.mark.slow
def test_evidence_of_three_tracks(logged, tmp_path, capsys):
    url, _, video, tracks = logged
    refs = _three(tracks)
    out = tmp_path / "case-17"
    code, _, err = _main(
        capsys, "evidence", *refs, "--out", str(out), "--db", url, "--zip", "--note", "seen at 3"
    )
    assert code == 0, err
    end = _file_end(video)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["case"], manifest["note"], manifest["tracks"]) == ("case-17", "seen at 3", refs)
    assert manifest["operator"] and manifest["exported_at"] and manifest["software_version"]
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(listed) == on_disk
    for rel, entry in listed.items():
        data = (out / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        assert (out / rel).stat().st_mode & 0o077 == 0
    for ref in refs:
        start, stop = tracks[ref]
        folder = out / f"track_{ref.replace(':', '_')}"
        clip = folder / "clip.mp4"
        expected = min(stop + MARGIN, end) - max(0.0, start - MARGIN)
        assert _probe_duration(clip) == pytest.approx(expected, abs=0.1), ref
        _decodes_to_the_end(clip)
        record = json.loads((folder / "record.json").read_text())
        assert record["ref"] == ref and (record["start_time"], record["end_time"]) == (start, stop)
        assert {"seen_start", "seen_end", "time_origin", "source", "decision", "score"} <= set(record)
        assert record["decision"] == "match" and record["identity"] and record["threshold"] == 0.3
        assert record["threshold_origin"] and record["embedder_id"] and record["software_version"]
        assert record["source_file"]["path"] == str(video.resolve())
        assert {"clip", "snapshot", "crop", "enrolled"} <= set(record["files"])
        assert record["clip"]["boxes_stored"] > 0 and record["redaction"] is None
    with zipfile.ZipFile(out.with_suffix(".zip")) as zf:
        assert sorted(zf.namelist()) == sorted(f"case-17/{p}" for p in [*on_disk, "manifest.json"])
        assert zf.read("case-17/manifest.json") == (out / "manifest.json").read_bytes()
    with Database(url, create=False) as db, db.session() as s:
        case = s.scalar(select(Case).where(Case.name == "case-17"))
        assert (case.note, case.operator) == ("seen at 3", manifest["operator"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case-17", "case-17.zip"]


NOISE = 4.0  # mean absolute difference (levels) of one region encoded twice from the same pixels (seen: < 3)
INSET = 0.1  # a kept box is compared without this fraction of its side at each edge (its drawn outline)


def _mad(a: np.ndarray, b: np.ndarray, box: np.ndarray) -> float:
    """Mean absolute difference of ``a`` and ``b`` (same shape) inside ``box`` ``[4]`` (clipped to the image)."""
    h, w = a.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return float("nan")
    return float(np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1].astype(np.int16)).mean())


def _overlaps(box: np.ndarray, others: list[np.ndarray]) -> bool:
    return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)


def _frames(path: Path):
    """``(pts seconds, BGR image)`` of every frame of a clip."""
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            yield float(frame.pts * frame.time_base), frame.to_ndarray(format="bgr24")


def _embed_kept(frame: np.ndarray, box: np.ndarray, detector, scorer, embedder) -> np.ndarray | None:
    """The unit embedding of the face of ``frame`` at ``box``, None when none is found there."""
    for found, _, crop, _ in find_faces(detector, scorer, frame):
        if is_kept(found, [box]):
            return embedder.embed([crop])[0][0]
    return None


@pytest.mark.slow
def test_redacted_evidence_shows_the_exported_faces_only(logged, tmp_path, capsys):
    url, _, _, tracks = logged
    refs = _three(tracks)[:2]
    out = tmp_path / "redacted"
    code, _, err = _main(capsys, "evidence", *refs, "--out", str(out), "--db", url, "--redact")
    assert code == 0, err
    plain = tmp_path / "plain"
    code, _, err = _main(capsys, "evidence", *refs, "--out", str(plain), "--db", url)
    assert code == 0, err
    cfg = load_config(CONFIG, [])
    detector = FaceDetector(cfg.detect.model_copy(update={"tiling": "on"}))
    scorer, embedder = QualityScorer(cfg.quality), build_embedder(cfg.embed)
    with Database(url, create=False) as db, db.session() as s:
        rows = {
            f"{r}:{t}": unpack_boxes(b)
            for r, t, b in s.execute(select(Track.run_id, Track.track_id, Track.boxes))
        }
        people = s.execute(
            select(Identity.name, Media.vector).join(Media, Media.identity_id == Identity.id)
        ).all()
    names = [n for n, _ in people]
    enrolled = np.stack([np.frombuffer(v, "<f4") for _, v in people])
    kept = [rows[r] for r in refs]
    for ref in refs:
        folder = out / f"track_{ref.replace(':', '_')}"
        record = json.loads((folder / "record.json").read_text())
        assert record["redaction"]["blurred_faces"] > 0
        first, vectors = record["clip"]["first_frame"], []
        with av.open(str(folder / "clip.mp4")) as c:
            for i, frame in enumerate(c.decode(video=0)):
                t = first + float(frame.pts * frame.time_base)
                image = frame.to_ndarray(format="bgr24")
                boxes = [b for b in (track_box(k, t) for k in kept) if b is not None]
                for found in detector.detect([image])[0].xyxy:
                    assert is_kept(found, boxes), (ref, t, found)
                own = track_box(rows[ref], t)
                if own is not None and i % 8 == 0:
                    vector = _embed_kept(image, own, detector, scorer, embedder)
                    vectors += [] if vector is None else [vector]  # a face turned away is not found
        template = np.sum(vectors, axis=0)
        scores = enrolled @ (template / np.linalg.norm(template))  # the exported face, fused as a track's
        assert names[int(np.argmax(scores))] == record["identity"] and scores.max() > 0.1, scores
        assert len(vectors) >= 5
        _kept_untouched_others_redacted(folder, plain / folder.name, first, rows, refs)


def _kept_untouched_others_redacted(
    redacted: Path, plain: Path, first: float, rows: dict, refs: list[str]
) -> None:
    """Frame by frame, the redacted clip against the plain one: inside every exported track's box (inset by
    ``INSET``) the same pixels up to codec noise; inside every other track's box that overlaps none of them, pixels
    that differ far beyond it (pixelated faces: seen 15 levels and more)."""
    kept_diffs, other_diffs, frames = [], [], 0
    for (pts, image), (plain_pts, original) in zip(
        _frames(redacted / "clip.mp4"), _frames(plain / "clip.mp4")
    ):
        assert pts == plain_pts and image.shape == original.shape
        t, frames = first + pts, frames + 1
        kept = [b for b in (track_box(rows[r], t) for r in refs) if b is not None]
        inset = [b + INSET * np.array([1, 1, -1, -1]) * np.tile(b[2:] - b[:2], 2) for b in kept]
        kept_diffs += [(t, _mad(image, original, b)) for b in inset]
        others = [track_box(v, t) for r, v in rows.items() if r not in refs and v is not None]
        other_diffs += [
            (t, _mad(image, original, b)) for b in others if b is not None and not _overlaps(b, kept)
        ]
    assert frames == sum(1 for _ in _frames(plain / "clip.mp4")) > 0
    assert kept_diffs and all(d < NOISE for _, d in kept_diffs), max(kept_diffs, key=lambda x: x[1])
    assert len(other_diffs) >= 10 and all(d > 3 * NOISE for _, d in other_diffs), min(
        other_diffs, key=lambda x: x[1]
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unknown", "missing", "changed", "not-empty", "bare"])
def test_bad_input_is_one_line_and_nothing_written(logged, tmp_path, capsys, case):
    url, folder, video, tracks = logged
    ref = _three(tracks)[1]
    db_copy = tmp_path / "log.db"
    shutil.copyfile(folder / "log.db", db_copy)
    url = f"sqlite:///{db_copy}"
    out = tmp_path / "out"
    refs, expected = [ref], ""
    if case == "unknown":
        refs, expected = [ref, "99:1"], "99:1: not in the match log"
    elif case == "bare":
        refs, expected = ["7"], "a bare number"
    elif case == "not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("x")
        expected = "non-empty"
    else:
        moved = tmp_path / "friends.mp4"
        shutil.copyfile(video, moved)
        if case == "changed":
            data = bytearray(moved.read_bytes())
            data[len(data) // 2] ^= 0xFF
            moved.write_bytes(bytes(data))
        else:
            moved.unlink()
        expected = "has changed" if case == "changed" else "is missing"
        with Database(url, create=False) as db, db.session() as s:
            s.execute(update(Run).values(path=str(moved)))
            s.execute(update(Source).values(uri=str(moved)))
    trail = {"log.db.audit-head", "log.db.audit-head.lock"}  # the refused export is audited, as it should be
    before = sorted(p.name for p in tmp_path.iterdir() if p.name not in trail)
    with (
        Database(url, create=False) as db,
        db.session() as s,
    ):  # the shared log may hold earlier tests' exports
        earlier = set(s.scalars(select(AuditEntry.id).where(AuditEntry.action == "export")))
    code, _, err = _main(capsys, "evidence", *refs, "--out", str(out), "--db", url)
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in trail) == before
    with Database(url, create=False) as db, db.session() as s:
        refused = s.scalars(select(AuditEntry).where(AuditEntry.action == "export")).all()
    refused = [e for e in refused if e.id not in earlier]
    assert [(e.result, expected in e.details["reason"]) for e in refused] == [("failed", True)]
    if case == "not-empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with Database(url, create=False) as db, db.session() as s:
        assert s.scalar(select(Case.id).where(Case.name == "out")) is None
