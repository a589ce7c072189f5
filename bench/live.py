"""Live cameras on this machine: per-camera processed fps, drop rate, decode CPU and latency for N loopback RTSP
cameras, single process and Ray, how many cameras keep up, and the memory of a long run.

A loopback RTSP server (rtsp-server-perl) relays ffmpeg publishers looping a clip in real time; ``N`` cameras are
processed at once for ``--seconds`` by the single-process live runner and by the Ray engine (local instance), both
with SCRFD-500M + MobileFaceNet from configs/test.yaml, matching against the six friends enrolled in a SQLite
gallery and writing its match log. ``--resolution source``: every camera streams the friends clip at 640 px wide
(~24 fps). ``--resolution 1080p``: cameras at 1920x1080 25 fps in a realistic mix, three of every four looping the
CCTV lobby clip and one the crowd clip (bench/live_media.py; the clips are prepared once into ``--cache``).
Reported per camera: processed fps, the share of decoded frames dropped at the source, the CPU its decoding took
(cores; Ray: estimated from the clip's measured decode cost per frame) and the latency from a track's last frame
being decoded to its result reaching the sinks, median and p95 (local engine; Ray: over all cameras). Per
setting: cameras that keep up (processed >= 0.95 of the stream's frame rate, under 5% dropped) and the CPU split in
cores: decode (decode threads and FFmpeg's workers), detect (the runner thread by its detect share of the stage
times, plus the model threads by detect vs embed stage time), track (tracking and crops), embed (the embedding
thread and its model threads' share), other; Ray: camera actors less the estimated decode are detect+track, the
embedding service is embed. The decoder each camera uses (``live.decode``: hardware or CPU) is printed.
With ``--soak-seconds``: resident memory of one stream sampled every 5 s after a warm-up, and its slope.

    python bench/live.py [--resolution source|1080p] [--streams 1 2 4] [--engines local ray] [--seconds 30]
                         [--cache DIR] [--clip-seconds S] [--soak-seconds 600] [--json out.json]
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
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import av  # noqa: E402

from bench.live_media import ProcStat, camera_clips, decode_cost, prepare_clip, ray_processes  # noqa: E402
from bench.machine import describe  # noqa: E402
from pipeline.build import build
from pipeline.config import load_config
from pipeline.live.cameras import LiveCameras
from pipeline.live.config import CameraConfig, LiveConfig
from pipeline.live.decode import choose_decoder
from pipeline.live.health import HealthRegistry
from pipeline.runners.live_runner import LiveRunner
from pipeline.sinks.sql_gallery import LoggedSource
from tests.live.rtsp import RtspServer, tools_missing

ASSETS = ROOT.parent / "shared" / "assets"
KEEP_UP, MAX_DROPPED = 0.95, 0.05  # a camera keeps up: processed >= 0.95 of its frame rate, under 5% dropped
LIVE = LiveConfig(transport="udp", read_timeout_s=3.0)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[int(q * (len(values) - 1))] if values else None


class LatencySink:
    """Latency of each finished track, per camera: the runner's clock when its result arrives minus its last frame."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.by_camera: dict[str, list[float]] = defaultdict(list)

    def on_track(self, template, result) -> None:
        self.by_camera[template.source_id].append(self.clock() - template.last_timestamp)

    def close(self) -> None:
        pass


def _summary(n: int, elapsed: float, per_cam: list[dict], lat: list[float], tracks: int, **extra) -> dict:
    return {
        "streams": n,
        "seconds": round(elapsed, 1),
        "cameras": per_cam,
        "tracks": tracks,
        "fps_processed_per_camera": statistics.mean(c["fps_processed"] for c in per_cam),
        "fps_in_per_camera": statistics.mean(c["fps_in"] for c in per_cam),
        "drop_rate": statistics.mean(c["drop_rate"] for c in per_cam),
        "keeping_up": sum(c["keeps_up"] for c in per_cam),
        "latency_p50_s": percentile(lat, 0.5),
        "latency_p95_s": percentile(lat, 0.95),
        "rss_mb": [],
        **extra,
    }


