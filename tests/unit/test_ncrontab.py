"""NCRONTAB schedules: next occurrences as Azure's timer trigger (NCrontab) computes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.ncrontab import Schedule


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def upcoming(text: str, start: datetime, count: int = 3) -> list[datetime]:
    schedule = Schedule.parse(text)
    found = []
    moment = start
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment)
    return found


def test_every_five_minutes():
    assert upcoming("0 */5 * * * *", at(2024, 3, 1, 12, 3, 7)) == [
        at(2024, 3, 1, 12, 5),
        at(2024, 3, 1, 12, 10),
        at(2024, 3, 1, 12, 15),
    ]


def test_next_is_strictly_after_an_occurrence():
    assert Schedule.parse("0 */5 * * * *").next_after(at(2024, 3, 1, 12, 5)) == at(
        2024, 3, 1, 12, 10
    )


def test_sub_second_input_is_truncated_not_rounded():
    moment = at(2024, 3, 1, 12, 4, 59) + timedelta(microseconds=999_999)
    assert Schedule.parse("0 */5 * * * *").next_after(moment) == at(2024, 3, 1, 12, 5)


def test_daily_at_two_rolls_over_month_and_year_ends():
    assert upcoming("0 0 2 * * *", at(2023, 12, 31, 2, 0, 0)) == [
        at(2024, 1, 1, 2),
        at(2024, 1, 2, 2),
        at(2024, 1, 3, 2),
    ]


def test_weekdays_at_half_past_nine_skip_the_weekend():
    # 2024-03-08 is a Friday.
    assert upcoming("0 30 9 * * MON-FRI", at(2024, 3, 8, 9, 30)) == [
        at(2024, 3, 11, 9, 30),
        at(2024, 3, 12, 9, 30),
        at(2024, 3, 13, 9, 30),
    ]


def test_every_second():
    assert upcoming("* * * * * *", at(2024, 1, 1, 23, 59, 58)) == [
        at(2024, 1, 1, 23, 59, 59),
        at(2024, 1, 2, 0, 0, 0),
        at(2024, 1, 2, 0, 0, 1),
    ]


def test_five_fields_mean_no_seconds_field():
    assert upcoming("*/15 * * * *", at(2024, 3, 1, 12, 0, 1)) == [
        at(2024, 3, 1, 12, 15),
        at(2024, 3, 1, 12, 30),
        at(2024, 3, 1, 12, 45),
    ]


def test_day_31_skips_shorter_months():
    assert upcoming("0 0 0 31 * *", at(2024, 1, 31, 0, 0, 0)) == [
        at(2024, 3, 31),
        at(2024, 5, 31),
        at(2024, 7, 31),
    ]


def test_last_day_of_february_in_leap_and_common_years():
    assert upcoming("0 0 0 28,29 2 *", at(2023, 1, 1)) == [
        at(2023, 2, 28),
        at(2024, 2, 28),
        at(2024, 2, 29),
    ]


def test_february_29_waits_for_the_next_leap_year_and_skips_2100():
    assert upcoming("0 0 0 29 2 *", at(2024, 3, 1)) == [
        at(2028, 2, 29),
        at(2032, 2, 29),
        at(2036, 2, 29),
    ]
    assert Schedule.parse("0 0 0 29 2 *").next_after(at(2096, 3, 1)) == at(2104, 2, 29)


def test_day_of_month_and_day_of_week_must_both_match_as_in_ncrontab():
    # Friday the 13th only (Vixie cron would fire on every 13th and on every Friday).
    assert upcoming("0 0 0 13 * FRI", at(2024, 1, 1)) == [
        at(2024, 9, 13),
        at(2024, 12, 13),
        at(2025, 6, 13),
    ]


def test_names_lists_steps_and_sunday_as_seven():
    schedule = Schedule.parse("0 0 12 * jan,Jul SUN,7,Saturday")
    assert schedule.months == {1, 7}
    assert schedule.days_of_week == {0, 6}
    assert Schedule.parse("0 0 0 * * 1-5/2").days_of_week == {1, 3, 5}
    assert Schedule.parse("0 10/20 * * * *").minutes == {10, 30, 50}
    assert Schedule.parse("0 0 0 * * */3").days_of_week == {0, 3, 6}
    assert Schedule.parse("0 0 0 * FEB-APR *").months == {2, 3, 4}


def test_non_utc_input_is_converted():
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2024, 3, 1, 3, 0, 0, tzinfo=plus_two)  # 01:00 UTC
    assert Schedule.parse("0 0 2 * * *").next_after(moment) == at(2024, 3, 1, 2)


def test_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="aware"):
        Schedule.parse("* * * * * *").next_after(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 6 fields"),
        ("* * *", "got 3"),
        ("* * * * * * *", "got 7"),
        ("60 * * * * *", "second field '60': 60 is outside 0-59"),
        ("0 60 * * * *", "minute field"),
        ("0 0 24 * * *", "hour field '24': 24 is outside 0-23"),
        ("0 0 0 0 * *", "day-of-month field '0': 0 is outside 1-31"),
        ("0 0 0 32 * *", "day-of-month field"),
        ("0 0 0 * 13 *", "month field '13': 13 is outside 1-12"),
        ("0 0 0 * * 8", "day-of-week field '8'"),
        ("0 0 0 * FOO *", "'FOO' is not a month name"),
        ("0 0 0 * * FUNDAY", "is not a day-of-week name"),
        ("0 0 0 * * MO", "is not a day-of-week name"),
        ("0 0 MON * * *", "hour field 'MON': 'MON' is not a number"),
        ("0 0 5-1 * * *", "runs backwards"),
        ("0 */0 * * * *", "step must be at least 1"),
        ("0 */x * * * *", "step 'x' is not a number"),
        ("0 1,,2 * * * *", "empty list element"),
        ("0 0 0 L * *", "day-of-month field 'L'"),
        ("0 0 0 ? * MON", "day-of-month field '?'"),
        ("0 0 0 30 2 *", "never fires"),
        ("0 0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_invalid_schedules_name_the_field(text, message):
    with pytest.raises(ValueError, match="invalid NCRONTAB schedule") as caught:
        Schedule.parse(text)
    assert message in str(caught.value)


def brute_force_next(schedule: Schedule, start: datetime) -> datetime:
    """Reference: walk second by second (only used over short spans)."""
    moment = start.replace(microsecond=0) + timedelta(seconds=1)
    while True:
        if (
            moment.second in schedule.seconds
            and moment.minute in schedule.minutes
            and moment.hour in schedule.hours
            and moment.day in schedule.days
            and moment.month in schedule.months
            and (moment.weekday() + 1) % 7 in schedule.days_of_week
        ):
            return moment
        moment += timedelta(seconds=1)


@settings(max_examples=60, deadline=None)
@given(
    second=st.sampled_from(["*", "*/7", "0", "15-20", "59"]),
    minute=st.sampled_from(["*", "*/10", "0", "58,59"]),
    start=st.datetimes(
        min_value=datetime(2020, 1, 1),
        max_value=datetime(2030, 12, 31),
        timezones=st.just(UTC),
    ),
)
def test_matches_a_brute_force_walk(second, minute, start):
    schedule = Schedule.parse(f"{second} {minute} * * * *")
    assert schedule.next_after(start) == brute_force_next(schedule, start)
