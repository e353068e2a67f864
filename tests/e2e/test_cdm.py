"""End to end: a Customer Insights CDM folder dropped into Azurite is exported as one run per
entity (real Azurite, SendGrid sandbox and local Functions host, each a child process).

The folders are written the way Customer Insights' export to Azure Blob Storage writes them:
headerless partitions under `<folder>/<Entity>/<yyyy>/<mm>/<dd>/<HHMM>/<Entity>_<n>.csv`, their
URLs in `<folder>/model.json`, which comes last. A hostile model.json (a partition location that
leaves `segments/` for the app's own container) fails its entity only.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.flow.services import Services
from exporter.local.stack import Stack
from exporter.model.destinations import Consent, Destination
from exporter.model.runs import RunRecord
from exporter.wiring import services_from_env
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

    def blob_poison(self) -> list[str]:
        """The blobs the host gave up on (queue webjobs-blobtrigger-poison)."""
        queue = self.storage.queues.get_queue_client("webjobs-blobtrigger-poison")
        try:
            found = queue.peek_messages(max_messages=32)
        except ResourceNotFoundError:
            return []
        return [json.loads(base64.b64decode(m.content))["BlobName"] for m in found]

    def waiting(self, queue: str) -> int:
        """Messages in a queue, visible or not (0 when the queue does not exist)."""
        try:
            props = self.storage.queues.get_queue_client(queue).get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return int(props.approximate_message_count or 0)

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
            services_from_env(stack.settings),
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


ESCAPES = {
    # from the security review: out of segments/ into the app's own container `exporter`
    "dot-dot": "{segments}/../exporter/destinations/{destination}.json",
    "percent-encoded": "{segments}/%2e%2e/exporter/destinations/{destination}.json",
}


@pytest.mark.parametrize("escape", list(ESCAPES.values()), ids=list(ESCAPES))
def test_an_entity_whose_partition_leaves_segments_fails_and_the_other_is_exported(
    world: World, escape: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    folder = f"ci-{tag}/BlobExport"
    good, bad = f"Good{tag}", f"Escaping{tag}"
    good_list = world.destination(f"good-{tag}", good)
    bad_list = world.destination(f"bad-{tag}", bad)
    good_blobs = [
        world.partition(folder, good, 1, range(40)),
        world.partition(folder, good, 2, range(40, 70)),
    ]
    # two rows of the good entity are not valid: they are rejected, never sent
    bad_rows = b"c900,not-an-email,Bad,City0\r\nc901,,NoEmail,City1\r\n"
    world.storage.segments.upload_blob(f"{folder}/{good}/2026/11/24/1433/{good}_3.csv", bad_rows)
    good_blobs.append(f"{folder}/{good}/2026/11/24/1433/{good}_3.csv")
    bad_blobs = [world.partition(folder, bad, 1, range(10)), f"{folder}/{bad}/x/{bad}_2.csv"]
    doc = json.loads(
        model_json(
            {bad: bad_blobs, good: good_blobs},
            attributes=ATTRIBUTES,
            base=world.storage.segments.url,
            encoding="UTF-8",
        )
    )
    location = escape.format(segments=world.storage.segments.url, destination=f"good-{tag}")
    doc["entities"][0]["partitions"][1]["location"] = location
    manifest = f"{folder}/model.json"
    world.storage.segments.upload_blob(manifest, json.dumps(doc).encode())  # last

    failed = world.wait_for_run(f"bad-{tag}")
    assert failed.state == "failed" and failed.segment == bad
    assert f"partition '{bad}_2'" in failed.error  # names the partition
    assert "it holds a '..' segment" in failed.error and "it was not read" in failed.error
    assert world.members(bad_list) == set()

    exported = world.wait_for_run(f"good-{tag}")
    assert exported.state == "succeeded", exported.error
    assert (exported.segment, exported.snapshot) == (good, f"{manifest}#{good}")
    assert (exported.rows, exported.valid, exported.rejected) == (72, 70, 2)
    assert world.members(good_list) == {email(good, i) for i in range(70)}  # exactly the valid

    assert manifest not in world.blob_poison()  # the model.json was handled, first time
    host = world.stack.host.output() if world.stack.host else ""
    assert "'Functions.snapshot_arrived' (Failed" not in host


def test_hostile_messages_on_the_cdm_queues_are_dropped_not_poisoned(world: World) -> None:
    bodies = [
        "not JSON",
        json.dumps({"manifest": "ci/../exporter/state/model.json", "etag": "e"}),
        json.dumps({"manifest": "ci/model.json", "etag": "e", "written_at": "x" * 40_000}),
    ]
    for queue in ("cdm-manifests", "cdm-manifests-poison"):
        for body in bodies:
            world.storage.queue(queue).send_message(body)
    queues = ("cdm-manifests", "cdm-manifests-poison", "cdm-manifests-poison-poison")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = {q: world.waiting(q) for q in queues}
        if not any(left.values()):
            break
        time.sleep(0.5)
    assert left == dict.fromkeys(queues, 0)  # each taken once, and deleted: no retry, no poison
    host = world.stack.host.output() if world.stack.host else ""
    assert host.count("queue message dropped: queue=cdm-manifests reason=") >= 3
    assert host.count("queue message dropped: queue=cdm-manifests-poison reason=") >= 3
