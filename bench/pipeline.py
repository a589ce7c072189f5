"""The video pipeline on the shared clips: speed per stage, and what quality-gated embedding saves.

For each clip, with SCRFD-500M + MobileFaceNet (configs/test.yaml) and the six friends enrolled (``enroll --dir``
rule, a temporary database):
- decode alone (PyAV, threaded), frames/s and real-time factor (video seconds per wall second);
- the full run: frames/s of each stage (frames / seconds spent in it) and of the whole run, real-time factor;
  detection and embedding run in different threads, so stage times overlap and the total is less than their sum;
- the same run embedding every detection of every confirmed track (``runner.embed_all``, the baseline) against
  quality-gated embedding (best ``runner.best_k`` per track, fewer where its match is decisive early, plus clear
  improvements): crops embedded, embedding seconds, total seconds, and how many per-track decisions
  (match/unknown and the name) differ.

    python bench/pipeline.py [--clips friends crowd cctv] [--set key=value ...] [--json out.json]
    python bench/pipeline.py --facemoe [--set key=value ...]

``--facemoe``: the friends clip end to end with a paper-size FaceMoE checkpoint (official format, seeded random
weights, written to a temporary folder) in place of MobileFaceNet, in one invocation: at the default precision with
the config's early stop (``runner.decisive_margin``, ``runner.crops_per_second``), at the default precision without
it (every track embeds its best ``runner.best_k`` crops), and in fp32 with the early stop; frames/s, real time
factor, crops embedded, forward passes (two per crop with the flip) and decisive stops of each run; how many tracks'
best identity (name or unknown) differs between the first two; and the cosine between each track template of the
default run and the fp32 embedder's template of the very same crops (re-embedded after the fp32 run).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from pipeline.build import System, build
from pipeline.config import load_config
from pipeline.runners.runner import FileRunner
from pipeline.runners.sources import FileSource
from pipeline.runners.tracking import RunStats
from pipeline.sinks.outputs import CollectSink
from stages.aggregate import Aggregator
from stages.match import Matcher

ASSETS = ROOT.parent / "shared" / "assets"
SMALL_FACES = [
    "detect.input_size=[640, 384]",
    "detect.score_threshold=0.4",
    "track.high_threshold=0.5",
    "track.new_track_threshold=0.5",
    "track.low_threshold=0.4",
]
CLIPS = {
    "friends": ("friends_in_video.mp4", []),
    "crowd": ("facenet_pytorch_video.mp4", []),
    "cctv": ("person_tracker_cctv.mp4", SMALL_FACES),
}
STAGES = ("detect", "track", "crop", "embed", "match")
EARLY_STOP_OFF = [
    "runner.decisive_margin=0",
    "runner.crops_per_second=0",
]  # every track embeds its best_k crops


def decode_only(path: Path, cfg) -> tuple[int, float, float]:
    source = FileSource(path, cfg.source)
    start = time.perf_counter()
    frames = last = 0
    for frame in source:
        frames, last = frames + 1, frame.timestamp
    return frames, time.perf_counter() - start, last


def run_once(path: Path, cfg, system: System) -> tuple[RunStats, dict[int, str]]:
    """One run of the clip: its figures and each track's decision (a name or ``unknown``)."""
    collect = CollectSink()
    runner = FileRunner(cfg, system.detector, system.embedder, Matcher(cfg.match, system.index()), [collect])
    stats = runner.run([FileSource(path, cfg.source)])
    return stats, {t.track_id: (r.identity.name if r.identity else "unknown") for t, r in collect.results}


