"""``query unknowns`` (pipeline/commands/unknowns.py): recurring unknown tracks grouped into persons.

The friends clip is processed once per module with configs/test.yaml and an empty gallery, by the runner and the
match-log sink of ``process``, with the face boxes kept: each track's true person comes from the clip's ground
truth (who is where in each shot, tests/facemoe/evaluate/data/friends_in_video_gt.csv), assigned by
:func:`facemoe.evaluate.video.assign_identities` from the track's times and median box centre. The labels were
checked once by eye against the thumbnails (the six stills beside them): every track shows the person the ground
truth names.
"""

from __future__ import annotations

import argparse
import csv
import io
import json

import numpy as np
import pytest
from sqlalchemy import insert, select

from core.errors import UserError
from facemoe.evaluate.video import ScoredTrack, assign_identities, read_ground_truth
from gallery.db import Database
from gallery.grouping import group_templates, score_grouping
from gallery.models import MatchEvent, Run, Source, Track, from_blob
from pipeline.build import build
from pipeline.commands import unknowns
from pipeline.commands.common import add_config_options
from pipeline.config import load_config
from pipeline.runners.eval_video import median_centre
from pipeline.runners.runner import FileRunner
from pipeline.runners.sources import FileSource
from pipeline.sinks.outputs import CollectSink
from pipeline.sinks.sql_gallery import LoggedSource
from tests.conftest import ASSETS, ROOT, on_the_fridge, require
from tests.gallery.test_unknowns import START, Seen, _log

CONFIG = str(ROOT / "configs" / "test.yaml")
CLIP = ASSETS / "videos" / "friends_in_video.mp4"
GROUND_TRUTH = ROOT / "tests" / "facemoe" / "evaluate" / "data" / "friends_in_video_gt.csv"


