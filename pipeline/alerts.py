"""Watchlist alerts: a match on a watchlisted identity is delivered at once, besides the match log.

``WatchlistAlerts`` is a result sink that also watches open tracks (``on_progress``): the live runner matches a
track's running template each time an embed batch adds crops to it, and the first match of that track to a
watchlisted identity raises the alert there and then, while the person is still in view. Each (track, identity)
pair alerts once; the final match at the track's end (``on_track``) alerts only for an identity not alerted yet.
An alert is a WARNING log line and a JSON POST to each webhook, made by the webhook's delivery thread with a
per-request timeout and retries (connection errors, timeouts, 429 and 5xx) with doubling waits. Delivery never
blocks the pipeline; ``close`` delivers what is queued until ``alerts.shutdown_timeout_s`` has passed, then drops
the rest (counted, logged once). Webhook URLs are logged redacted (``core.secrets``), httpx's own request log
lines too; the auth header (``auth_header_env``) is read from the environment and never logged.
With ``alerts.zones``, only tracks that entered one of those camera zones alert; the zones a track entered are
known when it ends, so such an alert is raised at the track's end (``on_track``), never on an open track.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime, timezone
from typing import Any

import httpx

from core.secrets import RedactingFilter, redact_text
from core.types import MatchResult, TrackTemplate

from .live_config import AlertConfig, WebhookConfig
from .sinks import logged_ref, sighting_times

__all__ = ["WatchlistAlerts", "WebhookDelivery", "alert_record", "watchlist_alerts"]

logger = logging.getLogger(__name__)

_REDACT = RedactingFilter()
logging.getLogger("httpx").addFilter(_REDACT)  # httpx logs each request's URL (INFO): tokens as ***

_STOP = object()


def watchlist_alerts(alerts: AlertConfig, gallery) -> WatchlistAlerts:
    """Alerts for the configured watchlist plus every identity the gallery marks ``watchlist``."""
    watch = set(alerts.watchlist) | {i.name for i in gallery.identities() if i.watchlist}
    return WatchlistAlerts(alerts.model_copy(update={"watchlist": tuple(sorted(watch))}))


def alert_record(
    template: TrackTemplate, result: MatchResult, track_ended: bool = True, ref: str | None = None
) -> dict[str, Any]:
    """The JSON body of one alert; ``track_ended`` False: raised on an open track's running template (``last_s``
    is then the time of its newest embedded crop); ``ref``: the track's reference in the match log (``RUN:TRACK``);
    ``seen_start``/``seen_end``: its sighting times (ISO 8601, None when unknown), ``first_s``/``last_s`` the
    offsets within the stream; ``zones``: the camera zones the track entered (None: not known yet, open track)."""
    best = result.identity
    if best is None:
        raise ValueError(f"an alert needs a matched track, got decision {result.decision!r}")
    seen_start, seen_end = sighting_times(template)
    return {
        "ref": ref,
        "camera": template.source_id,
        "track_id": template.track_id,
        "seen_start": seen_start,
        "seen_end": seen_end,
        "identity": best.name,
        "identity_id": best.identity_id,
        "score": round(float(best.score), 4),
        "threshold": round(float(result.threshold), 4),
        "first_s": round(template.first_timestamp, 3),
        "last_s": round(template.last_timestamp, 3),
        "track_ended": bool(track_ended),
        "zones": None if template.zones is None else list(template.zones),
        "sent_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }


class WebhookDelivery:
    """One webhook endpoint with its own queue and delivery thread.

    ``close`` (or ``begin_close`` + ``finish_close``) ends it by a deadline: what is queued is still delivered
    until then, each request's timeout and each retry wait cut to the time left; alerts still queued or retrying
    at the deadline are dropped, counted in ``abandoned`` and logged once."""

    def __init__(self, cfg: WebhookConfig, queue_size: int = 1000) -> None:
        self.cfg = cfg
        self.name = cfg.display_url  # the URL as logs show it: tokens and password as ***
        self.delivered = 0
        self.failed = 0
        self.dropped = 0  # queue full
        self.abandoned = 0  # still queued or retrying at the shutdown deadline
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._client = httpx.Client(timeout=cfg.timeout_s, headers=cfg.headers())
        self._deadline: float | None = None  # time.monotonic() by which close ends delivery
        self._closing = threading.Event()
        self._finished = False  # finish_close has counted and logged: the thread counts no more
        self._count_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def submit(self, alert: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            logger.error("webhook %s: queue full (%d alerts), alert dropped", self.name, self._queue.maxsize)

    def budget_s(self) -> float:
        """Longest time one alert can take: every attempt timing out plus every wait."""
        waits = sum(self.cfg.backoff_s * 2**i for i in range(self.cfg.retries))
        return (self.cfg.retries + 1) * self.cfg.timeout_s + waits

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued for at most ``timeout_s`` seconds (or until the deadline of an earlier
        ``begin_close``), then drop (and count) the rest and end."""
        if self._deadline is None:
            self.begin_close(time.monotonic() + timeout_s)
        self.finish_close()

    def begin_close(self, deadline: float) -> None:
        """No more alerts; delivery of the queued ones goes on until ``deadline`` (``time.monotonic()``)."""
        if self._deadline is not None:
            return
        self._deadline = deadline
        self._closing.set()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:  # the thread drains the queue at the deadline and then stops on the flag
            pass

    def finish_close(self, margin_s: float = 0.5) -> None:
        """Wait for the delivery thread (until the deadline plus ``margin_s``), log what was dropped, once."""
        if self._deadline is None:
            raise RuntimeError("expected begin_close before finish_close, got none")
        if self._finished:
            return
        self._thread.join(max(0.0, self._deadline + margin_s - time.monotonic()))
        with self._count_lock:
            self._finished = True  # a thread still in a request past its deadline counts nothing more
            if self._thread.is_alive():  # one request in flight (its timeout caps it; the thread is a daemon)
                self.abandoned += 1 + sum(1 for a in list(self._queue.queue) if a is not _STOP)
        if self.abandoned:
            logger.error(
                "webhook %s: shutdown deadline passed; %d alerts dropped undelivered (queued or retrying)",
                self.name,
                self.abandoned,
            )

    def _left(self) -> float | None:
        """Seconds until the shutdown deadline (None while not closing)."""
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _run(self) -> None:
        try:
            while (alert := self._next()) is not None:
                outcome = self._post(alert) if (left := self._left()) is None or left > 0 else None
                with self._count_lock:
                    if self._finished:
                        return
                    if outcome is None:
                        self.abandoned += 1
                    elif outcome:
                        self.delivered += 1
                    else:
                        self.failed += 1
        finally:
            self._client.close()

    def _next(self) -> dict[str, Any] | None:
        """The next queued alert; None at the stop mark (or, closing with a full queue, once it is empty)."""
        left = self._left()
        try:
            alert = self._queue.get(timeout=None if left is None else max(left, 0.0) + 0.05)
        except queue.Empty:
            return None
        return None if alert is _STOP else alert

    def _wait(self, seconds: float) -> bool:
        """Wait before a retry; False (at once) when the wait would end past the shutdown deadline."""
        end = time.monotonic() + seconds
        if not self._closing.is_set():
            self._closing.wait(seconds)  # close wakes it to check the deadline
        if self._deadline is not None and end > self._deadline:
            return False
        time.sleep(max(0.0, end - time.monotonic()))
        return True

    def _post(self, alert: dict[str, Any]) -> bool | None:
        """POST one alert with retries: True delivered, False failed, None cut by the shutdown deadline."""
        wait = self.cfg.backoff_s
        reason = "not attempted"
        for attempt in range(self.cfg.retries + 1):
            left = self._left()
            if left is not None and left <= 0:
                return None
            timeout = self.cfg.timeout_s if left is None else min(self.cfg.timeout_s, left)
            try:
                resp = self._client.post(self.cfg.url, json=alert, timeout=timeout)
                if resp.status_code < 300:
                    return True
                reason = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code != 429:
                    logger.error("webhook %s refused the alert: %s (not retried)", self.name, reason)
                    return False
            except httpx.HTTPError as exc:
                reason = redact_text(f"{type(exc).__name__}: {exc}")
            if attempt < self.cfg.retries:
                logger.warning(
                    "webhook %s: %s; retry %d of %d in %.1fs",
                    self.name,
                    reason,
                    attempt + 1,
                    self.cfg.retries,
                    wait,
                )
                if not self._wait(wait):
                    return None
                wait *= 2
        if (left := self._left()) is not None and left <= 0:
            return None  # the last attempt was cut by the deadline
        logger.error(
            "webhook %s: alert for %s not delivered after %d attempts (last: %s)",
            self.name,
            alert["identity"],
            self.cfg.retries + 1,
            reason,
        )
        return False


