"""Planning a run (exporter/flow/plan.py): consent, destination, slot, the list checked before
anything is read or sent, the snapshot streamed into batches against the synced state, mirror
removals behind the mass-removal guard; errors recorded where people look."""

from __future__ import annotations

import csv
import io
import itertools

import pytest

from exporter.flow import plan, run_requests, sending
from exporter.model.messages import CONTACT_BATCHES, EXPORT_REQUESTS
from exporter.ports.sendgrid import RateLimited
from tests.support.memory_flow import UNVERIFIED, MemoryWorld, emails, people, segment_csv


def test_a_snapshot_ends_up_exactly_in_the_list_and_its_rejects_in_the_report(
    world: MemoryWorld,
) -> None:
    world.destination()
    bad = "not-an-email,Bad,X\nUSER3@EXAMPLE.COM,Dup,Y\n,,\nragged@example.com\n"
    (run_id,) = world.arrive("loyal/2026-11-24.csv", segment_csv(100, extra=bad))
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.verified, run.looks, run.missing, run.changed) == (
        "succeeded",
        True,
        1,
        0,
        0,
    )
    assert (run.rows, run.valid, run.rejected, run.duplicates, run.blank) == (104, 100, 2, 1, 1)
    assert run.reasons == {"invalid_email": 1, "ragged_row": 1}
    assert (run.batches, run.batches_done, run.batches_failed) == (3, 3, 0)  # 40 per batch
    assert (run.requested, run.created, run.updated, run.errored) == (100, 100, 0, 0)
    members = world.members()
    assert set(members) == emails(range(100))
    assert members["user3@example.com"]["first_name"] == "Name3"  # the first occurrence won
    assert members["user5@example.com"]["city"] == "City5"
    report = list(csv.DictReader(io.StringIO(world.storage.blobs[run.reject_report].decode())))
    assert [(r["row"], r["reason"]) for r in report] == [
        ("101", "invalid_email"),
        ("104", "ragged_row"),
    ]
    assert world.sendgrid.count("upsert") == 3  # the fewest requests 40 a batch allows


def test_states_move_queued_planning_sending_confirming_succeeded(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    (run_id,) = world.arrive("loyal/a.csv", segment_csv(50))
    assert world.run(run_id).state == "queued"
    seen: list[str] = []
    real = world.storage.write_batch

    def write_batch(run: str, index: int, contacts_json: str) -> None:
        seen.append(world.run(run).state)
        real(run, index, contacts_json)

    monkeypatch.setattr(world.storage, "write_batch", write_batch)
    world.plan_queued()
    assert seen == ["planning", "planning"]
    assert world.run(run_id).state == "sending"
    for message in world.take_batches():
        sending.send_batch(world.svc, message)
    assert world.run(run_id).state == "confirming"
    world.pump()
    assert world.run(run_id).state == "succeeded"


def test_a_repeated_request_plans_once(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(50))
    (request,) = world.take(EXPORT_REQUESTS)
    plan.plan_run(world.svc, request)
    plan.plan_run(world.svc, request)
    assert len(world.queued(CONTACT_BATCHES)) == 2
    assert world.sendgrid.count("get_list") == 1


def test_no_consent_no_export(world: MemoryWorld) -> None:
    world.destination(consent=None)
    world.arrive("loyal/a.csv", segment_csv(10))
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "no data-privacy consent is recorded for destination 'marketing'" in run.error
    assert world.sendgrid.calls == {}  # SendGrid was not even asked


def test_a_destination_removed_before_the_run_started_fails_it(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))
    world.destinations.delete("marketing")
    world.pump()
    assert world.only_run().state == "failed"
    assert "the destination was removed before the run started" in world.only_run().error


def test_a_missing_list_fails_the_run_before_anything_is_read_or_sent(world: MemoryWorld) -> None:
    world.destination(list_id="7d3f9a2e-1111-4222-8333-444455556666")  # no such list
    world.arrive("loyal/a.csv", segment_csv(50))
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "SendGrid has no list 7d3f9a2e-1111-4222-8333-444455556666" in run.error
    assert "--list-name" in run.error and "Nothing was sent" in run.error
    assert (run.batches, run.rows, run.state_committed) == (0, 0, False)
    assert world.sendgrid.count("upsert") == 0
    assert world.storage.opened == []  # the snapshot was not read


def test_a_missing_secret_fails_the_run_clearly(world: MemoryWorld) -> None:
    world.destination(api_key_secret="SENDGRID_KEY_MISSING")
    world.arrive("loyal/a.csv", segment_csv(10))
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "no SendGrid key is available under the name 'SENDGRID_KEY_MISSING'" in run.error


