"""The run flow step by step: in-memory ledger and storage, the real sandbox over HTTP.

The test delivers the queue messages itself, so repeats, faults and poison are exact to stage.
(The same flow runs under the local host on Azurite in the end-to-end tests.)
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from exporter.flow import arrivals, plan, poison, run_requests, sending, slots, verification
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
from exporter.model.versions import SnapshotVersion
from tests.support.flow import ListWorld
from tests.support.sandbox import SandboxProcess, start_sandbox

pytestmark = pytest.mark.functional
UNVERIFIED = {"verify_up_to": 0, "verify_every": 0}
"""A destination that never reads its list back (unless a run asks)."""

KEY = "SG.flow-test-key"


@dataclass
class World(ListWorld):
    def drop(self, name: str, text: str) -> SnapshotVersion:
        return self.storage.put_snapshot(name, text.encode())

    def only_run(self) -> RunRecord:
        (run,) = self.ledger.runs()
        return run

    def members(self) -> dict[str, dict[str, object]]:
        return {m["email"]: m for m in self.sandbox.list_members(self.list_id)}


@pytest.fixture
def world(sandbox: SandboxProcess) -> World:
    world = World.connect(sandbox, KEY, max_batch_contacts=40)
    world.list_id = world.client.create_list("flow test").id
    return world


def segment_csv(n: int, *, extra: str = "") -> str:
    rows = ["Email,FirstName,City"]
    rows += [f"user{i}@example.com,Name{i},City{i % 7}" for i in range(n)]
    return "\n".join(rows) + "\n" + extra


def test_a_snapshot_ends_up_exactly_in_the_list(world: World) -> None:
    world.destination()
    bad = "not-an-email,Bad,X\nUSER3@EXAMPLE.COM,Dup,Y\n,,\nragged@example.com\n"
    version = world.drop("loyal/2026-11-24.csv", segment_csv(100, extra=bad))
    (run_id,) = arrivals.on_snapshot(world.svc, version)
    world.pump()

    run = world.ledger.get_run(run_id)
    assert run is not None
    # Rows were rejected (reported below), but the list holds exactly the valid contacts: read
    # back from SendGrid, member by member.
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
    assert set(members) == {f"user{i}@example.com" for i in range(100)}
    assert members["user3@example.com"]["first_name"] == "Name3"  # first occurrence won
    assert members["user5@example.com"]["city"] == "City5"
    report = list(csv.DictReader(io.StringIO(world.storage.blobs[run.reject_report].decode())))
    assert [(r["row"], r["reason"]) for r in report] == [
        ("101", "invalid_email"),
        ("104", "ragged_row"),
    ]


def test_states_move_queued_planning_sending_confirming_succeeded(world: World) -> None:
    world.destination()
    (run_id,) = arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(50)))
    assert world.ledger.get_run(run_id).state == "queued"  # type: ignore[union-attr]
    world.plan_queued()
    assert world.ledger.get_run(run_id).state == "sending"  # type: ignore[union-attr]
    for m in world.take_batches():
        sending.send_batch(world.svc, m)
    assert world.ledger.get_run(run_id).state == "confirming"  # type: ignore[union-attr]
    world.pump()
    assert world.ledger.get_run(run_id).state == "succeeded"  # type: ignore[union-attr]


def test_the_same_blob_twice_makes_one_run(world: World) -> None:
    world.destination()
    version = world.drop("loyal/a.csv", segment_csv(10))
    assert len(arrivals.on_snapshot(world.svc, version)) == 1
    assert arrivals.on_snapshot(world.svc, version) == []
    world.pump()
    assert len(world.ledger.runs()) == 1
    changed = world.drop("loyal/a.csv", segment_csv(11))  # a new version is a new run
    assert len(arrivals.on_snapshot(world.svc, changed)) == 1


def test_every_message_delivered_twice_still_counts_once(world: World) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(90)))
    for _ in range(20):
        sent = [
            m
            for q in (EXPORT_REQUESTS, CONTACT_BATCHES, IMPORT_JOBS, LIST_CHECKS)
            for m in world.storage.take(q)
        ]
        if not sent:
            break
        time.sleep(0.1)
        for m in sent + sent:  # at-least-once: every message twice
            handler, model = {
                EXPORT_REQUESTS: (plan.plan_run, ExportRequest),
                CONTACT_BATCHES: (sending.send_batch, BatchMessage),
                IMPORT_JOBS: (sending.follow_job, JobCheck),
                LIST_CHECKS: (verification.check_list, ListCheck),
            }[m.queue]
            handler(world.svc, decode(model, m.body))  # type: ignore[operator]
    run = world.only_run()
    assert (run.state, run.verified) == ("succeeded", True)
    assert (run.requested, run.created, run.batches_done) == (90, 90, 3)
    upserts = sum(
        n for k, n in world.sandbox.requests().items() if k.startswith("PUT /v3/marketing/contacts")
    )  # type: ignore[attr-defined]
    assert upserts == 3


def test_a_429_defers_the_batch_without_failing_it(world: World) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(10)))
    world.plan_queued()
    world.sandbox.faults(throttle_rate=1.0)  # type: ignore[attr-defined]
    (message,) = world.take_batches()
    sending.send_batch(world.svc, message)  # no exception: deferred
    (again,) = world.storage.queues[CONTACT_BATCHES]
    assert again.delay >= 1
    assert decode(BatchMessage, again.body).deferrals == 1
    batch = world.ledger.batches(world.only_run().run_id)[0]
    assert (batch.state, batch.deferrals, batch.attempts) == ("queued", 1, 0)
    world.sandbox.faults(throttle_rate=0.0)  # type: ignore[attr-defined]
    world.pump()
    assert world.only_run().state == "succeeded"
    assert len(world.members()) == 10


def test_a_5xx_puts_the_batch_back_with_a_growing_delay(world: World) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(10)))
    world.plan_queued()
    (message,) = world.take_batches()
    world.sandbox.faults(error_rate=1.0)  # type: ignore[attr-defined]
    delays = []
    for _ in range(3):
        sending.send_batch(world.svc, message)  # no exception: no delivery attempt is spent
        (again,) = world.storage.take(CONTACT_BATCHES)
        message = decode(BatchMessage, again.body)
        delays.append(again.delay)
    assert message.retries == 3
    assert 0.75 <= delays[0] <= 1 and 1.5 <= delays[1] <= 2 and 3 <= delays[2] <= 4
    batch = world.ledger.batches(world.only_run().run_id)[0]
    assert (batch.state, batch.attempts) == ("queued", 3)
    assert "HTTP 500" in batch.error
    world.sandbox.faults(error_rate=0.0)  # type: ignore[attr-defined]
    sending.send_batch(world.svc, message)  # the queue delivers it again
    world.pump()
    assert world.only_run().state == "succeeded"


def test_sendgrid_failing_every_time_fails_the_batch_after_the_last_retry(world: World) -> None:
    world.destination(**UNVERIFIED)
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(10)))
    world.plan_queued()
    (message,) = world.take_batches()
    world.sandbox.faults(error_rate=1.0)  # type: ignore[attr-defined]
    for _ in range(sending.MAX_RETRIES):
        sending.send_batch(world.svc, message)
        queued = world.storage.take(CONTACT_BATCHES)
        if not queued:
            break
        message = decode(BatchMessage, queued[0].body)
    world.sandbox.faults(error_rate=0.0)  # type: ignore[attr-defined]
    run = world.only_run()
    assert run.state == "failed"
    assert f"SendGrid failed {sending.MAX_RETRIES} times in a row; the last:" in run.error
    assert "HTTP 500" in run.error


def test_a_missing_list_fails_the_run_before_anything_is_sent(world: World) -> None:
    world.destination(list_id="7d3f9a2e-1111-4222-8333-444455556666")  # no such list
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(50)))
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "SendGrid has no list 7d3f9a2e-1111-4222-8333-444455556666" in run.error
    assert "--list-name" in run.error
    assert (run.batches, run.state_committed, upserted(world)) == (0, False, 0)


def test_a_permanently_rejected_batch_fails_the_run_and_says_why(world: World) -> None:
    world.destination(**UNVERIFIED)
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(50)))
    world.plan_queued()
    world.client.delete_list(world.list_id)  # gone after planning: SendGrid refuses the upserts
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert run.batches_failed == 2
    assert (
        "2 of 2 batches failed; batch 0: SendGrid rejected PUT /v3/marketing/contacts (HTTP 400)"
        in run.error
    )
    assert "list_ids" in run.error
    assert world.sandbox.state()["contacts"] == 0  # nothing was taken


def test_poisoned_batch_marks_the_run_failed_with_the_last_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination(**UNVERIFIED)
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(10)))
    world.plan_queued()
    (message,) = world.take_batches()

    def broken(run_id: str, index: int) -> None:
        raise OSError("storage is unreachable")

    monkeypatch.setattr(world.storage, "open_batch", broken)
    for _ in range(5):
        with pytest.raises(OSError, match="unreachable"):  # not SendGrid's: the host retries
            sending.send_batch(world.svc, message)
    poison.batch_poisoned(world.svc, message)  # the host gave up
    run = world.only_run()
    assert run.state == "failed"
    assert "batch 0: sending failed on every attempt; the last: OSError" in run.error
    assert world.ledger.batches(run.run_id)[0].attempts == 5


def test_no_consent_no_export(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.destination(consent=None)
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(10)))
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "no data-privacy consent is recorded for destination 'marketing'" in run.error
    assert not any("PUT" in k for k in world.sandbox.requests())  # type: ignore[attr-defined]

    # The timer does not add a failed run every tick: it says so in the log instead.
    assert run_requests.refresh(world.svc, at=datetime(2026, 11, 25, tzinfo=UTC)) == []
    assert [r.run_id for r in world.ledger.runs()] == [run.run_id]
    assert "destination marketing has no recorded data-privacy consent" in caplog.text


def test_an_unreadable_file_fails_its_run_with_a_message(world: World) -> None:
    world.destination()
    version = world.storage.put_snapshot("loyal/bad.csv", b"Email,Name\na@b.co,Jos\xe9\n")
    arrivals.on_snapshot(world.svc, version)
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "not UTF-8" in run.error and "line 2" in run.error
    assert not [b for b in world.storage.blobs if "/batches/" in b]


def test_a_missing_secret_fails_the_run_clearly(world: World) -> None:
    world.destination(api_key_secret="SENDGRID_KEY_MISSING")
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(10)))
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "no SendGrid key is available under the name 'SENDGRID_KEY_MISSING'" in run.error


def test_a_refused_key_fails_the_batch_without_retrying() -> None:
    with start_sandbox("--api-key", "SG.the-right-one") as keyed:
        world = World.connect(keyed, "SG.the-right-one", secret="SG.revoked-key")
        world.list_id = world.client.create_list("l").id
        world.destination()
        arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(10)))
        world.pump()  # no exception: a refused key is not retried
        run = world.only_run()
        assert run.state == "failed"
        assert "refused the API key" in run.error
        assert "revoked-key" not in run.error


def test_destination_removed_after_planning(world: World) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(10)))
    world.plan_queued()
    world.destinations.delete("marketing")
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "the destination was removed" in run.error


def test_snapshot_replaced_before_planning_is_skipped(world: World) -> None:
    world.destination()
    old = world.drop("loyal/a.csv", segment_csv(10))
    arrivals.on_snapshot(world.svc, old)
    world.drop("loyal/a.csv", segment_csv(12))  # overwritten before the planner ran
    world.plan_queued()
    run = world.only_run()
    assert run.state == "skipped"
    assert "replaced or deleted" in run.error


def test_timer_re_exports_the_latest_snapshot_once_per_tick(world: World) -> None:
    world.destination(segments=["loyal", "vip"])
    world.drop("loyal/old.csv", segment_csv(5))
    world.drop("loyal/new.csv", segment_csv(7))
    world.drop("vip/x.csv", segment_csv(3))
    world.drop("vip/model.json", b"{}".decode())  # not a snapshot file
    tick = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    first = run_requests.refresh(world.svc, tick)
    assert len(first) == 2
    assert run_requests.refresh(world.svc, tick) == []  # the same tick again makes nothing new
    world.pump()
    snapshots = sorted(r.snapshot for r in world.ledger.runs())
    assert snapshots == ["loyal/new.csv", "vip/x.csv"]
    assert all(r.trigger == "timer" and r.state == "succeeded" for r in world.ledger.runs())


def test_custom_fields_are_resolved_to_ids_or_fail_clearly(world: World) -> None:
    world.destination(mapping={"custom:tier": "Tier"})
    data = "Email,Tier\na@example.com,Gold\nb@example.com,\n"
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", data))
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "custom field(s) 'tier' do not exist in SendGrid" in run.error

    world.client.create_field("tier", "Text")
    arrivals.on_snapshot(world.svc, world.drop("loyal/b.csv", data))
    world.pump()
    latest = world.ledger.runs()[0]
    assert latest.state == "succeeded", latest.error
    assert world.members()["a@example.com"]["custom_fields"] == {"tier": "Gold"}
    assert "custom_fields" not in world.members()["b@example.com"]


def test_run_ids_are_readable_and_stable_for_one_blob_version() -> None:
    version = SnapshotVersion("loyal/a.csv", '"0x1"', datetime(2026, 11, 24, 9, 30, tzinfo=UTC), 1)
    at = datetime(2026, 11, 25, tzinfo=UTC)
    blob_id = run_requests.make_run_id("marketing", version, "blob", at)
    assert blob_id.startswith("20261124T093000-")
    assert blob_id == run_requests.make_run_id("marketing", version, "blob", datetime.now(UTC))
    assert blob_id != run_requests.make_run_id("sales", version, "blob", at)
    assert run_requests.make_run_id("marketing", version, "api", at) != run_requests.make_run_id(
        "marketing", version, "api", at
    )
    assert json.dumps(blob_id)  # plain text, usable as a table key and blob prefix


class Crash(Exception):
    """The worker process died here."""


def crash_on_send(world: World, queue: str, after: int) -> None:
    """Make the `after`-th send to `queue` die (once), as a killed worker would."""
    original = world.storage.send
    sent = {"n": 0, "crashed": False}

    def send(q: str, message: object, *, delay: float = 0) -> None:
        if q == queue and not sent["crashed"]:
            sent["n"] += 1
            if sent["n"] == after:
                sent["crashed"] = True
                raise Crash
        original(q, message, delay=delay)

    world.storage.send = send  # type: ignore[method-assign]


def deliver(world: World, queue: str) -> None:
    handler, model = {
        EXPORT_REQUESTS: (plan.plan_run, ExportRequest),
        CONTACT_BATCHES: (sending.send_batch, BatchMessage),
        IMPORT_JOBS: (sending.follow_job, JobCheck),
    }[queue]
    for m in world.storage.take(queue):
        try:
            handler(world.svc, decode(model, m.body))  # type: ignore[operator]
        except Crash:
            world.storage.queues[queue].append(m)  # the message comes back after the lease


def test_a_planner_dying_while_queueing_batches_does_not_hang_the_run(world: World) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(100)))
    crash_on_send(world, CONTACT_BATCHES, after=2)  # dies after queueing the first batch
    deliver(world, EXPORT_REQUESTS)
    assert world.only_run().state == "sending"
    assert len(world.storage.queues[CONTACT_BATCHES]) == 1
    world.pump()  # the export request is redelivered
    run = world.only_run()
    assert (run.state, run.batches_done, run.created) == ("succeeded", 3, 100)


def test_a_worker_dying_before_queueing_the_job_check_does_not_hang_the_run(
    world: World,
) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(30)))
    deliver(world, EXPORT_REQUESTS)
    crash_on_send(world, IMPORT_JOBS, after=1)
    deliver(world, CONTACT_BATCHES)  # upserted and recorded, then died
    (batch,) = world.ledger.batches(world.only_run().run_id)
    assert batch.state == "accepted" and not world.storage.queues[IMPORT_JOBS]
    world.pump()  # the batch message is redelivered: the job check is queued, not a new upsert
    run = world.only_run()
    assert (run.state, run.created) == ("succeeded", 30)
    upserts = sum(
        n for k, n in world.sandbox.requests().items() if k.startswith("PUT /v3/marketing/contacts")
    )  # type: ignore[attr-defined]
    assert upserts == 1


def test_a_follower_dying_before_finalising_does_not_hang_the_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(30)))
    deliver(world, EXPORT_REQUESTS)
    deliver(world, CONTACT_BATCHES)
    time.sleep(0.2)
    real = sending.settle
    monkeypatch.setattr(sending, "settle", lambda svc, run_id: (_ for _ in ()).throw(Crash()))
    deliver(world, IMPORT_JOBS)  # the batch settled, then the process died
    assert world.only_run().state == "confirming"
    monkeypatch.setattr(sending, "settle", real)
    world.pump()  # the job check is redelivered
    assert world.only_run().state == "succeeded"


def upserted(world: World) -> int:
    """Contacts PUT to SendGrid so far (from the sandbox's members and request counts)."""
    return sum(
        n
        for k, n in world.sandbox.requests().items()
        if k.startswith("PUT /v3/marketing/contacts")  # type: ignore[attr-defined]
    )


def latest(world: World) -> RunRecord:
    return world.ledger.runs()[0]


def test_a_refresh_sends_only_what_changed(world: World) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(100)))
    world.pump()
    first = latest(world)
    assert (first.sent, first.unchanged, first.members, first.state_committed) == (
        100,
        0,
        100,
        True,
    )

    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(100)))  # same content
    world.pump()
    same = latest(world)
    assert same.run_id != first.run_id
    assert (same.state, same.sent, same.unchanged, same.batches) == ("succeeded", 0, 100, 0)
    assert upserted(world) == 3  # the first run's three batches only

    changed = segment_csv(100).replace("Name7,", "Renamed7,").replace("Name42,", "Renamed42,")
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", changed + "new@example.com,New,X\n"))
    world.pump()
    delta = latest(world)
    assert (delta.state, delta.sent, delta.unchanged, delta.members) == ("succeeded", 3, 98, 101)
    assert upserted(world) == 4
    members = world.members()
    assert members["user7@example.com"]["first_name"] == "Renamed7"
    assert "new@example.com" in members


