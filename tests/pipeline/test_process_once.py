"""A file is processed once (pipeline/commands/process.py with gallery/content.py and gallery/runs.py).

The CCTV clip (its first seconds, empty gallery: every track unknown) processed by its relative path, again, by
its absolute path and as a copy under another name logs its tracks once: one source, one run, the same tracks;
each repeat says which run did it and shows that run's tracks. ``--reprocess`` logs a new run whose tracks replace
the old run's (same tracks, new refs, the old thumbnails gone). ``query unknowns`` then sees each track once.
"""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import func, select

import run_pipeline
from gallery.db import Database
from gallery.models import Run, Source, Track
from tests.conftest import ASSETS, require
from tests.pipeline.commands import TEST_CONFIG

CLIP = ASSETS / "videos" / "person_tracker_cctv.mp4"
WINDOW = ("--set", "source.end=6")


def _main(capsys, *argv: str) -> tuple[str, str]:
    code = run_pipeline.main([*argv, "--config", str(TEST_CONFIG)])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    return out.out, out.err


def _process(capsys, url: str, video: str, *extra: str) -> tuple[str, str]:
    return _main(capsys, "process", video, "--db", url, "--no-progress", *WINDOW, *extra)


def _table_refs(out: str) -> list[str]:
    """The ``ref`` column of the process table."""
    lines = out.strip().splitlines()
    assert lines and lines[0].split()[0] == "ref", out
    return sorted(line.split()[0] for line in lines[1:])


def _log(url: str) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """(sources, runs, tracks) of the match log: (name, uri, key), (id, status, path), (run, track, start, end)."""
    with Database(url, create=False) as db, db.session() as session:
        sources = session.execute(select(Source.name, Source.uri, Source.content_key)).all()
        runs = session.execute(select(Run.id, Run.status, Run.path).order_by(Run.id)).all()
        tracks = session.execute(
            select(Track.run_id, Track.track_id, Track.start_time, Track.end_time).order_by(Track.track_id)
        ).all()
        assert session.scalar(select(func.count()).select_from(Track)) == len(tracks)
    return [tuple(s) for s in sources], [tuple(r) for r in runs], [tuple(t) for t in tracks]


def _query_tracks(capsys, url: str) -> list[str]:
    """The references of ``query tracks``, each checked to be of the one source."""
    out, _ = _main(capsys, "query", "tracks", "--db", url, "--format", "json")
    rows = json.loads(out)["rows"]
    assert {r["source"] for r in rows} == {CLIP.name}
    return sorted(r["ref"] if "ref" in r else f"{r['run_id']}:{r['track_id']}" for r in rows)


@pytest.mark.slow
def test_the_same_file_by_any_path_or_name_is_logged_once_and_reprocess_replaces_it(
    db_url, tmp_path, monkeypatch, capsys
):
    clip = require(CLIP)
    copy = tmp_path / "lobby_copy.mp4"
    shutil.copyfile(clip, copy)
    monkeypatch.chdir(clip.parent)

    out, err = _process(capsys, db_url, clip.name)  # by its relative path: logged
    sources, runs, tracks = _log(db_url)
    assert len(sources) == 1 and sources[0][0] == clip.name and len(sources[0][2]) == 64
    assert [(r[1], r[2]) for r in runs] == [("finished", str(clip.resolve()))]
    first = runs[0][0]
    assert len(tracks) >= 2 and {t[0] for t in tracks} == {first}
    refs = sorted(f"{first}:{t[1]}" for t in tracks)
    assert _table_refs(out) == refs
    assert _query_tracks(capsys, db_url) == refs

    for video in (clip.name, str(clip), str(copy)):  # again, absolute, a copy under another name
        out, err = _process(capsys, db_url, video)
        assert f"{video}: processed already by run {first} (finished " in err
        assert f", {len(tracks)} tracks" in err and "nothing logged" in err
        assert ("logged as" in err) == (video != clip.name)
        assert _table_refs(out) == refs  # its logged tracks, shown
        assert _log(db_url) == (sources, runs, tracks)  # nothing logged
    assert _query_tracks(capsys, db_url) == refs

    unknowns, _ = _main(capsys, "query", "unknowns", "--db", db_url, "--format", "json", "--min-size", "1")
    grouping = json.loads(unknowns)
    assert grouping["tracks"] == len(tracks)  # each track once, so no group is a track and its copies
    grouped = sorted(t["ref"] for g in grouping["groups"] for t in g["tracks"])
    assert grouped == refs  # the logged tracks, once each

    thumbs = tmp_path / "gallery_thumbnails"
    old_thumbs = sorted(thumbs.rglob("*.jpg")) if db_url.startswith("sqlite") else []
    assert len(old_thumbs) == (2 * len(tracks) if db_url.startswith("sqlite") else 0)  # thumbnails, snapshots

    out, err = _process(capsys, db_url, str(copy), "--reprocess")  # a new run replaces the old one's tracks
    _, runs_after, tracks_after = _log(db_url)
    second = runs_after[-1][0]
    assert second != first and f"run {second} replaces run {first} of the same video" in err
    assert runs_after == [(first, "replaced", str(clip.resolve())), (second, "finished", str(copy.resolve()))]
    assert [t[1:] for t in tracks_after] == [t[1:] for t in tracks]  # the same tracks, now of the new run
    assert {t[0] for t in tracks_after} == {second}
    new_refs = sorted(f"{second}:{t[1]}" for t in tracks)
    assert _table_refs(out) == new_refs
    assert _query_tracks(capsys, db_url) == new_refs
    assert _log(db_url)[0] == sources  # still one source, under its first name
    if db_url.startswith("sqlite"):
        assert not any(p.exists() for p in old_thumbs)  # the replaced run's thumbnails are deleted
        assert len(list(thumbs.rglob("*.jpg"))) == 2 * len(tracks)

    out, err = _process(capsys, db_url, clip.name)  # and the file is done again, by the new run
    assert f"processed already by run {second}" in err and _table_refs(out) == new_refs


def test_two_copies_in_one_command_are_refused(tmp_path, capsys):
    clip = require(CLIP)
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(clip, copy)
    url = f"sqlite:///{tmp_path / 'g.db'}"
    argv = ["process", str(clip), str(copy), "--db", url, "--no-progress", "--config", str(TEST_CONFIG)]
    assert run_pipeline.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "the same content" in line and str(clip) in line
    assert not (tmp_path / "g.db").exists()  # refused before any work
