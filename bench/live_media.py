"""What bench/live.py streams and how it counts CPU: the camera clips (prepared once with ffmpeg into a cache folder),
the camera mix, per-thread and per-process CPU time from /proc, and the CPU cost of decoding a clip.

At ``1080p`` the cameras are realistic scenes at 1920x1080 25 fps, H.264 with SPS/PPS before every keyframe and no
B-frames: three of every four loop the CCTV lobby clip (640x360 scaled up, faces of about 55 px) and one loops the
crowd walking toward a camera (1080p already); more cameras cycle this mix. ``source`` is the friends clip at 640
px wide on every camera (the figures of earlier runs).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import av

__all__ = [
    "CLIPS",
    "MIX",
    "RESOLUTIONS",
    "ProcStat",
    "camera_clips",
    "decode_cost",
    "prepare_clip",
    "ray_processes",
]

# name -> file in the shared assets' videos/
CLIPS = {
    "cctv": "person_tracker_cctv.mp4",
    "crowd": "facenet_pytorch_video.mp4",
    "friends": "friends_in_video.mp4",
}
MIX = ("cctv", "cctv", "cctv", "crowd")  # camera i streams MIX[i % 4]
RESOLUTIONS = {"1080p": (1920, 1080, 25)}  # width, height, frames per second
TICK = os.sysconf("SC_CLK_TCK")


def camera_clips(n: int, resolution: str) -> list[str]:
    """The clip name of each of ``n`` cameras."""
    return ["friends"] * n if resolution == "source" else [MIX[i % len(MIX)] for i in range(n)]


def prepare_clip(videos: Path, name: str, resolution: str, cache: Path, seconds: float | None = None) -> Path:
    """The clip ``name`` for ``resolution`` (its first ``seconds``; None: all of it, the friends clip's first 20 s
    at ``source``), encoded for streaming once into ``cache`` (written under a temporary name, then renamed; an
    earlier run's file is reused)."""
    cut = 20.0 if seconds is None and resolution == "source" else seconds
    part = "" if cut is None else f"_{cut:g}s"
    if resolution == "source":
        scale, rate = "scale=640:-2", []
        dst = cache / f"{name}_640{part}.mp4"
    else:
        w, h, fps = RESOLUTIONS[resolution]
        scale = f"scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2"
        rate = ["-r", str(fps)]
        dst = cache / f"{name}_{w}x{h}_{fps}{part}.mp4"
    seconds_arg = [] if cut is None else ["-t", f"{cut:g}"]
    if dst.is_file():
        return dst
    cache.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".part.mp4")
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(videos / CLIPS[name]), *seconds_arg, "-vf", scale, *rate]
    cmd += ["-an", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "0"]
    cmd += ["-pix_fmt", "yuv420p", "-x264-params", "repeat-headers=1", str(tmp)]
    subprocess.run(cmd, check=True, timeout=600)
    tmp.rename(dst)
    return dst


def decode_cost(clip: Path, frames: int = 100) -> float:
    """CPU seconds to decode one frame of ``clip`` to BGR on the CPU, as a camera's decode thread does (the mean
    over its first ``frames`` frames, FFmpeg's own threads included)."""
    with av.open(str(clip)) as c:
        c0, n = time.process_time(), 0
        for frame in c.decode(video=0):
            frame.to_ndarray(format="bgr24")
            n += 1
            if n >= frames:
                break
        return (time.process_time() - c0) / max(n, 1)


def _stat_cpu(path: Path) -> float | None:
    """utime + stime (s) from a /proc stat file; None when it is gone."""
    try:
        text = path.read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class ProcStat:
    """CPU seconds used so far by each thread of this process (``threads``, by native id) or by given processes."""

    threads: dict[int, float]

    @classmethod
    def of_threads(cls) -> ProcStat:
        out = {}
        for task in Path("/proc/self/task").iterdir():
            cpu = _stat_cpu(task / "stat")
            if cpu is not None:
                out[int(task.name)] = cpu
        return cls(out)

    @classmethod
    def of_processes(cls, pids: list[int]) -> ProcStat:
        out = {}
        for pid in pids:
            cpu = _stat_cpu(Path(f"/proc/{pid}/stat"))
            if cpu is not None:
                out[pid] = cpu
        return cls(out)

    def since(self, earlier: ProcStat) -> dict[int, float]:
        """CPU seconds each id used between ``earlier`` and this (ids in both)."""
        return {k: v - earlier.threads[k] for k, v in self.threads.items() if k in earlier.threads}


def ray_processes() -> dict[int, str]:
    """This machine's Ray worker processes by their title: pid -> ``camera`` (CameraWorker actors: decode, detect,
    track), ``embed`` (EmbedService: embed, match, sinks) or ``ray`` (idle workers, raylet, GCS)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::CameraWorker"):
            out[int(proc.name)] = "camera"
        elif cmd.startswith("ray::EmbedService"):
            out[int(proc.name)] = "embed"
        elif cmd.startswith("ray::") or "/ray/core/src/ray/" in cmd or "raylet" in cmd or "gcs_server" in cmd:
            out[int(proc.name)] = "ray"
    return out
