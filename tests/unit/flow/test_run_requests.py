"""Requesting runs (exporter/flow/run_requests.py): one run per destination that selected the
segment, idempotent per delivery; the timer's re-exports and the full-refresh cadence."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from exporter.flow import poison, run_requests
from exporter.model.messages import EXPORT_REQUESTS, ExportRequest
from exporter.model.versions import SnapshotVersion
from tests.support.memory_flow import MemoryWorld, segment_csv

TICK = datetime(2026, 11, 25, 2, tzinfo=UTC)


def test_a_snapshot_makes_one_queued_run_per_destination_that_selected_its_segment(
    world: MemoryWorld,
) -> None:
    world.destination()
    world.destination(name="sales", segments=["vip", "loyal"])
    world.destination(name="other", segments=["vip"])
    version = world.drop("loyal/a.csv", segment_csv(5))
    run_ids = run_requests.request_exports(world.svc, version, "blob")
    runs = {world.run(r).destination: world.run(r) for r in run_ids}
    assert sorted(runs) == ["marketing", "sales"]
    for run in runs.values():
        assert (run.state, run.segment, run.snapshot, run.etag) == (
            "queued",
            "loyal",
            "loyal/a.csv",
            version.etag,
        )
        assert run.request_queued and run.list_id == world.list_id
    requests = world.queued(EXPORT_REQUESTS)
    assert sorted((r.run_id, r.destination) for r in requests) == sorted(
        (r.run_id, r.destination) for r in runs.values()
    )
    assert all(isinstance(r, ExportRequest) and r.trigger == "blob" for r in requests)


def test_a_redelivered_blob_makes_no_new_run_and_no_new_request(world: MemoryWorld) -> None:
    world.destination()
    version = world.drop("loyal/a.csv", segment_csv(5))
    (run_id,) = run_requests.request_exports(world.svc, version, "blob")
    assert run_requests.request_exports(world.svc, version, "blob") == []
    assert len(world.queued(EXPORT_REQUESTS)) == 1
    changed = world.drop("loyal/a.csv", segment_csv(6))  # a new version is a new run
    (other,) = run_requests.request_exports(world.svc, changed, "blob")
    assert other != run_id


def test_a_request_whose_queueing_died_is_queued_by_the_redelivery(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    version = world.drop("loyal/a.csv", segment_csv(5))
    real = world.storage.send

    def dies(queue: str, message: object, *, delay: float = 0) -> None:
        raise ConnectionError("the worker died")

    monkeypatch.setattr(world.storage, "send", dies)
    with pytest.raises(ConnectionError):
        run_requests.request_exports(world.svc, version, "blob")
    (run,) = world.ledger.runs()
    assert not run.request_queued
    monkeypatch.setattr(world.storage, "send", real)
    assert run_requests.request_exports(world.svc, version, "blob") == [run.run_id]
    assert [r.run_id for r in world.queued(EXPORT_REQUESTS)] == [run.run_id]
    assert world.run(run.run_id).request_queued


def test_only_names_the_destinations_to_export_to(world: MemoryWorld) -> None:
    world.destination()
    world.destination(name="sales")
    version = world.drop("loyal/a.csv", segment_csv(5))
    (run_id,) = run_requests.request_exports(world.svc, version, "api", only=["sales"])
    assert world.run(run_id).destination == "sales"


def test_the_request_carries_the_runs_options(world: MemoryWorld) -> None:
    world.destination()
    version = world.drop("loyal/a.csv", segment_csv(5))
    run_requests.request_exports(
        world.svc, version, "cli", full_refresh=True, allow_mass_removal=True, verify=True
    )
    (request,) = world.queued(EXPORT_REQUESTS)
    assert (request.full_refresh, request.allow_mass_removal, request.verify) == (True, True, True)
    assert request.snapshot_time == version.last_modified
    assert world.only_run().full_refresh


def test_run_ids_are_readable_and_stable_for_one_blob_version() -> None:
    version = SnapshotVersion("loyal/a.csv", '"0x1"', datetime(2026, 11, 24, 9, 30, tzinfo=UTC), 1)
    blob_id = run_requests.make_run_id("marketing", version, "blob", TICK)
    assert blob_id.startswith("20261124T093000-")
    assert blob_id == run_requests.make_run_id("marketing", version, "blob", TICK + timedelta(1))
    assert blob_id != run_requests.make_run_id("sales", version, "blob", TICK)
    timer = run_requests.make_run_id("marketing", version, "timer", TICK)
    assert timer.startswith("20261125T020000-")
    assert timer == run_requests.make_run_id("marketing", version, "timer", TICK)
    assert timer != run_requests.make_run_id("marketing", version, "timer", TICK + timedelta(1))
    api = run_requests.make_run_id("marketing", version, "api", TICK)
    assert api != run_requests.make_run_id("marketing", version, "api", TICK)  # each a new run
    assert json.dumps(blob_id)


def test_a_snapshots_segment_is_its_folder_or_its_cdm_entity() -> None:
    assert run_requests.segment_of("loyal/2026-11-24.csv") == "loyal"
    assert run_requests.segment_of("ci/BlobExport/model.json#HighValue") == "HighValue"


def test_the_timer_re_exports_the_latest_snapshot_of_each_segment_once_per_tick(
    world: MemoryWorld,
) -> None:
    world.destination(segments=["loyal", "vip"])
    world.drop("loyal/old.csv", segment_csv(5))
    world.drop("loyal/new.csv", segment_csv(7))
    world.drop("vip/x.csv", segment_csv(3))
    world.drop("vip/model.json", "{}")  # not a snapshot file
    first = run_requests.refresh(world.svc, TICK)
    assert sorted(world.run(r).snapshot for r in first) == ["loyal/new.csv", "vip/x.csv"]
    assert {world.run(r).trigger for r in first} == {"timer"}
    assert run_requests.refresh(world.svc, TICK) == []  # the same tick again: nothing new
    assert len(run_requests.refresh(world.svc, TICK + timedelta(hours=1))) == 2


def test_the_timer_skips_a_destination_without_consent_and_says_so(
    world: MemoryWorld, caplog: pytest.LogCaptureFixture
) -> None:
    world.destination(consent=None)
    world.drop("loyal/a.csv", segment_csv(5))
    assert run_requests.refresh(world.svc, TICK) == []
    assert world.ledger.runs() == []
    assert "destination marketing has no recorded data-privacy consent" in caplog.text


def test_every_third_run_is_a_full_refresh_when_the_destination_asks(world: MemoryWorld) -> None:
    world.destination(full_refresh_every=3)
    world.arrive("loyal/a.csv", segment_csv(20))
    world.pump()
    seen = [(world.latest().full_refresh, world.latest().sent)]
    for hour in range(1, 7):
        run_requests.refresh(world.svc, TICK + timedelta(hours=hour))
        world.pump()
        assert world.latest().state == "succeeded"
        seen.append((world.latest().full_refresh, world.latest().sent))
    # the first sends all (all new); two deltas, a full refresh, two deltas, a full refresh
    assert seen == [
        (False, 20),
        (False, 0),
        (False, 0),
        (True, 20),
        (False, 0),
        (False, 0),
        (True, 20),
    ]


def test_a_failed_run_does_not_count_towards_the_next_full_refresh(world: MemoryWorld) -> None:
    world.destination(full_refresh_every=2, verify_up_to=0, verify_every=0)
    world.arrive("loyal/a.csv", segment_csv(20))
    world.pump()
    world.arrive("loyal/a.csv", segment_csv(20).replace(",Name1,", ",Changed1,"))
    world.plan_queued()  # not due: a delta run, which fails
    for message in world.take_batches():
        poison.batch_poisoned(world.svc, message)
    world.pump()
    assert (world.latest().full_refresh, world.latest().state) == (False, "failed")
    run_requests.refresh(world.svc, TICK)  # still not due: the failed run did not count
    world.pump()
    assert (world.latest().full_refresh, world.latest().sent) == (False, 1)
    run_requests.refresh(world.svc, TICK + timedelta(hours=1))  # due now
    world.pump()
    assert (world.latest().full_refresh, world.latest().sent, world.latest().state) == (
        True,
        20,
        "succeeded",
    )
