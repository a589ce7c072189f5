"""The cost of recording N cameras on this machine: CPU per camera and bytes per hour.

A loopback RTSP server (rtsp-server-perl) relays ffmpeg publishers looping a 640 px clip of the shared friends
video (real time, ~24 fps); ``N`` cameras are recorded at once by the recorder of ``stream``
(``pipeline.live.recorder``: remux without decoding into MP4 segments indexed in SQLite) for ``--seconds``. Reported per
N: this process's CPU time (user + system, the recorder threads only: nothing else runs in it) per camera as a
share of one core, and the bytes written per camera-hour. The publishers' and the server's CPU is not counted.

    python bench/recording.py [--cameras 1 4] [--seconds 30] [--segment-s 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from gallery.config import GalleryConfig  # noqa: E402
from gallery.db import Database  # noqa: E402
from gallery.queries import Filters  # noqa: E402
from gallery.recordings import find_recordings  # noqa: E402
from pipeline.live.config import CameraConfig, LiveConfig  # noqa: E402
from pipeline.live.recorder import record_cameras  # noqa: E402
from tests.live.rtsp import RtspServer, make_clip, tools_missing  # noqa: E402

FRIENDS = (
    Path(os.environ.get("FACEMOE_ASSETS", ROOT.parent / "shared" / "assets"))
    / "videos"
    / "friends_in_video.mp4"
)


def run(n: int, seconds: float, segment_s: float, folder: Path, clip: Path) -> dict:
    server = RtspServer(folder).start()
    try:
        cams = []
        for i in range(n):
            server.publish(f"cam{i}", clip)
            cams.append(CameraConfig(name=f"cam{i}", url=server.url(f"cam{i}")))
        live = LiveConfig(
            transport="udp",
            read_timeout_s=5,
            recording={"enabled": True, "segment_s": segment_s, "dir": str(folder / "rec")},
        )
        url = f"sqlite:///{folder / 'rec.db'}"
        with record_cameras(live, cams, url, GalleryConfig()):
            cpu0, t0 = time.process_time(), time.monotonic()
            time.sleep(seconds)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    finally:
        server.kill()
    with Database(url) as db:
        rows = find_recordings(db, Filters(page_size=1000)).rows
    recorded = sum((_t(r["ended_at"]) - _t(r["started_at"])).total_seconds() for r in rows if r["ended_at"])
    size = sum(r["size"] for r in rows)
    return {
        "cameras": n,
        "cpu_per_camera": cpu / wall / n,
        "bytes_per_camera_hour": size / recorded * 3600 if recorded else 0.0,
        "segments": len(rows),
    }


def _t(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--segment-s", type=float, default=10.0)
    args = ap.parse_args()
    reason = tools_missing()
    if reason:
        print(f"bench/recording.py: {reason}", file=sys.stderr)
        return 2
    print(describe(), flush=True)  # what the figures below were measured on
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(FRIENDS, Path(tmp) / "friends_640.mp4")
        print("cameras  cpu/camera (% of a core)  MB per camera-hour  segments")
        for n in args.cameras:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            r = run(n, args.seconds, args.segment_s, folder, clip)
            print(
                f"{r['cameras']:7d}  {100 * r['cpu_per_camera']:24.2f}  "
                f"{r['bytes_per_camera_hour'] / 1e6:18.1f}  {r['segments']:8d}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
