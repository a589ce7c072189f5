"""Live cameras on this machine: per-camera processed fps, drop rate and latency for 1, 2 and 4 streams, single
process and Ray, and the memory of a long run.

A loopback RTSP server (rtsp-server-perl) relays ffmpeg publishers looping a clip of the shared friends video
(real time, ~24 fps each); ``N`` of them are processed at once for ``--seconds`` by the single-process live
runner and by the Ray engine (local instance), both with SCRFD-500M + MobileFaceNet from configs/test.yaml,
matching against the six friends enrolled in a SQLite gallery and writing its match log. Reported per
setting, against the single-process one-stream run as the baseline of the same invocation:
- processed fps per camera and its ratio to the baseline, the share of decoded frames dropped at the source;
- latency from a track's last frame being decoded to its result reaching the sinks, median and p95 (a track
  that fades out is declared over ``max_lost_s`` after its last frame; one cut off by a shot cut at once);
- with ``--soak-seconds``: resident memory of one stream sampled every 5 s after a warm-up, and its slope.

    python bench/live.py [--streams 1 2 4] [--engines local ray] [--seconds 30] [--soak-seconds 600]
                         [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from pipeline.build import build
from pipeline.config import load_config
from pipeline.live.cameras import LiveCameras
from pipeline.live.config import CameraConfig, LiveConfig
from pipeline.live.health import HealthRegistry
from pipeline.runners.live_runner import LiveRunner
from pipeline.sinks.sql_gallery import LoggedSource
from tests.live.rtsp import RtspServer, make_clip, tools_missing

ASSETS = ROOT.parent / "shared" / "assets"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _summary(
    n: int, elapsed: float, per_cam: list[dict], lat: list[float], tracks: int, samples: list | None = None
) -> dict:
    lat = sorted(lat)
    return {
        "streams": n,
        "seconds": round(elapsed, 1),
        "cameras": per_cam,
        "tracks": tracks,
        "fps_processed_per_camera": statistics.mean(c["fps_processed"] for c in per_cam),
        "fps_in_per_camera": statistics.mean(c["fps_in"] for c in per_cam),
        "drop_rate": statistics.mean(c["drop_rate"] for c in per_cam),
        "latency_p50_s": statistics.median(lat) if lat else None,
        "latency_p95_s": lat[int(0.95 * (len(lat) - 1))] if lat else None,
        "rss_mb": samples or [],
    }


def run_local(n: int, seconds: float, server: RtspServer, db_url: str, cfg, rss_every: float = 0.0) -> dict:
    cams = [CameraConfig(name=f"cam{i}", url=server.url(f"cam{i}")) for i in range(n)]
    registry = HealthRegistry(fps_window_s=seconds)
    cameras = LiveCameras(cams, LiveConfig(transport="udp", read_timeout_s=3.0), registry, seed=0)
    with build(cfg, db_url=db_url) as system:
        sink = system.match_log([LoggedSource(c.name, "camera", c.url) for c in cams], batch_size=1)
        runner = LiveRunner(
            cfg, system.detector, system.embedder, system.matcher(), [sink], cameras, registry
        )
        stop, out = threading.Event(), {}
        thread = threading.Thread(target=lambda: out.update(stats=runner.run(stop)), daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(c.frames_in for c in registry.cameras.values()):
            time.sleep(0.2)
        start = {name: (c.frames_in, c.frames_processed, c.dropped) for name, c in registry.cameras.items()}
        t0, samples = time.monotonic(), []
        while time.monotonic() - t0 < seconds:
            time.sleep(min(5.0, seconds) if rss_every else 0.5)
            if rss_every:
                samples.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))
        elapsed = time.monotonic() - t0
        end = {name: (c.frames_in, c.frames_processed, c.dropped) for name, c in registry.cameras.items()}
        stop.set()
        thread.join(120)
        sink.close()
    per_cam = []
    for name, first in start.items():
        fin, done, drop = (e - s for e, s in zip(end[name], first))
        per_cam.append(
            {
                "camera": name,
                "fps_in": fin / elapsed,
                "fps_processed": done / elapsed,
                "drop_rate": drop / max(fin, 1),
            }
        )
    stats = out["stats"]
    return _summary(n, elapsed, per_cam, list(stats.latencies_s), stats.tracks, samples)


def run_on_ray(n: int, seconds: float, server: RtspServer, db_url: str, cfg) -> dict:
    from pipeline.live.ray_engine import run_ray

    cams = [CameraConfig(name=f"cam{i}", url=server.url(f"cam{i}")) for i in range(n)]
    result = run_ray(
        cfg,
        LiveConfig(transport="udp", read_timeout_s=3.0),
        cams,
        db_url,
        threading.Event(),
        duration_s=seconds,
    )
    per_cam = [
        {
            "camera": c["camera"],
            "fps_in": c["frames_in"] / max(c["seconds"], 1e-9),
            "fps_processed": c["frames"] / max(c["seconds"], 1e-9),
            "drop_rate": c["dropped"] / max(c["frames_in"], 1),
        }
        for c in result["cameras"]
    ]
    elapsed = statistics.mean(c["seconds"] for c in result["cameras"])
    return _summary(n, elapsed, per_cam, result["latencies_s"], result["tracks"])


def with_server(n: int, clip: Path, tmp: Path, fn, *args, **kw) -> dict:
    server = RtspServer(tmp).start()
    try:
        for i in range(n):
            server.publish(f"cam{i}", clip)
        return fn(n, *args[:1], server, *args[1:], **kw)
    finally:
        server.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--engines", nargs="+", choices=("local", "ray"), default=["local", "ray"])
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per setting")
    ap.add_argument("--soak-seconds", type=float, default=0.0, help="one-stream memory run; 0 = skip")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    print(describe(), flush=True)  # what the figures below were measured on
    logging.basicConfig(level=logging.ERROR)
    if tools_missing():
        print(f"cannot run: {tools_missing()}", file=sys.stderr)
        return 2
    cfg = load_config(ROOT / "configs" / "test.yaml")
    results = {"runs": [], "soak": None}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        db_url = f"sqlite:///{tmp / 'bench.db'}"
        with build(
            cfg,
            db_url=db_url,
            gallery_dir=ASSETS / "images" / "friends_gallery",
            detector=False,
            embedder=False,
        ):
            pass  # the six friends enrolled into the bench database (the enroll --dir rule)
        clip = make_clip(ASSETS / "videos" / "friends_in_video.mp4", tmp / "clip.mp4", seconds=20)
        for engine in args.engines:
            for n in args.streams:
                run = run_local if engine == "local" else run_on_ray
                results["runs"].append(
                    {"engine": engine, **with_server(n, clip, tmp, run, args.seconds, db_url, cfg)}
                )
        if args.soak_seconds:
            results["soak"] = with_server(
                1, clip, tmp, run_local, args.soak_seconds, db_url, cfg, rss_every=5.0
            )
    base = results["runs"][0]["fps_processed_per_camera"]
    print(
        "| engine | streams | fps in / camera | fps processed / camera | vs baseline | dropped | "
        "latency p50 (p95) | tracks |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        lat = (
            "-" if r["latency_p50_s"] is None else f"{r['latency_p50_s']:.2f} s ({r['latency_p95_s']:.2f} s)"
        )
        print(
            f"| {r['engine']} | {r['streams']} | {r['fps_in_per_camera']:.1f} | "
            f"{r['fps_processed_per_camera']:.2f} | {r['fps_processed_per_camera'] / base:.2f}x | "
            f"{100 * r['drop_rate']:.0f}% | {lat} | {r['tracks']} |"
        )
    soak = results["soak"]
    if soak and len(soak["rss_mb"]) >= 3:
        (t1, m1), (t2, m2) = soak["rss_mb"][1], soak["rss_mb"][-1]
        slope = (m2 - m1) / max(t2 - t1, 1e-9) * 3600
        soak["rss_slope_mb_per_hour"] = round(slope, 1)
        print(
            f"\nmemory, 1 stream for {soak['seconds']} s: RSS {m1:.0f} MB at {t1:.0f} s -> {m2:.0f} MB at "
            f"{t2:.0f} s (slope {slope:+.1f} MB/h, {soak['tracks']} tracks, "
            f"{soak['fps_processed_per_camera']:.1f} fps processed)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
