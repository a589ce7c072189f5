"""Tables and plots of bench/longrange.py (its figures as a markdown table, recall and rank-1 curves as PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SETTINGS = ("baseline", "long_range", "exhaustive")


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(out: dict) -> None:
    w, h = out["canvas"]
    print(
        f"canvas {w}x{h}, {len(out['segments'])} segments of {out['segments'][0]['frames']} frames "
        f"(original face px: {', '.join(str(s['face_px']) for s in out['segments'])}), "
        f"blur {out['degradation']['blur']}, noise {out['degradation']['noise']}, "
        f"jpeg {out['degradation']['jpeg'] or 'off'}, impostors per clip {out['impostors_per_clip']}; overrides: "
        + "; ".join(f"{k} {' '.join(v) or '-'}" for k, v in out["overrides"].items())
    )
    print()
    print(
        "| face px | faces | recall base | recall long | recall exhaustive | long / exhaustive "
        "| rank-1 base (mated/tracks) | rank-1 long (mated/tracks) | TPIR@FPIR 1% base (non-mated) "
        "| TPIR@FPIR 1% long (non-mated) "
        "| tracks long / exhaustive | fps base | fps long (x base) | fps exhaustive (x base) |"
    )
    print("|---" * 14 + "|")
    for r in out["sizes"]:
        b, g, e = r["baseline"], r["long_range"], r["exhaustive"]
        print(
            f"| {r['size']:g} | {b['faces']} | {fmt(b['recall'])} | {fmt(g['recall'])} | {fmt(e['recall'])} "
            f"| {fmt(g['recall_vs_exhaustive'])} "
            f"| {fmt(b['rank1'])} ({b['mated_tracks']}/{b['tracks']}) "
            f"| {fmt(g['rank1'])} ({g['mated_tracks']}/{g['tracks']}) "
            f"| {fmt(b['tpir_at_fpir_1pct'])} ({b['non_mated_tracks']}) "
            f"| {fmt(g['tpir_at_fpir_1pct'])} ({g['non_mated_tracks']}) "
            f"| {g['tracks']} / {e['tracks']} "
            f"| {b['fps']:.1f} | {g['fps']:.1f} ({g['fps'] / max(b['fps'], 1e-9):.2f}) "
            f"| {e['fps']:.1f} ({e['fps'] / max(b['fps'], 1e-9):.2f}) |"
        )
    print()
    print(f"runtime {out['runtime_s']:.0f} s")


def save_plots(out: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    sizes = [r["size"] for r in out["sizes"]]
    saved = []
    for key, label, name in (
        ("recall", "detection recall", "longrange_recall.png"),
        ("rank1", "track rank-1", "longrange_rank1.png"),
    ):
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for setting, style in zip(SETTINGS, ("o--", "s-", "^:")):
            values = [np.nan if r[setting][key] is None else r[setting][key] for r in out["sizes"]]
            ax.plot(sizes, values, style, label=setting.replace("_", " "))
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{s:g}" for s in sizes])
        ax.set_xlabel("face size (px)")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"{label} vs face size, {out['canvas'][0]}x{out['canvas'][1]} canvas")
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        saved.append(folder / name)
    return saved
