"""The CPU cores that detection and a CPU embedder of one process share.

Detection (onnxruntime, the runner's thread) and embedding (the embed worker's thread) run side by side. An
OpenMP embedder (FaceMoE through torch) whose team has as many threads as the process has cores loses most of its
speed while detection also runs: a team waits at every barrier for its slowest thread, and a thread that shares a
core with detection is often the slowest. :class:`CoreBudget` gives the embedder every core while nothing detects
(detection waits for frames, for the embedding queue, or the file has ended and the last tracks are embedded),
and all but the detection's share while detection runs. The embedder asks :meth:`CoreBudget.embed_threads`
before each block of work, so it follows detection within a fraction of a forward pass.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

__all__ = ["CoreBudget", "available_cores", "budget_of", "detecting"]

logger = logging.getLogger(__name__)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else the CPU count), at most
    ``OMP_NUM_THREADS`` where that is set to a positive number (a limit the user or Ray, for its workers, gave)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if limit.isdigit() and int(limit) > 0:
        cores = min(cores, int(limit))
    return max(1, cores)


class CoreBudget:
    """``cores`` cores shared between detection and embedding (0 or None: :func:`available_cores`).

    Detection is granted ``detect_cores`` of them (never all: at least one stays the embedder's) from
    :meth:`acquire_detect` to :meth:`release_detect` (or within :meth:`detecting`); several threads may detect at
    once, the grant is held while any of them does. :meth:`embed_threads` is what the embedder may use now:
    ``cores`` while nothing detects, ``cores - granted`` while something does, so the two never ask for more
    threads than there are cores (a single core is the embedder's: detection then runs on no reserved core).
    Thread-safe."""

    def __init__(self, cores: int | None = None, detect_cores: int = 1) -> None:
        if cores is not None and cores < 0:
            raise ValueError(f"cores: expected >= 0, got {cores}")
        if detect_cores < 0:
            raise ValueError(f"detect_cores: expected >= 0, got {detect_cores}")
        self.cores = cores or available_cores()
        self.detect_cores = min(detect_cores, self.cores - 1)
        self._detecting = 0
        self._lock = threading.Lock()

    @property
    def detecting_now(self) -> int:
        """How many threads are detecting now."""
        return self._detecting

    def acquire_detect(self) -> int:
        """One thread starts detecting; returns the cores granted to detection (the same for every thread)."""
        with self._lock:
            self._detecting += 1
        return self.detect_cores

    def release_detect(self) -> None:
        """A thread that called :meth:`acquire_detect` stops detecting."""
        with self._lock:
            if self._detecting <= 0:
                raise RuntimeError("release_detect without acquire_detect")
            self._detecting -= 1

    @contextlib.contextmanager
    def detecting(self) -> Iterator[int]:
        """Detection holds its cores within this block; yields how many."""
        granted = self.acquire_detect()
        try:
            yield granted
        finally:
            self.release_detect()

    def embed_threads(self) -> int:
        """The threads the embedder may run now: every core while nothing detects, the rest while detecting."""
        return self.cores - (self.detect_cores if self._detecting else 0)

    def describe(self) -> str:
        """One line for the log: the split."""
        return (
            f"{self.cores} cores shared: the embedder takes {self.cores} while detection idles, "
            f"{self.cores - self.detect_cores} while it runs"
        )


def budget_of(embedder: object) -> CoreBudget | None:
    """The budget an embedder follows (its ``cores``), None when it follows none."""
    cores = getattr(embedder, "cores", None)
    return cores if isinstance(cores, CoreBudget) else None


def detecting(budget: CoreBudget | None) -> contextlib.AbstractContextManager:
    """``budget.detecting()``, or nothing to hold without a budget."""
    return contextlib.nullcontext() if budget is None else budget.detecting()
