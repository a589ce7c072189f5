"""Detector runs side by side (``detect.workers``).

A small detector on a CPU uses its cores badly from inside one run: SCRFD-500M gains 0.94-1.34x from a second
onnxruntime intra-op thread on 128-736 px inputs, while two runs of one thread each side by side gain 1.82-2.07x
(``bench/detect_threads.py``, ``docs/pipeline.md``). So the work of one detector call (whole frames letterboxed,
windows at native resolution) is split into ``workers`` shares of about equal pixels, the largest item first into
the lightest share (:func:`shares`), and the shares run at once: one on the calling thread, the others on a pool
kept for the detector's life. Each share does its own resizing and blob making, which OpenCV and onnxruntime do
without the GIL.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["RunPool", "shares"]

T = TypeVar("T")


def shares(costs: Sequence[float], count: int) -> list[list[int]]:
    """Indices of ``costs`` split into at most ``count`` non-empty shares of about equal total cost: the costliest
    item first, each into the share with the least so far (ties: the one with fewer items, then the earlier).
    Each share keeps its items in their given order."""
    count = max(1, min(count, len(costs)))
    heap = [(0.0, 0, k) for k in range(count)]
    out: list[list[int]] = [[] for _ in range(count)]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        total, items, k = heapq.heappop(heap)
        out[k].append(i)
        heapq.heappush(heap, (total + costs[i], items + 1, k))
    return [sorted(share) for share in out if share]


class RunPool:
    """Runs shares of a detector call at once: ``workers`` at a time, the first on the calling thread."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers - 1, "detect") if self.workers > 1 else None

    def run(self, tasks: Sequence[Callable[[], T]]) -> list[T]:
        """Each task's result, in order; the tasks run at once (at most ``workers``), the first here."""
        if self._pool is None or len(tasks) <= 1:
            return [task() for task in tasks]
        futures = [self._pool.submit(task) for task in tasks[1:]]
        first = tasks[0]()
        return [first, *(f.result() for f in futures)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