def bench_clip(name: str, overrides: list[str]) -> dict:
    video, extra = CLIPS[name]
    path = ASSETS / "videos" / video
    cfg = load_config(ROOT / "configs" / "test.yaml", extra + overrides)
    cfg_all = load_config(ROOT / "configs" / "test.yaml", extra + overrides + ["runner.embed_all=true"])
    frames, decode_s, video_s = decode_only(path, cfg)
    with build(cfg, gallery_dir=ASSETS / "images" / "friends_gallery") as system:
        gated, a = run_once(path, cfg, system)
        every, b = run_once(path, cfg_all, system)
    changed = [
        f"track {t}: {a.get(t)} gated, {b.get(t)} every"
        for t in sorted(set(a) | set(b))
        if a.get(t) != b.get(t)
    ]
    return {
        "clip": name,
        "frames": frames,
        "video_s": round(video_s, 2),
        "decode": {"s": decode_s, "fps": frames / decode_s, "rtf": video_s / decode_s},
        "stages": {
            s: {
                "s": gated.seconds[s],
                "fps": gated.frames / max(gated.seconds[s], 1e-9),
                "rtf": video_s / max(gated.seconds[s], 1e-9),
            }
            for s in STAGES
        },
        "total": {
            "s": gated.seconds["total"],
            "fps": gated.frames / gated.seconds["total"],
            "rtf": video_s / gated.seconds["total"],
        },
        "tracks": gated.tracks,
        "detections": gated.detections,
        "gated": {
            "crops": gated.crops_embedded,
            "embed_s": gated.seconds["embed"],
            "total_s": gated.seconds["total"],
        },
        "every": {
            "crops": every.crops_embedded,
            "embed_s": every.seconds["embed"],
            "total_s": every.seconds["total"],
        },
        "decisions_changed": len(changed),
        "changed_tracks": changed,
        "matched": sum(1 for v in a.values() if v != "unknown"),
    }


def _record(aggregator: Aggregator, used: dict[int, list]) -> None:
    """Keep, per track id, every ``(crop, quality score)`` that ``aggregator`` fuses."""
    add = aggregator.add

    def recording(crops, features, norms, scores) -> None:
        for crop, score in zip(crops, scores):
            used.setdefault(crop.track_id, []).append((crop, score))
        add(crops, features, norms, scores)

    aggregator.add = recording


def _templates(cfg, embedder, used: dict[int, list]) -> dict[int, np.ndarray]:
    """Each track's template ``[D]`` fused from ``embedder``'s features of the crops in ``used``."""
    aggregator = Aggregator(cfg.aggregate, embedder.dim)
    out = {}
    for track_id, pairs in used.items():
        feats, norms = embedder.embed([c.image for c, _ in pairs])
        aggregator.add([c for c, _ in pairs], feats, norms, [s for _, s in pairs])
        out[track_id] = aggregator.pop(pairs[0][0].source_id, track_id).template(0.0, 0.0, 1).embedding
    return out


def facemoe_run(
    path: Path, overrides: list[str], gallery: Path, reembed: dict[int, list] | None = None
) -> tuple[dict, dict[int, np.ndarray], dict[int, str], dict[int, list], dict[int, np.ndarray]]:
    """One friends-clip run with the FaceMoE embedder: its figures, each track's template and best identity (a
    name or ``unknown``), the crops each template fused, and the templates this run's embedder makes of the crops
    in ``reembed`` (another run's)."""
    cfg = load_config(ROOT / "configs" / "test.yaml", overrides)
    used: dict[int, list] = {}
    with build(cfg, gallery_dir=gallery) as system:
        collect = CollectSink()
        runner = FileRunner(
            cfg, system.detector, system.embedder, Matcher(cfg.match, system.index()), [collect]
        )
        _record(runner.matching.aggregator, used)
        stats = runner.run([FileSource(path, cfg.source)])
        embedder_id = system.embedder.embedder_id
        again = _templates(cfg, system.embedder, reembed) if reembed else {}
    total = stats.seconds["total"]
    row = {
        "embedder_id": embedder_id,
        "frames": stats.frames,
        "seconds": total,
        "fps": stats.frames / total,
        "rtf": stats.video_seconds / total,
        "tracks": stats.tracks,
        "crops": stats.crops_embedded,
        "forward_passes": stats.crops_embedded * (2 if cfg.embed.flip else 1),
        "embed_s": stats.seconds["embed"],
        "detect_s": stats.seconds["detect"],
        "decisive_stops": stats.decisive_stops,
    }
    templates = {t.track_id: t.embedding for t, _ in collect.results}
    names = {t.track_id: (r.identity.name if r.identity else "unknown") for t, r in collect.results}
    return row, templates, names, used, again


