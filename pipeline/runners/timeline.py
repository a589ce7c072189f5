"""Stream time: presentation timestamps made monotonic, for file and live sources alike."""

from __future__ import annotations

__all__ = ["PtsUnwrapper"]


class PtsUnwrapper:
    """Presentation times (seconds, ``None`` where a frame has none) -> monotonic stream times from ``origin``.

    ``wrap``: the period after which the format's timestamps wrap (MPEG-TS: 2**33 ticks of 90 kHz, 26.5 hours);
    each time is first taken at the representative nearest to the last one, so a wrap (even with frames on both
    sides of it out of order, as B-frames come) costs nothing and keeps exact times. After that, a frame whose
    time does not come after the last one's, or (``max_jump`` set) comes more than ``max_jump`` seconds after it,
    starts a new part: an offset, added to every later time, puts it one frame ``interval`` after the last frame
    (offsets add up over several parts); ``discontinuities`` counts them. ``interval``: the nominal frame
    interval, else the last regular step seen (0.04 s before any). A frame without time comes one interval after
    the last."""

    def __init__(
        self,
        interval: float | None = None,
        max_jump: float | None = None,
        wrap: float | None = None,
        origin: float = 0.0,
    ) -> None:
        self.interval = interval
        self.max_jump = max_jump
        self.wrap = wrap
        self.origin = origin
        self.offset = 0.0
        self.last: float | None = None
        self.discontinuities = 0
        self._last_raw: float | None = None
        self._seen_step = 0.04
        self._new_part = False

    @property
    def step(self) -> float:
        return self.interval or self._seen_step

    def new_part(self) -> None:
        """The next frame with a time starts a new part (a reconnected stream): one interval after the last frame
        (at 0 before any), not counted as a discontinuity."""
        self._new_part = True

    def __call__(self, raw: float | None) -> float:
        if raw is not None and self.wrap and self._last_raw is not None:
            raw += round((self._last_raw - raw) / self.wrap) * self.wrap
        if raw is None:
            t = 0.0 if self.last is None else self.last + self.step
        elif self._new_part:
            self._new_part = False
            t = 0.0 if self.last is None else self.last + self.step
            self.offset = t - (raw - self.origin)
        elif self.last is None:
            t = raw - self.origin
        else:
            t = raw - self.origin + self.offset
            delta = t - self.last
            if delta <= 0 or (self.max_jump is not None and delta > self.max_jump):
                self.discontinuities += 1
                self.offset += self.last + self.step - t
                t = self.last + self.step
            elif delta < 1.0:
                self._seen_step = delta
        if raw is not None:
            self._last_raw = raw
        self.last = t
        return t