def test_a_full_refresh_sends_everyone(world: World) -> None:
    world.destination()
    version = world.drop("loyal/a.csv", segment_csv(50))
    arrivals.on_snapshot(world.svc, version)
    world.pump()
    run_requests.request_exports(world.svc, version, "api", full_refresh=True)
    world.pump()
    run = latest(world)
    # Everyone sent: none counts as "unchanged" (that is what was not sent).
    assert (run.full_refresh, run.sent, run.unchanged, run.state) == (True, 50, 0, "succeeded")
    assert run.verified  # a full refresh also reads the list back


def test_every_third_run_is_a_full_refresh_when_the_destination_asks(world: World) -> None:
    world.destination(full_refresh_every=3)
    plan = []
    for n in range(7):
        if n:  # hourly ticks
            run_requests.refresh(world.svc, at=datetime(2026, 11, 25, n, tzinfo=UTC))
        else:
            arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(20)))
        world.pump()
        run = latest(world)
        assert run.state == "succeeded"
        plan.append((run.full_refresh, run.sent))
    # the first run sends all (all new); then two deltas, a full refresh, two deltas, a full...
    assert plan == [
        (False, 20),
        (False, 0),
        (False, 0),
        (True, 20),
        (False, 0),
        (False, 0),
        (True, 20),
    ]


