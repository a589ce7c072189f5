"""pipeline/web/session.py: session cookies that are not the token, verify only on the server that signed them
for the token it had, expire, and end at logout."""

from __future__ import annotations

import pytest

from pipeline.web.session import COOKIE, Sessions, cookie_header, token_matches

TOKEN = "session-token-0123"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_a_session_is_not_the_token_and_verifies(clock):
    sessions = Sessions(TOKEN, 3600, clock)
    value = sessions.issue()
    assert TOKEN not in value and value != sessions.issue()  # a new nonce each time
    assert sessions.check(value) is None
    assert int(value.split(".")[0]) == clock.now + 3600


def _altered(value: str, case: str) -> str:
    expires, nonce, signature = value.split(".")
    return {
        "later expiry": f"{int(expires) + 3600}.{nonce}.{signature}",
        "other nonce": f"{expires}.{nonce[::-1]}.{signature}",
        "other signature": f"{expires}.{nonce}.{signature[::-1]}",
        "no signature": f"{expires}.{nonce}.",
        "the token": TOKEN,
        "empty": "",
        "too long": f"{expires}.{'n' * 300}.{signature}",
        "four parts": f"{value}.x",
        "negative expiry": f"-{expires}.{nonce}.{signature}",
        "non-ASCII digits": f"\u00b2{expires}.{nonce}.{signature}",  # str.isdigit() holds, int() refuses
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "later expiry",
        "other nonce",
        "other signature",
        "no signature",
        "the token",
        "empty",
        "too long",
        "four parts",
        "negative expiry",
        "non-ASCII digits",
    ],
)
def test_forged_or_altered_cookies_do_not_verify(clock, case):
    sessions = Sessions(TOKEN, 3600, clock)
    assert sessions.check(_altered(sessions.issue(), case)) is not None


@pytest.mark.parametrize(
    "other,reason",
    [
        (lambda clock: Sessions(TOKEN, 3600, clock), "not signed by this server"),  # a restart
        (lambda clock: Sessions(TOKEN + "-rotated", 3600, clock), "not signed by this server"),
    ],
)
def test_a_restart_or_a_new_token_ends_every_session(clock, other, reason):
    value = Sessions(TOKEN, 3600, clock).issue()
    assert reason in other(clock).check(value)


def test_sessions_expire(clock):
    sessions = Sessions(TOKEN, 3600, clock)
    value = sessions.issue()
    clock.now += 3599
    assert sessions.check(value) is None
    clock.now += 1
    assert sessions.check(value) == "session expired"


def test_a_session_signed_for_longer_than_the_session_length_is_refused(clock):
    """A cookie of a server started with a longer session length than this one's (same key, here by a shorter
    limit set afterwards) does not outlive this server's length."""
    sessions = Sessions(TOKEN, 7200, clock)
    value = sessions.issue()
    sessions.max_age_s = 3600
    assert sessions.check(value) == "session cookie outlives the session length"


def test_logout_revokes_that_session_only(clock):
    sessions = Sessions(TOKEN, 3600, clock)
    kept, gone = sessions.issue(), sessions.issue()
    sessions.revoke(gone)
    sessions.revoke("not a session")  # ignored
    assert sessions.check(gone) == "session logged out" and sessions.check(kept) is None
    clock.now += 3600
    fresh = sessions.issue()
    sessions.revoke(fresh)
    assert list(sessions._revoked) == [fresh.split(".")[1]]  # the expired revocation is dropped on the way


@pytest.mark.parametrize(
    "value,max_age,path,secure,expected",
    [
        ("v", 60, "/", False, f"{COOKIE}=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"),
        (
            "v",
            60,
            "/gallery/",
            True,
            f"{COOKIE}=v; Path=/gallery/; Max-Age=60; HttpOnly; SameSite=Strict; Secure",
        ),
        ("", 0, "/", False, f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    ],
)
def test_cookie_attributes(value, max_age, path, secure, expected):
    assert cookie_header(value, max_age, path, secure) == expected


@pytest.mark.parametrize(
    "given,ok",
    [(TOKEN, True), (TOKEN + "x", False), (TOKEN[:-1], False), ("", False), (TOKEN.upper(), False)],
)
def test_token_matches(given, ok):
    assert token_matches(given, TOKEN) is ok


def test_a_session_length_below_a_second_is_refused():
    with pytest.raises(ValueError, match="expected at least 1 s, got 0"):
        Sessions(TOKEN, 0)
