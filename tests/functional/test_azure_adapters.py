"""Azure adapters on real Azurite: run ledger (ETags under concurrency), storage, destinations."""

from __future__ import annotations

import base64
import io
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from exporter.adapters.azure_storage import Storage
from exporter.adapters.destination_store import BlobDestinationStore
from exporter.adapters.table_ledger import TableRunLedger
from exporter.model.destinations import Consent, Destination
from exporter.model.messages import BatchMessage, decode
from exporter.model.runs import BatchRecord, RunRecord
from tests.support.azurite import unique_name

pytestmark = pytest.mark.functional


@pytest.fixture
def storage(azurite) -> Storage:
    store = Storage.from_env({"AzureWebJobsStorage": azurite.connection_string})
    store.ensure()
    return store


@pytest.fixture
def ledger(storage: Storage) -> TableRunLedger:
    return TableRunLedger(storage.tables, table=unique_name("runs").replace("-", ""))


def a_run(run_id: str = "20261124T000000-abc", destination: str = "d") -> RunRecord:
    return RunRecord(run_id, destination, "seg", "seg/a.csv", '"0x1"', "blob")


def test_a_run_is_created_once(ledger: TableRunLedger) -> None:
    assert ledger.create_run(a_run())
    assert not ledger.create_run(a_run())
    got = ledger.get_run("20261124T000000-abc")
    assert got is not None and got.state == "queued" and got.destination == "d"
    assert ledger.get_run("nope") is None


def test_concurrent_updates_are_never_lost(ledger: TableRunLedger) -> None:
    ledger.create_run(a_run())
    ledger.put_batches("20261124T000000-abc", [BatchRecord("20261124T000000-abc", 0, 10, 100)])

    def bump_run() -> None:
        for _ in range(10):
            ledger.update_run("20261124T000000-abc", lambda r: setattr(r, "created", r.created + 1))

    def bump_batch() -> None:
        for _ in range(10):
            ledger.update_batch(
                "20261124T000000-abc", 0, lambda b: setattr(b, "attempts", b.attempts + 1)
            )

    threads = [threading.Thread(target=f) for f in (bump_run, bump_batch) * 6]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.get_run("20261124T000000-abc").created == 60  # type: ignore[union-attr]
    assert ledger.get_batch("20261124T000000-abc", 0).attempts == 60  # type: ignore[union-attr]


def test_a_change_returning_false_writes_nothing(ledger: TableRunLedger) -> None:
    ledger.create_run(a_run())
    before = ledger.get_run("20261124T000000-abc")
    ledger.update_run("20261124T000000-abc", lambda r: False)
    assert ledger.get_run("20261124T000000-abc").updated_at == before.updated_at  # type: ignore[union-attr]


def test_batches_and_runs_round_trip(ledger: TableRunLedger) -> None:
    run = a_run()
    run.reasons = {"invalid_email": 3}
    ledger.create_run(run)
    ledger.create_run(a_run("20261125T000000-def", destination="other"))
    ledger.put_batches(run.run_id, [BatchRecord(run.run_id, i, 5, 50) for i in range(150)])
    batches = ledger.batches(run.run_id)
    assert [b.index for b in batches] == list(range(150))  # two transactions of <= 100
    assert ledger.get_run(run.run_id).reasons == {"invalid_email": 3}  # type: ignore[union-attr]
    assert [r.run_id for r in ledger.runs()] == ["20261125T000000-def", run.run_id]  # newest first
    assert [r.run_id for r in ledger.runs("d")] == [run.run_id]


def test_queue_messages_are_base64_json_as_the_host_expects(storage: Storage, azurite) -> None:
    storage.send("contact-batches", BatchMessage(run_id="20261124T101500-1f2e3d4c5b6a", batch=3))
    raw = storage.queues.get_queue_client("contact-batches").receive_message()
    assert raw is not None
    assert decode(BatchMessage, base64.b64decode(raw.content)).batch == 3
    storage.queues.get_queue_client("contact-batches").delete_message(raw)


def test_snapshot_versions_are_pinned(storage: Storage) -> None:
    segment = unique_name("seg")
    # Most likely written in the same second: then the later name wins the tie.
    storage.segments.upload_blob(f"{segment}/2026-11-01.csv", b"Email\na@b.co\n")
    storage.segments.upload_blob(f"{segment}/2026-11-02.csv", b"Email\nb@b.co\n")
    storage.segments.upload_blob(f"{segment}/model.json", b"{}")
    latest = storage.latest_snapshot(segment)
    assert latest is not None and latest.name == f"{segment}/2026-11-02.csv"
    # One version, one ETag, however it was found (a listing gives it without its quotes).
    assert latest == storage.snapshot_version(latest.name)
    assert storage.open_snapshot(latest).read() == b"Email\nb@b.co\n"
    storage.segments.upload_blob(f"{segment}/2026-11-02.csv", b"Email\nc@b.co\n", overwrite=True)
    with pytest.raises(ResourceModifiedError):
        storage.open_snapshot(latest).read()


