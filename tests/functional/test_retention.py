"""Retention: a run's contact data goes when the run ends; reject reports after their days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from exporter.core.errors import InputError
from exporter.flow import arrivals, finish, retention, sending
from exporter.flow.services import DEFAULT_REPORT_RETENTION_DAYS
from exporter.model.runs import utcnow
from exporter.wiring import services_from_env
from tests.support.flow import ListWorld
from tests.support.sandbox import SandboxProcess

pytestmark = pytest.mark.functional


@dataclass
class World(ListWorld):
    pass


@pytest.fixture
def world(sandbox: SandboxProcess) -> World:
    world = World.connect(sandbox, "SG.retention-key", max_batch_contacts=40)
    world.list_id = world.client.create_list("retention").id
    return world


def segment(ids: range, extra: str = "") -> bytes:
    rows = "".join(f"user{i}@example.com,Name{i}\n" for i in ids)
    return ("Email,FirstName\n" + rows + extra).encode()


def run_files(world: World, run_id: str) -> list[str]:
    return sorted(n for n in world.storage.blobs if n.startswith(f"runs/{run_id}/"))


def test_a_run_keeps_no_contact_data_once_it_has_ended(world: World) -> None:
    world.destination(sync_mode="mirror")
    arrivals.on_snapshot(world.svc, world.storage.put_snapshot("loyal/a.csv", segment(range(60))))
    world.pump()
    version = world.storage.put_snapshot("loyal/b.csv", segment(range(30), "not-an-email,X\n"))
    (run_id,) = arrivals.on_snapshot(world.svc, version)  # 30 leave: removal batches
    world.plan_queued()
    planned = run_files(world, run_id)
    assert any("/removals/" in n for n in planned) and any("/state/" in n for n in planned)
    world.pump()
    run = world.ledger.get_run(run_id)
    assert run is not None and (run.state, run.removed, run.verified) == ("succeeded", 30, True)
    assert run_files(world, run_id) == [f"runs/{run_id}/rejects.csv"]  # no emails, no contacts


def test_a_stopped_runs_batches_are_not_sent_once_it_has_ended(world: World) -> None:
    world.destination()
    (run_id,) = arrivals.on_snapshot(
        world.svc, world.storage.put_snapshot("loyal/a.csv", segment(range(50)))
    )
    world.plan_queued()
    messages = world.take_batches()
    finish.fail_run(world.svc, run_id, "stopped by an operator")  # as `destinations remove`
    assert run_files(world, run_id) == []
    for message in messages:  # delivered late: the run has ended
        sending.send_batch(world.svc, message)
    run = world.ledger.get_run(run_id)
    assert run is not None and (run.state, run.error) == ("failed", "stopped by an operator")
    assert world.requests_to("PUT /v3/marketing/contacts") == 0
    assert run_files(world, run_id) == []


def test_reject_reports_are_deleted_after_their_retention(world: World) -> None:
    world.destination()
    (run_id,) = arrivals.on_snapshot(
        world.svc, world.storage.put_snapshot("loyal/a.csv", segment(range(5), "bad,X\n"))
    )
    world.pump()
    run = world.ledger.get_run(run_id)
    assert run is not None and run.reject_report == f"runs/{run_id}/rejects.csv"
    days = DEFAULT_REPORT_RETENTION_DAYS
    assert retention.sweep(world.svc, at=utcnow() + timedelta(days=days - 1)) == 0
    assert retention.sweep(world.svc, at=utcnow() + timedelta(days=days, minutes=1)) == 1
    run = world.ledger.get_run(run_id)
    assert run is not None and run.reject_report == "" and run.state == "succeeded"
    assert run_files(world, run_id) == []
    world.svc.report_retention_days = 0  # keep for ever
    assert retention.sweep(world.svc, at=utcnow() + timedelta(days=10_000)) == 0


@pytest.mark.parametrize("value", ["-1", "30.5", "forever", "3651"])
def test_a_bad_retention_setting_is_refused_at_start(value: str) -> None:
    with pytest.raises(InputError, match="REJECT_REPORT_RETENTION_DAYS must be a whole number"):
        services_from_env({"REJECT_REPORT_RETENTION_DAYS": value, "AzureWebJobsStorage": "x"})
