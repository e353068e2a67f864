"""CDM folders through the run flow: in-memory ledger and storage, the real sandbox over HTTP;
and the Azure storage adapter's CDM reads on real Azurite.

The test delivers the queue messages itself (the delayed looks at a folder included), so waiting
for partitions and giving up are exact to stage.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError, ResourceModifiedError

from exporter.adapters.azure_storage import Storage
from exporter.core import cdm
from exporter.core.errors import InputError
from exporter.core.snapshots.parts import Parts
from exporter.core.snapshots.snapshot import open_snapshot
from exporter.flow import arrivals, cdm_folders, poison, run_requests
from exporter.flow.services import seconds_setting
from exporter.model.destinations import Consent, Destination
from exporter.model.messages import CDM_MANIFESTS, EXPORT_REQUESTS, ManifestCheck, decode
from exporter.model.runs import RunRecord
from exporter.model.versions import (
    SnapshotVersion,
    entity_version,
    is_snapshot_blob,
    is_snapshot_file,
)
from exporter.ports.storage import read_manifest
from tests.support.azurite import unique_name
from tests.support.cdm import model_json as cdm_model_json
from tests.support.flow import FlowWorld
from tests.support.sandbox import SandboxProcess

pytestmark = pytest.mark.functional

KEY = "SG.cdm-flow-key"
CONSENT = Consent(accepted_by="dpo@company.example", accepted_at=datetime(2026, 11, 1, tzinfo=UTC))
FOLDER = "ci/BlobExport"
MANIFEST = f"{FOLDER}/model.json"
AZURITE = "http://127.0.0.1:10000/devstoreaccount1/segments"
ATTRIBUTES = ("CustomerId", "PrimaryEmail", "FirstName")


def rows(people: range, *, extra: str = "") -> bytes:
    """A headerless partition, as Customer Insights writes them."""
    lines = [f"c{i},user{i}@example.com,Name{i}" for i in people]
    return ("\n".join(lines) + "\n" + extra).encode()


def partition_blob(entity: str, n: int, stamp: str = "2026/11/24/1433") -> str:
    return f"{FOLDER}/{entity}/{stamp}/{entity}_{n}.csv"


def model_json(entities: dict[str, list[str]], *, base: str = AZURITE) -> bytes:
    """model.json for these entities (name -> partition blobs), Customer Insights' way."""
    return cdm_model_json(entities, attributes=ATTRIBUTES, base=base)


@dataclass
class World(FlowWorld):
    lists: dict[str, str] = field(default_factory=dict)

    def destination(self, name: str, segment: str) -> Destination:
        list_id = self.client.create_list(f"cdm {name}").id
        self.lists[name] = list_id
        destination = Destination.model_validate(
            {
                "name": name,
                "display_name": name,
                "list_id": list_id,
                "api_key_secret": "SENDGRID_KEY_FLOW",
                "segments": [segment],
                "consent": CONSENT,
            }
        )
        self.destinations.put(destination)
        return destination

    def put(self, blob: str, data: bytes) -> SnapshotVersion:
        return self.storage.put_snapshot(blob, data)

    def folder(self, entity: str = "HighValue", *, extra: str = "") -> SnapshotVersion:
        """Two partitions (60 + 40 people), then model.json last; returns the manifest."""
        self.put(partition_blob(entity, 1), rows(range(60)))
        self.put(partition_blob(entity, 2), rows(range(60, 100), extra=extra))
        blobs = [partition_blob(entity, n) for n in (1, 2)]
        return self.put(MANIFEST, model_json({entity: blobs}))

    def checks(self) -> list[ManifestCheck]:
        return [decode(ManifestCheck, m.body) for m in self.storage.queues[CDM_MANIFESTS]]

    def runs_of(self, destination: str) -> list[RunRecord]:
        return self.ledger.runs(destination)

    def members(self, destination: str) -> set[str]:
        listed = self.sandbox.list_members(self.lists[destination])
        return {m["email"] for m in listed}


@pytest.fixture
def world(sandbox: SandboxProcess) -> World:
    return World.connect(sandbox, KEY, max_batch_contacts=40, cdm_recheck=5.0, cdm_wait=600.0)


def people(found: range) -> set[str]:
    return {f"user{i}@example.com" for i in found}


# --- in the flow -------------------------------------------------------------------------------


