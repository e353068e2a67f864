"""End to end: a Customer Insights CDM folder dropped into Azurite is exported as one run per
entity (real Azurite, SendGrid sandbox and local Functions host, each a child process).

The folders are written the way Customer Insights' export to Azure Blob Storage writes them:
headerless partitions under `<folder>/<Entity>/<yyyy>/<mm>/<dd>/<HHMM>/<Entity>_<n>.csv`, their
URLs in `<folder>/model.json`, which comes last.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.destinations import Consent, Destination
from exporter.ledger import RunRecord
from exporter.local.stack import Stack
from exporter.runs import Services
from exporter.sendgrid import SendGridClient
from exporter.settings import SendGridSettings
from exporter.storage import Storage
from tests.support.cdm import model_json

pytestmark = pytest.mark.e2e

KEY = "SG.e2e-cdm-key"
CONSENT = Consent(accepted_by="dpo@company.example", accepted_at=datetime(2026, 11, 1, tzinfo=UTC))
ATTRIBUTES = ("CustomerId", "PrimaryEmail", "FirstName", "City")


@dataclass
class World:
    stack: Stack
    svc: Services
    storage: Storage
    client: SendGridClient

    def destination(self, name: str, segment: str) -> str:
        """A destination for `segment` exporting to a fresh list; returns the list id."""
        list_id = self.client.create_list(f"list {name}").id
        self.svc.destinations.put(
            Destination(
                name=name,
                display_name=name,
                list_id=list_id,
                api_key_secret="SENDGRID_KEY_CDM",
                segments=[segment],
                consent=CONSENT,
            )
        )
        return list_id

    def partition(self, folder: str, entity: str, n: int, people: range) -> str:
        """A headerless partition of `entity`; returns its blob name."""
        blob = f"{folder}/{entity}/2026/11/24/1433/{entity}_{n}.csv"
        data = "".join(f"c{i},{email(entity, i)},Name{i},City{i % 5}\r\n" for i in people)
        self.storage.segments.upload_blob(blob, data.encode())
        return blob

    def manifest(self, folder: str, entity: str, blobs: list[str]) -> str:
        """model.json naming the partitions by their URLs, as Customer Insights does."""
        doc = model_json(
            {entity: blobs},
            attributes=ATTRIBUTES,
            base=self.storage.segments.url,
            encoding="UTF-8",
        )
        name = f"{folder}/model.json"
        self.storage.segments.upload_blob(name, doc)
        return name

    def runs(self, destination: str) -> list[RunRecord]:
        return self.svc.ledger.runs(destination)

    def wait_for_run(self, destination: str, timeout: float = 120) -> RunRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.runs(destination)
            if found and all(r.final for r in found):
                (run,) = found
                return run
            time.sleep(0.3)
        raise AssertionError(f"no finished run for {destination}: {self.runs(destination)}")

    def members(self, list_id: str) -> set[str]:
        url = f"{self.stack.sandbox_url}/__sandbox/lists/{list_id}/contacts"
        with urllib.request.urlopen(url, timeout=30) as answer:
            found: list[dict[str, Any]] = json.load(answer)
        return {m["email"] for m in found}


def email(entity: str, i: int) -> str:
    return f"{entity.lower()}{i}@example.com"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("cdm")
    settings = {
        "SENDGRID_KEY_CDM": KEY,
        "MAX_BATCH_CONTACTS": "40",
        "CDM_RECHECK_SECONDS": "1",  # a folder waiting for a partition looks again every second
    }
    with Stack(tmp / "stack", settings=settings, sandbox_args=["--job-delay", "0.1"]) as stack:
        yield World(
            stack,
            Services.from_env(stack.settings),
            Storage.from_env(stack.settings),
            SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url)),
        )


def test_a_cdm_folder_with_two_partitions_is_exported_as_one_run(world: World) -> None:
    top = f"ci-{uuid.uuid4().hex[:8]}"
    folder = f"{top}/BlobExport"
    list_id = world.destination("high-value", "HighValue")
    world.destination("decoy", top)  # the partitions are no snapshots of segment `top`
    blobs = [
        world.partition(folder, "HighValue", 1, range(60)),
        world.partition(folder, "HighValue", 2, range(60, 100)),
    ]
    manifest = world.manifest(folder, "HighValue", blobs)  # last, as Customer Insights does

    run = world.wait_for_run("high-value")
    assert (run.segment, run.snapshot) == ("HighValue", f"{manifest}#HighValue")
    assert run.state == "succeeded", run.error
    assert (run.rows, run.valid, run.rejected, run.duplicates) == (100, 100, 0, 0)
    assert (run.sent, run.batches, run.batches_done, run.created) == (100, 3, 3, 100)
    assert world.members(list_id) == {email("HighValue", i) for i in range(100)}
    time.sleep(3)  # time enough for a second run (or a partition's own) to show up, if one did
    assert [r.run_id for r in world.runs("high-value")] == [run.run_id]
    assert world.runs("decoy") == []


def test_a_manifest_before_its_second_partition_is_exported_once_it_arrives(
    world: World,
) -> None:
    folder = f"ci-{uuid.uuid4().hex[:8]}/BlobExport"
    list_id = world.destination("reactivated", "Reactivated")
    first = world.partition(folder, "Reactivated", 1, range(30))
    second = f"{folder}/Reactivated/2026/11/24/1433/Reactivated_2.csv"
    world.manifest(folder, "Reactivated", [first, second])

    time.sleep(4)  # the folder is looked at (and waits) several times meanwhile
    assert world.runs("reactivated") == []
    world.partition(folder, "Reactivated", 2, range(30, 75))

    run = world.wait_for_run("reactivated")
    assert run.state == "succeeded", run.error
    assert (run.rows, run.valid, run.sent) == (75, 75, 75)
    assert world.members(list_id) == {email("Reactivated", i) for i in range(75)}
