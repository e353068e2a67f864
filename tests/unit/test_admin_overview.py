"""The console's overview (exporter/admin/overview.py) and a run's timeline
(exporter/admin/timeline.py), on the real flow over the in-memory fakes: sizes per run, the
next refresh from REFRESH_SCHEDULE, what is failing now; a run's steps in time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exporter.admin.overview import STUCK_AFTER, next_refresh, overview
from exporter.admin.timeline import MAX_BATCH_STEPS, Step, timeline
from exporter.model.notifications import NotificationRecord
from exporter.model.runs import BatchRecord, RunRecord
from tests.support.memory_flow import MemoryWorld, people

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
NIGHTLY = "0 0 2 * * *"


def nightly_after(moment: datetime) -> datetime:
    """The first 02:00 UTC after `moment`."""
    at = moment.replace(hour=2, minute=0, second=0, microsecond=0)
    return at if at > moment else at + timedelta(days=1)


@pytest.fixture
def world() -> MemoryWorld:
    return MemoryWorld.create(max_batch_contacts=40)


def export(world: MemoryWorld, *numbers: int) -> RunRecord:
    (run_id,) = world.arrive(f"loyal/{len(world.ledger.runs()):03d}.csv", people(*numbers))
    world.pump()
    return world.run(run_id)


def a_record(run_id: str, **fields: object) -> RunRecord:
    values: dict[str, object] = {
        "run_id": run_id,
        "destination": "marketing",
        "segment": "loyal",
        "snapshot": "loyal/x.csv",
        "etag": "e",
        "trigger": "blob",
    }
    values.update(fields)
    return RunRecord(**values)  # type: ignore[arg-type]


# --- the overview --------------------------------------------------------------------------------


def test_each_run_charts_the_segment_against_the_list_oldest_first(world: MemoryWorld) -> None:
    world.destination()
    first = export(world, *range(30))
    second = export(world, *range(45))
    third = export(world, *range(10, 45))  # 10 fewer: upsert mode keeps them on the list
    now = datetime.now(UTC)
    (pair,) = overview(world.svc, schedule=NIGHTLY, now=now)
    assert (pair.destination, pair.display_name, pair.segment) == (
        "marketing",
        "Marketing",
        "loyal",
    )
    assert [p.run_id for p in pair.points] == [first.run_id, second.run_id, third.run_id]
    assert [(p.segment_size, p.list_size) for p in pair.points] == [(30, 30), (45, 45), (35, 45)]
    assert [p.expected for p in pair.points] == [30, 45, 35]  # the segment's members
    assert all(p.state == "succeeded" for p in pair.points)
    assert pair.last_run is not None and pair.last_run.run_id == third.run_id
    assert pair.last_ended is not None and pair.last_ended.run_id == third.run_id
    assert pair.next_refresh.at == nightly_after(now)
    assert pair.problems == []


def test_the_chart_keeps_the_newest_runs_and_leaves_out_those_that_never_planned(
    world: MemoryWorld,
) -> None:
    world.destination()
    runs = [export(world, *range(n)) for n in (5, 6, 7, 8)]
    now = datetime.now(UTC) + timedelta(seconds=1)
    world.ledger.create_run(a_record("skipped", state="skipped", created_at=now))
    (pair,) = overview(world.svc, schedule=NIGHTLY, now=now, runs=3)
    assert [p.segment_size for p in pair.points] == [6, 7, 8]
    assert pair.last_run is not None and pair.last_run.run_id == "skipped"
    assert pair.last_ended is not None and pair.last_ended.run_id == runs[-1].run_id


def test_every_selected_segment_gets_a_row_even_before_its_first_run(world: MemoryWorld) -> None:
    world.destination(segments=["loyal", "lapsed"])
    world.destination(name="billing", display_name="Billing", segments=["vip"])
    export(world, 1, 2, 3)
    pairs = overview(world.svc, schedule=NIGHTLY, now=NOW)
    assert [(p.destination, p.segment) for p in pairs] == [
        ("billing", "vip"),
        ("marketing", "loyal"),
        ("marketing", "lapsed"),
    ]
    lapsed = pairs[2]
    assert (lapsed.points, lapsed.last_run, lapsed.problems) == ([], None, [])


def test_a_failed_last_run_is_failing_now_until_a_run_ends_well(world: MemoryWorld) -> None:
    world.destination()
    export(world, *range(10))
    world.sendgrid.store.delete_list(world.list_id)
    failed = export(world, *range(12))
    assert failed.state == "failed"
    now = datetime.now(UTC) + timedelta(seconds=1)
    (pair,) = overview(world.svc, schedule=NIGHTLY, now=now)
    (problem,) = pair.problems
    assert (problem.kind, problem.run_id) == ("run_failed", failed.run_id)
    assert problem.message.startswith("the last run failed: SendGrid has no list")
    assert [p.state for p in pair.points] == ["succeeded"]  # it failed before reading a row

    # A run in flight does not clear it; one that ends well does.
    world.ledger.create_run(a_record("later", state="sending", created_at=now, updated_at=now))
    (pair,) = overview(world.svc, schedule=NIGHTLY, now=now)
    assert [p.kind for p in pair.problems] == ["run_failed"]
    later = now + timedelta(seconds=1)
    done = a_record("done", state="succeeded", planned=True, created_at=later, finished_at=later)
    world.ledger.create_run(done)
    (pair,) = overview(world.svc, schedule=NIGHTLY, now=later)
    assert pair.problems == []


def test_drift_and_failed_notifications_of_the_last_run_are_failing_now(world: MemoryWorld) -> None:
    world.destination(sync_mode="mirror")
    notes = [
        NotificationRecord("ops", "webhook", "list_drift", state="delivered", attempts=1),
        NotificationRecord(
            "chat",
            "slack",
            "run_failed",
            state="failed",
            attempts=8,
            error="HTTP 500 from a@b.example",
        ),
    ]
    drifted = a_record(
        "drifted",
        state="failed",
        error="the list still differs",
        planned=True,
        looks=2,
        missing=3,
        changed=0,
        extra=1,
        sync_mode="mirror",
        notifications=notes,
    )
    world.ledger.create_run(drifted)
    (pair,) = overview(world.svc, schedule=NIGHTLY, now=NOW)
    kinds = {p.kind: p.message for p in pair.problems}
    assert set(kinds) == {"run_failed", "drift", "notification_failed"}
    assert kinds["drift"] == (
        "the list differs from the segment: 3 missing, 0 with other field values, "
        "1 not in the segment"
    )
    assert (
        kinds["notification_failed"]
        == "notification run_failed to chat failed: HTTP 500 from ***@b.example"
    )


def test_a_first_look_that_saw_a_difference_is_not_drift_yet(world: MemoryWorld) -> None:
    world.destination()
    world.ledger.create_run(a_record("r", state="succeeded", planned=True, looks=1, missing=3))
    (pair,) = overview(world.svc, schedule=NIGHTLY, now=NOW)
    assert pair.problems == []


def test_a_run_that_recorded_nothing_for_hours_is_stuck_unless_its_batches_moved(
    world: MemoryWorld,
) -> None:
    world.destination(segments=["loyal", "lapsed"])
    old = NOW - STUCK_AFTER - timedelta(minutes=5)
    world.ledger.create_run(a_record("stuck", state="sending", created_at=old, updated_at=old))
    world.ledger.put_batches("stuck", [BatchRecord("stuck", 0, 10, 100, updated_at=old)])
    world.ledger.create_run(
        a_record("busy", segment="lapsed", state="confirming", created_at=old, updated_at=old)
    )
    recent = NOW - timedelta(minutes=2)
    world.ledger.put_batches(
        "busy", [BatchRecord("busy", 0, 10, 100, state="accepted", updated_at=recent)]
    )
    loyal, lapsed = overview(world.svc, schedule=NIGHTLY, now=NOW)
    (problem,) = loyal.problems
    assert (problem.kind, problem.run_id) == ("stuck", "stuck")
    assert problem.message == "run sending with nothing recorded for 3 h 5 min"
    assert lapsed.problems == []
    assert loyal.points == []  # a run in flight is not charted


def test_next_refresh_follows_the_schedule_as_azure_reads_it() -> None:
    assert next_refresh(NIGHTLY, NOW).at == datetime(2026, 11, 25, 2, tzinfo=UTC)
    assert next_refresh("0 */15 * * * *", NOW).at == datetime(2026, 11, 24, 10, 45, tzinfo=UTC)
    assert next_refresh("0 0 0 13 * FRI", NOW).at == datetime(2027, 8, 13, tzinfo=UTC)
    unset = next_refresh(None, NOW)
    assert (unset.at, unset.note) == (None, "not scheduled: REFRESH_SCHEDULE is not set")
    broken = next_refresh("every night", NOW)
    assert broken.at is None
    assert broken.note.startswith("not scheduled: invalid NCRONTAB schedule 'every night'")


def test_a_destination_without_consent_is_never_refreshed(world: MemoryWorld) -> None:
    world.destination(consent=None)
    (pair,) = overview(world.svc, schedule=NIGHTLY, now=NOW)
    assert pair.next_refresh.at is None
    assert pair.next_refresh.note == "not refreshed: no data-privacy consent recorded"


# --- a run's timeline -----------------------------------------------------------------------------


def whats(steps: list[Step]) -> list[str]:
    return [s.what for s in steps]


def test_a_verified_run_reads_from_request_to_its_end(world: MemoryWorld) -> None:
    world.destination()
    run = export(world, *range(90))  # 3 batches of at most 40
    steps = timeline(run, world.batches(run.run_id))
    assert whats(steps) == [
        "snapshot written",
        "requested",
        "planned",
        "batch 0 confirmed",
        "batch 1 confirmed",
        "batch 2 confirmed",
        "1 look at the list",
        "finished: succeeded",
    ]
    assert steps[2].at is None  # the ledger keeps no time for it
    assert steps[2].detail == (
        "90 rows read: 90 valid, 0 rejected, 0 duplicates; 0 unchanged, 90 to send in 3 batches"
    )
    assert steps[3].detail == "40 contacts: created 40, updated 0"
    assert steps[6].detail == "the list holds exactly the segment"
    assert steps[-1].tone == "good"
    timed = [s.at for s in steps if s.at is not None]
    assert timed == sorted(timed)


def test_a_healed_run_shows_its_looks_before_the_heal_and_the_heal_batches_after(
    world: MemoryWorld,
) -> None:
    world.destination(sync_mode="mirror")
    export(world, *range(30))
    world.sendgrid.hand_remove(world.list_id, "user3@example.com")
    world.sendgrid.hand_upsert([world.list_id], {"email": "outsider@example.com"})
    run = export(world, *range(30))
    assert run.heals == 1
    shown = whats(timeline(run, world.batches(run.run_id)))
    tail = shown[shown.index("3 looks at the list") :]
    assert tail[:2] == ["3 looks at the list", "healing the list"]
    # In the order they settled: the removal at once, the upsert once its import job did.
    assert tail[2:] == [
        "heal removal batch 1 done",
        "heal batch 0 confirmed",
        "finished: succeeded",
    ]


def test_a_run_in_flight_ends_with_where_it_stands(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", people(*range(50)))
    world.pump(until=lambda: world.only_run().state == "confirming")
    run = world.only_run()
    steps = timeline(run, world.batches(run.run_id))
    assert steps[-1].what == "now confirming"
    assert steps[-1].tone == "active"
    assert any(s.what.endswith(" sent") and "awaiting its import" in s.detail for s in steps)


def test_many_batches_are_summed_up_but_every_failed_one_is_shown() -> None:
    start = datetime(2026, 11, 24, 10, tzinfo=UTC)
    batches = [
        BatchRecord(
            "r",
            i,
            100,
            1000,
            kind="remove",
            state="failed" if i in (3, 70) else "done",
            removed=100,
            error="list gone for ann@example.com" if i in (3, 70) else "",
            updated_at=start + timedelta(seconds=i),
        )
        for i in range(100)
    ]
    run = a_record(
        "r",
        state="failed",
        planned=True,
        created_at=start,
        finished_at=start + timedelta(minutes=5),
    )
    steps = timeline(run, batches)
    batch_steps = [s for s in steps if "batch" in s.what]
    assert len(batch_steps) == MAX_BATCH_STEPS + 2  # the first 40, failed 70, the rest summed
    assert "removal batch 70 failed" in whats(batch_steps)
    assert batch_steps[-1].what == "59 more batches"
    assert batch_steps[-1].detail == "59 confirmed"
    failed = next(s for s in steps if s.what == "removal batch 3 failed")
    assert failed.detail == "list gone for ***@example.com"
    assert failed.tone == "bad"


def test_notifications_follow_the_end_with_their_outcome() -> None:
    end = datetime(2026, 11, 24, 10, 5, tzinfo=UTC)
    notes = [
        NotificationRecord(
            "ops",
            "webhook",
            "list_ready",
            state="delivered",
            attempts=2,
            status=204,
            queued_at=end.isoformat(),
            updated_at=(end + timedelta(seconds=9)).isoformat(),
        ),
        NotificationRecord(
            "chat", "slack", "list_ready", state="failed", attempts=1, status=404, error="HTTP 404"
        ),
    ]
    run = a_record("r", state="succeeded", created_at=end - timedelta(minutes=5), finished_at=end)
    run.notifications = notes
    steps = timeline(run, [])
    assert whats(steps) == [
        "requested",
        "finished: succeeded",
        "notification list_ready to ops (webhook) queued",
        "notification list_ready to ops (webhook) delivered",
        "notification list_ready to chat (slack) failed",
    ]
    assert steps[3].detail == "2 attempts, HTTP 204"
    assert steps[4].at is None and steps[4].detail == "1 attempt: HTTP 404"