def test_a_customer_insights_folder_exports_its_entity_as_one_run(world: World) -> None:
    world.destination("marketing", "HighValue")
    world.destination("decoy", "ci")  # partitions are not snapshots of segment "ci"
    manifest = world.folder(extra="c100,not-an-email,Bad\n")
    (run_id,) = arrivals.on_snapshot(world.svc, manifest)
    world.pump()

    run = world.ledger.get_run(run_id)
    assert run is not None
    assert (run.segment, run.snapshot) == ("HighValue", f"{MANIFEST}#HighValue")
    assert run.state == "succeeded"  # one row rejected (reported); the list holds the rest
    assert (run.rows, run.valid, run.rejected, run.sent, run.batches) == (101, 100, 1, 100, 3)
    assert world.members("marketing") == people(range(100))
    report = list(csv.DictReader(io.StringIO(world.storage.blobs[run.reject_report].decode())))
    # entity-wide row 101 is line 41 of the second partition
    assert [(r["row"], r["line"], r["reason"]) for r in report] == [("101", "41", "invalid_email")]
    assert world.runs_of("decoy") == []
    assert world.storage.opened[-2:] == [partition_blob("HighValue", n) for n in (1, 2)]


def test_the_same_manifest_twice_is_one_run(world: World) -> None:
    world.destination("marketing", "HighValue")
    manifest = world.folder()
    first = arrivals.on_snapshot(world.svc, manifest)
    assert len(first) == 1
    assert arrivals.on_snapshot(world.svc, manifest) == []
    assert [r.run_id for r in world.runs_of("marketing")] == first
    assert len(world.storage.queues[EXPORT_REQUESTS]) == 1


def test_only_plain_files_and_manifests_are_acted_on() -> None:
    assert is_snapshot_file("loyal/2026-11-24.csv")
    assert not is_snapshot_file(partition_blob("HighValue", 1))  # a CDM partition
    assert not is_snapshot_file("loyal/sub/file.csv")
    assert not is_snapshot_file("loyal/model.json")
    assert is_snapshot_blob(MANIFEST) and is_snapshot_blob("loyal/Model.json")
    assert not is_snapshot_blob(partition_blob("HighValue", 1))
    assert run_requests.segment_of(f"{MANIFEST}#HighValue") == "HighValue"
    assert run_requests.segment_of("loyal/2026-11-24.csv") == "loyal"


def test_a_manifest_before_its_partition_waits_then_exports(world: World) -> None:
    world.destination("marketing", "HighValue")
    world.put(partition_blob("HighValue", 1), rows(range(60)))
    blobs = [partition_blob("HighValue", n) for n in (1, 2)]
    manifest = world.put(MANIFEST, model_json({"HighValue": blobs}))

    # (blob times here are fixed; `at` says when the look happens)
    assert cdm_folders.on_manifest(world.svc, manifest, at=manifest.last_modified) == []
    (look,) = world.storage.take(CDM_MANIFESTS)
    assert look.delay == world.svc.cdm_recheck  # waiting costs a hidden message, no worker
    check = decode(ManifestCheck, look.body)
    assert (check.manifest, check.etag, check.checks) == (MANIFEST, manifest.etag, 1)

    assert cdm_folders.check_manifest(world.svc, check, at=manifest.last_modified) == []
    (again,) = world.checks()
    assert again.checks == 2 and world.ledger.runs() == []

    world.put(partition_blob("HighValue", 2), rows(range(60, 100)))
    world.storage.take(CDM_MANIFESTS)
    (run_id,) = cdm_folders.check_manifest(world.svc, again, at=manifest.last_modified)
    assert world.checks() == []  # nothing left to wait for
    world.pump()
    run = world.ledger.get_run(run_id)
    assert run is not None and (run.state, run.valid) == ("succeeded", 100)
    assert world.members("marketing") == people(range(100))


def test_a_partition_that_never_arrives_fails_a_run_per_destination(world: World) -> None:
    world.destination("marketing", "HighValue")
    world.destination("sales", "HighValue")
    world.put(partition_blob("HighValue", 1), rows(range(60)))
    blobs = [partition_blob("HighValue", n) for n in (1, 2, 3)]
    manifest = world.put(MANIFEST, model_json({"HighValue": blobs}))
    cdm_folders.on_manifest(world.svc, manifest, at=manifest.last_modified)
    (check,) = [decode(ManifestCheck, m.body) for m in world.storage.take(CDM_MANIFESTS)]

    late = manifest.last_modified + timedelta(seconds=world.svc.cdm_wait)
    assert cdm_folders.check_manifest(world.svc, check, at=late) == []
    assert world.checks() == []  # given up: no more looks
    failed = world.ledger.runs()
    assert sorted(r.destination for r in failed) == ["marketing", "sales"]
    for run in failed:
        assert run.state == "failed" and run.segment == "HighValue"
        assert run.error.startswith(f"partition {blobs[1]} (and 1 more) listed in {MANIFEST}")
        assert "never arrived" in run.error and "10 minutes" in run.error
    cdm_folders.check_manifest(world.svc, check, at=late)  # a repeated look
    assert len(world.ledger.runs()) == 2