def test_batch_blobs_and_reports(storage: Storage) -> None:
    run_id = unique_name("run")
    storage.write_batch(run_id, 0, '[{"email":"a@b.co","first_name":"Zoë"}]')
    assert json.loads(storage.read_batch(run_id, 0))[0]["first_name"] == "Zoë"
    storage.write_removals(run_id, 0, ["gone@b.co"])
    storage.put_run_file(run_id, "verify/extra", b"x@b.co\n")
    report = storage.write_report(run_id, io.BytesIO(b"row,line,reason\n"))
    storage.delete_run_blobs(run_id)  # the run ended: its contact data goes, the report stays
    left = [b.name for b in storage.app.list_blobs(name_starts_with=f"runs/{run_id}/")]
    assert left == [report] == [f"runs/{run_id}/rejects.csv"]

    written = datetime.now(UTC)
    assert run_id not in set(storage.reports_older_than(written - timedelta(minutes=5)))
    assert run_id in set(storage.reports_older_than(written + timedelta(minutes=5)))
    storage.delete_report(run_id)
    storage.delete_report(run_id)  # again: nothing to do, no error
    assert not list(storage.app.list_blobs(name_starts_with=f"runs/{run_id}/"))


def test_destinations_round_trip_in_blobs(storage: Storage) -> None:
    store = BlobDestinationStore(storage.app)
    name = unique_name("dest")
    destination = Destination(
        name=name,
        display_name="Marketing",
        list_id="3f1c2a9e-0b7d-4c55-9a4e-1d2b3c4d5e6f",
        api_key_secret="SENDGRID_KEY_MARKETING",
        segments=["loyal"],
        consent=Consent(accepted_by="dpo@company.example", accepted_at=datetime.now(UTC)),
    )
    store.put(destination)
    assert store.get(name) == destination
    assert name in [d.name for d in store.all()]
    assert store.delete(name)
    assert store.get(name) is None and not store.delete(name)


def test_slots_are_created_on_first_use_and_updated_with_etags(ledger: TableRunLedger) -> None:
    first = ledger.update_slot("d", "seg", lambda s: setattr(s, "run_id", "run-1"))
    assert (first.destination, first.segment, first.run_id) == ("d", "seg", "run-1")

    def claim() -> None:
        for _ in range(5):
            ledger.update_slot("d", "seg", lambda s: setattr(s, "snapshot", s.snapshot + "x"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = ledger.update_slot("d", "seg", lambda s: False)
    assert (final.run_id, final.snapshot) == ("run-1", "x" * 30)
    assert ledger.runs() == []  # slots are not runs


def test_reading_a_slot_writes_nothing(ledger: TableRunLedger) -> None:
    empty = ledger.get_slot("d", "never-used")
    assert (empty.destination, empty.segment, empty.run_id, empty.syncs_since_full) == (
        "d",
        "never-used",
        "",
        0,
    )
    with pytest.raises(ResourceNotFoundError):  # no entity was made by reading
        ledger._table.get_entity("slot|d|never-used", "slot")
    ledger.update_slot("d", "read", lambda s: setattr(s, "syncs_since_full", 3))
    assert ledger.get_slot("d", "read").syncs_since_full == 3


def test_a_batch_over_several_ranges_streams_into_the_same_body(storage: Storage) -> None:
    from exporter.adapters.storage_runs import BATCH_RANGE
    from exporter.core.batching import upsert_body, upsert_body_stream

    run_id = unique_name("run")
    contacts = [{"email": f"user{i}@example.com", "first_name": "Zoë" * 20} for i in range(40_000)]
    text = json.dumps(contacts, ensure_ascii=False, separators=(",", ":"))
    storage.write_batch(run_id, 1, text)
    stream = storage.open_batch(run_id, 1)
    assert stream.size == len(text.encode()) > 2 * BATCH_RANGE  # read in three or more ranges
    length, chunks = upsert_body_stream(["l1"], stream)
    parts = list(chunks)
    assert max(len(p) for p in parts) <= BATCH_RANGE
    assert b"".join(parts) == upsert_body(["l1"], text) and length == len(b"".join(parts))
    storage.delete_run_blobs(run_id)
