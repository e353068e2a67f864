"""Sending a batch and following its import job (exporter/flow/sending.py): SendGrid's answers
decide what follows. 429: the same message, hidden until SendGrid's reset; 5xx, timeouts, lost
answers: again after 1, 2, 4 ... s, then the batch fails after the cap; 401 and other 4xx: the
batch fails at once. Every step is safe to repeat."""

from __future__ import annotations

import pytest

from exporter.flow import sending
from exporter.model.messages import CONTACT_BATCHES, IMPORT_JOBS, LIST_CHECKS, BatchMessage
from exporter.ports.sendgrid import NotFound, Unauthorized
from tests.support.memory_flow import (
    FLOW_QUEUES,
    UNVERIFIED,
    MemoryWorld,
    decode_sent,
    emails,
    segment_csv,
)


def planned(world: MemoryWorld, n: int = 10, **destination: object) -> list[BatchMessage]:
    """A run of `n` people, planned; its batch messages, taken off the queue."""
    world.destination(**destination)
    world.arrive("loyal/a.csv", segment_csv(n))
    world.plan_queued()
    return world.take_batches()


def test_an_accepted_batch_records_its_job_and_queues_the_first_look_at_it(
    world: MemoryWorld,
) -> None:
    first, second = planned(world, 50)
    sending.send_batch(world.svc, first)
    batch = world.batches(first.run_id)[0]
    assert (batch.state, batch.attempts, batch.error) == ("accepted", 1, "")
    (check,) = world.storage.queues[IMPORT_JOBS]
    assert check.delay == sending.FIRST_JOB_CHECK
    assert decode_sent(check).job_id == batch.job_id
    assert world.run(first.run_id).state == "sending"  # another batch is still queued
    sending.send_batch(world.svc, second)
    assert world.run(first.run_id).state == "confirming"
    (_, sent) = world.sendgrid.calls["upsert"][0]
    assert len(sent) == 40 and world.sendgrid.calls["upsert"][0][0] == (world.list_id,)


def test_every_message_delivered_twice_still_counts_once(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(90))
    for _ in range(50):
        sent = [m for q in FLOW_QUEUES for m in world.storage.take(q)]
        if not sent:
            break
        world.advance(max(m.delay for m in sent))
        for m in sent + sent:  # at least once: every message twice
            world.deliver(decode_sent(m))
    run = world.only_run()
    assert (run.state, run.verified) == ("succeeded", True)
    assert (run.requested, run.created, run.batches_done) == (90, 90, 3)
    assert world.sendgrid.count("upsert") == 3


def test_a_429_defers_the_same_message_until_sendgrids_reset(world: MemoryWorld) -> None:
    (message,) = planned(world)
    world.sendgrid.throttle_next("upsert", retry_after=37.0)
    sending.send_batch(world.svc, message)  # no exception: deferred, no delivery attempt spent
    (again,) = world.storage.queues[CONTACT_BATCHES]
    assert again.delay == 37.0
    assert decode_sent(again) == message.model_copy(update={"deferrals": 1})
    batch = world.batches(message.run_id)[0]
    assert (batch.state, batch.deferrals, batch.attempts) == ("queued", 1, 0)
    start = world.now
    world.pump()
    (delivered, *_) = world.delivered(CONTACT_BATCHES)
    assert delivered.at - start == 37.0
    assert world.only_run().state == "succeeded"
    assert len(world.members()) == 10


def test_a_step_rate_limited_too_often_fails_its_batch(world: MemoryWorld) -> None:
    (message,) = planned(world, **UNVERIFIED)
    world.sendgrid.throttle_next("upsert", retry_after=30.0, times=10_000)
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert f"still rate limited after {sending.MAX_DEFERRALS} waits" in run.error
    assert world.sendgrid.count("upsert") == sending.MAX_DEFERRALS + 1


def test_a_5xx_puts_the_batch_back_with_a_growing_delay(world: MemoryWorld) -> None:
    (message,) = planned(world)
    world.sendgrid.break_next("upsert", times=3)
    delays = []
    for _ in range(3):
        sending.send_batch(world.svc, message)  # no exception: no delivery attempt is spent
        (again,) = world.storage.take(CONTACT_BATCHES)
        message = decode_sent(again)
        delays.append(again.delay)
    assert message.retries == 3
    assert 0.75 <= delays[0] <= 1 and 1.5 <= delays[1] <= 2 and 3 <= delays[2] <= 4
    batch = world.batches(message.run_id)[0]
    assert (batch.state, batch.attempts) == ("queued", 3)
    assert "HTTP 500" in batch.error
    world.deliver(message)
    world.pump()
    assert world.only_run().state == "succeeded"


