"""Watchlist alerts: a match on a watchlisted identity is delivered at once, besides the match log.

``WatchlistAlerts`` is a result sink that also watches open tracks (``on_progress``): the live runner matches a
track's running template each time an embed batch adds crops to it, and the first match of that track to a
watchlisted identity raises the alert there and then, while the person is still in view. Each (track, identity)
pair alerts once; the final match at the track's end (``on_track``) alerts only for an identity not alerted yet.
An alert is a WARNING log line and a JSON POST to each webhook, made by the webhook's delivery thread with a
per-request timeout and retries (connection errors, timeouts, 429 and 5xx) with doubling waits. Delivery never
blocks the pipeline; ``close`` waits for what is queued, within the retry budget.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime, timezone
from typing import Any

import httpx

from core.types import MatchResult, TrackTemplate

from .live_config import AlertConfig, WebhookConfig

__all__ = ["WatchlistAlerts", "WebhookDelivery", "alert_record", "watchlist_alerts"]

logger = logging.getLogger(__name__)

_STOP = object()


def watchlist_alerts(alerts: AlertConfig, gallery) -> WatchlistAlerts:
    """Alerts for the configured watchlist plus every identity the gallery marks ``watchlist``."""
    watch = set(alerts.watchlist) | {i.name for i in gallery.identities() if i.watchlist}
    return WatchlistAlerts(alerts.model_copy(update={"watchlist": tuple(sorted(watch))}))


def alert_record(template: TrackTemplate, result: MatchResult, track_ended: bool = True) -> dict[str, Any]:
    """The JSON body of one alert; ``track_ended`` False: raised on an open track's running template (``last_s``
    is then the time of its newest embedded crop)."""
    best = result.identity
    if best is None:
        raise ValueError(f"an alert needs a matched track, got decision {result.decision!r}")
    return {
        "camera": template.source_id,
        "track_id": template.track_id,
        "identity": best.name,
        "identity_id": best.identity_id,
        "score": round(float(best.score), 4),
        "threshold": round(float(result.threshold), 4),
        "first_s": round(template.first_timestamp, 3),
        "last_s": round(template.last_timestamp, 3),
        "track_ended": bool(track_ended),
        "sent_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }


class WebhookDelivery:
    """One webhook endpoint with its own queue and delivery thread."""

    def __init__(self, cfg: WebhookConfig, queue_size: int = 1000) -> None:
        self.cfg = cfg
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._client = httpx.Client(timeout=cfg.timeout_s)
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def submit(self, alert: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            logger.error(
                "webhook %s: queue full (%d alerts), alert dropped", self.cfg.url, self._queue.maxsize
            )

    def budget_s(self) -> float:
        """Longest time one alert can take: every attempt timing out plus every wait."""
        waits = sum(self.cfg.backoff_s * 2**i for i in range(self.cfg.retries))
        return (self.cfg.retries + 1) * self.cfg.timeout_s + waits

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued, then end the thread; waits at most ``timeout`` seconds (default: the retry
        budget of every queued alert)."""
        if timeout is None:
            timeout = self.budget_s() * (self._queue.qsize() + 1) + 1.0
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error(
                "webhook %s: still delivering after %.1fs; %d alerts undelivered",
                self.cfg.url,
                timeout,
                self._queue.qsize(),
            )
        self._client.close()

    def _run(self) -> None:
        while (alert := self._queue.get()) is not _STOP:
            if self._post(alert):
                self.delivered += 1
            else:
                self.failed += 1

    def _post(self, alert: dict[str, Any]) -> bool:
        wait = self.cfg.backoff_s
        for attempt in range(self.cfg.retries + 1):
            try:
                resp = self._client.post(self.cfg.url, json=alert)
                if resp.status_code < 300:
                    return True
                reason = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code != 429:
                    logger.error("webhook %s refused the alert: %s (not retried)", self.cfg.url, reason)
                    return False
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < self.cfg.retries:
                logger.warning(
                    "webhook %s: %s; retry %d of %d in %.1fs",
                    self.cfg.url,
                    reason,
                    attempt + 1,
                    self.cfg.retries,
                    wait,
                )
                time.sleep(wait)
                wait *= 2
        logger.error(
            "webhook %s: alert for %s not delivered after %d attempts (last: %s)",
            self.cfg.url,
            alert["identity"],
            self.cfg.retries + 1,
            reason,
        )
        return False


class WatchlistAlerts:
    """Result sink raising alerts for matches on the watchlist (log line and webhooks), at the first match of
    an open track's running template (``on_progress``) or else at its final match (``on_track``)."""

    def __init__(self, cfg: AlertConfig) -> None:
        self.cfg = cfg
        self.watchlist = frozenset(cfg.watchlist)
        self.webhooks = [WebhookDelivery(w, cfg.queue_size) for w in cfg.webhooks]
        self.raised = 0
        self._alerted: dict[tuple[str, int], set[str]] = {}  # open track -> identities already alerted

    @property
    def watching(self) -> bool:
        """True when open tracks are worth matching for this sink (the watchlist is not empty)."""
        return bool(self.watchlist)

    def on_progress(self, template: TrackTemplate, result: MatchResult) -> None:
        self._raise(template, result, track_ended=False)

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        self._raise(template, result, track_ended=True)
        self._alerted.pop((template.source_id, template.track_id), None)

    def _raise(self, template: TrackTemplate, result: MatchResult, track_ended: bool) -> None:
        best = result.identity
        if best is None or best.name not in self.watchlist:
            return
        done = self._alerted.setdefault((template.source_id, template.track_id), set())
        if best.name in done:
            return
        done.add(best.name)
        alert = alert_record(template, result, track_ended)
        self.raised += 1
        if self.cfg.log:
            logger.warning(
                "ALERT watchlist match: %s on camera %s track %d (score %.3f, %.1f-%.1fs, %s)",
                alert["identity"],
                alert["camera"],
                alert["track_id"],
                alert["score"],
                alert["first_s"],
                alert["last_s"],
                "track ended" if track_ended else "track open",
            )
        for hook in self.webhooks:
            hook.submit(alert)

    def close(self) -> None:
        for hook in self.webhooks:
            hook.close()
