"""One run at a time per destination x segment, the newer snapshot winning
(exporter/flow/slots.py): an older snapshot in flight makes a newer one wait, a newer one exported
or in flight makes an older one skip; the slot's mark and cadence counters move only for runs
that succeeded."""

from __future__ import annotations

from datetime import timedelta

import pytest

from exporter.flow import arrivals, run_requests, slots
from exporter.model.messages import EXPORT_REQUESTS, ExportRequest
from exporter.model.runs import set_fields, utcnow
from exporter.model.versions import SnapshotVersion
from tests.support.memory_flow import MemoryWorld, emails, people, segment_csv


def request(world: MemoryWorld, name: str, data: str) -> ExportRequest:
    """A run of this snapshot, requested; its export request, taken off the queue."""
    run_requests.request_exports(world.svc, world.drop(name, data), "blob")
    (message,) = world.take(EXPORT_REQUESTS)
    return message


def test_a_free_slot_is_taken_and_a_repeat_by_its_holder_changes_nothing(
    world: MemoryWorld,
) -> None:
    world.destination()
    first = request(world, "loyal/a.csv", segment_csv(3))
    assert slots.take(world.svc, first) is None
    slot = world.ledger.get_slot("marketing", "loyal")
    assert (slot.run_id, slot.snapshot) == (first.run_id, "loyal/a.csv")
    assert slots.take(world.svc, first) is None
    assert world.ledger.get_slot("marketing", "loyal").updated_at == slot.updated_at


def test_a_newer_snapshot_waits_for_an_older_one_in_flight(world: MemoryWorld) -> None:
    world.destination()
    older = request(world, "loyal/a.csv", segment_csv(3))
    newer = request(world, "loyal/b.csv", segment_csv(4))
    assert slots.take(world.svc, older) is None
    assert slots.take(world.svc, newer) == "wait"
    assert world.ledger.get_slot("marketing", "loyal").run_id == older.run_id


def test_an_older_snapshot_skips_when_a_newer_one_is_in_flight_or_exported(
    world: MemoryWorld,
) -> None:
    world.destination()
    older = request(world, "loyal/a.csv", segment_csv(3))
    newer = request(world, "loyal/b.csv", segment_csv(4))
    assert slots.take(world.svc, newer) is None
    assert slots.take(world.svc, older) == (
        "a newer snapshot of this segment is being exported to this destination"
    )
    world.ledger.update_run(newer.run_id, lambda r: set_fields(r, state="succeeded"))
    world.ledger.update_slot(
        "marketing",
        "loyal",
        lambda s: set_fields(
            s, run_id="", synced_time=newer.snapshot_time, synced_snapshot=newer.snapshot
        ),
    )
    assert slots.take(world.svc, older) == (
        "a newer snapshot of this segment was already exported to this destination"
    )


