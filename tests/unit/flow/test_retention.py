"""Retention (exporter/flow/retention.py): reject reports go after their days, nothing else does;
a run's contact data went when the run ended (tests/unit/flow/test_finish.py)."""

from __future__ import annotations

from datetime import timedelta

from exporter.flow import retention
from exporter.flow.services import DEFAULT_REPORT_RETENTION_DAYS
from exporter.model.runs import utcnow
from tests.support.memory_flow import MemoryWorld, segment_csv

DAYS = DEFAULT_REPORT_RETENTION_DAYS


def with_report(world: MemoryWorld, name: str) -> str:
    (run_id,) = world.arrive(name, segment_csv(5, extra="bad,X,Y\n"))
    world.pump()
    assert world.run(run_id).reject_report == f"runs/{run_id}/rejects.csv"
    return run_id


def test_reject_reports_are_deleted_after_their_retention_only(world: MemoryWorld) -> None:
    world.destination()
    old = with_report(world, "loyal/a.csv")
    new = with_report(world, "loyal/b.csv")
    world.storage.written[f"runs/{old}/rejects.csv"] -= timedelta(days=10)
    state = world.storage.read_state("marketing", "loyal", world.list_id)
    assert retention.sweep(world.svc, at=utcnow() + timedelta(days=DAYS - 11)) == 0
    assert retention.sweep(world.svc, at=utcnow() + timedelta(days=DAYS - 9)) == 1
    assert world.run_files(old) == [] and world.run(old).reject_report == ""
    assert world.run(old).state == "succeeded"  # the record stays
    assert world.run_files(new) == [f"runs/{new}/rejects.csv"]
    assert world.storage.read_state("marketing", "loyal", world.list_id) == state
    assert retention.sweep(world.svc, at=utcnow() + timedelta(days=DAYS, minutes=1)) == 1
    assert world.run(new).reject_report == ""


def test_a_retention_of_zero_keeps_reports_for_ever(world: MemoryWorld) -> None:
    world.destination()
    run_id = with_report(world, "loyal/a.csv")
    world.svc.report_retention_days = 0
    assert retention.sweep(world.svc, at=utcnow() + timedelta(days=10_000)) == 0
    assert world.run_files(run_id) == [f"runs/{run_id}/rejects.csv"]


def test_a_report_whose_run_is_not_in_the_ledger_is_deleted_all_the_same(
    world: MemoryWorld,
) -> None:
    world.storage.blobs["runs/orphan/rejects.csv"] = b"row,reason\n"
    world.storage.written["runs/orphan/rejects.csv"] = utcnow() - timedelta(days=DAYS + 1)
    assert retention.sweep(world.svc) == 1
    assert "runs/orphan/rejects.csv" not in world.storage.blobs