def test_sendgrid_failing_every_time_fails_the_batch_after_the_last_retry(
    world: MemoryWorld,
) -> None:
    (message,) = planned(world, **UNVERIFIED)
    world.sendgrid.break_next("upsert", status=503, times=None)
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert f"SendGrid failed {sending.MAX_RETRIES} times in a row; the last:" in run.error
    assert "HTTP 503" in run.error
    assert world.sendgrid.count("upsert") == sending.MAX_RETRIES
    assert world.members() == {}


def test_an_upsert_whose_answer_was_lost_is_sent_again_harmlessly(world: MemoryWorld) -> None:
    (message,) = planned(world)
    world.sendgrid.lose_next("upsert")
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    run = world.only_run()
    assert (run.state, run.verified) == ("succeeded", True)
    assert world.sendgrid.count("upsert") == 2
    assert (run.requested, run.created + run.updated) == (10, 10)  # the second job's counts
    assert world.emails() == emails(range(10))


def test_a_refused_key_fails_the_batch_without_retrying(world: MemoryWorld) -> None:
    (message,) = planned(world, **UNVERIFIED)
    world.sendgrid.fail_next("upsert", Unauthorized("SendGrid refused the API key", status=401))
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "1 of 1 batches failed; batch 0: SendGrid refused the API key" in run.error
    assert world.sendgrid.count("upsert") == 1
    assert world.queued(CONTACT_BATCHES) == []


def test_a_permanently_rejected_batch_fails_the_run_and_says_why(world: MemoryWorld) -> None:
    messages = planned(world, 50, **UNVERIFIED)
    world.sendgrid.store.delete_list(world.list_id)  # gone after planning: upserts refused
    for m in messages:
        world.storage.send(CONTACT_BATCHES, m)
    world.pump()
    run = world.only_run()
    assert (run.state, run.batches_failed) == ("failed", 2)
    assert (
        "2 of 2 batches failed; batch 0: SendGrid rejected PUT /v3/marketing/contacts (HTTP 400)"
        in run.error
    )
    assert "list_ids" in run.error
    assert world.sendgrid.store.contact_count() == 0  # nothing was taken


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("removed", "the destination was removed: the batch was not sent"),
        ("no consent", "the destination's data-privacy consent was withdrawn"),
    ],
)
def test_a_destination_gone_or_without_consent_gets_no_batch(
    world: MemoryWorld, change: str, reason: str
) -> None:
    (message,) = planned(world)
    if change == "removed":
        world.destinations.delete("marketing")
    else:
        world.destination(consent=None)
    sending.send_batch(world.svc, message)
    assert world.batches(message.run_id)[0].state == "failed"
    assert reason in world.batches(message.run_id)[0].error
    assert world.sendgrid.count("upsert") == 0