def _camera(name: str, clip: dict, fin: int, done: int, drop: int, elapsed: float, lat=None, **extra) -> dict:
    fps = done / elapsed
    return {
        "camera": name,
        "clip": clip["name"],
        "fps_in": fin / elapsed,
        "fps_processed": fps,
        "drop_rate": drop / max(fin, 1),
        "keeps_up": fps >= KEEP_UP * clip["fps"] and drop / max(fin, 1) < MAX_DROPPED,
        "latency_p50_s": percentile(lat or [], 0.5),
        "latency_p95_s": percentile(lat or [], 0.95),
        **extra,
    }


def _split_local(
    cpu: dict[int, float], named: dict, old: set[int], cams: list[str], stage: dict, elapsed: float
):
    """(per-camera decode cores, the CPU split in cores) of a local run from its threads' CPU seconds; ``named``:
    native id -> name of the Python threads, ``old``: the threads there before the cameras started (the models')."""
    me = next(k for k, v in named.items() if v == "runner")
    decode = {c: cpu.get(next((k for k, v in named.items() if v == f"decode-{c}"), -1), 0.0) for c in cams}
    workers = sum(v for k, v in cpu.items() if k not in named and k not in old)  # FFmpeg's decode threads
    models = sum(v for k, v in cpu.items() if k not in named and k in old)  # onnxruntime's intra-op threads
    embed_thread = sum(v for k, v in cpu.items() if named.get(k) == "embed")
    work = stage["detect"] + stage["track"] + stage["crop"]
    det_share = stage["detect"] / work if work else 0.0
    model_det = stage["detect"] / max(stage["detect"] + stage["embed"], 1e-9)
    split = {
        "decode": sum(decode.values()) + workers,
        "detect": cpu.get(me, 0.0) * det_share + models * model_det,
        "track": cpu.get(me, 0.0) * (1 - det_share),
        "embed": embed_thread + models * (1 - model_det),
    }
    split["other"] = sum(cpu.values()) - sum(split.values())
    per_cam = {c: (v + workers / len(cams)) / elapsed for c, v in decode.items()}
    return per_cam, {k: v / elapsed for k, v in split.items()}


def run_local(
    cams: list[CameraConfig], clips: list[dict], seconds: float, db_url: str, cfg, rss_every=0.0
) -> dict:
    registry = HealthRegistry(fps_window_s=seconds)
    cameras = LiveCameras(cams, LIVE, registry, seed=0)
    with build(cfg, db_url=db_url) as system:
        sink = system.match_log([LoggedSource(c.name, "camera", c.url) for c in cams], batch_size=1)
        latency = LatencySink(cameras.now)
        runner = LiveRunner(
            cfg, system.detector, system.embedder, system.matcher(), [sink, latency], cameras, registry
        )
        stop, out, old = threading.Event(), {}, set(ProcStat.of_threads().threads)
        run = lambda: out.update(stats=runner.run(stop))  # noqa: E731
        thread = threading.Thread(target=run, name="runner", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(c.frames_in for c in registry.cameras.values()):
            time.sleep(0.2)
        time.sleep(2.0)  # warm-up: every camera's first keyframe decoded, the models' first runs done
        start = {name: (c.frames_in, c.frames_processed, c.dropped) for name, c in registry.cameras.items()}
        t0, samples, cpu0 = time.monotonic(), [], ProcStat.of_threads()
        while time.monotonic() - t0 < seconds:
            time.sleep(min(5.0, seconds) if rss_every else 0.5)
            if rss_every:
                samples.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))
        elapsed = time.monotonic() - t0
        cpu = ProcStat.of_threads().since(cpu0)
        named = {t.native_id: t.name for t in threading.enumerate()}
        end = {name: (c.frames_in, c.frames_processed, c.dropped) for name, c in registry.cameras.items()}
        stop.set()
        thread.join(120)
        sink.close()
    stats = out["stats"]  # its stage times (whole run) split the shared threads' CPU
    decode, split = _split_local(cpu, named, old, list(start), stats.seconds, elapsed)
    per_cam = []
    for (name, first), clip in zip(start.items(), clips):
        fin, done, drop = (e - s for e, s in zip(end[name], first))
        lat = latency.by_camera.get(name)
        per_cam.append(_camera(name, clip, fin, done, drop, elapsed, lat, decode_cores=decode[name]))
    lat = [x for v in latency.by_camera.values() for x in v]
    result = _summary(len(cams), elapsed, per_cam, lat, stats.tracks, cpu=split)
    result["rss_mb"] = samples
    return result


