"""How a run ends (exporter/flow/finish.py): settle once every batch has, read the list back or
end with the outcome the batches and looks say (succeeded, succeeded_with_errors, failed); then
commit, give the slot back and delete the run's contact data. Safe to repeat."""

from __future__ import annotations

import pytest

from exporter.flow import finish
from exporter.model.messages import LIST_CHECKS
from exporter.model.runs import BatchRecord, RunRecord, confirmed_difference
from exporter.ports.sendgrid import NotFound
from tests.support.memory_flow import UNVERIFIED, MemoryWorld, segment_csv

RUN = "20261124T000000-0123456789ab"


def run(**values: object) -> RunRecord:
    record = RunRecord(RUN, "marketing", "loyal", "loyal/a.csv", '"e"', "blob", members=10)
    for key, value in values.items():
        setattr(record, key, value)
    return record


def batch(index: int = 0, **values: object) -> BatchRecord:
    record = BatchRecord(RUN, index, 10, 100, state="done", requested=10, created=10)
    for key, value in values.items():
        setattr(record, key, value)
    return record


# --- outcome: pure -----------------------------------------------------------------------------


def test_every_batch_landed_and_sendgrid_took_every_contact_is_a_success() -> None:
    assert finish.outcome(run(), [batch(0), batch(1)]) == ("succeeded", "")
    assert finish.outcome(run(), []) == ("succeeded", "")  # nothing to send


def test_a_list_read_back_equal_is_a_success_whatever_happened_before() -> None:
    failed = batch(0, state="failed", error="boom")
    assert finish.outcome(run(verified=True, looks=3), [failed]) == ("succeeded", "")


def test_a_failed_batch_fails_an_unverified_run_naming_the_first() -> None:
    state, reason = finish.outcome(
        run(), [batch(0), batch(1, state="failed", error="HTTP 400"), batch(2, state="failed")]
    )
    assert state == "failed"
    assert reason == "2 of 3 batches failed; batch 1: HTTP 400"


def test_contacts_refused_one_by_one_are_errors_not_a_failure_unless_all_were() -> None:
    state, reason = finish.outcome(run(), [batch(0, errored=3, created=7)])
    assert state == "succeeded_with_errors"
    assert reason.startswith("SendGrid refused 3 contacts one by one")
    state, reason = finish.outcome(run(), [batch(0, errored=10, created=0)])
    assert (state, reason) == ("failed", "SendGrid refused every contact sent (10) one by one")


def test_a_difference_seen_twice_is_never_a_success() -> None:
    differs = run(looks=2, missing=2, changed=1, extra=0, heals=0)
    state, reason = finish.outcome(differs, [batch()])
    assert state == "failed"
    assert reason.startswith("the list differs: 2 missing, 1 with other field values")
    healed = run(looks=4, missing=2, changed=0, extra=0, heals=1)
    assert finish.outcome(healed, [batch()])[1].startswith(
        "the list still differs from the segment after healing: 2 missing"
    )


def test_what_still_differs_after_healing_being_what_sendgrid_refused_is_with_errors() -> None:
    healed = run(looks=4, missing=2, changed=1, extra=0, heals=1)
    heal_batch = batch(1, round=1, requested=3, created=0, errored=3)
    state, reason = finish.outcome(healed, [batch(0), heal_batch])
    assert state == "succeeded_with_errors"
    assert reason.startswith("SendGrid refused 3 contacts of the segment one by one")
    outsider = run(looks=4, missing=2, changed=1, extra=1, heals=1, sync_mode="mirror")
    assert finish.outcome(outsider, [batch(0), heal_batch])[0] == "failed"  # extra not refused
    everyone = run(looks=4, missing=10, changed=0, extra=0, heals=1)
    refused_all = batch(1, round=1, requested=10, created=0, errored=10)
    assert finish.outcome(everyone, [refused_all])[0] == "failed"  # nobody on the list


def test_a_first_look_that_differed_is_not_yet_a_confirmed_difference() -> None:
    assert not confirmed_difference(run(looks=1, missing=5))
    assert confirmed_difference(run(looks=2, missing=5))
    assert not confirmed_difference(run(looks=2, missing=0, changed=0, extra=0))
    assert not confirmed_difference(run(looks=2, missing=0, extra=3))  # upsert mode
    assert confirmed_difference(run(looks=2, missing=0, extra=3, sync_mode="mirror"))


def test_a_gone_list_says_what_to_do() -> None:
    reason = finish.list_gone("marketing", "L1")
    assert reason.startswith("SendGrid has no list L1 (destination 'marketing')")
    assert "destinations update marketing --list-name NAME" in reason


# --- settle, finish, fail_run on the memory world ---------------------------------------------


def planned_run(world: MemoryWorld, n: int = 10, **destination: object) -> str:
    world.destination(**destination)
    (run_id,) = world.arrive("loyal/a.csv", segment_csv(n))
    world.plan_queued()
    return run_id


def test_settle_waits_for_every_batch(world: MemoryWorld) -> None:
    run_id = planned_run(world, 50, **UNVERIFIED)
    assert finish.settle(world.svc, run_id) is None
    assert world.run(run_id).state == "sending"
    world.pump()
    assert world.run(run_id).state == "succeeded"