def test_a_failed_run_does_not_count_towards_the_next_full_refresh(world: World) -> None:
    world.destination(full_refresh_every=2, **UNVERIFIED)
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(20)))
    world.pump()
    changed = world.drop("loyal/a.csv", segment_csv(20).replace(",Name1,", ",Changed1,"))
    arrivals.on_snapshot(world.svc, changed)  # not due: a delta run, which fails
    world.plan_queued()
    for m in world.take_batches():
        poison.batch_poisoned(world.svc, m)
    world.pump()
    assert (latest(world).full_refresh, latest(world).state) == (False, "failed")
    run_requests.refresh(
        world.svc, at=datetime(2026, 11, 25, 1, tzinfo=UTC)
    )  # not due: failed runs don't count
    world.pump()
    assert (latest(world).full_refresh, latest(world).sent) == (False, 1)
    run_requests.refresh(world.svc, at=datetime(2026, 11, 25, 2, tzinfo=UTC))  # due now
    world.pump()
    assert (latest(world).full_refresh, latest(world).sent, latest(world).state) == (
        True,
        20,
        "succeeded",
    )


def test_a_failed_run_commits_what_landed_so_the_next_run_sends_only_the_rest(
    world: World,
) -> None:
    world.destination(**UNVERIFIED)
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(60)))
    world.pump()
    changed = segment_csv(60).replace(",Name", ",Changed")  # all 60 changed
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", changed))
    world.plan_queued()
    first, second = world.take_batches()
    sending.send_batch(world.svc, first)  # one batch (40) lands
    poison.batch_poisoned(world.svc, second)  # the other (20) never does
    world.pump()
    failed = latest(world)
    assert (failed.state, failed.state_committed) == ("failed", True)

    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", changed + "\n"))  # same rows again
    world.pump()
    again = latest(world)
    assert (again.state, again.sent, again.state_committed) == ("succeeded", 20, True)
    assert all(m["first_name"].startswith("Changed") for m in world.members().values())


