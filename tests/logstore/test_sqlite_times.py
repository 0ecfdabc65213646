"""SQLite keeps times as fixed-width UTC text, whichever way the text is made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import example, given
from hypothesis import strategies as st

from connectors.logstore.sqlite import sqlite_time

zones = st.just(UTC) | st.builds(timezone, st.timedeltas(-timedelta(hours=23), timedelta(hours=23)))


@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones))
@example(datetime(2026, 11, 23, 16, 14, 54, tzinfo=UTC))  # a whole second: the fraction is still written
@example(datetime(2026, 11, 23, 16, 14, 54, 120000, tzinfo=UTC))  # trailing zeros of the fraction too
def test_a_time_is_stored_as_its_utc_strftime_text(moment: datetime) -> None:
    assert sqlite_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert len(sqlite_time(moment)) == len("2026-11-23T16:14:54.123456Z")


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones),
       st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones))
@example(datetime(999, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))  # strftime wrote "999-...": after "2026"
def test_times_of_every_year_are_fixed_width_text_that_sorts_as_the_times_do(a: datetime, b: datetime) -> None:
    assert len(sqlite_time(a)) == len(sqlite_time(b)) == len("2026-11-23T16:14:54.123456Z")
    assert (sqlite_time(a) < sqlite_time(b)) == (a < b)
