"""Queued delivery of alerts to one endpoint (a webhook, an MQTT broker): a bounded queue and a thread of its own.

``submit`` never blocks: a full queue drops the alert (counted, logged). The thread sends each alert with a
per-attempt timeout and retries with doubling waits; an endpoint that stays down fails the alert (counted, logged),
never the pipeline. ``close`` (or ``begin_close`` + ``finish_close``) ends it by a deadline: what is queued is still
delivered until then, each attempt's timeout and each retry wait cut to the time left; alerts still queued or
retrying at the deadline are dropped, counted in ``abandoned`` and logged once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

__all__ = ["QueuedDelivery", "Refused"]

_STOP = object()


class Refused(Exception):
    """The endpoint refused the alert for good (e.g. HTTP 400): it is not retried."""


class QueuedDelivery:
    """One endpoint's queue and delivery thread. A subclass sets ``kind`` (``webhook``, ``mqtt``: the first word of
    its log lines) and ``log`` (its logger), implements :meth:`_attempt` (and :meth:`_end` to release what it holds)
    and calls :meth:`_start` once ready."""

    kind = "delivery"
    log = logging.getLogger(__name__)
    retry_level = logging.WARNING  # the level of a retry's log line

    def __init__(self, name: str, timeout_s: float, retries: int, backoff_s: float, queue_size: int) -> None:
        self.name = name  # the endpoint as logs show it (no secret)
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.delivered = 0
        self.failed = 0
        self.dropped = 0  # queue full
        self.abandoned = 0  # still queued or retrying at the shutdown deadline
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._deadline: float | None = None  # time.monotonic() by which close ends delivery
        self._closing = threading.Event()
        self._finished = False  # finish_close has counted and logged: the thread counts no more
        self._count_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=self.kind, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _attempt(self, alert: dict[str, Any], timeout: float) -> str | None:
        """Send ``alert`` once within ``timeout`` seconds: None when delivered, else why not (retried); raises
        :class:`Refused` when retrying cannot help."""
        raise NotImplementedError

    def _end(self) -> None:
        """Release the endpoint's connection (on the delivery thread, as it ends)."""

    def submit(self, alert: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            self.log.error(
                "%s %s: queue full (%d alerts), alert dropped", self.kind, self.name, self._queue.maxsize
            )

    def budget_s(self) -> float:
        """Longest time one alert can take: every attempt timing out plus every wait."""
        waits = sum(self.backoff_s * 2**i for i in range(self.retries))
        return (self.retries + 1) * self.timeout_s + waits

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
        if self._thread.ident is not None:
            self._thread.join(max(0.0, self._deadline + margin_s - time.monotonic()))
        with self._count_lock:
            self._finished = True  # a thread still in a request past its deadline counts nothing more
            if self._thread.is_alive():  # one attempt in flight (its timeout caps it; the thread is a daemon)
                self.abandoned += 1 + sum(1 for a in list(self._queue.queue) if a is not _STOP)
        if self.abandoned:
            self.log.error(
                "%s %s: shutdown deadline passed; %d alerts dropped undelivered (queued or retrying)",
                self.kind,
                self.name,
                self.abandoned,
            )

    def _left(self) -> float | None:
        """Seconds until the shutdown deadline (None while not closing)."""
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _run(self) -> None:
        try:
            while (alert := self._next()) is not None:
                outcome = self._send(alert) if (left := self._left()) is None or left > 0 else None
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
            self._end()

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

    def _send(self, alert: dict[str, Any]) -> bool | None:
        """Send one alert with retries: True delivered, False failed, None cut by the shutdown deadline."""
        wait = self.backoff_s
        reason = "not attempted"
        for attempt in range(self.retries + 1):
            left = self._left()
            if left is not None and left <= 0:
                return None
            try:
                reason = self._attempt(alert, self.timeout_s if left is None else min(self.timeout_s, left))
            except Refused as exc:
                self.log.error("%s %s refused the alert: %s (not retried)", self.kind, self.name, exc)
                return False
            if reason is None:
                return True
            if attempt < self.retries:
                self.log.log(
                    self.retry_level,
                    "%s %s: %s; retry %d of %d in %.1fs",
                    self.kind,
                    self.name,
                    reason,
                    attempt + 1,
                    self.retries,
                    wait,
                )
                if not self._wait(wait):
                    return None
                wait *= 2
        if (left := self._left()) is not None and left <= 0:
            return None  # the last attempt was cut by the deadline
        self.log.error(
            "%s %s: alert for %s not delivered after %d attempts (last: %s)",
            self.kind,
            self.name,
            alert.get("identity"),
            self.retries + 1,
            reason,
        )
        return False
