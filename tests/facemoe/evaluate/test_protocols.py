"""Protocols on real data: the shared LFW pairs and labelled photos, embedded by the shared MobileFaceNet."""

from __future__ import annotations

import csv
import pickle
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemoe.evaluate.data import ProtocolError, read_image_list, read_pair_bin, read_templates
from facemoe.evaluate.protocols import evaluate_briar, evaluate_ijbs, evaluate_tinyface, evaluate_verification
from facemoe.evaluate.report import format_table, write_report
from tests.conftest import ASSETS, require

LFW_BIN = ASSETS / "images" / "lfw_aligned_pairs" / "small_lfw.bin"


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _by_subject(aligned) -> dict[str, list[Path]]:
    groups = defaultdict(list)
    for _, (path, subject) in sorted(aligned.items()):
        groups[subject].append(path)
    return dict(groups)


def test_read_pair_bin_small_lfw():
    images, same = read_pair_bin(require(LFW_BIN))
    assert len(images) == 20 and images[0].shape == (112, 112, 3) and images[0].dtype == np.uint8
    assert same.tolist() == [True] * 10


def test_verification_small_lfw_mobilefacenet(mobilefacenet, tmp_path):
    res = evaluate_verification(mobilefacenet, require(LFW_BIN))
    assert res.counts == {"pairs": 10, "genuine": 10, "impostor": 0}
    assert res.metrics["accuracy"] == 1.0  # all pairs genuine: thresholds fall below every score
    assert res.metrics["tar@far=1e-3"] is None and "no impostor pairs" in res.notes[0]
    assert 0.3 < res.metrics["genuine_mean_cosine"] < 0.95  # same-person MobileFaceNet cosines
    paths = write_report(res, tmp_path)
    assert [p.name for p in paths] == ["verification.json"]  # no ROC without impostors
    assert "accuracy" in format_table(res)


def _tinyface_list(aligned, folder: Path, probe_px: int | None) -> Path:
    """First photo of each subject in the gallery, the others as probes (down-sampled to ``probe_px`` and
    back when given, the surveillance case), single-photo subjects as distractors."""
    rows = []
    for subject, paths in _by_subject(aligned).items():
        roles = ["distractor"] if len(paths) == 1 else ["gallery"] + ["probe"] * (len(paths) - 1)
        for path, role in zip(paths, roles):
            img = cv2.imread(str(path))
            if role == "probe" and probe_px:
                small = cv2.resize(img, (probe_px, probe_px), interpolation=cv2.INTER_AREA)
                img = cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(folder / path.name), img)
            rows.append((path.name, subject, role))
    return _write_csv(folder / "tinyface.csv", ["image", "subject", "set"], rows)


def test_tinyface_style_on_labelled_photos(aligned_photos, mobilefacenet, tmp_path):
    (tmp_path / "hq").mkdir()
    (tmp_path / "lq").mkdir()
    hq = evaluate_tinyface(mobilefacenet, _tinyface_list(aligned_photos, tmp_path / "hq", None))
    lq = evaluate_tinyface(mobilefacenet, _tinyface_list(aligned_photos, tmp_path / "lq", 16))
    assert hq.counts["probes"] >= 40 and hq.counts["distractors"] >= 5
    assert 0.9 <= hq.metrics["rank-1"] <= hq.metrics["rank-5"] <= hq.metrics["rank-20"] <= 1.0
    # 16 px probes: a real recogniser loses much of its rank-1 but stays far above chance (1 in 19)
    assert 0.25 <= lq.metrics["rank-1"] <= hq.metrics["rank-1"] - 0.2
    assert lq.metrics["rank-1"] <= lq.metrics["rank-5"]
    written = write_report(lq, tmp_path / "out")
    assert {p.suffix for p in written} == {".json", ".png"} and all(p.stat().st_size > 0 for p in written)


def _templates_csv(path: Path, templates: list[tuple[str, str, Path]]) -> Path:
    return _write_csv(
        path, ["TEMPLATE_ID", "SUBJECT_ID", "FILENAME"], [(t, s, str(p)) for t, s, p in templates]
    )


