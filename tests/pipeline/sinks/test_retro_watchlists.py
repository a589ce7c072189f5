"""Retroactive alerts (``rematch`` with ``live.alerts.retroactive``, pipeline/commands/rematch.py) follow the watch
lists as live alerts do: a retroactive match alerts only when a list of the identity applies to the track's camera
and the score reaches that list's threshold, the alert naming those lists. Tracks logged on two cameras with
templates of known cosine scores, the alerts received by a webhook on 127.0.0.1."""

from __future__ import annotations

import json

import numpy as np
import pytest

import run_pipeline
from gallery.matchlog import MatchLogWriter, TrackRecord
from gallery.store import Gallery
from gallery.watchlists import add_watchlist, join_watchlist, leave_watchlist
from tests.conftest import ROOT
from tests.gallery.helpers import media
from tests.live.test_alerts import Receiver

CONFIG = str(ROOT / "configs" / "test.yaml")
OPERATING = 0.30  # match.threshold: every track below is a retroactive match
DIM = 8
# (camera, who, cosine score with that person's enrolled template)
TRACKS = [
    ("gate", "Vera", 0.40),
    ("gate", "Vera", 0.50),
    ("lobby", "Vera", 0.50),
    ("lobby", "Hank", 0.70),
    ("gate", "Hank", 0.70),
    ("gate", "Lou", 0.35),
]


def _basis() -> np.ndarray:
    """Orthonormal rows ``[DIM, DIM]`` (seeded): one per person, the last one no one's."""
    q, _ = np.linalg.qr(np.random.default_rng(11).normal(size=(DIM, DIM)))
    return q.T.astype(np.float32)


def _gallery(url: str) -> None:
    """Vera, Hank and Lou enrolled (Lou on the default list by the flag), tracks of :data:`TRACKS` logged unknown;
    lists: ``high-risk`` (threshold 0.45, any camera) with Vera, ``lobby-only`` (the threshold in force) with
    Hank."""
    basis = _basis()
    people = {"Vera": basis[0], "Hank": basis[1], "Lou": basis[2]}
    other = basis[-1]
    with Gallery.open(url) as g:
        for camera in ("gate", "lobby"):
            with MatchLogWriter(
                g.db, source=camera, kind="camera", config_hash="t", keep_thumbnails=False
            ) as w:
                for t, (where, who, score) in enumerate(TRACKS):
                    if where != camera:
                        continue
                    template = score * people[who] + np.sqrt(1 - score**2) * other
                    w.record(TrackRecord(t, 2.0 * t, 2.0 * t + 1, 5, 2, template, "e8", [], "unknown", 0.5))
        for name, vector in people.items():
            g.add_media(name, "e8", media(name, vector[None]), create=True, watchlist=name == "Lou")
        add_watchlist(g.db, "high-risk", threshold=0.45)
        join_watchlist(g.db, "high-risk", ["Vera"])
        add_watchlist(g.db, "lobby-only", cameras=["lobby"])
        join_watchlist(g.db, "lobby-only", ["Hank"])


def _rematch(capsys, url: str) -> tuple[list[dict], list[dict]]:
    """The rows of one ``rematch`` pass and the alerts its webhook received."""
    receiver = Receiver()
    try:
        hooks = json.dumps([{"url": receiver.url, "retries": 0}])
        settings = [
            "live.alerts.retroactive=true",
            f"live.alerts.webhooks={hooks}",
            f"match.threshold={OPERATING}",
        ]
        argv = ["rematch", "--db", url, "--config", CONFIG, "--format", "json"]
        code = run_pipeline.main([*argv, *(a for kv in settings for a in ("--set", kv))])
        out, err = capsys.readouterr()
        assert code == 0, err
    finally:
        receiver.close()
    return json.loads(out)["rows"], receiver.bodies


def test_retroactive_alerts_follow_the_lists_cameras_and_thresholds(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    _gallery(url)
    rows, bodies = _rematch(capsys, url)
    # every track is named at the operating threshold...
    named = sorted((r["source"], r["identity"], round(r["score"], 2)) for r in rows)
    assert named == sorted((camera, who, score) for camera, who, score in TRACKS)
    # ...but only these alert: Vera at or above high-risk's 0.45 on any camera, Hank on the lobby only, Lou (the
    # default list, the threshold in force) anywhere
    alerts = sorted((b["camera"], b["identity"], round(b["score"], 2), b["watchlists"]) for b in bodies)
    assert alerts == [
        ("gate", "Lou", 0.35, ["default"]),
        ("gate", "Vera", 0.5, ["high-risk"]),
        ("lobby", "Hank", 0.7, ["lobby-only"]),
        ("lobby", "Vera", 0.5, ["high-risk"]),
    ]
    assert all(b["retroactive"] is True and b["rematch_id"] for b in bodies)
    by_track = {(r["source"], r["track_id"]): r["ref"] for r in rows}
    assert {b["ref"] for b in bodies} == {by_track[(b["camera"], b["track_id"])] for b in bodies}


@pytest.mark.parametrize(
    "threshold, cameras, expected",
    [
        (0.51, None, []),  # stricter than every score of hers
        (0.50, None, [("gate", 0.5), ("lobby", 0.5)]),  # reached exactly
        (None, ["gate"], [("gate", 0.4), ("gate", 0.5)]),  # the threshold in force, one camera
        (None, ["yard"], []),  # a camera none of her tracks is on
    ],
)
def test_one_list_rule(tmp_path, capsys, threshold, cameras, expected):
    """Vera on one more list, ``solo``, taken off ``high-risk``: her alerts are exactly what ``solo`` allows."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    _gallery(url)
    with Gallery.open(url) as g:
        leave_watchlist(g.db, "high-risk", ["Vera"])
        add_watchlist(g.db, "solo", threshold=threshold, cameras=cameras)
        join_watchlist(g.db, "solo", ["Vera"])
    _, bodies = _rematch(capsys, url)
    vera = sorted((b["camera"], round(b["score"], 2)) for b in bodies if b["identity"] == "Vera")
    assert vera == expected
    assert all(b["watchlists"] == ["solo"] for b in bodies if b["identity"] == "Vera")
