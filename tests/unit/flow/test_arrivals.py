"""A blob under segments/ (exporter/flow/arrivals.py): a snapshot file requests its runs, a
model.json is read as a CDM folder, a name no segment can have is logged and ignored."""

from __future__ import annotations

import pytest

from exporter.flow import arrivals
from exporter.model.messages import EXPORT_REQUESTS
from tests.support.cdm import model_json
from tests.support.memory_flow import MemoryWorld, segment_csv

AZURITE = "http://127.0.0.1:10000/devstoreaccount1/segments"


def test_a_snapshot_file_requests_one_run_per_destination_and_a_redelivery_none(
    world: MemoryWorld,
) -> None:
    world.destination()
    world.destination(name="sales")
    version = world.drop("loyal/2026-11-24.csv", segment_csv(10))
    run_ids = arrivals.on_snapshot(world.svc, version)
    assert sorted(world.run(r).destination for r in run_ids) == ["marketing", "sales"]
    assert arrivals.on_snapshot(world.svc, version) == []  # the blob trigger fired again
    assert len(world.queued(EXPORT_REQUESTS)) == 2


def test_a_snapshot_of_a_segment_nobody_selected_makes_no_run(world: MemoryWorld) -> None:
    world.destination()
    assert arrivals.on_snapshot(world.svc, world.drop("vip/a.csv", segment_csv(3))) == []
    assert world.ledger.runs() == []


def test_a_model_json_is_read_as_a_cdm_folder(world: MemoryWorld) -> None:
    world.destination(segments=["HighValue"])
    partition = "ci/BlobExport/HighValue/2026/11/24/1433/HighValue_1.csv"
    world.drop(partition, "c1,user1@example.com,A\n")
    manifest = world.drop(
        "ci/BlobExport/model.json",
        model_json({"HighValue": [partition]}, attributes=("Id", "Email", "Name"), base=AZURITE),
    )
    (run_id,) = arrivals.on_snapshot(world.svc, manifest)
    assert world.run(run_id).snapshot == "ci/BlobExport/model.json#HighValue"


@pytest.mark.parametrize("name", ["a#b/x.csv", "a b/x.csv", "a\x07b/x.csv", f"{'s' * 64}/x.csv"])
def test_a_snapshot_of_a_segment_name_no_destination_can_have_is_ignored(
    world: MemoryWorld, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    world.destination()
    version = world.drop(name, segment_csv(3))
    assert arrivals.on_snapshot(world.svc, version) == []  # no run, no exception (no retry loop)
    assert "ignored" in caplog.text and world.ledger.runs() == []
