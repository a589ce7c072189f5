"""Memory of ``process`` on a long file: resident set size sampled over the run, and its slope.

The shared friends clip is looped (stream copy, no re-encoding) into a file of ``--minutes`` of video, enrolled
people matched as usual (``configs/test.yaml``, the six friends, a SQLite database in a temporary folder), and
``process`` runs on it in a child process while this script samples its RSS from /proc every ``--every`` seconds.
Flat means: what the run keeps grows with the open tracks, not with the length of the file.

    python bench/process_memory.py [--minutes 60] [--every 2] [--set source.stride=10 ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402

CLIP = ROOT.parent / "shared" / "assets" / "videos" / "friends_in_video.mp4"
GALLERY = ROOT.parent / "shared" / "assets" / "images" / "friends_gallery"


def looped(clip: Path, minutes: float, folder: Path) -> Path:
    """``clip`` repeated to about ``minutes`` of video, by stream copy."""
    import av

    with av.open(str(clip)) as c:
        seconds = float(c.duration / 1e6)
    times = max(1, round(minutes * 60 / seconds))
    listing = folder / "list.txt"
    listing.write_text("".join(f"file '{clip}'\n" for _ in range(times)))
    out = folder / f"looped_{times}x.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)],
        check=True,
        timeout=600,
    )
    return out


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the looped file")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    print(describe(), flush=True)  # what the figures below were measured on
    if not CLIP.is_file():
        print(f"shared clip not found: {CLIP}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video = looped(CLIP, args.minutes, folder)
        cmd = [
            sys.executable,
            str(ROOT / "run_pipeline.py"),
            "process",
            str(video),
            "--gallery",
            str(GALLERY),
            "--db",
            f"sqlite:///{folder / 'g.db'}",
            "--config",
            str(ROOT / "configs" / "test.yaml"),
            "--no-progress",
            "--json",
            str(folder / "out.json"),
        ]
        cmd += [a for o in args.overrides for a in ("--set", o)]
        start = time.monotonic()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        samples: list[tuple[float, float]] = []
        while child.poll() is None:
            value = rss_mb(child.pid)
            if value is not None:
                samples.append((time.monotonic() - start, value))
            time.sleep(args.every)
        err = child.stderr.read()
        if child.returncode != 0 or len(samples) < 10:
            print(f"process failed ({child.returncode}): {err.strip()[-500:]}", file=sys.stderr)
            return 1
    t, rss = np.array(samples).T
    late = t >= t[-1] * 0.1  # after start-up (models, gallery)
    slope = np.polyfit(t[late] / 3600, rss[late], 1)[0]
    summary = [line for line in err.splitlines() if "frames in" in line]
    print(f"file: {args.minutes:g} min looped friends clip; overrides: {' '.join(args.overrides) or 'none'}")
    print(f"wall: {t[-1]:.0f} s; {summary[-1] if summary else ''}")
    print(
        f"RSS MB: at 10% {rss[late][0]:.0f}, max {rss.max():.0f}, end {rss[-1]:.0f}; "
        f"slope after start-up {slope:+.1f} MB/h of wall time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