def test_an_entity_that_cannot_be_exported_fails_its_runs_only(world: World) -> None:
    world.destination("marketing", "HighValue")
    world.destination("winback", "Lapsed")
    world.put(partition_blob("HighValue", 1), rows(range(10)))
    doc = json.loads(model_json({"HighValue": [partition_blob("HighValue", 1)]}))
    elsewhere = "http://127.0.0.1:10000/devstoreaccount1/exports"
    lapsed = json.loads(model_json({"Lapsed": ["x.csv"]}, base=elsewhere))
    doc["entities"] += lapsed["entities"]
    manifest = world.put(MANIFEST, json.dumps(doc).encode())

    (run_id,) = arrivals.on_snapshot(world.svc, manifest)
    world.pump()
    assert world.ledger.get_run(run_id).state == "succeeded"  # type: ignore[union-attr]
    (failed,) = world.runs_of("winback")
    assert failed.state == "failed" and failed.segment == "Lapsed"
    assert "entity 'Lapsed'" in failed.error and "container 'exports'" in failed.error
    assert world.checks() == []  # a rejected entity is not waited for
    arrivals.on_snapshot(world.svc, manifest)
    assert len(world.runs_of("winback")) == 1


ESCAPES = {
    "dot-dot": f"{AZURITE}/../exporter/state/marketing/HighValue/list/index",
    "encoded": f"{AZURITE}/%2e%2e/exporter/state/marketing/HighValue/list/index",
    "twice-encoded": f"{AZURITE}/{FOLDER}/%252e%252e/%252e%252e/%252e%252e/exporter/x.csv",
    "abfss": "abfss://segments@devstoreaccount1.dfs.core.windows.net/../exporter/state/x",
    "backslash": f"{AZURITE}/{FOLDER}/Escaping%5C..%5C..%5C..%5Cexporter%5Cx.csv",
    "other-folder": f"{AZURITE}/loyal/2026-11-24.csv",
}


