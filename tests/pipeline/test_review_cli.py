"""The review command and ``query reviews`` through the real command line: the friends clip processed with an empty
gallery, Rachel enrolled afterwards with ``--rematch``; her retroactive matches confirmed and rejected show so in
``query matches``, ``query tracks`` and her timeline, survive ``rematch --undo`` and a new pass (which does not name
the rejected track again), and land in the audit trail; a rejected watch-listed match raises no further
retroactive alert; bad input is one line and exit 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import func, select

from gallery.access_models import Review
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.store import Gallery
from tests.conftest import require
from tests.gallery.helpers import copy_sqlite, media, unit
from tests.live.test_alerts import Receiver
from tests.pipeline.test_rematch import CONFIG, STILLS, _json, _main, empty_log  # noqa: F401  (fixture)


def _reviews(url: str) -> int:
    with Gallery.open(url) as g, g.db.session() as s:
        return s.scalar(select(func.count()).select_from(Review))


@pytest.mark.slow
def test_confirmed_and_rejected_matches_show_everywhere_and_survive_rematch(empty_log, tmp_path, capsys):  # noqa: F811
    url = copy_sqlite(empty_log[0], tmp_path, "review")
    rachel = str(require(STILLS) / "Rachel.png")
    code, _, err = _main(
        capsys, "enroll", "--db", url, "--config", CONFIG, "--name", "Rachel", rachel, "--rematch"
    )
    assert code == 0 and "rematch --undo " in err, err
    rid = int(err.split("rematch --undo ")[1].split()[0])
    hers = sorted(
        _json(capsys, "query", "matches", "--db", url, "--identity", "Rachel"), key=lambda r: -r["score"]
    )
    assert len(hers) >= 2 and all(r["reviewed"] is None for r in hers)
    good, bad = hers[0]["ref"], hers[-1]["ref"]
    code, out, err = _main(
        capsys, "review", good, "--confirm", "--note", "seen her", "--db", url, "--config", CONFIG
    )
    assert code == 0 and "confirmed Rachel (retro)" in err, err
    assert out.strip().endswith(
        f"run_pipeline.py enroll --name Rachel --from-track {good}"
    )  # offered, not done
    code, out, err = _main(capsys, "review", bad, "--reject", "--db", url, "--config", CONFIG)
    assert code == 0 and out == "" and "rejected Rachel (retro)" in err, err

    def shown() -> tuple[dict, dict, dict]:
        rows = _json(capsys, "query", "matches", "--db", url, "--page-size", "1000")
        matches = {r["ref"]: r["reviewed"] for r in rows if r["retroactive"]}  # beside the logged unknowns
        assert all(r["reviewed"] is None for r in rows if not r["retroactive"])
        tracks = {r["ref"]: r for r in _json(capsys, "query", "tracks", "--db", url, "--page-size", "1000")}
        timeline = {
            r["ref"]: r["reviewed"] for r in _json(capsys, "query", "timeline", "Rachel", "--db", url)
        }
        return matches, tracks, timeline

    matches, tracks, timeline = shown()
    assert (matches[good], matches[bad]) == ("confirmed", "rejected")
    assert (timeline[good], timeline[bad]) == ("confirmed", "rejected")
    assert tracks[good]["review"]["note"] == "seen her" and tracks[bad]["review"]["reviewer"]
    code, out, _ = _main(capsys, "query", "matches", "--db", url, "--identity", "Rachel")
    line = next(ln for ln in out.splitlines() if ln.startswith(good + " "))
    assert "confirmed" in line.split()  # the table's reviewed column
    listed = _json(capsys, "query", "reviews", "--db", url)
    assert [(r["ref"], r["verdict"], r["kind"]) for r in listed] == [
        (bad, "rejected", "retro"),
        (good, "confirmed", "retro"),
    ]

    code, _, err = _main(capsys, "rematch", "--db", url, "--undo", str(rid))
    assert code == 0, err
    assert {r["retro_id"] for r in _json(capsys, "query", "reviews", "--db", url)} == {None}  # the rows stay
    code, out, err = _main(
        capsys, "rematch", "--db", url, "--config", CONFIG, "--identity", "Rachel", "--format", "json"
    )
    assert code == 0, err
    again = {r["ref"] for r in json.loads(out)["rows"]}
    assert good in again and bad not in again and len(again) == len(hers) - 1  # not that person: never again
    matches, tracks, timeline = shown()
    assert matches[good] == timeline[good] == tracks[good]["reviewed"] == "confirmed" and bad not in timeline
    audit = _json(capsys, "query", "audit", "--db", url, "--action", "review")
    assert [(a["objects"], a["details"]["verdict"], a["result"]) for a in audit] == [
        ([bad], "rejected", "ok"),
        ([good], "confirmed", "ok"),
    ]


@pytest.fixture
def watch(tmp_path):
    """A camera log of three tracks (ann, bob, ann) logged unknown; ann (watch-listed) and bob enrolled later."""
    rng = np.random.default_rng(3)
    ann, bob = unit(rng, 2, 8)
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with Gallery.open(url) as g:
        with MatchLogWriter(g.db, source="gate", kind="camera", config_hash="t", keep_thumbnails=False) as w:
            for t, template in enumerate((ann, bob, ann)):
                w.record(TrackRecord(t, 2.0 * t, 2.0 * t + 1, 5, 2, template, "e8", [], "unknown", 0.5))
        g.add_media("ann", "e8", media("ann", ann[None]), create=True, watchlist=True)
        g.add_media("bob", "e8", media("bob", bob[None]), create=True)
    return url


def test_a_rejected_watchlist_match_raises_no_further_alert(watch, capsys):
    def rematch_alerts(*extra: str) -> tuple[list[dict], list[int]]:
        receiver = Receiver()
        try:
            hooks = json.dumps([{"url": receiver.url, "retries": 0}])
            settings = ["live.alerts.retroactive=true", f"live.alerts.webhooks={hooks}"]
            rows = _json(
                capsys, "rematch", "--db", watch, *extra, *(a for kv in settings for a in ("--set", kv))
            )
        finally:
            receiver.close()
        return rows, sorted(b["track_id"] for b in receiver.bodies)

    rows, alerted = rematch_alerts()
    assert alerted == [0, 2]
    ref0 = next(r["ref"] for r in rows if r["track_id"] == 0)
    code, _, err = _main(capsys, "review", ref0, "--reject", "--db", watch)
    assert code == 0, err
    rid = _json(capsys, "query", "rematches", "--db", watch)[0]["id"]
    assert _main(capsys, "rematch", "--db", watch, "--undo", str(rid))[0] == 0
    rows, alerted = rematch_alerts()
    assert alerted == [2] and sorted(r["track_id"] for r in rows) == [
        1,
        2,
    ]  # track 0 neither named nor alerted
    code, _, err = _main(capsys, "review", ref0, "--name", "bob", "--db", watch)
    assert code == 0 and "named bob (unknown)" in err, err
    audit = _json(capsys, "query", "audit", "--db", watch, "--action", "review")
    assert [(a["objects"], a["details"]["verdict"], a["actor_kind"]) for a in audit] == [
        ([ref0], "named", "os"),
        ([ref0], "rejected", "os"),
    ]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["review", "{ref1}", "--confirm"], "expected a match or a retroactive match on the track, got none"),
        (["review", "{ref1}", "--name", "zed"], "expected an enrolled identity to name it, got 'zed'"),
        (["review", "{ref1}", "--name", "ann", "--identity", "ann"], "got both"),
        (["review", "9:9", "--reject"], "track 9:9: expected a track of the match log"),
        (["review", "12", "--reject"], "got a bare number"),
        (["review", "{ref1}", "--ack", "--note", "x" * 2001], "at most 2000 characters"),
        (["query", "reviews", "--decision", "match"], "do not apply"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(watch, capsys, argv, message):
    with Gallery.open(watch) as g:
        runs = {r[0] for r in g.db.engine.connect().exec_driver_sql("SELECT id FROM runs")}
    ref1 = f"{min(runs)}:1"
    code, out, err = _main(capsys, *[a.replace("{ref1}", ref1) for a in argv], "--db", watch)
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert message in err and out == ""
    assert _reviews(watch) == 0