def test_ijbs_style_two_gallery_splits(aligned_photos, mobilefacenet, tmp_path):
    subjects = {s: p for s, p in _by_subject(aligned_photos).items() if len(p) >= 2}
    names = sorted(subjects)
    g1 = [(f"g_{s}", s, subjects[s][0]) for s in names[0::2]]
    g2 = [(f"g_{s}", s, subjects[s][0]) for s in names[1::2]]
    probes = [
        (f"p_{s}", s, p) for s in names for p in subjects[s][1:]
    ]  # one multi-media template per subject
    res = evaluate_ijbs(
        mobilefacenet,
        _templates_csv(tmp_path / "probe.csv", probes),
        [_templates_csv(tmp_path / "g1.csv", g1), _templates_csv(tmp_path / "g2.csv", g2)],
        root="/",
    )
    m = res.metrics
    assert res.counts["probe_templates"] == len(names)
    assert res.counts["G1_mated_probes"] + res.counts["G2_mated_probes"] == len(names)
    for split in ("G1", "G2"):
        assert 0.5 <= m[f"{split} rank-1"] <= m[f"{split} rank-5"] <= 1.0
        assert m[f"{split} tpir@fpir=1e-2"] <= m[f"{split} tpir@fpir=1e-1"] <= m[f"{split} rank-1"]
    assert m["mean rank-1"] == pytest.approx((m["G1 rank-1"] + m["G2 rank-1"]) / 2)


def test_briar_style(aligned_photos, mobilefacenet, tmp_path):
    subjects = {s: p for s, p in _by_subject(aligned_photos).items() if len(p) >= 2}
    gallery = [(f"g_{s}", s, p[0]) for s, p in subjects.items()]
    probes = [(f"p_{s}_{i}", s, q) for s, p in subjects.items() for i, q in enumerate(p[1:])]
    res = evaluate_briar(
        mobilefacenet,
        _templates_csv(tmp_path / "probe.csv", probes),
        _templates_csv(tmp_path / "gallery.csv", gallery),
        root="/",
    )
    m = res.metrics
    assert 0.6 <= m["rank-1"] <= m["rank-5"] <= m["rank-20"] <= 1.0
    assert m["tar@far=1e-4"] <= m["tar@far=1e-3"] <= m["tar@far=1e-2"] <= 1.0 and m["tar@far=1e-2"] > 0.3
    assert res.counts["genuine_comparisons"] == len(probes)


# ---- bad input -------------------------------------------------------------------------------------


def test_protocol_naming_missing_images(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((112, 112, 3), np.uint8))
    lst = _write_csv(
        tmp_path / "l.csv",
        ["image", "subject", "set"],
        [("a.png", "x", "gallery"), ("gone1.png", "x", "probe"), ("gone2.png", "y", "probe")],
    )
    with pytest.raises(ProtocolError, match=r"names 2 image\(s\) that do not exist .*gone1.png, .*gone2.png"):
        read_image_list(lst)


def test_image_of_the_wrong_size(tmp_path):
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((120, 100, 3), np.uint8))
    lst = _write_csv(
        tmp_path / "l.csv",
        ["image", "subject", "set"],
        [("big.png", "x", "gallery"), ("big.png", "x", "probe")],
    )

    class Never:
        def embed(self, crops):
            raise AssertionError("must fail before embedding")

    with pytest.raises(ProtocolError, match="expected an aligned 112x112 face crop, got 100x120"):
        evaluate_tinyface(Never(), lst)


@pytest.mark.parametrize(
    "header, rows, match",
    [
        (["image", "who"], [("a.png", "x")], "expected columns image, subject, set"),
        (["image", "subject", "set"], [], "at least one row"),
        (["image", "subject", "set"], [("a.png", "x", "query")], "expected set values"),
        (["image", "subject", "set"], [("a.png", "", "probe")], "line 2: expected values for subject"),
    ],
)
def test_bad_image_lists(tmp_path, header, rows, match):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((112, 112, 3), np.uint8))
    with pytest.raises(ProtocolError, match=match):
        read_image_list(_write_csv(tmp_path / "l.csv", header, rows))


def test_template_with_two_subjects(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((112, 112, 3), np.uint8))
    csv_path = _templates_csv(tmp_path / "t.csv", [("t1", "s1", Path("a.png")), ("t1", "s2", Path("a.png"))])
    with pytest.raises(ProtocolError, match="template t1 expected one subject, got s1 and s2"):
        read_templates(csv_path)


class _Evil:
    def __reduce__(self):
        return (print, ("never runs",))


