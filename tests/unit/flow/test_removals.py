"""Mirror mode's removals (exporter/flow/removals.py): batches of at most 100 emails, one search
(recorded) and one removal per delivery, resumed from what was recorded after any fault; the
list ends exactly equal to the segment, and contacts stay in the account."""

from __future__ import annotations

from exporter.flow import removals, sending
from exporter.model.messages import CONTACT_BATCHES, BatchMessage
from tests.support.memory_flow import UNVERIFIED, MemoryWorld, decode_sent, emails, people


def ten_leave(world: MemoryWorld) -> BatchMessage:
    """20 members, then a snapshot of the first 10, planned: its one removal batch's message."""
    world.destination(sync_mode="mirror", **UNVERIFIED)
    world.arrive("loyal/a.csv", people(*range(20)))
    world.pump()
    world.arrive("loyal/b.csv", people(*range(10)))
    world.plan_queued()
    (message,) = world.take_batches()
    return message


def test_removal_batches_hold_at_most_100_emails_each(world: MemoryWorld) -> None:
    leavers = (f"user{i}@example.com" for i in range(250))
    records = removals.removal_batches(world.svc, "run-1", 7, leavers, round=1)
    assert [(r.index, r.contacts, r.kind, r.round) for r in records] == [
        (7, 100, "remove", 1),
        (8, 100, "remove", 1),
        (9, 50, "remove", 1),
    ]
    assert world.storage.read_removals("run-1", 9)[-1] == "user249@example.com"
    assert removals.removal_batches(world.svc, "run-2", 0, iter(())) == []


def test_mirror_removes_those_who_left_and_takes_back_who_returns(world: MemoryWorld) -> None:
    world.destination(sync_mode="mirror")
    world.arrive("loyal/a.csv", people(*range(1500)))
    world.pump()
    assert world.emails() == emails(range(1500))

    stay = [i for i in range(1500) if i % 3]  # a third leave: 500 removals
    world.arrive("loyal/a.csv", people(*stay))
    world.pump()
    run = world.latest()
    assert (run.state, run.verified, run.leavers, run.removed, run.sent) == (
        "succeeded",
        True,
        500,
        500,
        0,
    )
    assert world.emails() == emails(stay)
    assert world.sendgrid.store.contact_count() == 1500  # off the list, not out of the account
    assert world.sendgrid.count("remove_from_list") == 5  # 100 ids a call

    back = [*stay, 3, 6]  # two return
    world.arrive("loyal/a.csv", people(*back))
    world.pump()
    run = world.latest()
    assert (run.state, run.sent, run.leavers) == ("succeeded", 2, 0)
    assert world.emails() == emails(back)


def test_a_removal_resumes_after_a_rate_limit_without_searching_again(
    world: MemoryWorld,
) -> None:
    message = ten_leave(world)
    world.sendgrid.throttle_next("remove_from_list", retry_after=12.0)
    sending.send_batch(world.svc, message)
    batch = world.batches(message.run_id)[0]
    assert (batch.state, batch.searched, len(batch.contact_ids.split(","))) == ("queued", True, 10)
    (again,) = world.storage.queues[CONTACT_BATCHES]
    assert again.delay == 12.0 and decode_sent(again).deferrals == 1
    world.pump()
    assert world.sendgrid.count("search_emails") == 1
    first, second = world.sendgrid.calls["remove_from_list"]
    assert first == second
    assert (world.latest().state, world.latest().removed) == ("succeeded", 10)
    assert world.emails() == emails(range(10))


def test_a_removal_whose_answer_was_lost_is_repeated_harmlessly(world: MemoryWorld) -> None:
    message = ten_leave(world)
    world.sendgrid.lose_next("remove_from_list")
    sending.send_batch(world.svc, message)
    assert world.emails() == emails(range(10))  # it took effect
    assert world.batches(message.run_id)[0].state == "queued"
    world.pump()  # the retry removes them again: nothing changes, the batch is done
    run = world.latest()
    assert (run.state, run.removed) == ("succeeded", 10)
    assert world.sendgrid.count("remove_from_list") == 2
    assert world.emails() == emails(range(10))


def test_a_lost_search_is_asked_again(world: MemoryWorld) -> None:
    message = ten_leave(world)
    world.sendgrid.lose_next("search_emails")
    sending.send_batch(world.svc, message)
    assert not world.batches(message.run_id)[0].searched  # nothing recorded
    world.pump()
    assert world.sendgrid.count("search_emails") == 2
    assert world.emails() == emails(range(10))


def test_a_contact_deleted_from_the_account_since_the_search_is_searched_again(
    world: MemoryWorld,
) -> None:
    message = ten_leave(world)
    world.sendgrid.throttle_next("remove_from_list")
    sending.send_batch(world.svc, message)  # searched (10 ids recorded), then told to wait
    other = world.sendgrid.store.create_list("another")
    world.sendgrid.hand_upsert([other.id], {"email": "user15@example.com"})
    world.sendgrid.store.delete_list(other.id, delete_contacts=True)  # user15 leaves the account
    world.pump()
    run = world.latest()
    assert (run.state, run.removed) == ("succeeded", 9)
    assert world.sendgrid.count("search_emails") == 2
    assert world.emails() == emails(range(10))


def test_a_list_deleted_before_its_removals_fails_the_batch(world: MemoryWorld) -> None:
    message = ten_leave(world)
    world.sendgrid.store.delete_list(world.list_id)
    sending.send_batch(world.svc, message)
    (batch,) = world.batches(message.run_id)
    assert batch.state == "failed"
    assert f"SendGrid has no list {world.list_id}" in batch.error
    assert world.latest().state == "failed"