def test_contacts_sendgrid_errored_are_sent_again_and_nothing_else(world: World) -> None:
    world.destination(**UNVERIFIED)
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(100)))
    world.pump()
    changed = segment_csv(100).replace(",Name1", ",Changed1")  # 11 rows: user1, user10-19
    changed = changed.replace(",Name5", ",Changed5")  # and 11 more: 22, one batch under 40
    changed += "".join(f"new{i}@example.com,New,X\n" for i in range(30))  # 52 to send
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", changed))
    world.plan_queued()
    first, second = world.take_batches()
    world.sandbox.faults(contact_error_rate=1.0)  # type: ignore[attr-defined]
    sending.send_batch(world.svc, first)  # SendGrid errors all 40
    deadline = time.monotonic() + 30
    while not world.ledger.get_batch(first.run_id, first.batch).settled:  # its job settles
        assert time.monotonic() < deadline, "the import job did not settle"
        time.sleep(0.1)
        for m in world.storage.take(IMPORT_JOBS):
            sending.follow_job(world.svc, decode(JobCheck, m.body))
    world.sandbox.faults(contact_error_rate=0.0)  # type: ignore[attr-defined]
    sending.send_batch(world.svc, second)  # these 12 land
    world.pump()
    partial = latest(world)
    assert (partial.state, partial.sent, partial.errored) == ("succeeded_with_errors", 52, 40)
    assert partial.state_committed  # with the errored batch's contacts marked unsent

    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", changed + "\n"))  # the same rows
    world.pump()
    again = latest(world)
    assert (again.state, again.sent, again.errored, again.unchanged) == ("succeeded", 40, 0, 90)
    members = world.members()
    assert len(members) == 130
    assert members["user15@example.com"]["first_name"] == "Changed15"
    assert members["user50@example.com"]["first_name"] == "Changed50"


