"""The poison handlers (exporter/flow/poison.py): a step that failed on every delivery ends what it
was doing, recording the step and its last error where people look; a handler never raises.
Delivered as the Functions host would (`pump(host=True)`: five deliveries, then the poison queue).
"""

from __future__ import annotations

import itertools
import logging

import pytest

from exporter.flow import finish, poison
from exporter.model.messages import (
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    LIST_CHECKS,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
)
from tests.support.memory_flow import (
    MAX_DEQUEUE_COUNT,
    UNVERIFIED,
    VISIBILITY_TIMEOUT,
    MemoryWorld,
    segment_csv,
)

GHOST = "20261124T000000-0123456789ab"


def broken(*args: object, **kwargs: object) -> None:
    raise OSError("storage is unreachable")


def test_planning_failing_on_every_delivery_fails_the_run_with_the_last_error(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))
    monkeypatch.setattr(world.storage, "write_batch", broken)
    world.pump(host=True)
    run = world.only_run()
    assert run.state == "failed"
    assert run.error == (
        "planning failed on every attempt; the last: planning attempt failed: "
        "OSError: storage is unreachable"
    )
    tries = world.delivered(EXPORT_REQUESTS)
    assert [bool(d.error) for d in tries] == [True] * MAX_DEQUEUE_COUNT
    assert {b.at - a.at for a, b in itertools.pairwise(tries)} == {VISIBILITY_TIMEOUT}
    assert world.sendgrid.count("upsert") == 0


def test_a_batch_failing_on_every_delivery_fails_with_the_last_error(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination(**UNVERIFIED)
    world.arrive("loyal/a.csv", segment_csv(10))
    world.plan_queued()
    monkeypatch.setattr(world.storage, "open_batch", broken)
    world.pump(host=True)
    run = world.only_run()
    assert run.state == "failed"
    assert "batch 0: sending failed on every attempt; the last: OSError" in run.error
    (batch,) = world.batches(run.run_id)
    assert (batch.state, batch.attempts) == ("failed", MAX_DEQUEUE_COUNT)
    assert len(world.delivered(CONTACT_BATCHES)) == MAX_DEQUEUE_COUNT


def test_a_job_check_failing_on_every_delivery_fails_its_batch(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination(**UNVERIFIED)
    world.arrive("loyal/a.csv", segment_csv(10))
    world.plan_queued()
    world.deliver_all(CONTACT_BATCHES)

    def status(job_id: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(world.sendgrid, "import_status", status)
    world.pump(host=True)
    (batch,) = world.batches(world.only_run().run_id)
    assert batch.state == "failed"
    assert batch.error == (
        "the import job could not be checked on any attempt; the last: RuntimeError: a bug"
    )
    assert world.only_run().state == "failed"
    assert len(world.delivered(IMPORT_JOBS)) == MAX_DEQUEUE_COUNT


def test_a_look_failing_on_every_delivery_ends_the_run_unverified(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))
    world.pump(until=lambda: world.only_run().state == "verifying")
    monkeypatch.setattr(world.storage, "read_pending_index", broken)
    world.pump(host=True)
    run = world.only_run()
    assert (run.state, run.verified) == ("succeeded", False)
    assert "the look at the list failed on every attempt" in run.verify_note
    assert len([d for d in world.delivered(LIST_CHECKS) if d.error]) == MAX_DEQUEUE_COUNT


def test_messages_naming_runs_or_batches_that_do_not_exist_are_logged_and_dropped(
    world: MemoryWorld, caplog: pytest.LogCaptureFixture
) -> None:
    world.destination()
    (run_id,) = world.arrive("loyal/a.csv", segment_csv(3))
    (request,) = world.queued(EXPORT_REQUESTS)
    with caplog.at_level(logging.ERROR):
        poison.request_poisoned(world.svc, request.model_copy(update={"run_id": GHOST}))
        poison.batch_poisoned(world.svc, BatchMessage(run_id=GHOST, batch=0))
        poison.job_poisoned(world.svc, JobCheck(run_id=run_id, batch=7, job_id="j"))
        poison.list_check_poisoned(world.svc, ListCheck(run_id=GHOST, look=0))
    dropped = [r.getMessage() for r in caplog.records]
    assert len(dropped) == 4 and all("queue message dropped" in m for m in dropped)
    assert f"run {GHOST} does not exist" in dropped[0]
    assert f"run {run_id} has no batch 7" in dropped[2]
    assert world.run(run_id).state == "queued"  # nothing changed


def test_a_stale_poisoned_look_changes_nothing(world: MemoryWorld) -> None:
    world.destination()
    (run_id,) = world.arrive("loyal/a.csv", segment_csv(3))
    world.pump()
    ended = world.run(run_id)
    poison.list_check_poisoned(world.svc, ListCheck(run_id=run_id, look=0))
    assert world.run(run_id) == ended


def test_a_poison_handler_that_fails_logs_it_and_never_raises(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(3))
    (request,) = world.queued(EXPORT_REQUESTS)
    assert isinstance(request, ExportRequest)
    monkeypatch.setattr(finish, "fail_run", broken)
    with caplog.at_level(logging.ERROR):
        poison.request_poisoned(world.svc, request)  # no exception
    assert "the handler failed" in caplog.text and "OSError: storage is unreachable" in caplog.text
    assert world.only_run().state == "queued"