@pytest.mark.parametrize("location", list(ESCAPES.values()), ids=list(ESCAPES))
def test_a_partition_that_would_leave_its_folder_fails_its_entity_only(
    world: World, location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination("marketing", "HighValue")
    world.destination("winback", "Escaping")
    world.put("loyal/2026-11-24.csv", b"Email\nother@example.com\n")
    world.put(partition_blob("HighValue", 1), rows(range(30)))
    world.put(partition_blob("Escaping", 1), rows(range(100, 110)))
    doc = json.loads(
        model_json(
            {
                "Escaping": [partition_blob("Escaping", 1), partition_blob("Escaping", 2)],
                "HighValue": [partition_blob("HighValue", 1)],
            }
        )
    )
    doc["entities"][0]["partitions"][1]["location"] = location
    manifest = world.put(MANIFEST, json.dumps(doc).encode())
    looked_up: list[str] = []
    real = world.storage.snapshot_version

    def head(name: str) -> SnapshotVersion | None:
        looked_up.append(name)
        return real(name)

    monkeypatch.setattr(world.storage, "snapshot_version", head)

    (run_id,) = arrivals.on_snapshot(world.svc, manifest)  # no error: the good entity goes on
    world.pump()
    assert set(looked_up) == {partition_blob("HighValue", 1)}  # never the escaping one
    exported = world.ledger.get_run(run_id)
    assert exported is not None and exported.segment == "HighValue"
    assert (exported.state, exported.valid) == ("succeeded", 30)
    assert world.members("marketing") == people(range(30))

    (failed,) = world.runs_of("winback")
    assert failed.state == "failed" and failed.segment == "Escaping"
    assert f"entity 'Escaping' of {MANIFEST}: partition 'Escaping_2': location " in failed.error
    assert "was not read" in failed.error or "outside the model.json's folder" in failed.error
    assert world.members("winback") == set()
    assert world.checks() == []  # refused, not waited for
    assert all(not b.startswith(("cdm/Escaping", "state/winback")) for b in world.storage.blobs)
    arrivals.on_snapshot(world.svc, manifest)  # the same model.json again: nothing new
    assert len(world.runs_of("winback")) == 1


def test_an_entity_named_dot_dot_makes_no_path_and_no_run(world: World) -> None:
    world.destination("marketing", "HighValue")
    world.put(partition_blob("HighValue", 1), rows(range(5)))
    doc = json.loads(
        model_json(
            {"..": [partition_blob("HighValue", 1)], "HighValue": [partition_blob("HighValue", 1)]}
        )
    )
    manifest = world.put(MANIFEST, json.dumps(doc).encode())
    (run_id,) = arrivals.on_snapshot(world.svc, manifest)
    world.pump()
    run = world.ledger.get_run(run_id)
    assert run is not None and (run.segment, run.state) == ("HighValue", "succeeded")
    assert [r.segment for r in world.ledger.runs()] == ["HighValue"]
    assert sorted(b for b in world.storage.blobs if not b.startswith("runs/")) == [
        "cdm/HighValue.json",
        *sorted(b for b in world.storage.blobs if b.startswith("state/marketing/HighValue/")),
    ]


def test_storage_refusing_one_entitys_partition_fails_that_entity_only(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination("marketing", "HighValue")
    world.destination("winback", "Lapsed")
    world.put(partition_blob("HighValue", 1), rows(range(10)))
    world.put(partition_blob("Lapsed", 1), rows(range(10)))
    blobs = {"Lapsed": [partition_blob("Lapsed", 1)], "HighValue": [partition_blob("HighValue", 1)]}
    manifest = world.put(MANIFEST, model_json(blobs))
    real = world.storage.snapshot_version

    def head(name: str) -> SnapshotVersion | None:
        if "Lapsed" in name:
            refused = HttpResponseError(message="InvalidUri: the requested URI is not valid")
            refused.status_code = 400
            raise refused
        return real(name)

    monkeypatch.setattr(world.storage, "snapshot_version", head)
    (run_id,) = arrivals.on_snapshot(world.svc, manifest)
    world.pump()
    assert world.ledger.get_run(run_id).state == "succeeded"  # type: ignore[union-attr]
    (failed,) = world.runs_of("winback")
    assert failed.state == "failed"
    assert "partition 'Lapsed_1'" in failed.error and "storage answered 400" in failed.error


def test_an_unreadable_manifest_is_logged_and_makes_no_run(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.destination("marketing", "HighValue")
    manifest = world.put(MANIFEST, b'{"entities": [oops')
    with caplog.at_level(logging.ERROR, logger="exporter.flow.runs"):
        assert arrivals.on_snapshot(world.svc, manifest) == []
    assert world.ledger.runs() == [] and world.checks() == []
    assert f"CDM folder not exported: {MANIFEST} is not JSON" in caplog.text


def test_the_timer_re_exports_the_newest_entity_of_a_segment(world: World) -> None:
    world.destination("marketing", "HighValue")
    newer_blobs = [f"{FOLDER}-2/HighValue/2026/11/25/0900/HighValue_1.csv"]
    world.put(newer_blobs[0], rows(range(5)))
    older = world.folder()  # model.json written first...
    newer = world.put(f"{FOLDER}-2/model.json", model_json({"HighValue": newer_blobs}))
    arrivals.on_snapshot(world.svc, newer)
    arrivals.on_snapshot(world.svc, older)  # ...but processed last: the pointer stays on the newer
    world.pump()

    latest = world.storage.latest_snapshot("HighValue")
    assert latest is not None and latest.name == f"{FOLDER}-2/model.json#HighValue"
    at = datetime(2026, 11, 25, 2, tzinfo=UTC)
    (run_id,) = run_requests.refresh(world.svc, at=at)
    world.pump()
    run = world.ledger.get_run(run_id)
    assert run is not None
    assert (run.trigger, run.snapshot, run.state) == ("timer", latest.name, "succeeded")
    assert run_requests.refresh(world.svc, at=at) == []  # once per tick

    world.put(f"{FOLDER}-2/model.json", b"{}")  # replaced by a version still to be handled
    assert world.storage.latest_snapshot("HighValue") is None
    assert run_requests.refresh(world.svc, at=at + timedelta(days=1)) == []


def test_a_partition_replaced_after_the_manifest_skips_the_run(world: World) -> None:
    world.destination("marketing", "HighValue")
    (run_id,) = arrivals.on_snapshot(world.svc, world.folder())
    world.put(partition_blob("HighValue", 2), rows(range(500, 510)))
    world.pump()
    run = world.ledger.get_run(run_id)
    assert run is not None and run.state == "skipped" and "replaced" in run.error
    assert world.members("marketing") == set()


def test_a_poisoned_look_exports_what_is_complete_and_ends_the_rest(world: World) -> None:
    world.destination("marketing", "HighValue")
    world.destination("winback", "Lapsed")
    world.put(partition_blob("HighValue", 1), rows(range(10)))
    blobs = {"HighValue": [partition_blob("HighValue", 1)], "Lapsed": [partition_blob("Lapsed", 1)]}
    manifest = world.put(MANIFEST, model_json(blobs))
    check = ManifestCheck(
        manifest=MANIFEST, etag=manifest.etag, written_at=manifest.last_modified, checks=3
    )
    poison.manifest_poisoned(world.svc, check)
    world.pump()
    (exported,) = world.runs_of("marketing")
    (ended,) = world.runs_of("winback")
    assert exported.state == "succeeded"
    assert ended.state == "failed" and "could not be checked on any attempt" in ended.error
    assert world.checks() == []


def test_bad_cdm_settings_are_refused_at_start() -> None:
    with pytest.raises(InputError, match="CDM_WAIT_SECONDS must be a number of seconds"):
        seconds_setting({"CDM_WAIT_SECONDS": "soon"}, "CDM_WAIT_SECONDS", 1.0)
    assert seconds_setting({"CDM_RECHECK_SECONDS": " 2.5 "}, "CDM_RECHECK_SECONDS", 30.0) == 2.5
    assert seconds_setting({}, "CDM_RECHECK_SECONDS", 30.0) == 30.0
    with pytest.raises(InputError, match="VERIFY_LAG_SECONDS must be a number of seconds"):
        seconds_setting({"VERIFY_LAG_SECONDS": "-1"}, "VERIFY_LAG_SECONDS", 1.0, zero=True)
    assert (
        seconds_setting({"VERIFY_DELAY_SECONDS": "0"}, "VERIFY_DELAY_SECONDS", 60, zero=True) == 0
    )


# --- the Azure storage adapter, on Azurite ------------------------------------------------------


@pytest.fixture
def storage(azurite) -> Storage:
    store = Storage.from_env({"AzureWebJobsStorage": azurite.connection_string})
    store.ensure()
    return store


def test_storage_reads_an_entity_pinned_and_points_the_timer_at_it(storage: Storage) -> None:
    folder = unique_name("ci")
    entity = unique_name("HV")
    blobs = [f"{folder}/{entity}/2026/11/24/1433/{entity}_{n}.csv" for n in (1, 2)]
    storage.segments.upload_blob(blobs[0], rows(range(3)))
    storage.segments.upload_blob(blobs[1], rows(range(3, 5)))
    name = f"{folder}/model.json"
    storage.segments.upload_blob(name, model_json({entity: blobs}, base=storage.segments.url))

    manifest = storage.snapshot_version(name)
    assert manifest is not None
    parsed = read_manifest(storage, manifest).entity(entity)  # the account is Azurite's
    partitions = [storage.snapshot_version(b) for b in blobs]
    version = entity_version(manifest, parsed, [p for p in partitions if p is not None])
    assert version.name == f"{name}#{entity}"
    assert version.size == len(rows(range(3))) + len(rows(range(3, 5)))

    source = storage.open_snapshot(version)
    assert isinstance(source, Parts)
    with open_snapshot(source) as snapshot:
        assert [line for line, _ in snapshot.records()] == [1, 2, 3, 1, 2]

    assert storage.latest_snapshot(entity) is None  # not pointed at yet
    storage.note_cdm_entity(version)
    assert storage.latest_snapshot(entity) == version
    older = SnapshotVersion(version.name, version.etag, version.last_modified - timedelta(1), 0)
    storage.note_cdm_entity(older)
    assert storage.latest_snapshot(entity) == version  # the pointer only moves forward

    storage.segments.upload_blob(blobs[1], rows(range(9, 12)), overwrite=True)
    with pytest.raises(ResourceModifiedError):
        storage.open_snapshot(version)


def test_storage_refuses_a_huge_manifest_without_reading_it(storage: Storage) -> None:
    name = f"{unique_name('ci')}/model.json"
    storage.segments.upload_blob(name, b" " * (cdm.MAX_MANIFEST_BYTES + 1))
    version = storage.snapshot_version(name)
    assert version is not None
    with pytest.raises(cdm.ManifestError, match="not read"):
        storage.read_manifest(version)
