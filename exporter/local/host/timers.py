"""Timer triggers: NCRONTAB schedules in UTC, run on startup, past due, one run at a time.

Schedules have 6 or 5 fields (`exporter.core.ncrontab`) and run in UTC; `runOnStartup` fires
once at start; the `azure.functions.TimerRequest`'s `past_due` is True when the invocation starts
more than 5 s after its occurrence; one invocation at a time, and occurrences missed meanwhile
collapse into one late run. Not as in Azure: no schedule status is kept (`useMonitor`), so
occurrences missed while the host was down are not run at startup; no `WEBSITE_TIME_ZONE`.
A disabled function (`AzureWebJobs.<name>.Disabled`) keeps its schedule but runs no occurrence
(nor at startup) until it is switched on again; each skipped occurrence is logged.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from azure.functions.timer import TimerRequest

from exporter.core.ncrontab import Schedule
from exporter.local.host.app import FunctionSpec
from exporter.local.host.config import THREAD_PREFIX, HostError
from exporter.local.host.invoker import Invoker
from exporter.local.host.listener import Listener

PAST_DUE_TOLERANCE: Final = timedelta(seconds=5)

logger = logging.getLogger("exporter.local.host")


def timer_listener(spec: FunctionSpec, invoker: Invoker) -> TimerListener:
    """The listener of a timer function; HostError when its schedule does not parse."""
    trigger = spec.trigger
    where = f"function {spec.name}, binding {trigger.get('name')!r} ({spec.trigger_type})"
    try:
        schedule = Schedule.parse(str(trigger.get("schedule", "")))
    except ValueError as exc:
        raise HostError(f"{where}: {exc}") from exc
    return TimerListener(spec, invoker, schedule, bool(trigger.get("runOnStartup")))


class TimerListener(Listener):
    """Timer trigger semantics: NCRONTAB in UTC, run on startup, past due, one at a time."""

    def __init__(
        self, spec: FunctionSpec, invoker: Invoker, schedule: Schedule, run_on_startup: bool
    ) -> None:
        super().__init__(f"{THREAD_PREFIX}-timer-{spec.name}")
        self._spec = spec
        self._invoker = invoker
        self._schedule = schedule
        self._run_on_startup = run_on_startup
        self._last: datetime | None = None

    def _run(self) -> None:
        now = datetime.now(UTC)
        due = self._schedule.next_after(now)
        if self._run_on_startup:
            self._fire(now, past_due=False, following=due)
        while True:
            remaining = (due - datetime.now(UTC)).total_seconds()
            if self._stopping.wait(timeout=max(0.0, remaining)):
                return
            if datetime.now(UTC) < due:
                continue  # woke a little early
            started = datetime.now(UTC)
            following = self._schedule.next_after(due)
            self._fire(due, past_due=started - due > PAST_DUE_TOLERANCE, following=following)
            # Occurrences missed while it ran collapse into one late run, as in Azure.
            finished = datetime.now(UTC)
            while (after := self._schedule.next_after(following)) <= finished:
                following = after
            due = following

    def _fire(self, due: datetime, *, past_due: bool, following: datetime) -> None:
        if self.disabled():
            logger.info(
                "function %s is disabled: its occurrence at %s is not run",
                self._spec.name,
                due.isoformat(timespec="seconds"),
            )
            return
        now = datetime.now(UTC)
        request = TimerRequest(
            past_due=past_due,
            schedule_status={
                "Last": (self._last or datetime.min.replace(tzinfo=UTC)).isoformat(),
                "Next": following.isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        self._last = due
        future = self._invoker.invoke(self._spec, lambda: request)
        with contextlib.suppress(Exception):  # the invoker logged the outcome
            future.result()