def bench_facemoe(overrides: list[str], seed: int = 0) -> dict:
    """The friends clip with a paper-size FaceMoE (seeded random weights): at the default precision with and without
    the early stop, and in fp32 (module docstring)."""
    import torch

    from facemoe.checkpoint import save_checkpoint
    from facemoe.model import create_facemoe

    path = ASSETS / "videos" / CLIPS["friends"][0]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "model.pt"
        torch.manual_seed(seed)
        save_checkpoint(create_facemoe(), checkpoint)
        base = ["embed.backend=facemoe", f"embed.checkpoint={checkpoint}", *overrides]
        gallery = ASSETS / "images" / "friends_gallery"
        default, templates, names, used, _ = facemoe_run(path, base, gallery)
        off, _, off_names, _, _ = facemoe_run(path, [*base, *EARLY_STOP_OFF], gallery)
        fp32, _, _, _, reference = facemoe_run(path, [*base, "embed.precision=fp32"], gallery, used)
    cosines = [float(templates[t] @ reference[t]) for t in sorted(set(templates) & set(reference))]
    differ = [
        f"track {t}: {names.get(t)} early stop, {off_names.get(t)} all best_k crops"
        for t in sorted(set(names) | set(off_names))
        if names.get(t) != off_names.get(t)
    ]
    return {
        "default": default,
        "off": off,
        "fp32": fp32,
        "identities_differ": len(differ),
        "differing_tracks": differ,
        "tracks_compared": len(cosines),
        "tracks_unpaired": len(set(templates) ^ set(reference)),
        "min_cosine": min(cosines, default=float("nan")),
        "mean_cosine": float(np.mean(cosines)) if cosines else float("nan"),
    }


def print_facemoe(out: dict) -> None:
    print(
        "| run | embedder | frames | seconds | fps (x RT) | crops | forward passes | decisive stops | embed s "
        "| detect s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    labels = {"default": "default", "off": "default, early stop off", "fp32": "fp32"}
    for name, label in labels.items():
        r = out[name]
        print(
            f"| {label} | {r['embedder_id']} | {r['frames']} | {r['seconds']:.1f} | {r['fps']:.1f} "
            f"({r['rtf']:.2f}) | {r['crops']} | {r['forward_passes']} | {r['decisive_stops']} "
            f"| {r['embed_s']:.1f} | {r['detect_s']:.1f} |"
        )
    print(
        f"\nbest identity per track, early stop vs all best_k crops: {out['identities_differ']} of "
        f"{out['default']['tracks']} tracks differ"
    )
    for line in out["differing_tracks"]:
        print(f"- {line}")
    print(
        f"track templates, default precision vs fp32 on the same crops: {out['tracks_compared']} tracks, cosine "
        f"min {out['min_cosine']:.5f}, mean {out['mean_cosine']:.5f}; unpaired tracks: {out['tracks_unpaired']}"
    )


def print_tables(rows: list[dict]) -> None:
    print(
        "| clip | frames | decode fps (x RT) | "
        + " | ".join(f"{s} fps (x RT)" for s in STAGES)
        + " | total fps (x RT) |"
    )
    print("|---" * (3 + len(STAGES) + 1) + "|")
    for r in rows:
        cells = [f"{r[k]['fps']:.1f} ({r[k]['rtf']:.2f})" for k in ("decode",)]
        cells += [f"{r['stages'][s]['fps']:.1f} ({r['stages'][s]['rtf']:.2f})" for s in STAGES]
        cells.append(f"{r['total']['fps']:.1f} ({r['total']['rtf']:.2f})")
        print(f"| {r['clip']} | {r['frames']} | " + " | ".join(cells) + " |")
    print()
    print(
        "| clip | tracks | detections | crops embedded: every / gated (saving) | embed s: every / gated "
        "| total s: every / gated | decisions changed |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        e, g = r["every"], r["gated"]
        saving = 1 - g["crops"] / max(e["crops"], 1)
        print(
            f"| {r['clip']} | {r['tracks']} | {r['detections']} | {e['crops']} / {g['crops']} ({saving:.0%}) "
            f"| {e['embed_s']:.1f} / {g['embed_s']:.1f} | {e['total_s']:.1f} / {g['total_s']:.1f} "
            f"| {r['decisions_changed']} of {r['tracks']} |"
        )
    for r in rows:
        for line in r["changed_tracks"]:
            print(f"- {r['clip']} {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=list(CLIPS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--facemoe", action="store_true", help="the friends clip with a paper-size FaceMoE")
    args = parser.parse_args(argv)
    print(describe(), flush=True)  # what the figures below were measured on
    logging.basicConfig(level=logging.WARNING)
    if not (ASSETS / "videos").is_dir():
        print(f"shared assets not found at {ASSETS}", file=sys.stderr)
        return 2
    if args.facemoe:
        out = bench_facemoe(args.overrides)
        print_facemoe(out)
        if args.json:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
        return 0
    rows = [bench_clip(name, args.overrides) for name in args.clips]
    print_tables(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