def test_an_accepted_batch_delivered_again_queues_its_job_check_not_a_new_upsert(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    (message,) = planned(world)
    real = world.storage.send

    def dies(queue: str, m: object, *, delay: float = 0) -> None:
        if queue == IMPORT_JOBS:
            raise ConnectionError("the worker died")
        real(queue, m, delay=delay)

    monkeypatch.setattr(world.storage, "send", dies)
    with pytest.raises(ConnectionError):
        sending.send_batch(world.svc, message)  # upserted and recorded, then died
    monkeypatch.setattr(world.storage, "send", real)
    assert world.batches(message.run_id)[0].state == "accepted"
    assert world.queued(IMPORT_JOBS) == []
    sending.send_batch(world.svc, message)  # the host delivers it again
    world.pump()
    assert (world.only_run().state, world.only_run().created) == ("succeeded", 10)
    assert world.sendgrid.count("upsert") == 1


def test_a_pending_job_is_looked_at_again_later_and_later(world: MemoryWorld) -> None:
    world.sendgrid.job_delay = 100.0
    (message,) = planned(world)
    start = world.now
    sending.send_batch(world.svc, message)
    world.pump(until=lambda: world.batches(message.run_id)[0].settled)
    times = [round(d.at - start) for d in world.delivered(IMPORT_JOBS)]
    assert times == [1, 3, 7, 15, 31, 63, 123]  # 1 s, then 2, 4, 8 ... s apart
    later = [decode_sent(m) for m in world.storage.queues[IMPORT_JOBS]]
    assert later == []
    assert world.batches(message.run_id)[0].state == "done"


def test_a_job_that_never_settles_fails_its_batch_after_three_hours(world: MemoryWorld) -> None:
    world.sendgrid.job_delay = 1e9
    (message,) = planned(world, **UNVERIFIED)
    start = world.now
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "SendGrid's import job did not settle in 3 hours" in run.error
    assert len(world.delivered(IMPORT_JOBS)) == sending.MAX_JOB_CHECKS + 1
    assert 3 * 3600 < world.now - start < 4 * 3600


def test_an_errored_job_records_its_counts_and_the_run_ends_with_errors(
    world: MemoryWorld,
) -> None:
    world.sendgrid.refused = {"user3@example.com", "user4@example.com"}
    (message,) = planned(world, **UNVERIFIED)
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    (batch,) = world.batches(message.run_id)
    assert (batch.state, batch.requested, batch.created, batch.errored) == ("done", 10, 8, 2)
    assert batch.errors_url
    run = world.only_run()
    assert (run.state, run.errored, run.created) == ("succeeded_with_errors", 2, 8)
    assert run.error.startswith("SendGrid refused 2 contacts one by one")


def test_a_job_that_errored_every_contact_fails_the_run(world: MemoryWorld) -> None:
    world.sendgrid.refuse_all = True
    (message,) = planned(world, **UNVERIFIED)
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "SendGrid refused every contact sent (10) one by one" in run.error


def test_a_failed_job_fails_its_batch(world: MemoryWorld) -> None:
    world.sendgrid.failing_jobs = 1
    (message,) = planned(world, **UNVERIFIED)
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    (batch,) = world.batches(message.run_id)
    assert batch.state == "failed"
    assert batch.error == "SendGrid's import job failed: no contact was imported"
    assert world.only_run().state == "failed"


def test_a_job_check_sendgrid_keeps_failing_fails_its_batch(world: MemoryWorld) -> None:
    (message,) = planned(world, **UNVERIFIED)
    world.sendgrid.break_next("import_status", times=None)
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    (batch,) = world.batches(message.run_id)
    assert batch.state == "failed"
    assert batch.error.startswith(
        f"could not confirm the import job: SendGrid failed {sending.MAX_RETRIES} times"
    )
    assert world.sendgrid.count("import_status") == sending.MAX_RETRIES


def test_a_job_sendgrid_does_not_know_fails_its_batch_at_once(world: MemoryWorld) -> None:
    (message,) = planned(world, **UNVERIFIED)
    world.sendgrid.fail_next("import_status", NotFound("no such job", status=404))
    world.storage.send(CONTACT_BATCHES, message)
    world.pump()
    (batch,) = world.batches(message.run_id)
    assert (batch.state, batch.error) == ("failed", "could not confirm the import job: no such job")
    assert world.sendgrid.count("import_status") == 1


def test_a_follower_dying_before_settling_the_run_does_not_hang_it(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    (message,) = planned(world)
    sending.send_batch(world.svc, message)
    world.advance(1)

    def crash(svc: object, run_id: str) -> None:
        raise ConnectionError("the worker died")

    monkeypatch.setattr(sending, "settle", crash)
    (check,) = world.take(IMPORT_JOBS)
    with pytest.raises(ConnectionError):
        world.deliver(check)  # the batch settled, then the process died
    assert (world.batches(message.run_id)[0].state, world.only_run().state) == (
        "done",
        "confirming",
    )
    monkeypatch.undo()
    world.deliver(check)  # the host delivers it again
    assert world.queued(LIST_CHECKS) != []
    world.pump()
    assert world.only_run().state == "succeeded"
    assert world.sendgrid.count("import_status") == 1  # a settled batch is not asked again


def test_a_storage_failure_while_sending_is_noted_and_raised_for_the_host(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    (message,) = planned(world)

    def broken(run_id: str, index: int) -> None:
        raise OSError("storage is unreachable")

    monkeypatch.setattr(world.storage, "open_batch", broken)
    with pytest.raises(OSError, match="unreachable"):
        sending.send_batch(world.svc, message)
    batch = world.batches(message.run_id)[0]
    assert (batch.state, batch.attempts, batch.error) == (
        "queued",
        1,
        "OSError: storage is unreachable",
    )


def test_retry_delays_grow_jittered_up_to_a_minute() -> None:
    for retries, low, high in [(0, 0.75, 1), (1, 1.5, 2), (3, 6, 8), (10, 45, 60)]:
        for _ in range(20):
            assert low <= sending.retry_delay(retries) <= high
