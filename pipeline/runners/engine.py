"""The embedding side of every runner (files, live cameras, Ray actors), fed by per-source tracking.

``SourceTracking`` (:mod:`pipeline.runners.tracking`, one per source) turns frames and their detections into
``TrackJob``s: aligned, quality-scored crops worth embedding and tracks that ended. ``TrackMatching`` embeds the
selected crops of any sources in one batch, fuses them per track (``Aggregator``), matches every ended track and
hands it to the sinks. An ending track's crops are embedded in rounds (``runner.decisive_margin`` > 0): its first
round with everything else in the batch, each later round in one batch for the tracks whose match is not decisive
yet (:mod:`pipeline.runners.decisive`); each track is delivered with the match of the template it ends with.
Sinks that watch open tracks (``ProgressSink``) also get the running template's match whenever an embed batch adds
crops to a track. ``EmbedWorker`` is the thread between them: jobs queue up to ``queue_size`` (back-pressure on
detection) and are handled in batches of about ``batch_size`` crops.

The runners differ only in where frames come from and how work is scheduled: ``pipeline.runners.runner`` (files),
``pipeline.runners.live_runner`` (cameras in one process), ``pipeline.live.ray_engine`` (an actor per camera).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from core.types import MatchResult, TrackTemplate
from pipeline.config import AppConfig, RunnerConfig
from pipeline.runners.decisive import decisive, rounds, thresholds_in_force
from pipeline.runners.tracking import EndedTrack, RunStats, TrackJob
from pipeline.sinks.outputs import ResultSink
from stages.aggregate import Aggregator
from stages.embed import Embedder
from stages.match import Matcher

__all__ = ["EmbedWorker", "ProgressSink", "TrackMatching"]

logger = logging.getLogger(__name__)

_STOP = object()


@runtime_checkable
class ProgressSink(Protocol):
    """A result sink that also watches open tracks: ``on_progress`` gets the match of a track's running template
    after each embed batch that added crops to it (while ``watching`` is true); ``on_track`` still gets the
    final match once, when the track ends."""

    watching: bool

    def on_progress(self, template: TrackTemplate, result: MatchResult) -> None: ...


class TrackMatching:
    """Embeds the crops of any sources in one batch, fuses them per track, matches ended tracks, feeds sinks.
    ``clock`` gives the frames' time base for the latency figures (None: no latency, e.g. files). When a sink
    watches open tracks (``ProgressSink``), every open track that got crops in a batch is matched on its running
    template and the result goes to those sinks' ``on_progress``. ``logged(source_id, track_id)``: whether the
    match log holds a track already (a camera replayed it to a restarted Ray service); such a track is matched but
    delivered to no sink, and counted in ``skipped``."""

    def __init__(
        self,
        cfg: AppConfig,
        embedder: Embedder,
        matcher: Matcher,
        sinks: Sequence[ResultSink],
        clock: Callable[[], float] | None = None,
        logged: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.runner: RunnerConfig = cfg.runner
        self.embedder = embedder
        self.matcher = matcher
        self.sinks = list(sinks)
        self.clock = clock
        self.logged = logged
        self.skipped = 0
        self.aggregator = Aggregator(cfg.aggregate, embedder.dim)
        self.watchers = [s for s in self.sinks if isinstance(s, ProgressSink)]
        self._span: dict[tuple[str, int], list[float]] = {}  # open track -> [first, last] embedded crop time
        self._wall: dict[str, float | None] = {}  # source -> wall clock minus stream time, as last reported

    @property
    def watching(self) -> bool:
        """True when a sink watches open tracks: their crops are then worth embedding before they end."""
        return any(s.watching for s in self.watchers)

    def handle(self, group: list[TrackJob], stats: RunStats) -> None:
        for job in group:
            self._wall.update(job.walls)
        ends = [e for job in group for e in job.ends]
        cuts = {_key(e): rounds(len(e.pooled), e.end.last_seen - e.end.first_seen, self.runner) for e in ends}
        todo = [c for job in group for c in job.crops] + [
            c for e in ends for c in e.pooled[: cuts[_key(e)][0]]
        ]
        self._embed(todo, stats)
        t1 = time.perf_counter()
        final, later, seconds = self._rounds(ends, cuts, stats)
        t1 += seconds  # the match time leaves out the later rounds' embedding
        todo += later
        updated: dict[tuple[str, int], None] = {}
        for crop, _ in todo:
            key = (crop.source_id, crop.track_id)
            span = self._span.setdefault(key, [crop.timestamp, crop.timestamp])
            span[0], span[1] = min(span[0], crop.timestamp), max(span[1], crop.timestamp)
            updated[key] = None
        ending = {_key(e) for e in ends}
        self._progress([k for k in updated if k not in ending], stats)
        for job in group:
            for done in job.ends:
                key = (done.source_id, done.end.track_id)
                self._span.pop(key, None)
                template, result = final.get(key) or self._final(done)
                self.aggregator.pop(*key)
                self._deliver(template, result or self.matcher.match(template), stats)
            if job.after is not None:
                job.after()
        stats.add_time("match", time.perf_counter() - t1)

    def _embed(self, todo: list, stats: RunStats) -> float:
        """Embed ``(crop, quality score)`` pairs in one batch and fold them into their tracks; the seconds it took."""
        if not todo:
            return 0.0
        t0 = time.perf_counter()
        feats, norms = self.embedder.embed([c.image for c, _ in todo])
        self.aggregator.add([c for c, _ in todo], feats, norms, [s for _, s in todo])
        stats.crops_embedded += len(todo)
        seconds = time.perf_counter() - t0
        stats.add_time("embed", seconds)
        return seconds

    def _final(self, done: EndedTrack) -> tuple[TrackTemplate, MatchResult | None]:
        """The template of an ending track from its crops embedded so far (not matched: None)."""
        fusion = self.aggregator.state(done.source_id, done.end.track_id)
        template = fusion.template(done.end.first_seen, done.end.last_seen, done.frames)
        template.best_crop, template.boxes, template.scene = done.best, done.boxes, done.scene
        template.zones = done.zones
        self._set_wall(template)
        return template, None

    def _rounds(
        self, ends: list[EndedTrack], cuts: dict[tuple[str, int], list[int]], stats: RunStats
    ) -> tuple[dict[tuple[str, int], tuple[TrackTemplate, MatchResult]], list, float]:
        """The rounds after the first (``cuts``: where each ending track's rounds end, :func:`rounds`): each track
        with a round left is matched; a decisive match is final, the other tracks get their next round, in one
        batch for all, until none has one left. Returns the final template and match of the tracks that stopped,
        the crops embedded and the seconds that took."""
        final: dict[tuple[str, int], tuple[TrackTemplate, MatchResult]] = {}
        embedded: list = []
        seconds = 0.0
        pending = [e for e in ends if len(cuts[_key(e)]) > 1]
        thresholds = thresholds_in_force(self.matcher.threshold, self.sinks) if pending else ()
        step = 0
        while pending:
            batch, going_on = [], []
            for done in pending:
                template, _ = self._final(done)
                result = self.matcher.match(template)
                if decisive(result, thresholds, self.runner.decisive_margin, self.matcher.cfg.top_k):
                    final[_key(done)] = (template, result)
                    stats.decisive_stops += 1
                    continue
                cut = cuts[_key(done)]
                batch += done.pooled[cut[step] : cut[step + 1]]
                if step + 2 < len(cut):
                    going_on.append(done)
            seconds += self._embed(batch, stats)
            embedded += batch
            pending, step = going_on, step + 1
        return final, embedded, seconds

    def close_source(self, source_id: str, up_to: int, stats: RunStats) -> int:
        """End the open tracks of ``source_id`` with ids up to ``up_to`` (a dead camera actor's; its successor's
        ids are higher): each is fused from the crops embedded so far, ends at its last embedded crop's time, is
        matched and delivered once. Returns how many."""
        keys = [k for k in self._span if k[0] == source_id and k[1] <= up_to]
        for key in keys:
            first, last = self._span.pop(key)
            fusion = self.aggregator.pop(*key)
            template = fusion.template(first, last, max(fusion.crops, 1))
            self._set_wall(template)
            self._deliver(template, self.matcher.match(template), stats)
        stats.closed_at_loss += len(keys)
        return len(keys)

    def _set_wall(self, template: TrackTemplate) -> None:
        """The wall clock of the track's first and last frame, from its source's latest known offset."""
        offset = self._wall.get(template.source_id)
        if offset is not None:
            template.wall_start = template.first_timestamp + offset
            template.wall_end = template.last_timestamp + offset

    def _progress(self, updated: list[tuple[str, int]], stats: RunStats) -> None:
        """Match the running template of every open track that got crops now (tracks ending in this batch get
        their final match instead)."""
        watchers = [s for s in self.watchers if s.watching]
        if not watchers:
            return
        for key in updated:
            fusion = self.aggregator.state(*key)
            first, last = self._span[key]
            template = fusion.template(first, last, fusion.crops)
            self._set_wall(template)
            result = self.matcher.match(template)
            stats.progress_matches += 1
            for sink in watchers:
                sink.on_progress(template, result)

    def _deliver(self, template: TrackTemplate, result: MatchResult, stats: RunStats) -> None:
        if self.logged is not None and self.logged(template.source_id, template.track_id):
            self.skipped += 1
            logger.debug("%s track %d: in the match log already", template.source_id, template.track_id)
            return
        stats.tracks += 1
        stats.matches += result.decision == "match"
        for sink in self.sinks:
            sink.on_track(template, result)
        if self.clock is not None:
            stats.latencies_s.append(self.clock() - template.last_timestamp)


def _key(done: EndedTrack) -> tuple[str, int]:
    return done.source_id, done.end.track_id


class EmbedWorker:
    """A thread feeding queued jobs to ``TrackMatching`` in batches of about ``batch_size`` crops. A failure stops
    the work (later jobs are drained unhandled) and is re-raised by ``close``; ``failure`` tells the feeding
    thread to stop early."""

    def __init__(self, matching: TrackMatching, batch_size: int, queue_size: int, stats: RunStats) -> None:
        self.matching = matching
        self.batch_size = batch_size
        self.stats = stats
        self.failure: list[Exception] = []
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="embed", daemon=True)
        self._thread.start()

    def put(self, job: TrackJob) -> None:
        if job.crops or job.ends or job.walls or job.after is not None:
            self._jobs.put(job)  # blocks while embedding is behind: back-pressure, bounded memory

    def close(self) -> None:
        """Finish the queued jobs; re-raises an embedding failure."""
        self._jobs.put(_STOP)
        self._thread.join()
        if self.failure:
            raise self.failure[0]

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group = [self._jobs.get()]
            if group[0] is _STOP:
                return
            while sum(len(j.crops) for j in group) < self.batch_size:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                group.append(nxt)
            if self.failure:
                continue  # drain without work; the failure is raised by close
            try:
                self.matching.handle(group, self.stats)
            except Exception as exc:  # noqa: BLE001 - handed to the feeding thread through close()
                logger.debug("embedding failed: %s", exc)
                self.failure.append(exc)
