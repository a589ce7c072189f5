"""When an ending track's match is decisive: more crops could not plausibly change its decision or identity.

The embedding side (:mod:`pipeline.runners.engine`) embeds an ending track's crops in rounds, best first: the
first ``runner.first_crops``, then, only when the match of the template so far is not decisive, the rest. A match
is decisive by ``runner.decisive_margin`` (cosine) when its top-1 score is at least that far from every threshold in
force (the matcher's and every watch list's) and, when it reaches one of them (its identity matters), at least that
far ahead of the top-2 identity. A top-1 below every threshold by the margin is decisive whatever the
identities. With ``match.top_k`` 1 the top-2 is unknown, so a match above a threshold is never decisive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from core.types import MatchResult
from gallery.watchlists import ListRule

__all__ = ["decisive", "thresholds_in_force"]


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
