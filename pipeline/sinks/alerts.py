"""Watchlist alerts: a match on a watchlisted identity is delivered at once, besides the match log.

``WatchlistAlerts`` is a result sink that also watches open tracks (``on_progress``): the live runner matches a
track's running template each time an embed batch adds crops to it, and the first match of that track to a
watchlisted identity raises the alert there and then, while the person is still in view. Each (track, identity)
pair alerts once; the final match at the track's end (``on_track``) alerts only for an identity not alerted yet.
An alert is a WARNING log line, a JSON POST to each webhook, made by the webhook's delivery thread with a
per-request timeout and retries (connection errors, timeouts, 429 and 5xx) with doubling waits, and the same JSON
published to the MQTT broker (``alerts.mqtt``, :mod:`pipeline.sinks.mqtt`) when one is configured. With
``alerts.base_url`` the body carries the URLs of the track's page, context snapshot and best crop. Delivery never
blocks the pipeline; ``close`` delivers what is queued until ``alerts.shutdown_timeout_s`` has passed, then drops
the rest (counted, logged once). Webhook URLs are logged redacted (``core.secrets``), httpx's own request log
lines too; the auth header (``auth_header_env``) is read from the environment and never logged.
Each watch list (:mod:`gallery.watchlists`) has its own threshold and cameras: a match alerts for a member only when
one of its lists applies to the track's camera and the score reaches that list's threshold (a stricter list needs a
higher score; none: the operating threshold); the alert names those lists (``watchlists``).
With ``alerts.zones``, only tracks that entered one of those camera zones alert; the zones a track entered are
known when it ends, so such an alert is raised at the track's end (``on_track``), never on an open track.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx

from core.secrets import RedactingFilter, redact_text
from core.types import MatchResult, TrackTemplate
from gallery.watchlists import DEFAULT_LIST, ListRule, watch_rules
from pipeline.live.config import AlertConfig, WebhookConfig
from pipeline.services.links import track_links
from pipeline.sinks.delivery import QueuedDelivery, Refused
from pipeline.sinks.mqtt import MqttDelivery
from pipeline.sinks.outputs import logged_ref, sighting_times

__all__ = ["WatchlistAlerts", "WebhookDelivery", "alert_record", "watchlist_alerts"]

logger = logging.getLogger(__name__)

_REDACT = RedactingFilter()
logging.getLogger("httpx").addFilter(_REDACT)  # httpx logs each request's URL (INFO): tokens as ***


def watchlist_alerts(alerts: AlertConfig, gallery) -> WatchlistAlerts:
    """Alerts for the gallery's watch lists (:func:`gallery.watchlists.watch_rules`): the default list (the
    configured ``watchlist`` plus every identity the gallery marks ``watchlist``) and every other list, each with
    its threshold and cameras."""
    rules = watch_rules(gallery.db, alerts.watchlist)
    return WatchlistAlerts(alerts.model_copy(update={"watchlist": tuple(sorted(rules))}), rules=rules)


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


class WebhookDelivery(QueuedDelivery):
    """One webhook endpoint: each alert a JSON POST (retried on connection errors, timeouts, 429 and 5xx; any other
    4xx refuses it for good), delivered as :class:`pipeline.sinks.delivery.QueuedDelivery` says."""

    kind = "webhook"
    log = logger

    def __init__(self, cfg: WebhookConfig, queue_size: int = 1000) -> None:
        super().__init__(cfg.display_url, cfg.timeout_s, cfg.retries, cfg.backoff_s, queue_size)
        self.cfg = cfg
        self._client = httpx.Client(timeout=cfg.timeout_s, headers=cfg.headers())
        self._start()

    def _attempt(self, alert: dict[str, Any], timeout: float) -> str | None:
        try:
            resp = self._client.post(self.cfg.url, json=alert, timeout=timeout)
        except httpx.HTTPError as exc:
            return redact_text(f"{type(exc).__name__}: {exc}")
        if resp.status_code < 300:
            return None
        if resp.status_code < 500 and resp.status_code != 429:
            raise Refused(f"HTTP {resp.status_code}")
        return f"HTTP {resp.status_code}"

    def _end(self) -> None:
        self._client.close()


class WatchlistAlerts:
    """Result sink raising alerts for matches on the watchlist (log line and webhooks), at the first match of
    an open track's running template (``on_progress``) or else at its final match (``on_track``). ``run_ids``: the
    match-log run of each camera (set once the match log is open), for each alert's track reference; ``media``: the
    store-relative paths of a track's best crop and snapshot by camera and track id (the match log's
    ``media_paths``), for the alert's URLs under ``alerts.base_url``."""

    def __init__(
        self,
        cfg: AlertConfig,
        run_ids: dict[str, int] | None = None,
        rules: dict[str, tuple[ListRule, ...]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_ids = run_ids
        # identity -> the watch lists it is on (default: the configured names on the default list)
        self.rules = rules if rules is not None else {n: (ListRule(DEFAULT_LIST),) for n in cfg.watchlist}
        self.watchlist = frozenset(self.rules)
        self.zones = frozenset(cfg.zones)
        self.webhooks = [WebhookDelivery(w, cfg.queue_size) for w in cfg.webhooks]
        self.mqtt = [] if cfg.mqtt is None else [MqttDelivery(cfg.mqtt, cfg.queue_size)]
        self.media: Callable[[str, int], tuple[str | None, str | None]] | None = None
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

    def lists_for(self, template: TrackTemplate, result: MatchResult) -> list[str]:
        """The watch lists under which ``result`` alerts: its matched identity is on them, they apply to the
        track's camera and its score reaches their threshold (empty: no alert)."""
        best = result.identity
        if best is None:
            return []
        rules = self.rules.get(best.name, ())
        return [r.name for r in rules if r.applies(template.source_id, float(best.score))]

    def _raise(self, template: TrackTemplate, result: MatchResult, track_ended: bool) -> None:
        best = result.identity
        if best is None or best.name not in self.watchlist:
            return
        lists = self.lists_for(template, result)
        if not lists:
            return  # not on a list for this camera, or below the thresholds of the lists it is on
        if self.zones and not (track_ended and self.zones.intersection(template.zones or ())):
            return  # limited to zones: what a track entered is known at its end
        done = self._alerted.setdefault((template.source_id, template.track_id), set())
        if best.name in done:
            return
        done.add(best.name)
        ref = logged_ref(self.run_ids, template)
        alert = alert_record(template, result, track_ended, ref) | self.links(template, ref, track_ended)
        alert["watchlists"] = lists
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
        self.deliver(alert)

    def links(
        self, template: TrackTemplate, ref: str | None, track_ended: bool = True
    ) -> dict[str, str | None]:
        """``track_url``, ``snapshot_url`` and ``crop_url`` below ``alerts.base_url`` of a logged track (the URLs
        the web app's feed gives, :func:`pipeline.services.links.track_links`); empty without a base URL or a
        reference. An ended track without a best crop or a snapshot has no URL for it."""
        if self.cfg.base_url is None or ref is None:
            return {}
        crop, snapshot = (
            (None, None) if self.media is None else self.media(template.source_id, template.track_id)
        )
        if track_ended:
            crop = None if template.best_crop is None else crop
            snapshot = None if template.scene is None else snapshot
        return track_links(ref, crop, snapshot, self.cfg.base_url)

    def deliver(self, alert: dict[str, Any]) -> None:
        """Queue one alert body on every webhook and the MQTT broker."""
        for hook in (*self.webhooks, *self.mqtt):
            hook.submit(alert)

    def close(self) -> None:
        """End every delivery by one deadline, ``shutdown_timeout_s`` from now (see ``QueuedDelivery``)."""
        deadline = time.monotonic() + self.cfg.shutdown_timeout_s
        hooks = (*self.webhooks, *self.mqtt)
        for hook in hooks:  # every delivery winds down at once, towards the one deadline
            if isinstance(hook, QueuedDelivery):
                hook.begin_close(deadline)
        for hook in hooks:
            hook.close()
