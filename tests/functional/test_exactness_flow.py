"""The list is the truth: runs read their list back, heal it, never forget what they sent, and say
honestly how they ended. In-memory ledger and storage, the real sandbox over HTTP; the test
delivers the queue messages itself, so faults and crashes are exact to stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from exporter.adapters.sendgrid import SendGridClient
from exporter.flow import arrivals, plan, poison, run_requests, sending
from exporter.model.messages import (
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    LIST_CHECKS,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
    decode,
)
from exporter.model.runs import RunRecord
from exporter.ports.sendgrid import RateLimited, TransientError
from tests.support.fakes import Sent
from tests.support.flow import ListWorld
from tests.support.sandbox import SandboxProcess

pytestmark = pytest.mark.functional

KEY = "SG.exactness-key"
UNVERIFIED = {"verify_up_to": 0, "verify_every": 0}


@dataclass
class World(ListWorld):
    files: int = 0

    def export(self, people: dict[int, str], **request: Any) -> RunRecord:
        """Drop a snapshot of these people (user<i>@example.com, first name) and run it through."""
        self.files += 1
        rows = ["Email,FirstName"] + [f"user{i}@example.com,{n}" for i, n in people.items()]
        version = self.storage.put_snapshot(f"loyal/{self.files:03d}.csv", "\n".join(rows).encode())
        if request:
            run_requests.request_exports(self.svc, version, "api", **request)
        else:
            arrivals.on_snapshot(self.svc, version)
        self.pump()
        return self.ledger.runs()[0]

    def members(self, list_id: str | None = None) -> dict[str, str]:
        found = self.sandbox.list_members(list_id or self.list_id)
        return {m["email"]: m.get("first_name", "") for m in found}


def expect(people: dict[int, str]) -> dict[str, str]:
    return {f"user{i}@example.com": n for i, n in people.items()}


@pytest.fixture
def world(sandbox: SandboxProcess) -> World:
    world = World.connect(sandbox, KEY, max_batch_contacts=40)
    world.list_id = world.client.create_list("exactness").id
    return world


def hand_edit(client: SendGridClient, list_id: str) -> None:
    """What a person does in SendGrid's UI: removes user3, renames user4, adds an outsider."""
    client.remove_from_list(list_id, client.search_emails(["user3@example.com"]).values())
    client.upsert([], '[{"email":"user4@example.com","first_name":"Edited"}]')
    client.upsert([list_id], '[{"email":"outsider@example.com","first_name":"Hand"}]')


