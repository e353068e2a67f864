"""The overview (the console's first page): per destination x selected segment, how the list
followed the segment over the last runs, when it was last and will next be refreshed, and what
is failing now.

From the ledger only (no SendGrid call): each run that planned records the segment's size
(`valid`: its valid contacts, each once), the members the list should hold from us (`members`)
and the list's size as SendGrid counted it when the run ended (`list_count`, None when unknown).
The next refresh is the timer's next occurrence (`REFRESH_SCHEDULE`, NCRONTAB, UTC, parsed as
Azure does: `exporter.core.ncrontab`). What is failing now (`Problem`): the last run that ended
failed; its last look at the list still found it different after SendGrid's lag (drift, the
rule of `exporter.model.runs.confirmed_difference`); one of its notifications failed; a run
that has not ended recorded nothing for `STUCK_AFTER` (what the flow takes for a dead run).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from exporter.core.ncrontab import Schedule
from exporter.core.redact import mask_emails
from exporter.flow.services import Services
from exporter.flow.slots import STALE_HOLDER
from exporter.model.destinations import Destination
from exporter.model.runs import RunRecord, confirmed_difference, differences

CHART_RUNS: Final = 12
"""Runs per destination x segment the overview charts (the newest)."""
STUCK_AFTER: Final[timedelta] = STALE_HOLDER
"""A run that has not ended and recorded nothing for this long is shown as stuck (the slot
takes such a holder for dead, so the next snapshot is exported past it)."""

ProblemKind = Literal["run_failed", "drift", "notification_failed", "stuck"]


@dataclass(frozen=True, slots=True)
class Point:
    """One run's sizes: the segment, what the list should hold from us, what SendGrid counted."""

    run_id: str
    at: datetime
    state: str
    segment_size: int
    expected: int
    list_size: int | None


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    message: str
    run_id: str


@dataclass(frozen=True, slots=True)
class Refresh:
    """The timer's next export of the pair: when, or why there is none."""

    at: datetime | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class PairOverview:
    destination: str
    display_name: str
    segment: str
    points: list[Point] = field(default_factory=list)
    """The last `CHART_RUNS` runs that planned, oldest first."""
    last_run: RunRecord | None = None
    """The newest run of the pair, whatever its state."""
    last_ended: RunRecord | None = None
    """The newest run that ended (skipped runs aside: they exported nothing)."""
    next_refresh: Refresh = Refresh(None, "not scheduled")
    problems: list[Problem] = field(default_factory=list)


def next_refresh(schedule: str | None, now: datetime) -> Refresh:
    """The next time the timer fires (`REFRESH_SCHEDULE`), or why it never does."""
    if not schedule or not schedule.strip():
        return Refresh(None, "not scheduled: REFRESH_SCHEDULE is not set")
    try:
        return Refresh(Schedule.parse(schedule.strip()).next_after(now))
    except ValueError as exc:
        return Refresh(None, f"not scheduled: {exc}")


def overview(
    svc: Services, *, schedule: str | None, now: datetime, runs: int = CHART_RUNS
) -> list[PairOverview]:
    """Every destination x selected segment (destinations by name, segments as selected)."""
    by_pair: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in svc.ledger.runs(limit=1_000_000):  # newest first
        by_pair[(run.destination, run.segment)].append(run)
    timer = next_refresh(schedule, now)
    pairs = []
    for destination in sorted(svc.destinations.all(), key=lambda d: d.name):
        for segment in destination.segments:
            found = by_pair.get((destination.name, segment), [])
            pairs.append(_pair(svc, destination, segment, found, timer=timer, now=now, runs=runs))
    return pairs


def _pair(
    svc: Services,
    destination: Destination,
    segment: str,
    found: list[RunRecord],
    *,
    timer: Refresh,
    now: datetime,
    runs: int,
) -> PairOverview:
    planned = [r for r in found if r.final and (r.planned or r.rows)][:runs]
    points = [
        Point(r.run_id, r.finished_at or r.updated_at, r.state, r.valid, r.members, r.list_count)
        for r in reversed(planned)
    ]
    ended = next((r for r in found if r.final and r.state != "skipped"), None)
    refresh = timer
    if destination.consent is None and timer.at is not None:
        refresh = Refresh(None, "not refreshed: no data-privacy consent recorded")
    return PairOverview(
        destination=destination.name,
        display_name=destination.display_name,
        segment=segment,
        points=points,
        last_run=found[0] if found else None,
        last_ended=ended,
        next_refresh=refresh,
        problems=_problems(svc, ended, [r for r in found if not r.final], now),
    )


def _problems(
    svc: Services, ended: RunRecord | None, active: list[RunRecord], now: datetime
) -> list[Problem]:
    problems: list[Problem] = []
    if ended is not None:
        if ended.state == "failed":
            reason = mask_emails(ended.error) or "no reason recorded"
            problems.append(Problem("run_failed", f"the last run failed: {reason}", ended.run_id))
        if confirmed_difference(ended):
            problems.append(
                Problem(
                    "drift",
                    f"the list differs from the segment: {differences(ended)}",
                    ended.run_id,
                )
            )
        for n in ended.notifications:
            if n.state == "failed":
                message = f"notification {n.event} to {n.target} failed: {mask_emails(n.error)}"
                problems.append(Problem("notification_failed", message, ended.run_id))
    for run in active:
        if now - run.updated_at < STUCK_AFTER:
            continue  # moved lately: no need to read its batches
        last = _last_change(svc, run)
        if now - last >= STUCK_AFTER:
            message = f"run {run.state} with nothing recorded for {_duration(now - last)}"
            problems.append(Problem("stuck", message, run.run_id))
    return problems


def _last_change(svc: Services, run: RunRecord) -> datetime:
    """The run's or one of its batches' last recorded change (batches move on their own)."""
    return max([run.updated_at, *(b.updated_at for b in svc.ledger.batches(run.run_id))])


def _duration(span: timedelta) -> str:
    minutes = int(span.total_seconds()) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min"
