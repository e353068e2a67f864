"""Rejected rows of a CDM entity name the partition they are in: through the run flow (in-memory
ledger and storage, the real sandbox over HTTP) into the stored reject report, and back out as
a run's reject samples (the Azure storage adapter on real Azurite, as `runs show` reads them).
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from exporter.adapters.azure_storage import Storage
from exporter.admin.runs import run_details
from exporter.admin.views import details_json, summary
from exporter.flow import arrivals
from exporter.model.destinations import Consent, Destination
from exporter.model.runs import RunRecord
from tests.support.cdm import model_json
from tests.support.flow import FlowWorld
from tests.support.memory_ledger import MemoryRunLedger
from tests.support.sandbox import SandboxProcess

pytestmark = pytest.mark.functional

KEY = "SG.cdm-rejects-key"
CONSENT = Consent(accepted_by="dpo@company.example", accepted_at=datetime(2026, 11, 1, tzinfo=UTC))
FOLDER = "ci/BlobExport"
MANIFEST = f"{FOLDER}/model.json"
AZURITE = "http://127.0.0.1:10000/devstoreaccount1/segments"
ATTRIBUTES = ("CustomerId", "PrimaryEmail", "FirstName")
PARTITIONS = tuple(f"{FOLDER}/HighValue/2026/11/24/1433/HighValue_{n}.csv" for n in (1, 2))


def people(found: range) -> list[str]:
    return [f"c{i},user{i}@example.com,Name{i}" for i in found]


def partition(*lines: str) -> bytes:
    """A headerless partition, as Customer Insights writes them."""
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def world(sandbox: SandboxProcess) -> FlowWorld:
    return FlowWorld.connect(sandbox, KEY, max_batch_contacts=40)


@pytest.fixture
def exported(world: FlowWorld) -> tuple[RunRecord, bytes]:
    """An entity of two partitions with a bad row in each, exported: the run and its report."""
    world.destinations.put(
        Destination.model_validate(
            {
                "name": "marketing",
                "display_name": "marketing",
                "list_id": world.client.create_list("cdm rejects").id,
                "api_key_secret": "SENDGRID_KEY_FLOW",
                "segments": ["HighValue"],
                "consent": CONSENT,
            }
        )
    )
    # 61 rows, line 31 bad; then 41 rows, line 41 ragged (entity-wide row 61 + 41 = 102)
    world.storage.put_snapshot(
        PARTITIONS[0],
        partition(*people(range(30)), "c900,not-an-email,Bad", *people(range(30, 60))),
    )
    world.storage.put_snapshot(PARTITIONS[1], partition(*people(range(60, 100)), "c901,Short"))
    manifest = world.storage.put_snapshot(
        MANIFEST, model_json({"HighValue": PARTITIONS}, attributes=ATTRIBUTES, base=AZURITE)
    )
    (run_id,) = arrivals.on_snapshot(world.svc, manifest)
    world.pump()
    run = world.ledger.get_run(run_id)
    assert run is not None
    return run, world.storage.blobs[run.reject_report]


def test_the_stored_reject_report_names_each_rows_partition(
    exported: tuple[RunRecord, bytes],
) -> None:
    run, report = exported
    assert run.state == "succeeded"  # rows rejected (reported), every valid contact landed
    assert (run.rows, run.valid, run.rejected) == (102, 100, 2)
    rows = list(csv.DictReader(io.StringIO(report.decode("utf-8"))))
    assert [(r["row"], r["line"], r["reason"], r["partition"]) for r in rows] == [
        ("31", "31", "invalid_email", PARTITIONS[0]),
        ("102", "41", "ragged_row", PARTITIONS[1]),  # the line within the second partition
    ]


def test_run_details_read_the_partitions_back(
    exported: tuple[RunRecord, bytes], world: FlowWorld, azurite
) -> None:
    """What `runs show` and `GET /api/runs/{id}` print, from the report in Azure storage."""
    run, report = exported
    storage = Storage.from_env({"AzureWebJobsStorage": azurite.connection_string})
    storage.ensure()
    ledger = MemoryRunLedger()
    run.reject_report = storage.write_report(run.run_id, io.BytesIO(report))
    ledger.create_run(run)
    svc = replace(world.svc, storage=storage, ledger=ledger)  # the flow's, on Azure storage
    details = run_details(svc, run.run_id)

    found = {
        reason: [(s.row, s.line, s.partition) for s in got]
        for reason, got in details.samples.items()
    }
    assert found == {
        "invalid_email": [(31, 31, PARTITIONS[0])],
        "ragged_row": [(102, 41, PARTITIONS[1])],
    }
    text = summary(details.run, details.batches, samples=details.samples)
    assert f"rejected ragged_row: row 102 (line 41 of {PARTITIONS[1]}): " in text
    samples = details_json(details)["rejects"]["samples"]
    assert samples["invalid_email"][0]["partition"] == PARTITIONS[0]

    # A report written before the column existed still reads: no partition to show.
    old = b'row,line,reason,message\n5,6,missing_email,"the email field is empty"\n'
    assert storage.write_report(run.run_id, io.BytesIO(old)) == run.reject_report  # replaced
    details = run_details(svc, run.run_id)
    (sample,) = details.samples["missing_email"]
    assert (sample.row, sample.line, sample.partition) == (5, 6, "")
