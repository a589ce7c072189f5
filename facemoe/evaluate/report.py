"""Protocol results as a text table, a JSON file and a ROC / CMC plot image."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .protocols import ProtocolResult

__all__ = ["format_table", "write_report"]

logger = logging.getLogger(__name__)


def _value(name: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if "cosine" in name else f"{100 * v:.2f}%"


def format_table(result: ProtocolResult) -> str:
    """Two columns, metric and value (rates as percentages), then counts and notes."""
    rows = [(k, _value(k, v)) for k, v in result.metrics.items()] + [
        (k, str(v)) for k, v in result.counts.items()
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{result.protocol}", "-" * (width + 12)]
    lines += [f"{k:<{width}}  {v:>9}" for k, v in rows]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def _plot(result: ProtocolResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = list(result.curves)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        x, y = result.curves[name]
        if name.startswith("ROC"):
            positive = x > 0
            ax.semilogx(np.asarray(x)[positive], np.asarray(y)[positive])
            ax.set_xlabel("false accept rate")
            ax.set_ylabel("true accept rate")
        else:
            ax.plot(x, y, marker=".")
            ax.set_xlabel("rank")
            ax.set_ylabel("identification rate")
        ax.set_ylim(0, 1.01)
        ax.set_title(f"{result.protocol} {name}")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(result: ProtocolResult, out_dir: str | Path) -> list[Path]:
    """Write ``<protocol>.json`` and, when the result has curves, ``<protocol>.png``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{result.protocol}.json"
    tmp = json_path.with_name(json_path.name + ".partial")
    tmp.write_text(json.dumps(result.to_dict(), indent=2))
    tmp.replace(json_path)
    written = [json_path]
    if result.curves:
        png = out_dir / f"{result.protocol}.png"
        _plot(result, png)
        written.append(png)
    logger.info("wrote %s", ", ".join(map(str, written)))
    return written
