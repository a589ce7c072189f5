"""bench/longrange.py runs end to end at one face size on a few frames of the friends clip and reports every figure."""

from __future__ import annotations

import json

import pytest

from tests.bench.conftest import load_bench
from tests.conftest import ASSETS, require


@pytest.mark.slow
def test_longrange_bench_one_size(tmp_path, capsys):
    require(ASSETS / "videos" / "friends_in_video.mp4")
    require(ASSETS / "images" / "friends_gallery")
    argv = [
        "--sizes",
        "24",
        "--segments",
        "1.0",
        "--frames",
        "6",
        "--json",
        str(tmp_path / "out.json"),
        "--plots",
        str(tmp_path / "plots"),
    ]
    assert load_bench("longrange").main(argv) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["canvas"] == [1920, 1080] and len(out["segments"]) == 1
    assert out["segments"][0]["frames"] == 6 and out["segments"][0]["face_px"] > 24
    assert out["overrides"]["baseline"] == [  # the pipeline before long range: no native pass, no enlarging
        "detect.tiling=off",
        "detect.full_every=1",
        "detect.min_face_px=12",
    ]
    assert out["overrides"]["long_range"] == []  # configs/test.yaml as it is
    assert out["overrides"]["exhaustive"] == ["detect.full_every=1"]
    [row] = out["sizes"]
    assert row["size"] == 24
    assert 0.0 <= row["long_range"]["recall_vs_exhaustive"] <= 1.0
    for setting in ("baseline", "long_range", "exhaustive"):
        figures = row[setting]
        for key in (
            "recall",
            "rank1",
            "tpir_at_fpir_1pct",
            "fps",
            "tracks",
            "mated_tracks",
            "non_mated_tracks",
        ):
            assert key in figures
        assert figures["frames"] == 6 and figures["faces"] > 0 and figures["fps"] > 0
        assert 0.0 <= figures["recall"] <= 1.0
        assert figures["tpir_at_fpir_1pct"] is None  # far fewer than 100 non-mated tracks
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| face px"))
    for column in (
        "recall base",
        "recall long",
        "long / exhaustive",
        "rank-1 base",
        "TPIR@FPIR 1% long",
        "fps long (x base)",
        "fps exhaustive (x base)",
        "tracks long / exhaustive",
    ):
        assert column in header
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "longrange_rank1.png",
        "longrange_recall.png",
    ]


@pytest.mark.slow
def test_longrange_bench_impostors_are_non_mated_tracks(tmp_path):
    """Faces of people outside the gallery pasted around the clip become tracks that overlap nobody."""
    require(ASSETS / "images" / "identities.json")
    argv = ["--sizes", "32", "--segments", "1.0", "--frames", "8", "--impostors", "4"]
    assert load_bench("longrange").main([*argv, "--json", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["impostors_per_clip"] == 4
    [row] = out["sizes"]
    long_range = row["long_range"]
    assert long_range["non_mated_tracks"] >= 3  # most of the four, none of the clip's own people
    assert long_range["mated_tracks"] <= 2 and long_range["tpir_at_fpir_1pct"] is None  # under 100 non-mated


def test_longrange_bench_refuses_a_face_size_out_of_range(capsys):
    with pytest.raises(SystemExit):
        load_bench("longrange").main(["--sizes", "2"])
    assert "face size must be within" in capsys.readouterr().err


def test_longrange_bench_says_in_one_line_when_a_segment_is_past_the_clip(capsys):
    require(ASSETS / "videos" / "friends_in_video.mp4")
    assert load_bench("longrange").main(["--sizes", "24", "--segments", "26.0", "--frames", "48"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: segment at 26.0 s"), err