class WatchlistAlerts:
    """Result sink raising alerts for matches on the watchlist (log line and webhooks), at the first match of
    an open track's running template (``on_progress``) or else at its final match (``on_track``). ``run_ids``: the
    match-log run of each camera (set once the match log is open), for each alert's track reference."""

    def __init__(self, cfg: AlertConfig, run_ids: dict[str, int] | None = None) -> None:
        self.cfg = cfg
        self.run_ids = run_ids
        self.watchlist = frozenset(cfg.watchlist)
        self.zones = frozenset(cfg.zones)
        self.webhooks = [WebhookDelivery(w, cfg.queue_size) for w in cfg.webhooks]
        self.raised = 0
        self._alerted: dict[tuple[str, int], set[str]] = {}  # open track -> identities already alerted

    @property
    def watching(self) -> bool:
        """True when open tracks are worth matching for this sink (a watchlist, and no zones to wait for)."""
        return bool(self.watchlist) and not self.zones

    def on_progress(self, template: TrackTemplate, result: MatchResult) -> None:
        self._raise(template, result, track_ended=False)

    def on_track(self, template: TrackTemplate, result: MatchResult) -> None:
        self._raise(template, result, track_ended=True)
        self._alerted.pop((template.source_id, template.track_id), None)

    def _raise(self, template: TrackTemplate, result: MatchResult, track_ended: bool) -> None:
        best = result.identity
        if best is None or best.name not in self.watchlist:
            return
        if self.zones and not (track_ended and self.zones.intersection(template.zones or ())):
            return  # limited to zones: what a track entered is known at its end
        done = self._alerted.setdefault((template.source_id, template.track_id), set())
        if best.name in done:
            return
        done.add(best.name)
        alert = alert_record(template, result, track_ended, logged_ref(self.run_ids, template))
        self.raised += 1
        if self.cfg.log:
            logger.warning(
                "ALERT watchlist match: %s on camera %s track %s (score %.3f, seen %s, %.1f-%.1fs, %s)",
                alert["identity"],
                alert["camera"],
                alert["ref"] or alert["track_id"],
                alert["score"],
                alert["seen_start"] or "at an unknown time",
                alert["first_s"],
                alert["last_s"],
                "track ended" if track_ended else "track open",
            )
        for hook in self.webhooks:
            hook.submit(alert)

    def close(self) -> None:
        """End every webhook by one deadline, ``shutdown_timeout_s`` from now (see ``WebhookDelivery``)."""
        deadline = time.monotonic() + self.cfg.shutdown_timeout_s
        for hook in self.webhooks:  # every webhook winds down at once, towards the one deadline
            if isinstance(hook, WebhookDelivery):
                hook.begin_close(deadline)
        for hook in self.webhooks:
            hook.close()
