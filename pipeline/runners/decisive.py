"""How many of an ending track's crops to embed, and when its match is decisive: more crops could not plausibly
change its decision or identity.

The embedding side (:mod:`pipeline.runners.engine`) embeds an ending track's crops (its best ``runner.best_k``,
best first) in rounds, each batched across the tracks ending together, and matches the template after each: a track
whose match is decisive stops there. A track asks for ``runner.crops_per_second`` crops per second it lasted (at
least one): its first round is that many, at most ``runner.first_crops``; its second round the rest of that many;
its last round the rest of its crops. So a short track of a few frames starts with one crop and a long one with
``first_crops``, and a match that never gets decisive ends with all its crops, as with the early stop off
(``runner.decisive_margin`` 0: one round of all).

A match is decisive by ``runner.decisive_margin`` (cosine) when its top-1 score is at least that far from every
threshold in force (the matcher's and every watch list's) and, when it reaches one of them (its identity matters),
at least that far ahead of the top-2 identity. A top-1 below every threshold by the margin is decisive whatever
the identities. With ``match.top_k`` 1 the top-2 is unknown, so a match above a threshold is never decisive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from core.types import MatchResult
from gallery.watchlists import ListRule
from pipeline.config import RunnerConfig

__all__ = ["asked", "decisive", "rounds", "thresholds_in_force"]


def asked(seconds: float, runner: RunnerConfig) -> int:
    """How many crops a track that lasted ``seconds`` asks for before its match decides whether it gets more:
    ``runner.crops_per_second`` per second, at least one, at most ``runner.best_k`` (``best_k`` at rate 0)."""
    if runner.crops_per_second <= 0:
        return runner.best_k
    return min(runner.best_k, max(1, math.ceil(seconds * runner.crops_per_second - 1e-9)))


def rounds(crops: int, seconds: float, runner: RunnerConfig) -> list[int]:
    """Where the rounds of an ending track with ``crops`` crops to embed (best first) end: increasing counts, the
    last one ``crops`` (module docstring); one round when ``runner.decisive_margin`` is 0 or ``runner.embed_all``."""
    if runner.decisive_margin <= 0 or runner.embed_all or crops <= 1:
        return [crops]
    ask = min(asked(seconds, runner), crops)
    return sorted({min(runner.first_crops, ask), ask, crops})


def thresholds_in_force(threshold: float, sinks: Iterable[object]) -> tuple[float, ...]:
    """``threshold`` (the matcher's) and the threshold of every watch list a sink alerts under (a sink's ``rules``:
    identity -> its :class:`gallery.watchlists.ListRule`s; sinks wrapping others are searched through their
    ``sinks``), sorted, without repeats."""
    out = {float(threshold)}
    stack = list(sinks)
    while stack:
        sink = stack.pop()
        inner = getattr(sink, "sinks", None)
        if isinstance(inner, Sequence):
            stack.extend(inner)
        rules = getattr(sink, "rules", None)
        if isinstance(rules, dict):
            for listed in rules.values():
                out.update(
                    float(r.threshold) for r in listed if isinstance(r, ListRule) and r.threshold is not None
                )
    return tuple(sorted(out))


def decisive(result: MatchResult, thresholds: Sequence[float], margin: float, top_k: int) -> bool:
    """Whether ``result`` is decisive by ``margin`` against ``thresholds`` (module docstring); ``top_k``: how many
    candidates the matcher asks for (fewer in ``result`` means the gallery has no more identities). No candidate
    (an empty gallery, or a template of no crop) is decisive: no crop can make it a match. ``margin`` 0: never."""
    if margin <= 0:
        return False
    if not result.candidates:
        return True
    top = float(result.candidates[0].score)
    if any(abs(top - t) < margin for t in thresholds):
        return False
    if all(top < t for t in thresholds):
        return True
    if len(result.candidates) >= 2:
        return top - float(result.candidates[1].score) >= margin
    return top_k >= 2  # fewer identities in the gallery than asked for: no runner-up to overtake it
