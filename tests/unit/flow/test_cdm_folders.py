"""CDM folders (exporter/flow/cdm_folders.py): an entity becomes a run once all its partitions
are there; one that cannot be exported, or whose partitions never arrive, ends as a failed run
per destination that selected it. The delayed looks are delivered on the fake clock."""

from __future__ import annotations

import json
import logging

import pytest
from azure.core.exceptions import HttpResponseError

from exporter.flow import cdm_folders, poison, run_requests
from exporter.model.messages import CDM_MANIFESTS, EXPORT_REQUESTS, ManifestCheck
from exporter.model.versions import SnapshotVersion
from tests.support.cdm import model_json as cdm_model_json
from tests.support.memory_flow import MemoryWorld, emails

FOLDER = "ci/BlobExport"
MANIFEST = f"{FOLDER}/model.json"
AZURITE = "http://127.0.0.1:10000/devstoreaccount1/segments"


def rows(people: range, *, extra: str = "") -> str:
    """A headerless partition, as Customer Insights writes them."""
    return "".join(f"c{i},user{i}@example.com,Name{i}\n" for i in people) + extra


def partition(entity: str, n: int) -> str:
    return f"{FOLDER}/{entity}/2026/11/24/1433/{entity}_{n}.csv"


def model_json(entities: dict[str, list[str]], *, base: str = AZURITE) -> bytes:
    return cdm_model_json(
        entities, attributes=("CustomerId", "PrimaryEmail", "FirstName"), base=base
    )


@pytest.fixture
def world() -> MemoryWorld:
    return MemoryWorld.create(max_batch_contacts=40, cdm_recheck=30.0, cdm_wait=600.0)


def destinations(world: MemoryWorld, **segments: str) -> None:
    for name, segment in segments.items():
        world.destination(name=name, segments=[segment])


def test_a_complete_folder_exports_its_entity_as_one_run_and_a_repeat_as_none(
    world: MemoryWorld,
) -> None:
    destinations(world, marketing="HighValue", decoy="ci")
    world.drop(partition("HighValue", 1), rows(range(60)))
    world.drop(partition("HighValue", 2), rows(range(60, 100), extra="c100,not-an-email,Bad\n"))
    manifest = world.drop(
        MANIFEST, model_json({"HighValue": [partition("HighValue", 1), partition("HighValue", 2)]})
    )
    (run_id,) = cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at())
    assert cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at()) == []
    world.pump()
    run = world.run(run_id)
    assert (run.segment, run.snapshot, run.state) == (
        "HighValue",
        f"{MANIFEST}#HighValue",
        "succeeded",
    )
    assert (run.rows, run.valid, run.rejected, run.batches) == (101, 100, 1, 3)
    assert world.emails() == emails(range(100))
    assert world.ledger.runs("decoy") == []  # partitions are not snapshots of segment "ci"
    assert json.loads(world.storage.blobs["cdm/HighValue.json"])["snapshot"] == run.snapshot


def test_a_folder_waits_for_its_partitions_on_delayed_looks_then_exports(
    world: MemoryWorld,
) -> None:
    destinations(world, marketing="HighValue")
    world.drop(partition("HighValue", 1), rows(range(60)))
    blobs = [partition("HighValue", 1), partition("HighValue", 2)]
    manifest = world.drop(MANIFEST, model_json({"HighValue": blobs}))
    assert cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at()) == []
    (look,) = world.storage.queues[CDM_MANIFESTS]
    assert look.delay == 30.0  # waiting costs a hidden message, no worker
    world.pump(cdm=True, until=lambda: len(world.delivered(CDM_MANIFESTS)) == 3)
    assert world.ledger.runs() == []
    assert [m.checks for m in world.queued(CDM_MANIFESTS)] == [4]
    world.drop(partition("HighValue", 2), rows(range(60, 100)))  # arrives
    world.pump(cdm=True)
    (run,) = world.ledger.runs()
    assert (run.state, run.valid) == ("succeeded", 100)
    assert world.queued(CDM_MANIFESTS) == []


def test_a_partition_that_never_arrives_fails_a_run_per_destination(world: MemoryWorld) -> None:
    destinations(world, marketing="HighValue", sales="HighValue")
    world.drop(partition("HighValue", 1), rows(range(60)))
    blobs = [partition("HighValue", n) for n in (1, 2, 3)]
    manifest = world.drop(MANIFEST, model_json({"HighValue": blobs}))
    started = world.now
    cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at())
    world.pump(cdm=True)  # looks every 30 s until the wait is over
    assert 540 <= world.now - started <= 600
    failed = world.ledger.runs()
    assert sorted(r.destination for r in failed) == ["marketing", "sales"]
    for run in failed:
        assert (run.state, run.segment) == ("failed", "HighValue")
        assert run.error.startswith(f"partition {blobs[1]} (and 1 more) listed in {MANIFEST}")
        assert "never arrived" in run.error and "10 minutes" in run.error
    assert world.queued(CDM_MANIFESTS) == []
    (check,) = [d.message for d in world.delivered(CDM_MANIFESTS)][-1:]
    cdm_folders.check_manifest(world.svc, check, at=world.sendgrid.at())  # a repeated look
    assert len(world.ledger.runs()) == 2


