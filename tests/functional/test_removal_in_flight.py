"""`destinations remove` while a run is in flight: an upload cut short, jobs still followed,
batches still queued, a planner still reading. The removal ends the run at once; the workers
then meet what it deleted (a batch blob gone under an upload: Azure answers the next range read
with 412 `ResourceModifiedError`, as Azurite does below) and must take that as the expected end
it is: one event line, no exception (the host would record a failed invocation and retry), no
traceback, the message consumed. The run ends `failed`, saying the destination was removed, and
its summary adds up.

The flow runs on in-memory storage and ledger against the real sandbox (`tests.support.flow`),
with batch blobs streamed in pieces the way the Azure adapter reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from exporter.adapters import storage_runs
from exporter.adapters.azure_storage import Storage
from exporter.admin.removal import remove_destination
from exporter.admin.views import bar, progress, summary
from exporter.core.batching import ContactStream
from exporter.flow import arrivals, sending
from exporter.flow.sending import REMOVED
from exporter.local.azurite import AzuriteProcess
from exporter.model.messages import CONTACT_BATCHES, BatchMessage
from exporter.model.runs import RunRecord
from tests.support.flow import ListWorld
from tests.support.sandbox import SandboxProcess
from tests.unit.test_run_views import assert_bar_adds_up, assert_summary_adds_up

pytestmark = pytest.mark.functional

PIECE = 512
"""Bytes per read of a batch blob (the adapter reads 1 MiB; small here, so a 40-contact batch
takes several reads)."""


@dataclass
class World(ListWorld):
    during_upload: list[Callable[[], None]] = field(default_factory=list)
    """Called (once each) between two reads of a batch blob being sent."""

    def arm(self) -> None:
        """Blobs read the way Azure serves them, and the admin's blob calls removal needs."""
        storage = self.storage

        def open_batch(run_id: str, index: int) -> ContactStream:
            name = f"runs/{run_id}/batches/{index:05d}.json"
            data = storage.blobs.get(name)
            if data is None:
                raise ResourceNotFoundError("The specified blob does not exist.")

            def pieces() -> Iterator[bytes]:
                for start in range(0, len(data), PIECE):
                    if start:
                        while self.during_upload:
                            self.during_upload.pop(0)()
                        if storage.blobs.get(name) is not data:  # If-Match on the first ETag
                            raise ResourceModifiedError(
                                "The condition specified using HTTP conditional header(s) is "
                                "not met."
                            )
                    yield data[start : start + PIECE]

            return ContactStream(len(data), pieces())

        def has_app_blobs(prefix: str) -> bool:
            return any(name.startswith(prefix) for name in storage.blobs)

        def delete_app_blobs(prefix: str, *, keep: str = "") -> int:
            gone = [n for n in storage.blobs if n.startswith(prefix) and n != keep]
            for name in gone:
                del storage.blobs[name]
            return len(gone)

        storage.open_batch = open_batch  # type: ignore[method-assign]
        storage.has_app_blobs = has_app_blobs  # type: ignore[attr-defined]
        storage.delete_app_blobs = delete_app_blobs  # type: ignore[attr-defined]

    def only_run(self) -> RunRecord:
        (run,) = self.ledger.runs()
        return run

    def send(self, message: BatchMessage) -> None:
        sending.send_batch(self.svc, message)


@pytest.fixture
def world(sandbox: SandboxProcess) -> World:
    world = World.connect(sandbox, "SG.removal-test", max_batch_contacts=40)
    world.list_id = world.client.create_list("removal test").id
    world.arm()
    return world


def segment_csv(n: int) -> bytes:
    rows = ["Email,FirstName"] + [f"user{i}@example.com,Name{i}" for i in range(n)]
    return ("\n".join(rows) + "\n").encode()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    shown = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert shown == [], [r.getMessage() for r in shown]