@pytest.mark.parametrize(
    "payload, match",
    [
        (pickle.dumps(_Evil()), "got a reference to builtins.print"),
        (pickle.dumps(([b"x"] * 3, [True])), "expected 2 images per pair flag, got 3 images and 1 flags"),
        (pickle.dumps(([b"x", b"y"], [True])), "image 0: expected a decodable image file"),
        (b"not a pickle", "unreadable file"),
    ],
)
def test_bad_pair_bin(tmp_path, payload, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(payload)
    with pytest.raises(ProtocolError, match=match):
        read_pair_bin(path)


def test_verification_with_impostor_pairs(aligned_photos, mobilefacenet, tmp_path):
    """A .bin built from the labelled photos, genuine and impostor pairs alternating."""
    groups = [p for p in _by_subject(aligned_photos).values() if len(p) >= 2]
    images, same = [], []
    for i, paths in enumerate(groups):
        other = groups[(i + 1) % len(groups)]
        for a, b, flag in ((paths[0], paths[1], True), (paths[0], other[0], False)):
            images += [cv2.imencode(".jpg", cv2.imread(str(p)))[1] for p in (a, b)]
            same.append(flag)
    path = tmp_path / "pairs.bin"
    path.write_bytes(pickle.dumps((images, same)))
    res = evaluate_verification(mobilefacenet, path, folds=5, far_targets=[0.1])
    m = res.metrics
    assert res.counts == {"pairs": 2 * len(groups), "genuine": len(groups), "impostor": len(groups)}
    assert m["genuine_mean_cosine"] > m["impostor_mean_cosine"] + 0.2
    assert 0.8 <= m["accuracy"] <= 1.0 and 0.5 <= m["tar@far=1e-1"] <= 1.0
    assert "ROC" in res.curves and {p.suffix for p in write_report(res, tmp_path)} == {".json", ".png"}


class _TableEmbedder:
    """Returns a fixed feature per crop, looked up by the crop's (uniform) pixel value."""

    def __init__(self, table: dict[int, tuple[list[float], float]]):
        self.table = table

    def embed(self, crops):
        rows = [self.table[int(c[0, 0, 0])] for c in crops]
        units = np.array([np.asarray(u) / np.linalg.norm(u) for u, _ in rows], np.float32)
        return units, np.array([n for _, n in rows], np.float32)


def test_ijbs_by_hand(tmp_path):
    """Two gallery splits, multi-media templates; ranks and open-set results worked out by hand."""
    e = {"A": [1, 0, 0], "B": [0, 1, 0], "C": [0, 0, 1]}
    table = {
        10: (e["A"], 1.0),
        11: (e["B"], 1.0),  # gallery split 1: subjects a, b
        12: (e["C"], 1.0),  # gallery split 2: subject c
        20: (e["A"], 1.0),
        21: (e["A"], 1.0),
        22: (e["B"], 5.0),  # probe a: two weak A media, one strong B
        23: (e["A"], 1.0),
        24: (e["C"], 2.0),  # probe c: A + 2C -> (1, 0, 2)/sqrt(5)
        25: ([0.3, 0.4, 0.866], 1.0),  # probe b: cos 0.3 to A, 0.4 to B, 0.866 to C
    }
    for value in table:
        cv2.imwrite(str(tmp_path / f"{value}.png"), np.full((112, 112, 3), value, np.uint8))
    g1 = _templates_csv(tmp_path / "g1.csv", [("ga", "a", Path("10.png")), ("gb", "b", Path("11.png"))])
    g2 = _templates_csv(tmp_path / "g2.csv", [("gc", "c", Path("12.png"))])
    probes = _templates_csv(
        tmp_path / "p.csv",
        [("pa", "a", Path(f"{v}.png")) for v in (20, 21, 22)]
        + [("pc", "c", Path("23.png")), ("pc", "c", Path("24.png")), ("pb", "b", Path("25.png"))],
    )
    emb = _TableEmbedder(table)
    res = evaluate_ijbs(emb, probes, [g1, g2], ranks=[1, 2], fpir_targets=[0.5])
    m = res.metrics
    # norm-weighted: probe a = 2A + 5B -> B first, its mate A second; probe b -> B (0.4 > 0.3)
    assert (m["G1 rank-1"], m["G1 rank-2"]) == (0.5, 1.0) and res.counts["G1_mated_probes"] == 2
    # split 1 has one non-mated probe (c, top 0.447 at A): FPIR 0.5 allows none -> threshold 0.447;
    # probe b's 0.4 is below it, probe a is not at rank 1 -> 0
    assert m["G1 tpir@fpir=5e-1"] == 0.0
    # split 2: probe c -> C at 0.894; non-mated tops 0.866 (b) and 0 (a): one may pass -> threshold 0
    assert m["G2 rank-1"] == 1.0 and m["G2 tpir@fpir=5e-1"] == 1.0
    assert m["mean rank-1"] == 0.75 and m["mean tpir@fpir=5e-1"] == 0.5
    # plain averaging of unit vectors: probe a = (2A + B)/3 -> A first (0.894 > 0.447) and above the threshold
    avg = evaluate_ijbs(emb, probes, [g1], fusion="average", ranks=[1], fpir_targets=[0.5]).metrics
    assert avg["G1 rank-1"] == 1.0 and avg["G1 tpir@fpir=5e-1"] == 0.5