class RaySampler:
    """The cameras' counters (from the registry the Ray driver polls) and the CPU seconds of the Ray processes by
    kind, sampled every second once every camera has frames."""

    def __init__(self, registry: HealthRegistry) -> None:
        self.registry, self.samples, self.stop = registry, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            snaps = self.registry.snapshots()
            if snaps and all(s.frames_processed for s in snaps):
                counts = {s.name: (s.frames_in, s.frames_processed, s.dropped) for s in snaps}
                kinds = ray_processes()
                self.samples.append((time.monotonic(), counts, kinds, ProcStat.of_processes(list(kinds))))

    def window(self, warmup_s: float, seconds: float) -> tuple:
        """(seconds, per-camera counter deltas, CPU cores per process kind) from ``warmup_s`` after the first
        sample, over at most ``seconds``."""
        if not self.samples:
            raise RuntimeError("the Ray cameras processed no frames")
        t_first = self.samples[0][0]
        first = next((x for x in self.samples if x[0] >= t_first + warmup_s), self.samples[0])
        last = [x for x in self.samples if x[0] <= first[0] + seconds + 0.5][-1]
        (t0, c0, kinds, cpu0), (t1, c1, _, cpu1) = first, last
        elapsed = max(t1 - t0, 1e-9)
        counts = {name: tuple(e - s for e, s in zip(c1[name], c0[name])) for name in c0}
        used: dict[str, float] = defaultdict(float)
        for pid, sec in cpu1.since(cpu0).items():
            used[kinds[pid]] += sec / elapsed
        return elapsed, counts, dict(used)


def run_on_ray(cams: list[CameraConfig], clips: list[dict], seconds: float, db_url: str, cfg) -> dict:
    from pipeline.live.ray_engine import run_ray

    registry, warmup = HealthRegistry(fps_window_s=seconds), 5.0
    sampler = RaySampler(registry)
    sampler.thread.start()
    try:  # the duration counts from the driver's start: actor start-up and warm-up come before the window
        result = run_ray(
            cfg, LIVE, cams, db_url, threading.Event(), duration_s=seconds + 30, registry=registry, poll_s=0.5
        )
    finally:
        sampler.stop.set()
        sampler.thread.join(5)
    elapsed, counts, used = sampler.window(warmup, seconds)
    per_cam = []
    for cam, clip in zip(cams, clips):
        fin, done, drop = counts[cam.name]
        est = fin * clip["decode_s"] / elapsed
        per_cam.append(_camera(cam.name, clip, fin, done, drop, elapsed, decode_cores=est))
    decode = sum(c["decode_cores"] for c in per_cam)
    cpu = {
        "decode": decode,
        "detect": used.get("camera", 0.0) - decode,  # with tracking and crops
        "track": None,
        "embed": used.get("embed", 0.0),
        "other": used.get("ray", 0.0),
    }
    return _summary(len(cams), elapsed, per_cam, result["latencies_s"], result["tracks"], cpu=cpu)


def with_server(clips: list[dict], tmp: Path, fn, *args, **kw) -> dict:
    server = RtspServer(tmp).start()
    try:
        cams = []
        for i, clip in enumerate(clips):
            server.publish(f"cam{i}", clip["path"])
            cams.append(CameraConfig(name=f"cam{i}", url=server.url(f"cam{i}")))
        return fn(cams, clips, *args, **kw)
    finally:
        server.kill()