def test_removing_a_destination_while_its_batches_are_in_flight(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    world.destination(verify_up_to=0, verify_every=0)
    (run_id,) = arrivals.on_snapshot(
        world.svc, world.storage.put_snapshot("loyal/a.csv", segment_csv(100))
    )
    world.plan_queued()
    first, second, third = world.take_batches()  # 40, 40 and 20 contacts

    world.send(first)  # accepted: its import job is being followed
    assert world.ledger.get_batch(run_id, 0).state == "accepted"  # type: ignore[union-attr]
    # The second batch is half uploaded when the destination is removed: the removal deletes
    # the batch's blob, and the next read of it fails as Azure's does.
    removals: list[object] = []
    world.during_upload.append(lambda: removals.append(remove_destination(world.svc, "marketing")))
    world.send(second)  # no exception: the host records no failed invocation
    assert removals, "the removal ran during the upload"
    world.send(third)  # the run has ended: nothing is sent
    world.pump()  # the first batch's job check finds the run ended

    no_tracebacks(caplog)
    events = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch ")]
    assert any(e.startswith("batch stopped") and "error=ResourceModifiedError" in e for e in events)

    run = world.only_run()
    assert run.state == "failed"
    assert run.error.startswith(f"{REMOVED} while the run was sending"), run.error
    assert "0 of 3 batches confirmed" in run.error
    batches = world.ledger.batches(run_id)
    assert [b.state for b in batches] == ["failed"] * 3
    assert batches[0].error == f"{REMOVED}: the batch was sent, its import not confirmed"
    assert batches[2].error == f"{REMOVED}: the batch was not sent"
    assert not [n for n in world.storage.blobs if n.startswith(f"runs/{run_id}/")]  # deleted

    text = summary(run, batches)
    table = assert_summary_adds_up(text)
    assert table["sent"][0] == "0" and "100 in failed batches" in table["sent"][1]
    assert table["batches"] == ("3", "0 confirmed, 3 failed")
    line = bar(progress(run, batches))
    assert_bar_adds_up(line)
    assert (
        "3 batches: 0 confirmed, 3 failed" in line
        and "stopped: the destination was removed" in line
    )

    # A repeat of every message (at-least-once delivery) changes nothing and raises nothing.
    for message in (first, second, third):
        world.send(message)
    assert world.only_run().error == run.error
    no_tracebacks(caplog)


def test_a_worker_finding_the_destination_gone_stops_the_whole_run(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The document went (a removal that stopped half way, or by hand): the first worker to
    notice ends the run as the removal would."""
    world.destination(verify_up_to=0, verify_every=0)
    arrivals.on_snapshot(world.svc, world.storage.put_snapshot("loyal/a.csv", segment_csv(100)))
    world.plan_queued()
    first, *_ = world.take_batches()
    world.destinations.delete("marketing")
    world.send(first)
    run = world.only_run()
    assert run.state == "failed" and run.error.startswith(REMOVED), run.error
    assert {b.state for b in world.ledger.batches(run.run_id)} == {"failed"}
    assert_summary_adds_up(summary(run, world.ledger.batches(run.run_id)))
    no_tracebacks(caplog)


def test_removing_a_destination_while_its_run_is_planned(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The planner is reading the snapshot when the destination goes: it finds the run ended,
    deletes what it wrote and queues nothing."""
    world.destination(verify_up_to=0, verify_every=0)
    version = world.storage.put_snapshot("loyal/a.csv", segment_csv(100))
    (run_id,) = arrivals.on_snapshot(world.svc, version)
    real_open = world.storage.open_snapshot

    def open_snapshot(v):  # type: ignore[no-untyped-def]
        remove_destination(world.svc, "marketing")  # while the planner has the snapshot open
        return real_open(v)

    world.storage.open_snapshot = open_snapshot  # type: ignore[method-assign]
    world.plan_queued()
    run = world.only_run()
    assert run.state == "failed"
    assert run.error == f"{REMOVED} before the run was planned: nothing was sent"
    assert world.ledger.batches(run_id) == []
    assert world.storage.take(CONTACT_BATCHES) == []
    assert not [n for n in world.storage.blobs if n.startswith(f"runs/{run_id}/")]
    assert "nothing was read or sent" in summary(run, [])
    no_tracebacks(caplog)


def test_azure_answers_a_read_of_a_batch_blob_deleted_mid_stream_with_412(
    azurite: AzuriteProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the fake above stands for: the adapter reads a batch in ranges pinned to the first
    read's ETag; a blob deleted in between fails the next read with ResourceModifiedError."""
    monkeypatch.setattr(storage_runs, "BATCH_RANGE", 1024)
    storage = Storage.from_env({"AzureWebJobsStorage": azurite.connection_string})
    storage.ensure()
    storage.write_batch("removal-412", 0, '["' + "x" * 5000 + '"]')
    pieces = storage.open_batch("removal-412", 0).chunks
    assert len(next(iter(pieces))) == 1024
    storage.delete_run_blobs("removal-412")
    with pytest.raises(ResourceModifiedError):
        next(iter(pieces))