def test_a_refused_key_fails_the_run_without_retrying_or_showing_the_key() -> None:
    world = MemoryWorld.create(api_key="SG.the-right-one", secret="SG.revoked-key")
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "refused the API key" in run.error and "revoked-key" not in run.error
    assert len(world.delivered(EXPORT_REQUESTS)) == 1  # no retry
    assert world.sendgrid.keys == ["SG.revoked-key"]


def test_an_unreadable_file_fails_its_run_with_a_message(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/bad.csv", b"Email,Name\na@b.co,Jos\xe9\n")
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "not UTF-8" in run.error and "line 2" in run.error
    assert not [b for b in world.storage.blobs if "/batches/" in b]


def test_over_the_profile_cap_nothing_is_sent(world: MemoryWorld) -> None:
    world.destination(profile_cap=50)
    world.arrive("loyal/a.csv", segment_csv(51))
    world.pump()
    run = world.latest()
    assert run.state == "failed"
    assert "more than 50 valid profiles, over the cap of 50 set on destination 'marketing'" in (
        run.error
    )
    assert world.sendgrid.count("upsert") == 0
    assert not [b for b in world.storage.blobs if "/batches/" in b]
    assert world.storage.read_state("marketing", "loyal", world.list_id) is None


def test_a_snapshot_replaced_before_planning_is_skipped(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))
    world.drop("loyal/a.csv", segment_csv(12))  # overwritten before the planner ran
    world.plan_queued()
    run = world.only_run()
    assert run.state == "skipped" and "replaced or deleted" in run.error
    assert world.sendgrid.count("upsert") == 0


def test_planning_waits_out_sendgrid_failures_then_gives_up_saying_why(
    world: MemoryWorld,
) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))
    world.sendgrid.break_next("get_list", times=None)
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert run.error.startswith(f"planning failed: SendGrid failed {sending.MAX_RETRIES} times")
    assert "get_list (HTTP 500)" in run.error
    times = [d.at for d in world.delivered(EXPORT_REQUESTS)]
    assert len(times) == sending.MAX_RETRIES  # the request, then 7 tries after a wait
    waits = [b - a for a, b in itertools.pairwise(times)]
    assert all(w1 < w2 for w1, w2 in itertools.pairwise(waits))  # 1, 2, 4 ... 60 s
    assert 0.75 <= waits[0] <= 1.0
    assert (run.batches, world.sendgrid.count("upsert")) == (0, 0)
    assert not [b for b in world.storage.blobs if b.startswith(f"runs/{run.run_id}/")]


def test_a_sendgrid_failure_while_planning_is_noted_then_planned_again(
    world: MemoryWorld,
) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))
    world.sendgrid.break_next("get_list")
    world.plan_queued()
    run = world.only_run()
    assert (run.state, run.planned) == ("planning", False)
    assert run.error.startswith("planning attempt failed: TransientError")
    world.pump()
    run = world.only_run()
    assert (run.state, run.error, run.created) == ("succeeded", "", 10)


def test_a_rate_limit_while_planning_waits_for_sendgrids_reset(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))
    world.sendgrid.fail_next("get_list", RateLimited("429", retry_after=42.0))
    world.plan_queued()
    (again,) = world.storage.queues[EXPORT_REQUESTS]
    assert again.delay == 42.0
    world.pump()
    assert world.only_run().state == "succeeded"


def test_a_storage_failure_while_planning_is_recorded_and_raised_for_the_host(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))

    def broken(run_id: str, index: int, contacts_json: str) -> None:
        raise OSError("storage is unreachable")

    monkeypatch.setattr(world.storage, "write_batch", broken)
    with pytest.raises(OSError, match="unreachable"):
        world.plan_queued()
    run = world.only_run()
    assert run.state == "planning"
    assert run.error == "planning attempt failed: OSError: storage is unreachable"


def test_a_planner_dying_while_queueing_batches_does_not_hang_the_run(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(100))
    real = world.storage.send
    sent: list[str] = []

    def dies_on_the_second_batch(queue: str, message: object, *, delay: float = 0) -> None:
        if queue == CONTACT_BATCHES:
            sent.append(queue)
            if len(sent) == 2:
                raise ConnectionError("the worker died")
        real(queue, message, delay=delay)

    monkeypatch.setattr(world.storage, "send", dies_on_the_second_batch)
    with pytest.raises(ConnectionError):
        world.pump()
    assert world.only_run().state == "sending"
    assert len(world.storage.queues[CONTACT_BATCHES]) == 1
    assert len(world.storage.queues[EXPORT_REQUESTS]) == 1  # back after the lease
    world.pump()  # the request is delivered again: the batches are queued again
    run = world.only_run()
    assert (run.state, run.batches_done, run.created) == ("succeeded", 3, 100)
    assert world.sendgrid.count("upsert") == 3  # a batch queued twice is sent once


