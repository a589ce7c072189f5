"""Presentation times made monotonic: restarts, wraps, jumps, frames without time, reconnects."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.runners.timeline import PtsUnwrapper

WRAP = 2**33 / 90000


def run(raw, **kw) -> tuple[list[float], PtsUnwrapper]:
    unwrap = PtsUnwrapper(**kw)
    return [unwrap(t) for t in raw], unwrap


@pytest.mark.parametrize(
    "raw, kw, expected, breaks",
    [
        ([1.0, 1.1, 1.2], {"origin": 1.0}, [0.0, 0.1, 0.2], 0),  # plain: from the origin
        ([0.0, 0.1, 0.2, 0.0, 0.1], {"interval": 0.1}, [0.0, 0.1, 0.2, 0.3, 0.4], 1),  # a restart
        ([0.0, 0.1, 0.0, 0.1, 0.0], {"interval": 0.1}, [0.0, 0.1, 0.2, 0.3, 0.4], 2),  # offsets add up
        ([0.0, 0.1, 0.1, 0.2], {"interval": 0.1}, [0.0, 0.1, 0.2, 0.3], 1),  # a repeated time
        ([0.0, 0.1, 50.0, 50.1], {"interval": 0.1, "max_jump": 10.0}, [0.0, 0.1, 0.2, 0.3], 1),  # jump ahead
        ([0.0, 0.1, 5.0, 5.1], {"interval": 0.1, "max_jump": 10.0}, [0.0, 0.1, 5.0, 5.1], 0),  # a real gap
        ([0.0, 0.1, 50.0], {"interval": 0.1}, [0.0, 0.1, 50.0], 0),  # no jump limit (MP4): gaps are real
        ([0.0, None, 0.2, None], {"interval": 0.1}, [0.0, 0.1, 0.2, 0.3], 0),  # frames without time
        ([None, None, 0.5], {}, [0.0, 0.04, 0.5], 0),  # no interval known yet: 0.04
        ([0.0, 0.02, 0.04, 0.0], {}, [0.0, 0.02, 0.04, 0.06], 1),  # the interval seen
    ],
)
def test_times_are_monotonic_and_discontinuities_counted(raw, kw, expected, breaks):
    times, unwrap = run(raw, **kw)
    assert times == pytest.approx(expected) and unwrap.discontinuities == breaks


def test_wrap_with_times_on_both_sides_of_it_keeps_exact_times():
    true = np.arange(100) * 0.04 + WRAP - 2.0  # 4 s across the wrap at 25 frames/s
    raw = true % WRAP
    raw[53] = true[
        53
    ]  # after the wrap, one frame still shown before it (as FFmpeg's own correction can leave)
    times, unwrap = run(list(raw), interval=0.04, max_jump=10.0, wrap=WRAP, origin=raw[0])
    assert unwrap.discontinuities == 0 and np.allclose(np.diff(times), 0.04)
    assert times[-1] == pytest.approx(99 * 0.04)


def test_plain_wrap_is_no_discontinuity():
    raw = list((np.arange(200) * 0.04 + WRAP - 4.0) % WRAP)
    times, unwrap = run(raw, interval=0.04, max_jump=10.0, wrap=WRAP, origin=raw[0])
    assert unwrap.discontinuities == 0 and np.allclose(np.diff(times), 0.04)


def test_new_part_continues_after_the_last_frame_uncounted():
    unwrap = PtsUnwrapper(interval=0.1)
    unwrap.new_part()
    assert [unwrap(t) for t in (7.0, 7.1)] == pytest.approx([0.0, 0.1])  # the first part starts at 0
    unwrap.new_part()  # a reconnect: its pts start anywhere
    assert [unwrap(t) for t in (None, 3.0, 3.1)] == pytest.approx([0.2, 0.3, 0.4])
    assert unwrap.discontinuities == 0