def test_a_holder_that_ended_or_stopped_moving_gives_the_slot_up(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    older = request(world, "loyal/a.csv", segment_csv(3))
    newer = request(world, "loyal/b.csv", segment_csv(4))
    slots.take(world.svc, older)
    world.ledger.update_run(older.run_id, lambda r: set_fields(r, state="failed"))
    assert slots.take(world.svc, newer) is None
    third = request(world, "loyal/c.csv", segment_csv(5))
    assert slots.take(world.svc, third) == "wait"
    later = utcnow() + slots.STALE_HOLDER + timedelta(minutes=1)  # the holder's worker died
    monkeypatch.setattr(slots, "utcnow", lambda: later)
    assert slots.take(world.svc, third) is None
    assert world.ledger.get_slot("marketing", "loyal").run_id == third.run_id


def test_snapshots_are_ordered_by_time_then_by_name() -> None:
    at = utcnow()
    assert slots.order(at, "loyal/b.csv") > slots.order(at, "loyal/a.csv")
    assert slots.order(at, "loyal/a.csv") > slots.order(at - timedelta(seconds=1), "loyal/z.csv")
    assert slots.order(None, "x") < slots.order(at, "a")


def test_release_moves_the_mark_and_the_counters_for_a_succeeded_run_once(
    world: MemoryWorld,
) -> None:
    world.destination()
    (run_id,) = world.arrive("loyal/a.csv", segment_csv(5))
    world.pump()
    run = world.run(run_id)
    slot = world.ledger.get_slot("marketing", "loyal")
    assert (slot.run_id, slot.synced_snapshot, slot.synced_run) == ("", "loyal/a.csv", run_id)
    assert (slot.syncs_since_full, slot.syncs_since_verify) == (0, 0)  # sent all, looked
    slots.release(world.svc, run)  # a repeat counts nothing
    assert world.ledger.get_slot("marketing", "loyal") == slot


def test_a_failed_run_gives_the_slot_back_without_moving_the_mark(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(5))
    world.pump()
    mark = world.ledger.get_slot("marketing", "loyal")
    world.sendgrid.store.delete_list(world.list_id)  # the next run fails: its list is gone
    world.arrive("loyal/b.csv", segment_csv(6))
    world.pump()
    assert world.latest().state == "failed"
    slot = world.ledger.get_slot("marketing", "loyal")
    assert slot.run_id == ""
    assert (slot.synced_snapshot, slot.synced_run) == (mark.synced_snapshot, mark.synced_run)


def test_two_snapshots_racing_never_interleave_and_the_newer_wins(world: MemoryWorld) -> None:
    world.destination(sync_mode="mirror")
    world.arrive("loyal/a.csv", people(*range(100)))
    world.pump()
    older = world.drop("loyal/b.csv", people(*range(60)))
    newer = world.drop("loyal/c.csv", people(*range(30, 90)))
    arrivals.on_snapshot(world.svc, older)
    arrivals.on_snapshot(world.svc, newer)
    world.plan_queued()  # both planners run before any batch is sent
    by_snapshot = {r.snapshot: r for r in world.ledger.runs()}
    assert by_snapshot["loyal/b.csv"].state == "sending"
    assert by_snapshot["loyal/c.csv"].state == "queued"  # waits for the older one
    (waiting,) = world.storage.queues[EXPORT_REQUESTS]
    assert waiting.delay == slots.SLOT_WAIT
    world.pump()
    by_snapshot = {r.snapshot: r for r in world.ledger.runs()}
    assert by_snapshot["loyal/b.csv"].state == "succeeded"
    assert by_snapshot["loyal/c.csv"].state == "succeeded"
    older_id = by_snapshot["loyal/b.csv"].run_id
    older_ended = max(d.at for d in world.deliveries if d.message.run_id == older_id)
    newer_planned = [
        d.at for d in world.delivered(EXPORT_REQUESTS) if d.message.snapshot == "loyal/c.csv"
    ]
    assert len(newer_planned) > 1 and newer_planned[-1] > older_ended  # it waited, then went
    assert world.emails() == emails(range(30, 90))


def test_an_older_snapshot_arriving_late_is_skipped(world: MemoryWorld) -> None:
    world.destination(sync_mode="mirror")
    old = world.drop("loyal/monday.csv", people(*range(10)))
    world.arrive("loyal/tuesday.csv", people(*range(5)))
    world.pump()
    arrivals.on_snapshot(world.svc, old)  # Monday's file, delivered late
    world.pump()
    run = world.latest()
    assert (run.state, run.snapshot) == ("skipped", "loyal/monday.csv")
    assert "a newer snapshot of this segment was already exported" in run.error
    assert world.emails() == emails(range(5))


def test_snapshots_written_in_the_same_second_are_ordered_by_name(world: MemoryWorld) -> None:
    world.destination(sync_mode="mirror")
    monday = world.drop("loyal/2026-11-24T0900.csv", people(*range(10)))
    data = people(*range(5, 15)).encode()
    tuesday = SnapshotVersion("loyal/2026-11-24T0901.csv", '"t"', monday.last_modified, len(data))
    world.storage.snapshots[tuesday.name] = (data, tuesday)  # the same Last-Modified second
    arrivals.on_snapshot(world.svc, tuesday)
    world.pump()
    arrivals.on_snapshot(world.svc, monday)
    world.pump()
    assert (world.latest().snapshot, world.latest().state) == (monday.name, "skipped")
    assert world.emails() == emails(range(5, 15))