def settle_sandbox_jobs(world: World) -> None:
    """Wait until the sandbox applied every upsert the test made itself."""
    deadline = time.monotonic() + 10
    while world.sandbox.state()["jobs"]["pending"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_hand_edits_are_healed_by_the_next_verified_run_in_mirror_mode(world: World) -> None:
    world.destination(sync_mode="mirror")
    people = {i: f"Name{i}" for i in range(30)}
    first = world.export(people)
    assert (first.state, first.verified, first.looks, first.heals) == ("succeeded", True, 1, 0)

    hand_edit(world.client, world.list_id)
    settle_sandbox_jobs(world)
    run = world.export(people)  # the same segment: nothing to send by the state
    assert run.sent == 0
    # Look 1 saw it, look 2 (after the lag) confirmed it, the heal sent the missing and the
    # changed member again and took the outsider off; look 3 found the list equal.
    assert (run.state, run.verified, run.looks, run.heals) == ("succeeded", True, 3, 1)
    assert (run.resent, run.extra_removed) == (2, 1)
    assert (run.missing, run.changed, run.extra) == (0, 0, 0)
    assert world.members() == expect(people)


def test_upsert_mode_heals_members_and_leaves_outsiders_but_reports_them(world: World) -> None:
    world.destination()
    people = {i: f"Name{i}" for i in range(30)}
    world.export(people)
    hand_edit(world.client, world.list_id)
    settle_sandbox_jobs(world)
    run = world.export(people)
    assert (run.state, run.verified, run.resent, run.extra_removed) == ("succeeded", True, 2, 0)
    assert run.extra == 1  # reported, and kept: upsert mode never removes
    assert world.members() == expect(people) | {"outsider@example.com": "Hand"}


def test_sendgrids_lag_is_looked_at_again_before_anything_is_called_drift(world: World) -> None:
    world.destination()
    world.sandbox.faults(list_lag=0.5)  # members show in the list half a second late
    run = world.export(dict.fromkeys(range(20), "A"))
    # The first look (at once) saw nobody; the second, after the lag, saw everyone: no heal.
    assert (run.state, run.verified, run.looks, run.heals, run.resent) == (
        "succeeded",
        True,
        2,
        0,
        0,
    )


def test_contacts_sendgrid_errored_are_healed_within_the_run(world: World) -> None:
    world.destination()
    world.sandbox.faults(contact_error_rate=1.0)
    arrivals.on_snapshot(world.svc, world.storage.put_snapshot("loyal/a.csv", csv_of(range(30))))
    world.plan_queued()
    for message in world.take_batches():
        sending.send_batch(world.svc, message)
    settle_sandbox_jobs(world)
    world.sandbox.faults(contact_error_rate=0.0)  # SendGrid takes them the second time
    world.pump()
    run = world.ledger.runs()[0]
    assert (run.state, run.verified, run.heals, run.resent) == ("succeeded", True, 1, 30)
    assert len(world.members()) == 30


def test_contacts_sendgrid_keeps_refusing_end_the_run_with_errors_not_success(
    world: World,
) -> None:
    world.destination()
    world.sandbox.faults(contact_error_rate=0.5)  # in the first send and in the heal
    run = world.export(dict.fromkeys(range(40), "A"))
    assert run.state == "succeeded_with_errors"
    assert run.heals == 1 and not run.verified
    assert run.missing is not None and 0 < run.missing == 40 - len(world.members())
    assert f"SendGrid refused {run.missing:,} contacts of the segment one by one" in run.error


def test_a_list_nobody_can_be_put_on_fails_the_run(world: World) -> None:
    world.destination()
    world.sandbox.faults(contact_error_rate=1.0)
    run = world.export(dict.fromkeys(range(10), "A"))
    assert run.state == "failed"
    assert "the list still differs from the segment after healing: 10 missing" in run.error


def test_a_failed_run_forgets_nothing_it_added(world: World) -> None:
    """Members that joined in a failed run and left in the next are removed (mirror mode)."""
    world.destination(sync_mode="mirror", max_removal_share=1.0, **UNVERIFIED)
    world.export(dict.fromkeys(range(10), "A"))
    # 50 join, in two batches: 40, and 10 whose batch never lands
    arrivals.on_snapshot(world.svc, world.storage.put_snapshot("loyal/b.csv", csv_of(range(60))))
    world.plan_queued()
    first, second = world.take_batches()
    sending.send_batch(world.svc, first)  # lands
    poison.batch_poisoned(world.svc, second)  # never does
    world.pump()
    failed = world.ledger.runs()[0]
    assert (failed.state, failed.state_committed) == ("failed", True)
    assert len(world.members()) == 10 + first_batch_size(world, failed)

    run = world.export(dict.fromkeys(range(10), "A"))  # everyone who joined leaves again
    assert run.state == "succeeded"
    assert world.members() == expect(dict.fromkeys(range(10), "A"))
    assert run.removed == first_batch_size(world, failed)


def first_batch_size(world: World, run: RunRecord) -> int:
    return world.ledger.batches(run.run_id)[0].contacts


def test_a_destination_moved_to_another_list_starts_that_list_from_nothing(world: World) -> None:
    world.destination(sync_mode="mirror")
    people = dict.fromkeys(range(25), "A")
    world.export(people)
    new_list = world.client.create_list("exactness v2").id
    world.destination(sync_mode="mirror", list_id=new_list)
    run = world.export(people)
    assert (run.state, run.sent, run.verified) == ("succeeded", 25, True)
    assert world.members(new_list) == expect(people)
    states = [b for b in world.storage.blobs if b.startswith("state/marketing/loyal/")]
    assert states and all(b.startswith(f"state/marketing/loyal/{new_list}/") for b in states)


def test_a_list_deleted_in_sendgrid_fails_the_next_run_before_anything_is_sent(
    world: World,
) -> None:
    world.destination()
    world.export(dict.fromkeys(range(10), "A"))
    world.client.delete_list(world.list_id)
    puts = world.requests_to("PUT /v3/marketing/contacts")
    run = world.export(dict.fromkeys(range(10), "B"))
    assert run.state == "failed"
    assert f"SendGrid has no list {world.list_id}" in run.error
    assert (run.batches, run.state_committed) == (0, False)
    assert world.requests_to("PUT /v3/marketing/contacts") == puts


def ten_leave(world: World) -> BatchMessage:
    """20 members, then a snapshot of the first 10, planned: its one removal batch's message."""
    world.destination(sync_mode="mirror", **UNVERIFIED)
    world.export(dict.fromkeys(range(20), "A"))
    arrivals.on_snapshot(world.svc, world.storage.put_snapshot("loyal/b.csv", csv_of(range(10))))
    world.plan_queued()
    (message,) = world.take_batches()
    return message


def test_a_removal_resumes_after_a_rate_limit_without_searching_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = ten_leave(world)
    real = SendGridClient.remove_from_list
    calls = []

    def throttled(self: SendGridClient, list_id: str, ids: Any) -> list[str]:
        calls.append(list(ids))
        if len(calls) == 1:
            raise RateLimited("429", retry_after=1.0)
        return real(self, list_id, ids)

    monkeypatch.setattr(SendGridClient, "remove_from_list", throttled)
    searches = world.requests_to("POST /v3/marketing/contacts/search/emails")
    sending.send_batch(world.svc, message)
    batch = world.ledger.batches(message.run_id)[0]
    assert (batch.state, batch.searched, len(batch.contact_ids.split(","))) == ("queued", True, 10)
    (again,) = world.storage.take(CONTACT_BATCHES)
    assert again.delay == 1 and decode(BatchMessage, again.body).deferrals == 1
    sending.send_batch(world.svc, decode(BatchMessage, again.body))
    world.pump()
    assert world.requests_to("POST /v3/marketing/contacts/search/emails") == searches + 1
    assert calls[0] == calls[1]
    assert world.ledger.runs()[0].removed == 10
    assert world.members() == expect(dict.fromkeys(range(10), "A"))


def test_a_removal_whose_answer_was_lost_is_repeated_harmlessly(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = ten_leave(world)
    real = SendGridClient.remove_from_list
    lost = []

    def answer_lost(self: SendGridClient, list_id: str, ids: Any) -> list[str]:
        done = real(self, list_id, ids)  # it took effect ...
        if not lost:
            lost.append(True)
            raise TransientError("connection dropped")  # ... but the answer never came
        return done

    monkeypatch.setattr(SendGridClient, "remove_from_list", answer_lost)
    sending.send_batch(world.svc, message)
    assert world.members() == expect(dict.fromkeys(range(10), "A"))  # already off the list
    world.pump()  # the retry removes them again: nothing changes, the batch is done
    run = world.ledger.runs()[0]
    assert (run.state, run.removed) == ("succeeded", 10)
    assert world.members() == expect(dict.fromkeys(range(10), "A"))


def test_a_look_that_cannot_be_taken_leaves_the_run_unverified_with_the_reason(
    world: World,
) -> None:
    world.destination()
    world.sandbox.faults(export_fail_rate=1.0)
    run = world.export(dict.fromkeys(range(10), "A"))
    assert (run.state, run.verified) == ("succeeded", False)  # every batch landed
    assert run.verify_note.startswith("not verified: SendGrid's export of the list failed")
    assert len(world.members()) == 10


def test_a_poisoned_look_ends_the_run_unverified(world: World) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.storage.put_snapshot("loyal/a.csv", csv_of(range(10))))
    world.plan_queued()
    for message in world.take_batches():
        sending.send_batch(world.svc, message)
    run_id = world.ledger.runs()[0].run_id
    follow_jobs_until(world, "verifying")
    (look,) = world.storage.take(LIST_CHECKS)
    poison.list_check_poisoned(world.svc, decode(ListCheck, look.body))
    run = world.ledger.get_run(run_id)
    assert run is not None and (run.state, run.verified) == ("succeeded", False)
    assert "the look at the list failed on every attempt" in run.verify_note


def test_a_worker_dying_before_queueing_the_first_look_does_not_hang_the_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    real = world.storage.send
    died: list[bool] = []

    def dies(queue: str, message: Any, *, delay: float = 0) -> None:
        if queue == LIST_CHECKS and not died:
            died.append(True)
            raise ConnectionError("the worker died")
        real(queue, message, delay=delay)

    monkeypatch.setattr(world.storage, "send", dies)
    arrivals.on_snapshot(world.svc, world.storage.put_snapshot("loyal/a.csv", csv_of(range(10))))
    world.plan_queued()
    (message,) = world.take_batches()
    sending.send_batch(world.svc, message)
    unfinished = follow_jobs_until(world, "verifying")  # the worker died in the last one
    run = world.ledger.runs()[0]
    assert (died, run.look_queued, world.storage.queues[LIST_CHECKS]) == ([True], False, [])
    for m in unfinished:  # the host delivers that message again
        sending.follow_job(world.svc, decode(JobCheck, m.body))
    world.pump()
    assert world.ledger.runs()[0].state == "succeeded"


def follow_jobs_until(world: World, state: str) -> list[Sent]:
    """Deliver job checks until the run is in `state`; returns those whose delivery died."""
    deadline = time.monotonic() + 10
    died: list[Sent] = []
    while world.ledger.runs()[0].state != state:
        assert time.monotonic() < deadline, "the run did not get there"
        time.sleep(0.1)
        for m in world.storage.take(IMPORT_JOBS):
            try:
                sending.follow_job(world.svc, decode(JobCheck, m.body))
            except ConnectionError:
                died.append(m)
    return died


def test_a_full_refresh_in_mirror_mode_removes_outsiders_too(world: World) -> None:
    world.destination(sync_mode="mirror", **UNVERIFIED)
    people = dict.fromkeys(range(15), "A")
    world.export(people)
    world.client.upsert([world.list_id], '[{"email":"outsider@example.com"}]')
    settle_sandbox_jobs(world)
    run = world.export(people, full_refresh=True)
    assert (run.state, run.sent, run.unchanged, run.verified) == ("succeeded", 15, 0, True)
    assert run.extra_removed == 1
    assert world.members() == expect(people)


def csv_of(ids: range) -> bytes:
    return ("Email,FirstName\n" + "".join(f"user{i}@example.com,A\n" for i in ids)).encode()


def test_planning_waits_out_sendgrid_failures_then_gives_up_saying_why(world: World) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.storage.put_snapshot("loyal/a.csv", csv_of(range(10))))
    world.sandbox.faults(error_rate=1.0)
    delays = []
    while requests := world.storage.take(EXPORT_REQUESTS):
        (request,) = requests
        delays.append(request.delay)
        plan.plan_run(world.svc, decode(ExportRequest, request.body))  # never raises
    run = world.ledger.runs()[0]
    assert run.state == "failed"
    assert run.error.startswith(f"planning failed: SendGrid failed {sending.MAX_RETRIES} times")
    assert "GET /v3/marketing/lists/{id} (HTTP 500)" in run.error
    assert len(delays) == sending.MAX_RETRIES  # the request, then 7 tries after a wait
    assert delays[0] == 0 and 0 < delays[1] < delays[2] < delays[3]
    assert (run.batches, world.requests_to("PUT /v3/marketing/contacts")) == (0, 0)


@pytest.mark.parametrize("name", ["a#b/x.csv", "a b/x.csv", "a\x07b/x.csv", f"{'s' * 64}/x.csv"])
def test_a_snapshot_of_a_segment_name_no_destination_can_have_is_ignored(
    world: World, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    world.destination()
    version = world.storage.put_snapshot(name, csv_of(range(3)))
    assert arrivals.on_snapshot(world.svc, version) == []  # no run, no exception (no retry loop)
    assert "ignored" in caplog.text and world.ledger.runs() == []