def test_over_the_profile_cap_nothing_is_sent(world: World) -> None:
    world.destination(profile_cap=50)
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", segment_csv(51)))
    world.pump()
    run = latest(world)
    assert run.state == "failed"
    assert (
        "more than 50 valid profiles, over the cap of 50 set on destination 'marketing'"
        in run.error
    )
    assert upserted(world) == 0
    assert not [b for b in world.storage.blobs if "/batches/" in b]
    assert world.storage.read_state("marketing", "loyal", world.list_id) is None


def people(*numbers: int, name: str = "Name") -> str:
    rows = ["Email,FirstName,City"] + [f"user{i}@example.com,{name}{i},X" for i in numbers]
    return "\n".join(rows) + "\n"


def test_mirror_removes_those_who_left_and_takes_back_who_returns(world: World) -> None:
    world.destination(sync_mode="mirror")
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", people(*range(1500))))
    world.pump()
    assert set(world.members()) == {f"user{i}@example.com" for i in range(1500)}

    stay = [i for i in range(1500) if i % 3]  # a third leave: 500 removals in one batch
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", people(*stay)))
    world.pump()
    run = latest(world)
    assert (run.state, run.leavers, run.removed, run.sent) == ("succeeded", 500, 500, 0)
    assert set(world.members()) == {f"user{i}@example.com" for i in stay}
    assert world.sandbox.state()["contacts"] == 1500  # removed from the list, not the account

    back = [*stay, 3, 6]  # two return
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", people(*back)))
    world.pump()
    run = latest(world)
    assert (run.state, run.sent, run.leavers) == ("succeeded", 2, 0)
    assert set(world.members()) == {f"user{i}@example.com" for i in back}


