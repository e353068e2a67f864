"""NCRONTAB schedules, as the Azure Functions timer trigger reads them.

The local host's timers and the console's overview (the next refresh, from `REFRESH_SCHEDULE`)
need the next occurrence of a `schedule` such as `0 */5 * * * *`; a parser this small is easier
to keep faithful to Azure than a general cron library. Pure: no clock, no I/O. Azure evaluates
schedules with the NCrontab .NET library, and this module follows it where cron dialects differ:

- 6 fields `second minute hour day month day-of-week`, or 5 fields (no seconds: second 0);
- `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n` (= `a-max/n`), lists `a,b,c`;
- month and day names, case-insensitive, as three-letter abbreviations or in full (`JAN`,
  `January`, `MON`, `Monday`); day-of-week 0-6 with 0 = Sunday, 7 accepted as Sunday too;
- when both day-of-month and day-of-week are restricted, a day must match **both** (NCrontab
  checks the day of week after finding the day of month), unlike Vixie cron where either one
  suffices: `0 0 0 13 * FRI` fires on Friday the 13th only, in Azure and here.

Times are UTC: the local host, like Azure's default (`WEBSITE_TIME_ZONE` unset), runs timers on
UTC. `L`, `W`, `#` and `?` are not NCRONTAB and are rejected.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Self

_FIELD_NAMES: Final = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS: Final = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS: Final = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_DAYS: Final = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_NUMBER = re.compile(r"[0-9]+")
# Long enough for any schedule that can fire: Feb 29 on a given weekday recurs within 40 years.
_SEARCH_YEARS: Final = 60


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule: the allowed values of each field, and the text it came from."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse 6 (or 5) fields; `ValueError` names the field and the problem."""
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise ValueError(
                f"invalid NCRONTAB schedule {text!r}: expected 6 fields "
                f"(second minute hour day month day-of-week) or 5 (without seconds), "
                f"got {len(fields)}"
            )
        parsed = [_parse_field(text, index, field) for index, field in enumerate(fields)]
        seconds, minutes, hours, days, months, days_of_week = parsed
        schedule = cls(
            text,
            seconds=seconds,
            minutes=minutes,
            hours=hours,
            days=days,
            months=months,
            days_of_week=frozenset(0 if day == 7 else day for day in days_of_week),
        )
        schedule._check_can_fire()
        return schedule

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (aware), as an aware UTC datetime."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("next_after needs an aware datetime (UTC is what timers use)")
        start = moment.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        start_time = (start.hour, start.minute, start.second)
        year, month = start.year, start.month
        for _ in range(12 * _SEARCH_YEARS):
            if month in self.months:
                first_day = start.day if (year, month) == (start.year, start.month) else 1
                last_day = calendar.monthrange(year, month)[1]
                for day in range(first_day, last_day + 1):
                    if not self._day_matches(date(year, month, day)):
                        continue
                    on_start_day = (year, month, day) == (start.year, start.month, start.day)
                    found = self._first_time(start_time if on_start_day else (0, 0, 0))
                    if found is not None:
                        return datetime(year, month, day, *found, tzinfo=UTC)
            month += 1
            if month == 13:
                year, month = year + 1, 1
        raise ValueError(f"schedule {self.text!r} has no occurrence after {moment.isoformat()}")

    def _day_matches(self, day: date) -> bool:
        # NCrontab semantics: day of month and day of week must both match.
        return day.day in self.days and (day.weekday() + 1) % 7 in self.days_of_week

    def _first_time(self, earliest: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """The first allowed (hour, minute, second) at or after `earliest` on one day."""
        hour0, minute0, second0 = earliest
        for hour in sorted(h for h in self.hours if h >= hour0):
            first_minute = minute0 if hour == hour0 else 0
            for minute in sorted(m for m in self.minutes if m >= first_minute):
                first_second = second0 if (hour, minute) == (hour0, minute0) else 0
                seconds = [s for s in self.seconds if s >= first_second]
                if seconds:
                    return hour, minute, min(seconds)
        return None

    def _check_can_fire(self) -> None:
        """Reject schedules that never fire (`0 0 0 30 2 *`) at parse time, not at run time."""
        for month in self.months:
            longest = 29 if month == 2 else calendar.monthrange(2001, month)[1]
            if any(day <= longest for day in self.days):
                return
        raise ValueError(
            f"invalid NCRONTAB schedule {self.text!r}: no month in the month field has any "
            f"of the days in the day-of-month field, so it never fires"
        )


def _parse_field(text: str, index: int, field: str) -> frozenset[int]:
    name = _FIELD_NAMES[index]
    low, high = _BOUNDS[index]

    def fail(problem: str) -> ValueError:
        return ValueError(f"invalid NCRONTAB schedule {text!r}: {name} field {field!r}: {problem}")

    values: set[int] = set()
    for part in field.split(","):
        if not part:
            raise fail("empty list element")
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text):
                raise fail(f"step {step_text!r} is not a number")
            step = int(step_text)
            if step == 0:
                raise fail("step must be at least 1")
        if span == "*":
            start, end = low, (6 if index == 5 else high)
        elif "-" in span:
            first, _, last = span.partition("-")
            start, end = _value(first, index, fail), _value(last, index, fail)
            if start > end:
                raise fail(f"range {span!r} runs backwards (ranges do not wrap around)")
        else:
            start = _value(span, index, fail)
            # `a/n` means from a to the end of the field, as in NCrontab.
            end = (6 if index == 5 else high) if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(token: str, index: int, fail: Callable[[str], ValueError]) -> int:
    name = _FIELD_NAMES[index]
    low, high = _BOUNDS[index]
    if _NUMBER.fullmatch(token):
        value = int(token)
        if not low <= value <= high:
            shown_high = 6 if index == 5 else high
            extra = " (7 also means Sunday)" if index == 5 else ""
            raise fail(f"{value} is outside {low}-{shown_high}{extra}")
        return value
    names = _MONTHS if index == 4 else _DAYS if index == 5 else None
    if names is None:
        raise fail(f"{token!r} is not a number")
    lowered = token.lower()
    for position, full in enumerate(names):
        if len(lowered) >= 3 and full.startswith(lowered):
            return position + (1 if index == 4 else 0)
    choices = ", ".join(n[:3].upper() for n in names)
    raise fail(f"{token!r} is not a {name} name (use a number or one of {choices})")
