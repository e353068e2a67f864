"""End to end: snapshot sequences keep the list exactly in step (real Azurite, sandbox, host)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.admin.operations import follow, upload_snapshot
from exporter.local.stack import Stack
from exporter.model.destinations import Consent, Destination
from exporter.model.runs import RunRecord
from exporter.model.versions import SnapshotVersion
from exporter.wiring import services_from_env

pytestmark = pytest.mark.e2e
KEY = "SG.e2e-sync-key"


class World:
    def __init__(self, stack: Stack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        self.storage = Storage.from_env(stack.settings)
        self.svc = services_from_env(stack.settings)
        self.client = SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url))
        self.files = 0

    def destination(self, segment: str, **values: Any) -> str:
        list_id = self.client.create_list(f"list {segment}").id
        self.svc.destinations.put(
            Destination.model_validate(
                {
                    "name": segment,
                    "display_name": segment,
                    "list_id": list_id,
                    "api_key_secret": "SENDGRID_KEY_SYNC",
                    "segments": [segment],
                    "consent": Consent(accepted_by="dpo", accepted_at=datetime.now(UTC)),
                    **values,
                }
            )
        )
        return list_id

    def drop(self, segment: str, people: dict[int, str]) -> SnapshotVersion:
        self.files += 1
        path = self.tmp / f"{segment}-{self.files:03d}.csv"
        rows = ["Email,FirstName"] + [f"user{i}@example.com,{n}" for i, n in people.items()]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return upload_snapshot(self.storage, path, segment)

    def export(self, segment: str, people: dict[int, str]) -> RunRecord:
        version = self.drop(segment, people)
        (run,) = follow(self.svc, version, 1, timeout=120, on_progress=lambda _: None)
        return run

    def faults(self, **changes: float) -> None:
        request = urllib.request.Request(
            f"{self.stack.sandbox_url}/__sandbox/faults",
            data=json.dumps(changes).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30):
            pass

    def members(self, list_id: str) -> dict[str, str]:
        url = f"{self.stack.sandbox_url}/__sandbox/lists/{list_id}/contacts"
        with urllib.request.urlopen(url, timeout=30) as answer:
            return {m["email"]: m.get("first_name", "") for m in json.load(answer)}


def expect(people: dict[int, str]) -> dict[str, str]:
    return {f"user{i}@example.com": n for i, n in people.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("sync")
    settings = {"SENDGRID_KEY_SYNC": KEY, "MAX_BATCH_CONTACTS": "40"}
    with Stack(tmp / "stack", settings=settings, sandbox_args=["--job-delay", "0.1"]) as stack:
        yield World(stack, tmp)


def test_mirror_sequence_keeps_the_list_exactly_equal_to_the_segment(world: World) -> None:
    list_id = world.destination("mirrored", sync_mode="mirror")
    people = {i: f"Name{i}" for i in range(100)}
    run = world.export("mirrored", people)  # add
    assert (run.state, run.sent, run.list_count) == ("succeeded", 100, 100)
    assert world.members(list_id) == expect(people)

    people |= {i: f"Renamed{i}" for i in (3, 50, 97)}  # change a field
    run = world.export("mirrored", people)
    assert (run.state, run.sent, run.unchanged) == ("succeeded", 3, 97)
    assert world.members(list_id) == expect(people)

    removed = {i: people.pop(i) for i in range(0, 100, 5)}  # remove some
    run = world.export("mirrored", people)
    assert (run.state, run.sent, run.removed, run.drift) == ("succeeded", 0, 20, 0)
    assert world.members(list_id) == expect(people)

    people |= {5: removed[5], 10: "Back"}  # re-add removed ones
    run = world.export("mirrored", people)
    assert (run.state, run.sent, run.removed) == ("succeeded", 2, 0)
    assert world.members(list_id) == expect(people)

    run = world.export("mirrored", {i: people[i] for i in list(people)[:10]})  # a wipe-out
    assert run.state == "failed" and "nothing was sent" in run.error
    assert world.members(list_id) == expect(people)


def test_upsert_sequence_keeps_a_superset_with_current_fields(world: World) -> None:
    list_id = world.destination("upserted")
    first = {i: f"Name{i}" for i in range(50)}
    world.export("upserted", first)
    second = {i: f"New{i}" for i in range(25, 75)}
    run = world.export("upserted", second)
    assert (run.state, run.sent, run.removed) == ("succeeded", 50, 0)
    members = world.members(list_id)
    assert members == expect(first) | expect(second)  # nobody removed; fields current


def test_racing_snapshots_end_with_the_newer_one(world: World) -> None:
    list_id = world.destination("racing", sync_mode="mirror")
    older = world.drop("racing", dict.fromkeys(range(80), "Old"))
    newer = world.drop("racing", dict.fromkeys(range(40, 120), "New"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = {r.snapshot: r for r in world.svc.ledger.runs("racing")}
        if len(runs) == 2 and all(r.final for r in runs.values()):
            break
        time.sleep(0.3)
    runs = {r.snapshot: r for r in world.svc.ledger.runs("racing")}
    assert runs[newer.name].state == "succeeded"
    assert runs[older.name].state in ("succeeded", "skipped")
    assert world.members(list_id) == {f"user{i}@example.com": "New" for i in range(40, 120)}


def test_over_the_cap_nothing_is_sent(world: World) -> None:
    list_id = world.destination("capped", profile_cap=30)
    run = world.export("capped", dict.fromkeys(range(31), "X"))
    assert run.state == "failed" and "over the cap of 30" in run.error
    assert world.members(list_id) == {}


def test_a_run_that_fails_halfway_then_a_good_run_leave_the_list_exact(world: World) -> None:
    list_id = world.destination("halfway", sync_mode="mirror")
    people = dict.fromkeys(range(100), "Before")
    world.export("halfway", people)
    after = {i: ("After" if i % 2 else "Before") for i in range(30, 130)}  # 30 leave, 30 join

    world.faults(contact_error_rate=0.5)  # SendGrid takes about half the contacts
    try:
        bad = world.export("halfway", after)
    finally:
        world.faults(contact_error_rate=0.0)
    assert bad.state == "succeeded_with_errors" and bad.errored > 0
    # Committed, with the contacts of the errored batches (both of them, at this error rate)
    # marked unsent: the next run sends those again.
    assert bad.state_committed
    assert world.members(list_id) != expect(after)

    good = world.export("halfway", after)
    assert (good.state, good.state_committed, good.errored) == ("succeeded", True, 0)
    assert good.sent == bad.sent
    assert world.members(list_id) == expect(after)