def test_upsert_mode_never_removes(world: World) -> None:
    world.destination()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", people(*range(10))))
    world.pump()
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", people(1, 2)))
    world.pump()
    assert (latest(world).leavers, latest(world).removed) == (0, 0)
    assert len(world.members()) == 10


def test_the_mass_removal_guard_stops_a_run_that_would_empty_the_list(world: World) -> None:
    world.destination(sync_mode="mirror")
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", people(*range(100))))
    world.pump()
    sent_before = upserted(world)
    version = world.drop("loyal/a.csv", people(*range(40)))  # 60% would go
    arrivals.on_snapshot(world.svc, version)
    world.pump()
    run = latest(world)
    assert run.state == "failed"
    assert "would remove 60 of the 100 contacts" in run.error
    assert "(60%; allowed: 50%)" in run.error and "nothing was sent" in run.error
    assert len(world.members()) == 100 and upserted(world) == sent_before

    arrivals.on_snapshot(world.svc, world.drop("loyal/empty.csv", "Email,FirstName\n"))
    world.pump()
    assert "and it would empty the list" in latest(world).error

    run_requests.request_exports(world.svc, version, "api", allow_mass_removal=True)
    world.pump()
    run = latest(world)
    assert (run.state, run.removed) == ("succeeded", 60)
    assert set(world.members()) == {f"user{i}@example.com" for i in range(40)}