def prepare(names: set[str], resolution: str, cache: Path, seconds: float | None) -> dict[str, dict]:
    """Each clip: its streaming file, frame rate and CPU decode cost per frame (s)."""
    out = {}
    for name in sorted(names):
        path = prepare_clip(ASSETS / "videos", name, resolution, cache, seconds)
        with av.open(str(path)) as c:
            fps = float(c.streams.video[0].average_rate)
        out[name] = {"name": name, "path": path, "fps": fps, "decode_s": decode_cost(path)}
    return out


def _cores(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _lat(r: dict) -> str:
    p50, p95 = r["latency_p50_s"], r["latency_p95_s"]
    return "-" if p50 is None else f"{p50:.2f} s ({p95:.2f} s)"


def print_tables(results: dict) -> None:
    print(
        "\n| engine | cameras | keeping up | fps processed / camera | dropped | latency p50 (p95) | "
        "CPU cores: decode | detect | track | embed | other | tracks |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        cpu = r["cpu"]
        cores = " | ".join(_cores(cpu.get(k)) for k in ("decode", "detect", "track", "embed", "other"))
        print(
            f"| {r['engine']} | {r['streams']} | {r['keeping_up']} of {r['streams']} | "
            f"{r['fps_processed_per_camera']:.2f} | {100 * r['drop_rate']:.0f}% | {_lat(r)} | {cores} | "
            f"{r['tracks']} |"
        )
    print(
        "\n| engine | cameras | camera | clip | fps in | fps processed | dropped | decode CPU (cores) | "
        "latency p50 (p95) | keeps up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        for c in r["cameras"]:
            print(
                f"| {r['engine']} | {r['streams']} | {c['camera']} | {c['clip']} | {c['fps_in']:.1f} | "
                f"{c['fps_processed']:.2f} | {100 * c['drop_rate']:.1f}% | {c['decode_cores']:.2f} | {_lat(c)} | "
                f"{'yes' if c['keeps_up'] else 'no'} |"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--resolution", choices=("source", "1080p"), default="source", help="what the cameras stream"
    )
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--engines", nargs="+", choices=("local", "ray"), default=["local", "ray"])
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per setting")
    ap.add_argument("--soak-seconds", type=float, default=0.0, help="one-stream memory run; 0 = skip")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "facemoe-bench-live",
        help="folder of the prepared clips (made once, reused)",
    )
    ap.add_argument("--clip-seconds", type=float, help="stream only the clips' first seconds (quick runs)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    print(describe(), flush=True)  # what the figures below were measured on
    logging.basicConfig(level=logging.ERROR)
    if tools_missing():
        print(f"cannot run: {tools_missing()}", file=sys.stderr)
        return 2
    choice = choose_decoder(LIVE.decode)
    print(f"decode: {choice.kind} ({choice.why})", flush=True)
    cfg = load_config(ROOT / "configs" / "test.yaml")
    results = {"resolution": args.resolution, "decode": choice.kind, "runs": [], "soak": None}
    names = {n for k in args.streams for n in camera_clips(k, args.resolution)}
    clips = prepare(
        names | ({"friends"} if args.soak_seconds else set()), args.resolution, args.cache, args.clip_seconds
    )
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
        for engine in args.engines:
            for n in args.streams:
                run = run_local if engine == "local" else run_on_ray
                mix = [clips[name] for name in camera_clips(n, args.resolution)]
                results["runs"].append(
                    {"engine": engine, **with_server(mix, tmp, run, args.seconds, db_url, cfg)}
                )
        if args.soak_seconds:
            mix = [clips[camera_clips(1, args.resolution)[0]]]
            results["soak"] = with_server(mix, tmp, run_local, args.soak_seconds, db_url, cfg, rss_every=5.0)
    print_tables(results)
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
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
