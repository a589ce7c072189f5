"""When a file was recorded: file-name patterns, creation_time tags, the order of the origins, the config."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import SourceConfig
from pipeline.runners.recording_time import check_name_pattern, creation_time, recording_time, time_from_name

UTC = timezone.utc


@pytest.mark.parametrize(
    "name, pattern, zone, expected",
    [
        ("cam1_20260301_101500.mp4", "%Y%m%d_%H%M%S", "UTC", datetime(2026, 3, 1, 10, 15, tzinfo=UTC)),
        (
            "cam1_20260301_101500.mp4",
            "%Y%m%d_%H%M%S",
            "Europe/Paris",
            datetime(2026, 3, 1, 9, 15, tzinfo=UTC),
        ),
        (
            "cam1_20260801_101500.mp4",
            "%Y%m%d_%H%M%S",
            "Europe/Paris",
            datetime(2026, 8, 1, 8, 15, tzinfo=UTC),
        ),
        (
            "gate 2026-03-01 10.15.00+0530 x.ts",
            "%Y-%m-%d %H.%M.%S%z",
            None,
            datetime(2026, 3, 1, 4, 45, tzinfo=UTC),
        ),
        ("lobby-01Mar26-1015.mkv", "%d%b%y-%H%M", "UTC", datetime(2026, 3, 1, 10, 15, tzinfo=UTC)),
        (
            "a_20260301T101500.250_20260301T111500.mp4",
            "%Y%m%dT%H%M%S.%f",
            "UTC",
            datetime(2026, 3, 1, 10, 15, 0, 250000, tzinfo=UTC),
        ),
        ("export.mp4", "%Y%m%d_%H%M%S", "UTC", None),  # no match
        ("cam_20261301_101500.mp4", "%Y%m%d_%H%M%S", "UTC", None),  # month 13: no time
    ],
)
def test_time_from_name(name, pattern, zone, expected):
    check_name_pattern(pattern, zone)
    got = time_from_name(name, pattern, zone)
    assert got == expected
    assert got is None or got.utcoffset() is not None


@pytest.mark.parametrize(
    "pattern, zone, fragment",
    [
        ("%Y%m%d_%H%M%S", None, "expected recorded_at_zone"),
        ("%Y%m%d_%H%M%S%z", "UTC", "expected no zone"),
        ("%Y%m%d_%H%M%S", "Mars/Olympus", "IANA time zone"),
        ("%Y%m%d_%Q", "UTC", "'%Q'"),
        ("%H%M%S", "UTC", "has no %Y or %y, %m or %b or %B or %j, %d or %j"),
        ("%Y%m%d", "UTC", "has no %H or %I"),
        ("%Y%m%d_%H%", "UTC", "got '%'"),
    ],
)
def test_bad_patterns_say_why(pattern, zone, fragment):
    with pytest.raises(ValueError, match="expected") as info:
        check_name_pattern(pattern, zone)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"recorded_at_pattern": "%Y%m%d_%H%M%S"}, "recorded_at_zone"),
        ({"recorded_at_zone": "UTC"}, "recorded_at_zone is for recorded_at_pattern"),
        ({"recorded_at_pattern": "%Y%m%d_%H", "recorded_at_zone": "Nowhere/City"}, "IANA"),
        ({"max_pts_jump_s": 0}, "max_pts_jump_s"),
    ],
)
def test_source_config_refuses_bad_recording_time_settings(kw, fragment):
    with pytest.raises(ValidationError, match=fragment):
        SourceConfig(**kw)


def test_source_config_fields_are_described():
    for name in ("recorded_at_pattern", "recorded_at_zone", "max_pts_jump_s"):
        assert SourceConfig.model_fields[name].description


@pytest.mark.parametrize(
    "tags, expected",
    [
        (({"creation_time": "2026-03-01T10:00:00.000000Z"}, {}), datetime(2026, 3, 1, 10, tzinfo=UTC)),
        (({}, {"creation_time": "2026-03-01T10:00:00+02:00"}), datetime(2026, 3, 1, 8, tzinfo=UTC)),
        (
            ({"creation_time": "2026-03-01 10:00:00"}, {}),
            datetime(2026, 3, 1, 10, tzinfo=UTC),
        ),  # no zone: UTC
        (
            ({"creation_time": "yesterday"}, {"creation_time": "2026-03-01T10:00:00Z"}),
            datetime(2026, 3, 1, 10, tzinfo=UTC),
        ),
        (({"creation_time": "1970-01-01T00:00:00Z"}, {}), None),  # a zeroed field
        (({"encoder": "Lavf"}, {}), None),
    ],
)
def test_creation_time(tags, expected):
    assert creation_time(*tags) == expected


def test_origins_in_order(caplog):
    given = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=1)))
    tag = ({"creation_time": "2026-03-01T10:00:00Z"},)
    name = Path("cam_20260401_080000.mp4")
    pattern = ("%Y%m%d_%H%M%S", "UTC")
    assert recording_time(name, given, tag, *pattern) == (given, "given")
    assert recording_time(name, None, tag, *pattern) == (datetime(2026, 3, 1, 10, tzinfo=UTC), "container")
    assert recording_time(name, None, ({},), *pattern) == (datetime(2026, 4, 1, 8, tzinfo=UTC), "filename")
    assert recording_time(name, None, ({},), None, None) == (None, "unknown")
    with caplog.at_level(logging.WARNING):
        assert recording_time(Path("export.mp4"), None, ({},), *pattern) == (None, "unknown")
    assert "no time in the file name matches" in caplog.text