def _command(capsys, *argv: str) -> str:
    """``query unknowns ARGV`` through the command's own parser; its standard output."""
    parser = argparse.ArgumentParser()
    unknowns.add_arguments(parser)
    assert unknowns.run(parser.parse_args(list(argv))) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The friends clip through the pipeline into an empty gallery's match log: (database URL, true person per
    track id)."""
    video = require(CLIP)
    url = f"sqlite:///{tmp_path_factory.mktemp('unknowns') / 'clip.db'}"
    cfg = load_config(CONFIG, [])
    source = FileSource(video, cfg.source)
    with build(cfg, db_url=url) as system:
        log = system.match_log([LoggedSource(source.source_id, "file", str(video.resolve()))])
        collect = CollectSink()
        runner = FileRunner(
            cfg, system.detector, system.embedder, system.matcher(), [log, collect], keep_boxes=True
        )
        stats = runner.run([source])
        log.close("finished")
    boxes = stats.boxes.get(source.source_id, [])
    tracks = [
        ScoredTrack(
            video.name,
            t.track_id,
            t.first_timestamp,
            t.last_timestamp,
            None,
            median_centre(boxes, t.track_id),
        )
        for t, _ in collect.results
        if t.num_crops > 0
    ]
    truth = {
        t.track_id: a.identity or ("photo on the fridge" if on_the_fridge(t.centre) else None)
        for t, a in zip(tracks, assign_identities(tracks, read_ground_truth(GROUND_TRUTH)))
    }
    # every track is one of the six, unambiguously, or the photo on the fridge (tests.conftest.FRIDGE_PHOTO)
    assert len(truth) >= 10 and None not in truth.values()
    return url, truth


def _copy_log(src_url: str, dst_url: str) -> None:
    """The match log of one database, row for row, into another (SQLite or PostgreSQL)."""
    with Database(src_url) as src, Database(dst_url) as dst:
        for model in (Source, Run, Track, MatchEvent):
            with src.session() as session:
                rows = [dict(r) for r in session.execute(select(model.__table__)).mappings()]
            with dst.session() as session:
                session.execute(insert(model.__table__), rows)


@pytest.mark.slow
def test_friends_clip_groups_are_pure(clip, db_url, capsys):
    url, truth = clip
    _copy_log(url, db_url)  # the same tracks on either back end
    doc = json.loads(
        _command(capsys, "--db", db_url, "--config", CONFIG, "--format", "json", "--min-size", "1")
    )
    assert doc["threshold"] == 0.3  # match.threshold of configs/test.yaml: the operating threshold
    assert doc["tracks"] == len(truth) and sum(g["size"] for g in doc["groups"]) == len(truth)
    assigned = {t["track_id"]: g["group"] for g in doc["groups"] for t in g["tracks"]}
    ids = sorted(truth)
    scores = score_grouping([assigned[i] for i in ids], [truth[i] for i in ids])
    assert scores["purity"] >= 0.9, (scores, doc["groups"])
    assert scores["completeness"] >= 0.7, scores  # people seen in several shots are mostly found again
    recurring = [g for g in doc["groups"] if g["size"] >= 2]
    assert len(recurring) >= 4 and doc["singletons"] == len(doc["groups"]) - len(recurring)
    assert [g["size"] for g in doc["groups"]] == sorted((g["size"] for g in doc["groups"]), reverse=True)
    for group in recurring:
        assert group["sources"] == [str(require(CLIP).resolve())] and group["thumbnail"]
        assert group["mean_similarity"] >= 0.3  # every join kept the average at the threshold or above
    listed = json.loads(_command(capsys, "--db", db_url, "--config", CONFIG, "--format", "json"))
    assert [g["tracks"] for g in listed["groups"]] == [g["tracks"] for g in recurring]  # default: 2 or more


@pytest.mark.slow
def test_friends_clip_threshold_option(clip, capsys):
    url, truth = clip
    loose = json.loads(
        _command(capsys, "--db", url, "--config", CONFIG, "--format", "json", "--threshold", "-1")
    )
    strict = json.loads(
        _command(capsys, "--db", url, "--config", CONFIG, "--format", "json", "--threshold", "1")
    )
    # at -1 only tracks on screen together stay apart (two or three people per shot); at 1 nothing joins
    assert loose["threshold"] == -1 and 2 <= len(loose["groups"]) <= 4
    assert strict["groups"] == [] and strict["singletons"] == len(truth)


@pytest.mark.slow
def test_friends_clip_on_screen_together_rule(clip):
    # the same tracks grouped as if each were of its own run: nothing keeps two people of one shot apart
    url, truth = clip
    with Database(url) as db, db.session() as session:
        rows = session.execute(select(Track).order_by(Track.id)).scalars().all()
        x = np.stack([from_blob(r.template, r.dim) for r in rows if r.crops_embedded > 0])
        kept = [r for r in rows if r.crops_embedded > 0]
    labels = [truth[r.track_id] for r in kept]
    spans = [r.start_time for r in kept], [r.end_time for r in kept]
    ruled = score_grouping(group_templates(x, [r.run_id for r in kept], *spans, 0.3), labels)
    unruled = score_grouping(group_templates(x, list(range(len(kept))), *spans, 0.3), labels)
    assert ruled["purity"] >= 0.9 and ruled["purity"] >= unruled["purity"], (ruled, unruled)


def test_table_json_and_csv(db_url, capsys):
    with Database(db_url) as db:
        seen = [Seen("a", "=cmd|' /C calc'!A0"), Seen("a", "lobby", minute=1), Seen("b", minute=2)]
        _log(db, seen + [Seen("b", "lobby", minute=3), Seen("c", "lobby", minute=4)])
    base = ["--db", db_url, "--config", CONFIG, "--threshold", "0.5"]
    table = _command(capsys, *base).splitlines()
    assert table[0].split() == unknowns.COLUMNS and len(table) == 4
    assert table[-1].startswith("2 groups of 2+ tracks hold 4 of 5 unknown tracks (1 seen once); embedder e8")
    rows = list(csv.reader(io.StringIO(_command(capsys, *base, "--format", "csv"))))
    assert rows[0] == unknowns.COLUMNS and len(rows) == 3
    assert rows[1][4] == "'=cmd|' /C calc'!A0,lobby" and rows[1][7] == "1:1 2:2"  # a formula is neutralised
    doc = json.loads(_command(capsys, *base, "--format", "json", "--source", "lobby", "--min-size", "1"))
    assert [g["size"] for g in doc["groups"]] == [1, 1, 1] and doc["embedder_id"] == "e8"
    since = (START.replace(minute=3)).isoformat()
    doc = json.loads(_command(capsys, *base, "--format", "json", "--since", since, "--min-size", "1"))
    assert doc["tracks"] == 2


def test_an_empty_match_log(db_url, capsys):
    Database(db_url).close()  # the schema, no track
    out = _command(capsys, "--db", db_url, "--config", CONFIG)
    assert out.splitlines() == [
        "  ".join(unknowns.COLUMNS),
        "0 groups of 2+ tracks hold 0 of 0 unknown tracks (0 seen once); embedder -, threshold -",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--threshold", "2"], "threshold"),
        (["--threshold", "nan"], "threshold"),
        (["--min-size", "0"], "min size"),
        (["--since", "yesterday"], "ISO 8601"),
        (["--since", "2026-03-01T10:00:00"], "timezone"),
        (["--source", "nowhere"], "no such source"),
    ],
)
def test_bad_options_are_one_line(db_url, argv, message):
    with Database(db_url) as db:
        _log(db, [Seen("a")])
    parser = argparse.ArgumentParser()
    unknowns.add_arguments(parser)
    with pytest.raises(UserError, match=message) as caught:
        unknowns.run(parser.parse_args(["--db", db_url, "--config", CONFIG, *argv]))
    assert "\n" not in str(caught.value)


def _query_parser() -> argparse.ArgumentParser:
    """A parser like ``query``'s: a kind, the shared options and filters, the other kinds' filters, then the
    options of unknowns added with ``common=False``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("name", nargs="?")
    add_config_options(parser)
    for flag in ("--source", "--since", "--until", "--identity", "--decision"):
        parser.add_argument(flag)
    parser.add_argument("--min-score", type=float)
    parser.add_argument("--watchlist", action="store_true")
    parser.add_argument("--page", type=int, default=1)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--format", default="table")
    unknowns.add_arguments(parser, common=False)
    return parser


@pytest.mark.parametrize(
    "extra, refused",
    [([], None), (["--identity", "ann"], "--identity"), (["--page", "2"], "--page"), (["ann"], "NAME")],
    ids=["none", "identity", "page", "name"],
)
def test_inside_the_query_parser(db_url, capsys, extra, refused):
    with Database(db_url) as db:
        _log(db, [Seen("a"), Seen("a", "lobby", minute=1)])
    args = _query_parser().parse_args(
        ["unknowns", *extra, "--db", db_url, "--config", CONFIG, "--threshold", "0.5", "--format", "json"]
    )
    if refused is None:
        assert unknowns.run(args) == 0 and json.loads(capsys.readouterr().out)["groups"][0]["size"] == 2
        return
    with pytest.raises(UserError, match=f"query unknowns: {refused} does not apply"):
        unknowns.run(args)
