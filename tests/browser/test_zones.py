"""The browser tests' zone choice works at every minute of the day, both ways: whenever CI
runs, the course's session lies within one local day and the browser is on another date."""

from __future__ import annotations

import datetime
import typing
import zoneinfo

import pytest

from tests.browser import conftest


@pytest.mark.parametrize("direction", typing.get_args(conftest.Direction))
def test_zones_apart_at_every_minute(direction: conftest.Direction) -> None:
    day = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)
    for minute in range(24 * 60):
        utc = day + datetime.timedelta(minutes=minute)
        course_zone, browser_zone = conftest.zones_apart(utc, direction)
        course = utc.astimezone(zoneinfo.ZoneInfo(course_zone))
        seen = utc.astimezone(zoneinfo.ZoneInfo(browser_zone)).date()
        assert (course - conftest.SESSION_BEFORE).date() == (course + conftest.SESSION_AFTER).date()
        if direction == "browser_ahead":
            assert seen > course.date(), (utc, course_zone, browser_zone)
        else:
            assert seen < course.date(), (utc, course_zone, browser_zone)


def test_course_zone_keeps_the_session_in_one_day() -> None:
    day = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)
    for minute in range(24 * 60):
        utc = day + datetime.timedelta(minutes=minute)
        course = utc.astimezone(zoneinfo.ZoneInfo(conftest.course_zone(utc)))
        assert 10 <= course.hour <= 13, (utc, course)