def test_a_verifying_run_settles_into_its_first_look_after_the_verify_delay() -> None:
    world = MemoryWorld.create(verify_delay=45.0)
    run_id = planned_run(world)
    for message in world.take_batches():
        world.deliver(message)
    world.advance(1)
    for check in world.take("import-jobs"):
        world.deliver(check)
    assert world.run(run_id).state == "verifying" and world.run(run_id).look_queued
    (look,) = world.storage.queues[LIST_CHECKS]
    assert look.delay == 45.0
    finish.settle(world.svc, run_id)  # a repeat queues no second look
    assert len(world.storage.queues[LIST_CHECKS]) == 1


def test_a_look_after_a_difference_waits_the_lag() -> None:
    world = MemoryWorld.create(verify_delay=45.0, verify_lag=500.0)
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(5))
    world.pump(until=lambda: world.only_run().looks == 1)
    assert world.only_run().looks == 1  # the first look found the list equal already
    world.sendgrid.list_lag = 120.0  # the next run's members show two minutes late
    world.arrive("loyal/b.csv", segment_csv(8))
    world.pump(until=lambda: world.latest().looks == 1 and world.latest().look_queued)
    (look,) = world.storage.queues[LIST_CHECKS]
    assert look.delay == 500.0


def test_finish_records_the_lists_count_and_the_drift(world: MemoryWorld) -> None:
    run_id = planned_run(world, **UNVERIFIED)
    world.sendgrid.hand_upsert([world.list_id], {"email": "outsider@example.com"})
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.list_count, run.drift, run.list_count_note) == ("succeeded", 11, 1, "")
    assert run.finished_at is not None and run.state_committed


@pytest.mark.parametrize(
    ("trouble", "note"),
    [
        ("gone", "SendGrid has no list"),
        ("failing", "SendGrid did not say how many contacts the list holds"),
    ],
)
def test_a_count_sendgrid_cannot_give_is_unknown_with_the_reason(
    world: MemoryWorld, trouble: str, note: str
) -> None:
    run_id = planned_run(world, **UNVERIFIED)
    for message in world.take_batches():
        world.deliver(message)
    if trouble == "gone":
        world.sendgrid.fail_next("list_count", NotFound("SendGrid: not found", status=404))
    else:
        world.sendgrid.break_next("list_count")
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.list_count, run.drift) == ("succeeded", None, None)
    assert run.list_count_note.startswith(note)


def test_finish_and_fail_run_end_a_run_once(world: MemoryWorld) -> None:
    run_id = planned_run(world, **UNVERIFIED)
    world.pump()
    ended = world.run(run_id)
    assert finish.finish(world.svc, run_id) == ended
    assert finish.fail_run(world.svc, run_id, "too late") == ended
    assert world.run(run_id) == ended
    with pytest.raises(KeyError):
        finish.finish(world.svc, "20261124T000000-000000000000")


def test_a_stopped_run_keeps_no_contact_data_and_its_late_batches_are_not_sent(
    world: MemoryWorld,
) -> None:
    run_id = planned_run(world, 50)
    messages = world.take_batches()
    assert world.run_files(run_id)
    ended = finish.fail_run(world.svc, run_id, "stopped by an operator")
    assert (ended.state, ended.error, ended.state_committed) == (
        "failed",
        "stopped by an operator",
        True,
    )
    assert world.run_files(run_id) == []
    assert world.ledger.get_slot("marketing", "loyal").run_id == ""
    for message in messages:  # delivered late: the run has ended
        world.deliver(message)
    assert world.sendgrid.count("upsert") == 0
    assert [b.state for b in world.batches(run_id)] == ["queued", "queued"]


def test_a_run_keeps_its_reject_report_and_nothing_else_once_it_has_ended(
    world: MemoryWorld,
) -> None:
    world.destination(sync_mode="mirror")
    world.arrive("loyal/a.csv", segment_csv(60))
    world.pump()
    (run_id,) = world.arrive("loyal/b.csv", segment_csv(30, extra="not-an-email,X,Y\n"))
    world.plan_queued()
    planned = world.run_files(run_id)
    assert any("/removals/" in n for n in planned) and any("/state/" in n for n in planned)
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.removed, run.verified) == ("succeeded", 30, True)
    assert world.run_files(run_id) == [f"runs/{run_id}/rejects.csv"]


def test_a_repeat_after_a_crash_in_wrap_up_finishes_the_job(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = planned_run(world, **UNVERIFIED)
    real = world.storage.delete_run_blobs

    def dies(run: str) -> None:
        raise ConnectionError("the worker died")

    monkeypatch.setattr(world.storage, "delete_run_blobs", dies)
    with pytest.raises(ConnectionError):
        world.pump()
    assert world.run(run_id).state == "succeeded" and world.run_files(run_id)
    monkeypatch.setattr(world.storage, "delete_run_blobs", real)
    world.pump()  # the job check is delivered again: the run is wrapped up
    assert world.run_files(run_id) == []