def test_a_refresh_sends_only_what_changed(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(100))
    world.pump()
    first = world.latest()
    assert (first.sent, first.unchanged, first.members, first.state_committed) == (
        100,
        0,
        100,
        True,
    )
    world.arrive("loyal/a.csv", segment_csv(100) + "\n")  # a new version, the same content
    world.pump()
    same = world.latest()
    assert (same.state, same.sent, same.unchanged, same.batches) == ("succeeded", 0, 100, 0)
    assert world.sendgrid.count("upsert") == 3  # the first run's only
    changed = segment_csv(100).replace("Name7,", "Renamed7,").replace("Name42,", "Renamed42,")
    world.arrive("loyal/a.csv", changed + "new@example.com,New,X\n")
    world.pump()
    delta = world.latest()
    assert (delta.state, delta.sent, delta.unchanged, delta.members) == ("succeeded", 3, 98, 101)
    assert sorted(c["email"] for c in world.sendgrid.calls["upsert"][-1][1]) == [
        "new@example.com",
        "user42@example.com",
        "user7@example.com",
    ]
    assert world.members()["user7@example.com"]["first_name"] == "Renamed7"


def test_a_full_refresh_sends_everyone_and_reads_the_list_back(world: MemoryWorld) -> None:
    world.destination(**UNVERIFIED)
    version = world.drop("loyal/a.csv", segment_csv(50))
    run_requests.request_exports(world.svc, version, "blob")
    world.pump()
    assert not world.latest().verified
    run_requests.request_exports(world.svc, version, "api", full_refresh=True)
    world.pump()
    run = world.latest()
    assert (run.full_refresh, run.sent, run.unchanged, run.state) == (True, 50, 0, "succeeded")
    assert run.verified


def test_a_large_segment_is_read_back_only_on_the_destinations_cadence(
    world: MemoryWorld,
) -> None:
    world.destination(verify_up_to=10, verify_every=2)
    looked = []
    for n in range(4):
        world.arrive("loyal/a.csv", segment_csv(20) + "\n" * n)
        world.pump()
        looked.append(world.latest().verified)
    assert looked == [False, True, False, True]
    assert world.run(world.ledger.runs()[1].run_id).verify_note == (
        "not verified this run: segments over 10 members are read back every 2 runs"
    )


def test_mirror_mode_plans_removal_batches_for_those_who_left(world: MemoryWorld) -> None:
    world.destination(sync_mode="mirror")
    world.arrive("loyal/a.csv", people(*range(250)))
    world.pump()
    (run_id,) = world.arrive("loyal/a.csv", people(*range(130)))  # 48% leave
    world.plan_queued()
    run = world.run(run_id)
    removals = [b for b in world.batches(run_id) if b.kind == "remove"]
    assert (run.leavers, run.sent, [b.contacts for b in removals]) == (120, 0, [100, 20])
    assert len(world.storage.read_removals(run_id, removals[0].index)) == 100
    world.pump()
    assert (world.run(run_id).state, world.run(run_id).removed) == ("succeeded", 120)
    assert world.emails() == emails(range(130))


def test_the_mass_removal_guard_stops_a_run_that_would_empty_the_list(world: MemoryWorld) -> None:
    world.destination(sync_mode="mirror")
    world.arrive("loyal/a.csv", people(*range(100)))
    world.pump()
    before = world.sendgrid.count("upsert")
    version = world.drop("loyal/b.csv", people(*range(40)))  # 60% would go
    run_requests.request_exports(world.svc, version, "blob")
    world.pump()
    run = world.latest()
    assert run.state == "failed"
    assert "would remove 60 of the 100 contacts" in run.error
    assert "(60%; allowed: 50%)" in run.error and "nothing was sent" in run.error
    assert len(world.members()) == 100 and world.sendgrid.count("upsert") == before

    world.arrive("loyal/empty.csv", "Email,FirstName\n")
    world.pump()
    assert "and it would empty the list" in world.latest().error

    run_requests.request_exports(world.svc, version, "api", allow_mass_removal=True)
    world.pump()
    run = world.latest()
    assert (run.state, run.removed) == ("succeeded", 60)
    assert world.emails() == emails(range(40))


def test_upsert_mode_never_removes(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", people(*range(10)))
    world.pump()
    world.arrive("loyal/b.csv", people(1, 2))
    world.pump()
    assert (world.latest().leavers, world.latest().removed) == (0, 0)
    assert world.sendgrid.count("remove_from_list") == 0
    assert len(world.members()) == 10