def test_an_older_snapshot_arriving_late_is_skipped(world: World) -> None:
    world.destination(sync_mode="mirror")
    old = world.drop("loyal/monday.csv", people(*range(10)))
    arrivals.on_snapshot(world.svc, world.drop("loyal/tuesday.csv", people(*range(5))))
    world.pump()
    arrivals.on_snapshot(world.svc, old)  # Monday's file, delivered late
    world.pump()
    run = latest(world)
    assert (run.state, run.snapshot) == ("skipped", "loyal/monday.csv")
    assert "a newer snapshot of this segment was already exported" in run.error
    assert set(world.members()) == {f"user{i}@example.com" for i in range(5)}


def test_two_snapshots_racing_never_interleave_and_the_newer_wins(world: World) -> None:
    world.destination(sync_mode="mirror")
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", people(*range(100))))
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
    assert by_snapshot["loyal/c.csv"].created_at <= by_snapshot["loyal/c.csv"].finished_at  # type: ignore[operator]
    assert set(world.members()) == {f"user{i}@example.com" for i in range(30, 90)}


def test_the_newer_snapshot_planned_first_makes_the_older_one_skip(world: World) -> None:
    world.destination(sync_mode="mirror")
    older = world.drop("loyal/b.csv", people(*range(60)))
    newer = world.drop("loyal/c.csv", people(*range(30, 90)))
    arrivals.on_snapshot(world.svc, newer)
    arrivals.on_snapshot(world.svc, older)
    world.pump()
    by_snapshot = {r.snapshot: r for r in world.ledger.runs()}
    assert by_snapshot["loyal/b.csv"].state == "skipped"
    assert "newer snapshot of this segment" in by_snapshot["loyal/b.csv"].error
    assert set(world.members()) == {f"user{i}@example.com" for i in range(30, 90)}


def test_an_unverified_run_records_the_count_it_sees_and_says_it_did_not_verify(
    world: World,
) -> None:
    world.destination(sync_mode="mirror", **UNVERIFIED)
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", people(*range(20))))
    world.pump()
    first = latest(world)
    assert (first.list_count, first.drift, first.state) == (20, 0, "succeeded")
    assert not first.verified
    assert first.verify_note.startswith("not verified this run: segments over 0 members")
    someone = world.client.search_emails(["user3@example.com"])  # removed by hand in SendGrid
    world.client.remove_from_list(world.list_id, someone.values())
    arrivals.on_snapshot(world.svc, world.drop("loyal/a.csv", people(*range(20)) + "\n"))
    world.pump()
    run = latest(world)
    # Every batch landed (there were none): an unverified run trusts that, and shows the count.
    assert (run.sent, run.list_count, run.drift, run.state) == (0, 19, -1, "succeeded")


def test_snapshots_written_in_the_same_second_are_ordered_by_name(world: World) -> None:
    world.destination(sync_mode="mirror")
    monday = world.drop("loyal/2026-11-24T0900.csv", people(*range(10)))
    data = people(*range(5, 15)).encode()
    tuesday = SnapshotVersion("loyal/2026-11-24T0901.csv", '"t"', monday.last_modified, len(data))
    world.storage.snapshots[tuesday.name] = (data, tuesday)  # the same Last-Modified second
    arrivals.on_snapshot(world.svc, tuesday)
    world.pump()
    arrivals.on_snapshot(world.svc, monday)  # the older one, late
    world.pump()
    run = latest(world)
    assert (run.snapshot, run.state) == (monday.name, "skipped")
    assert set(world.members()) == {f"user{i}@example.com" for i in range(5, 15)}
