"""pipeline/commands/enroll.py end to end with SCRFD-500M + MobileFaceNet on the shared labelled photos.

Every identity with several photos has its first photo (by path) held out; the rest of identities.json is
enrolled through the ``enroll`` command; each held-out photo is then identified against the gallery.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from gallery.models import Run
from gallery.store import Gallery
from pipeline.build import build
from pipeline.config import load_config
from run_pipeline import main
from tests.conftest import ASSETS, ROOT, require

pytestmark = pytest.mark.slow


def _overrides() -> list[str]:
    models = require(ASSETS / "models")
    return [
        f"detect.model={models / 'scrfd_500m_bnkps.onnx'}",
        f"embed.model={models / 'mobilefacenet_128d.onnx'}",
    ]


def _cli(capsys, *argv):
    sets = [a for o in _overrides() for a in ("--set", o)]
    code = main(["enroll", *argv, "--config", str(ROOT / "configs" / "test.yaml"), *sets])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    images = require(ASSETS / "images")
    groups = defaultdict(list)
    for rel, name in sorted(json.loads((images / "identities.json").read_text()).items()):
        groups[name].append(images / rel)
    held_out = {name: paths[0] for name, paths in groups.items() if len(paths) > 1}
    labels = {str(p): name for name, paths in groups.items() for p in paths if p != held_out.get(name)}
    folder = tmp_path_factory.mktemp("enroll")
    (folder / "labels.json").write_text(json.dumps(labels))
    return folder, held_out, len(labels)


def test_enroll_shared_photos_and_identify_held_out(split, capsys):
    folder, held_out, count = split
    url = f"sqlite:///{folder / 'gallery.db'}"
    code, out, err = _cli(capsys, "--db", url, "--labels", str(folder / "labels.json"))
    assert code == 0, err
    statuses = [line.split()[0] for line in out.splitlines()]
    assert (
        len(statuses) == count
        and statuses.count("several_faces") == 3
        and statuses.count("enrolled") == count - 3
    )
    cfg = load_config(ROOT / "configs" / "test.yaml", _overrides())
    with build(cfg, db_url=url) as system:
        gallery, enroller = system.gallery, system.enroller()
        embedder_id = enroller.embedder.embedder_id
        assert len(gallery.identities()) == 19
        threshold = gallery.threshold(embedder_id)
        crops = []
        for path in held_out.values():
            faces = enroller.extract_faces(cv2.imread(str(path)))
            crops.append(max(faces, key=lambda face: face[1])[0])
        feats, _ = enroller.embedder.embed(crops)
        results = gallery.search(feats, 5, embedder_id)
    top = [r[0] for r in results]
    rank1 = np.mean([best[1] == name for best, name in zip(top, held_out)])
    print(f"rank-1 {rank1:.3f} on {len(held_out)} held-out photos, threshold {threshold:.3f}")
    assert rank1 == 1.0
    assert 0.4 < threshold < 0.7  # calibrated from this gallery's impostor scores at FPIR 0.01
    assert sum(score >= threshold for _, _, score in top) >= len(top) - 1
    code, out, err = _cli(capsys, "--db", url, "--labels", str(folder / "labels.json"))  # again: all no-ops
    assert code == 0 and "enrolled 0, already enrolled" in err


def test_the_threshold_shown_is_the_one_used(split, capsys, tmp_path):
    """enroll says which threshold the next run uses (and that the config overrides the calibration it made);
    process prints the threshold in force with its origin at its start and end and stores both on its run."""
    folder, _, _ = split
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    code, _, err = _cli(capsys, "--db", url, "--labels", str(folder / "labels.json"))
    calibrated = re.search(r"^calibration: (0\.\d{4}) at FPIR 0\.01 on \d+ impostor scores$", err, re.M)
    assert code == 0 and calibrated, err
    assert "threshold the next run uses: 0.3000 (config match.threshold)" in err  # configs/test.yaml sets it
    assert f"warning: the configuration (match.threshold) overrides the calibrated {calibrated[1]}" in err
    code, _, err = _cli(
        capsys, "--db", url, "--labels", str(folder / "labels.json"), "--set", "match.threshold=null"
    )
    assert f"threshold the next run uses: {calibrated[1]} (calibration at FPIR 0.01 on" in err
    assert "warning" not in err
    argv = ["process", str(require(ASSETS / "videos" / "friends_in_video.mp4")), "--db", url, "--no-progress"]
    argv += [
        "--config",
        str(ROOT / "configs" / "test.yaml"),
        "--set",
        "source.end=1",
        "--set",
        "match.threshold=null",
    ]
    argv += [a for o in _overrides() for a in ("--set", o)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    shown = f"threshold in force: {calibrated[1]} (calibration at FPIR 0.01 on "
    assert err.count(shown) == 2, err  # at the start and in the run's closing line
    with Gallery.open(url) as gallery, gallery.db.session() as s:
        run = s.scalars(select(Run)).one()
    assert f"{run.threshold:.4f}" == calibrated[1] and run.threshold_origin.startswith(
        "calibration at FPIR 0.01 on"
    )


def test_enroll_bad_input(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    photo = require(ASSETS / "images" / "friends_gallery" / "Ross.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    code, _, err = _cli(capsys, "--db", url, "--name", "ross", str(photo), str(broken))
    assert code == 2 and "broken.jpg: expected a decodable image file" in err and len(err.splitlines()) == 1
    with Gallery.open(url) as gallery:
        assert gallery.identities() == []
    assert _cli(capsys, "--db", url, "--name", "ross", str(photo))[0] == 0
    code, _, err = _cli(capsys, "--db", url, "--name", "ross", str(photo))
    assert code == 2 and "identity 'ross' already exists" in err
    (tmp_path / "empty" / "nobody").mkdir(parents=True)
    code, _, err = _cli(capsys, "--db", url, "--dir", str(tmp_path / "empty"))
    assert code == 2 and "found none" in err
    code, _, err = _cli(capsys, "--db", url, "--name", "ross")
    assert code == 2 and "expected either IMAGE files or --template" in err
    group = require(ASSETS / "images" / "groups" / "insightface_t1.jpg")
    code, out, err = _cli(capsys, "--db", url, "--name", "crowd", str(group))
    assert code == 2 and out.startswith("several_faces") and "nothing enrolled" in err