def test_an_entity_that_cannot_be_exported_fails_its_runs_only(world: MemoryWorld) -> None:
    destinations(world, marketing="HighValue", winback="Lapsed")
    world.drop(partition("HighValue", 1), rows(range(10)))
    doc = json.loads(model_json({"HighValue": [partition("HighValue", 1)]}))
    elsewhere = "http://127.0.0.1:10000/devstoreaccount1/exports"
    doc["entities"] += json.loads(model_json({"Lapsed": ["x.csv"]}, base=elsewhere))["entities"]
    manifest = world.drop(MANIFEST, json.dumps(doc))
    (run_id,) = cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at())
    world.pump()
    assert world.run(run_id).state == "succeeded"
    (failed,) = world.ledger.runs("winback")
    assert (failed.state, failed.segment) == ("failed", "Lapsed")
    assert "entity 'Lapsed'" in failed.error and "container 'exports'" in failed.error
    assert world.queued(CDM_MANIFESTS) == []  # a rejected entity is not waited for
    cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at())
    assert len(world.ledger.runs("winback")) == 1


def test_storage_refusing_one_partitions_lookup_fails_that_entity_only(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    destinations(world, marketing="HighValue", winback="Lapsed")
    world.drop(partition("HighValue", 1), rows(range(10)))
    world.drop(partition("Lapsed", 1), rows(range(10)))
    blobs = {"Lapsed": [partition("Lapsed", 1)], "HighValue": [partition("HighValue", 1)]}
    manifest = world.drop(MANIFEST, model_json(blobs))
    real = world.storage.snapshot_version

    def head(name: str) -> SnapshotVersion | None:
        if "Lapsed" in name:
            refused = HttpResponseError(message="InvalidUri")
            refused.status_code = 400
            raise refused
        return real(name)

    monkeypatch.setattr(world.storage, "snapshot_version", head)
    (run_id,) = cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at())
    world.pump()
    assert world.run(run_id).state == "succeeded"
    (failed,) = world.ledger.runs("winback")
    assert "partition 'Lapsed_1'" in failed.error and "storage answered 400" in failed.error


def test_storage_unreachable_propagates_so_the_host_retries(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    destinations(world, marketing="HighValue")
    world.drop(partition("HighValue", 1), rows(range(10)))
    manifest = world.drop(MANIFEST, model_json({"HighValue": [partition("HighValue", 1)]}))

    def head(name: str) -> SnapshotVersion | None:
        down = HttpResponseError(message="ServerBusy")
        down.status_code = 503
        raise down

    monkeypatch.setattr(world.storage, "snapshot_version", head)
    with pytest.raises(HttpResponseError):
        cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at())
    assert world.ledger.runs() == []


def test_an_unreadable_or_replaced_manifest_makes_no_run(
    world: MemoryWorld, caplog: pytest.LogCaptureFixture
) -> None:
    destinations(world, marketing="HighValue")
    manifest = world.drop(MANIFEST, b'{"entities": [oops')
    with caplog.at_level(logging.ERROR, logger="exporter.flow.runs"):
        assert cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at()) == []
    assert f"CDM folder not exported: {MANIFEST} is not JSON" in caplog.text
    world.drop(MANIFEST, model_json({"HighValue": []}))  # replaced: the old version is gone
    assert cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at()) == []
    assert world.ledger.runs() == [] and world.queued(CDM_MANIFESTS) == []


def test_a_partition_replaced_after_the_manifest_skips_the_run(world: MemoryWorld) -> None:
    destinations(world, marketing="HighValue")
    world.drop(partition("HighValue", 1), rows(range(10)))
    manifest = world.drop(MANIFEST, model_json({"HighValue": [partition("HighValue", 1)]}))
    (run_id,) = cdm_folders.on_manifest(world.svc, manifest, at=world.sendgrid.at())
    world.drop(partition("HighValue", 1), rows(range(500, 510)))
    world.pump()
    run = world.run(run_id)
    assert run.state == "skipped" and "replaced" in run.error
    assert world.members() == {} and world.sendgrid.count("upsert") == 0


def test_the_timer_re_exports_the_newest_entity_of_a_segment(world: MemoryWorld) -> None:
    destinations(world, marketing="HighValue")
    newer_blob = f"{FOLDER}-2/HighValue/2026/11/25/0900/HighValue_1.csv"
    world.drop(newer_blob, rows(range(5)))
    world.drop(partition("HighValue", 1), rows(range(10)))
    older = world.drop(MANIFEST, model_json({"HighValue": [partition("HighValue", 1)]}))
    newer = world.drop(f"{FOLDER}-2/model.json", model_json({"HighValue": [newer_blob]}))
    cdm_folders.on_manifest(world.svc, newer, at=world.sendgrid.at())
    cdm_folders.on_manifest(world.svc, older, at=world.sendgrid.at())  # late: no pointer move
    world.pump()
    latest = world.storage.latest_snapshot("HighValue")
    assert latest is not None and latest.name == f"{FOLDER}-2/model.json#HighValue"
    (run_id,) = run_requests.refresh(world.svc, at=world.sendgrid.at())
    world.pump()
    assert (world.run(run_id).trigger, world.run(run_id).snapshot) == ("timer", latest.name)


def test_a_poisoned_look_exports_what_is_complete_and_ends_the_rest(world: MemoryWorld) -> None:
    destinations(world, marketing="HighValue", winback="Lapsed")
    world.drop(partition("HighValue", 1), rows(range(10)))
    blobs = {"HighValue": [partition("HighValue", 1)], "Lapsed": [partition("Lapsed", 1)]}
    manifest = world.drop(MANIFEST, model_json(blobs))
    check = ManifestCheck(
        manifest=MANIFEST, etag=manifest.etag, written_at=manifest.last_modified, checks=3
    )
    poison.manifest_poisoned(world.svc, check)
    assert len(world.queued(EXPORT_REQUESTS)) == 1
    world.pump()
    (exported,) = world.ledger.runs("marketing")
    (ended,) = world.ledger.runs("winback")
    assert exported.state == "succeeded"
    assert ended.state == "failed" and "could not be checked on any attempt" in ended.error
    assert world.queued(CDM_MANIFESTS) == []
